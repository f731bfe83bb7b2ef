"""UserError: bad input from the user, reported as one line and exit code 2, never a traceback."""


class UserError(Exception):
    """A problem with what the user asked for or gave (a file, a flag, a shape): the message says which."""


def error_line(e: BaseException) -> str:
    """An exception as one line for a record or stderr: its type and the first line of its message (≤ 300 chars)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
