"""UserError: bad input from the user, reported as one line and exit code 2, never a traceback."""


class UserError(Exception):
    """A problem with what the user asked for or gave (a file, a flag, a shape): the message says which."""
