"""Suites (layer parity, model parity, convergence) and the bnparity command line."""
