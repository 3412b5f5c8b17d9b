"""The ``worldmodels`` command. The only module that parses command-line arguments (DESIGN §1).

Each subcommand is a pair ``(add_arguments(parser), run(args) -> int)`` registered in
``COMMANDS``; the work itself lives in the library modules so it can be called from Python.

Example:
    $ worldmodels --help
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

os.environ.setdefault("PYGLET_HEADLESS", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

AddArgs = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

# name -> (help, add_arguments, run); filled below, one block per subcommand.
COMMANDS: dict[str, tuple[str, AddArgs, Run]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worldmodels",
        description="Collect rollouts, train world models, imagine and plan with them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_arguments, _run) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command][2](args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"worldmodels {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
