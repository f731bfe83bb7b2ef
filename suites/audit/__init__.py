"""bnparity audit."""
