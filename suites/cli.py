"""The bnparity command line: one sub-command per suite, each in its own `command` module.

Every command module has ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when
its command runs, so `bnparity conventions` works where no framework is installed. Bad input (a bad flag,
a UserError, a ValueError from a spec) and machine faults (an OSError: a full disk, a read-only or missing
folder, a denied permission) end in one line on stderr, "bnparity CMD: error: ...", and exit code 2; Ctrl-C
exits 130 after the command has saved what it computed; a reader that goes away from the pipe we write to
ends the command quietly with 141 (128 + SIGPIPE, as a CLI killed by SIGPIPE). When a command's --json is
standard output ('-' or /dev/stdout), its human-readable text goes to stderr so that stdout is pure JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import stat
import sys
from typing import NoReturn

from .errors import UserError
from .output import is_stdout

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("bnparity.suites.main_job", "the main job: data, layer and model parity, training, report"),
    "parity": ("bnparity.suites.parity.command", "layer parity of every framework's BatchNorm vs the reference"),
    "check": ("bnparity.suites.parity.check_command", "your own tensor (.npz) through every framework"),
    "conventions": ("bnparity.suites.parity.conventions_command", "print the frameworks' BatchNorm defaults"),
    "data": ("bnparity.suites.data.command", "find, verify and count the Fashion-MNIST files"),
    "model-parity": ("bnparity.suites.model_parity.command", "the same AlexNet in every framework, compared"),
    "train": ("bnparity.suites.convergence.command", "train AlexNet with and without BN, record curves"),
    "pitfalls": ("bnparity.suites.pitfalls.command", "the seed tutorial's BN pitfalls, as eval accuracy"),
    "sync-parity": ("bnparity.suites.sync_parity.command", "BatchNorm across data-parallel replicas on real engines"),
    "dp-parity": ("bnparity.suites.dp_parity.command", "one data-parallel SGD step vs one device, per framework"),
    "fold": ("bnparity.suites.fold.command", "fold eval-mode BN into the layer before it, per framework, verified"),
    "convert": ("bnparity.suites.convert.command", "convert BN state between frameworks' checkpoints, then verify"),
    "audit": ("bnparity.suites.audit.command", "does a \"frozen\" BN still change in a fine-tuning step?"),
    "report": ("bnparity.reports.command", "build report.html, report.md and summary.json from a run"),
}


EXIT_BROKEN_PIPE = 141


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def one_line(text: str) -> str:
    """`text` on one line (a message that spans lines is joined with '; ')."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe(error: BaseException) -> str:
    """The one-line message of a UserError, ValueError or OSError (an OSError with its path)."""
    if isinstance(error, OSError) and type(error).__str__ is OSError.__str__ and error.strerror:
        names = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
        return one_line(f"{names}: {error.strerror}" if names else error.strerror)
    return one_line(str(error)) or type(error).__name__


def _quiet_stdout() -> None:
    """When stdout is a pipe (its reader may be the one that left), point it at /dev/null, so that nothing
    printed later, nor the interpreter's last flush, fails again."""
    with contextlib.suppress(Exception):
        fd = sys.stdout.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = OneLineParser(prog="bnparity", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {name: sub.add_parser(name, help=text, description=text)
                  for name, (_, text) in COMMANDS.items()}
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `bnparity` console command. Returns the exit code."""
    parser, subparsers = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)}")
        parser.parse_args(argv)  # -h, or an error
        parser.print_help()
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    module.add_arguments(subparsers[name])
    args = parser.parse_args(argv)  # a bad flag: one line, SystemExit(2) (see OneLineParser)
    # With --json on stdout, stdout carries only the JSON; the tables and progress go to stderr.
    human = sys.stderr if is_stdout(getattr(args, "json", None)) else sys.stdout
    try:
        with contextlib.redirect_stdout(human):
            code = int(module.run(args))
        sys.stdout.flush()  # a reader that left the pipe shows here, not in the interpreter's last flush
        return code
    except (UserError, ValueError, OSError) as e:
        if isinstance(e, BrokenPipeError) or getattr(e, "errno", None) == errno.EPIPE:
            _quiet_stdout()  # the reader of our output went away: nothing to tell it, no traceback
            return EXIT_BROKEN_PIPE
        print(f"bnparity {name}: error: {describe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bnparity {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
