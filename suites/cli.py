"""The bnparity command line: one sub-command per suite, each in its own `command` module.

Every command module has ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when
its command runs, so `bnparity conventions` works where no framework is installed. A UserError (or a
ValueError from a spec) becomes one line on stderr and exit code 2; Ctrl-C exits 130 after the command
has saved what it computed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

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
    "report": ("bnparity.reports.command", "build report.html, report.md and summary.json from a run"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="bnparity", description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv)
    try:
        return int(module.run(args))
    except (UserError, ValueError, FileNotFoundError, PermissionError) as e:
        print(f"bnparity {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bnparity {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
