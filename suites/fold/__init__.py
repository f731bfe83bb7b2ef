"""bnparity fold."""
