"""Writing an output file, the one way bnparity does it: regular files atomically, pipes and devices written into.

- A regular file (or a path that does not exist yet) is written to a temporary file in the same folder, flushed,
  fsynced and renamed over the path (`os.replace`), so a reader never sees half a file and an interrupted or
  failed write leaves what was there byte-identical. The new file has the replaced file's permissions, or 0644.
  A symbolic link to a regular file stays a link: its target is replaced.
- A pipe (FIFO), a character device (``/dev/null``, ``/dev/full``, a terminal) or a socket is written into,
  never replaced; so is ``-``, ``/dev/stdout``, ``/dev/stderr`` or ``/dev/fd/N``, which name this process's
  open file descriptor (as the shell redirected it, appending or not).
- No folder is created: the folder of the path must exist (a folder a suite lays out inside its own run
  directory is created by that suite, explicitly). A directory is never a valid output.

Every failure is an `OutputError` (an OSError naming the path the caller gave, never the temporary file),
except a reader going away from a pipe, which stays a BrokenPipeError.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_MODE = 0o644
# The end of every --json help: what happens to each kind of target.
JSON_TARGETS = ("; a regular file is replaced atomically, a pipe or device written into; with - or /dev/stdout "
                "the human-readable text goes to stderr, so that stdout is the JSON alone")
_STREAMS = {"-": 1, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_PATH = re.compile(r"/(?:dev/fd|proc/self/fd)/(\d+)")


class OutputError(OSError):
    """An output that cannot be written; ``str()`` is one line naming the path and why."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def json_safe(value: Any) -> Any:
    """`value` with every inf or nan, at any depth, replaced by None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def stream_fd(path: object) -> int | None:
    """The file descriptor that `path` names ('-' and /dev/stdout: 1, /dev/stderr: 2, /dev/fd/N: N), else None."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    text = os.fspath(path)
    if text in _STREAMS:
        return _STREAMS[text]
    m = _FD_PATH.fullmatch(text)
    return int(m[1]) if m else None


def is_stdout(path: object) -> bool:
    """Whether writing to `path` writes to this process's standard output ('-' or /dev/stdout)."""
    return stream_fd(path) == 1


def _error(e: OSError, path: Path | str) -> OSError:
    """`e` as an OutputError naming `path` (a BrokenPipeError is kept as it is: the reader left)."""
    if isinstance(e, (BrokenPipeError, OutputError)):
        return e
    return OutputError(e.errno, e.strerror or str(e), os.fspath(path))


def _existing_kind(path: Path) -> int | None:
    """The st_mode of what `path` names (links followed), or None when nothing is there."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None


def check_output_file(path: Path | str) -> Path:
    """`path` if it can name an output file: not a directory, and (for a new file) in an existing folder.

    Raises:
        OutputError: EISDIR for a directory; ENOENT or ENOTDIR when its folder does not exist.
    """
    path = Path(path)
    if stream_fd(path) is not None:
        return path
    try:
        mode = _existing_kind(path)
    except OSError as e:  # e.g. ENOTDIR: a file used as a folder on the way
        raise _error(e, path) from None
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputError(errno.EISDIR, "it is a directory, and an output must be a file", str(path))
    if mode is None:
        parent = path.resolve().parent if path.is_symlink() else path.parent
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise OutputError(errno.ENOENT, f"its folder {parent} {what} (no folder is created for an output)",
                              str(path))
    return path


def output_file(text: str) -> Path:
    """An argparse ``type=`` for an output file path, checked before the command computes anything."""
    try:
        return check_output_file(text)
    except OutputError as e:
        raise argparse.ArgumentTypeError(f"must name a file in an existing folder, a pipe or a device. "
                                         f"Received: {text}: {e.strerror}") from None


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; a file system that cannot sync a folder costs only durability."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """A temporary file next to regular file `path`; once the block ends, it is fsynced and renamed over `path`.

    For content too large to hold in memory (write it to the yielded path, e.g. with a memory map). When the
    block raises, the temporary file is removed and `path` is left as it was.

    Raises:
        OutputError: `path` is a directory, its folder does not exist, or the file system refuses the write.
    """
    path = check_output_file(path)
    target = path.resolve() if path.is_symlink() else path
    mode = _existing_kind(target)
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputError(errno.EINVAL, "only a regular file can be replaced; this is a pipe or device", str(path))
    keep = stat.S_IMODE(mode) if mode is not None else DEFAULT_MODE
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise _error(e, path) from None
    tmp = Path(name)
    try:
        os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.fchmod(fd, keep)  # mkstemp makes the file private; an output is for whoever may read the old one
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _error(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _write_into(fd: int, data: bytes) -> None:
    """Write all of `data` to an open descriptor (a pipe may take it in pieces); `fd` stays open."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_output(path: Path | str, data: str | bytes) -> Path:
    """Write `data` (str: UTF-8) to `path`: a regular file atomically, a pipe, device or stream into it.

    Returns:
        `path` as a Path.

    Raises:
        OutputError: naming `path`: a directory, a missing folder, a full disk (ENOSPC), a read-only file
            system (EROFS), a denied permission (EACCES), ...
        BrokenPipeError: the reader of a pipe went away.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    path = Path(path)
    fd = stream_fd(path)
    if fd is not None:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):  # what was printed comes first; a closed stream has nothing
                stream.flush()
        try:
            _write_into(fd, payload)
        except OSError as e:
            raise _error(e, path) from None
        return path
    check_output_file(path)
    mode = _existing_kind(path)
    if mode is not None and not stat.S_ISREG(mode):  # a FIFO, a device: write into it, never replace it
        try:
            out = os.open(path, os.O_WRONLY)
        except OSError as e:
            raise _error(e, path) from None
        try:
            _write_into(out, payload)
        except OSError as e:
            raise _error(e, path) from None
        finally:
            os.close(out)
        return path
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(payload)
    return path


def write_json(path: Path | str, document: Any) -> Path:
    """Write `document` as indented JSON (inf and nan as null) with `write_output`; returns `path` as a Path."""
    text = json.dumps(json_safe(document), indent=1, allow_nan=False) + "\n"
    return write_output(path, text)
