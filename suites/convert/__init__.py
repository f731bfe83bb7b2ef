"""bnparity convert."""
