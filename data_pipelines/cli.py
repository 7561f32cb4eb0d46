"""``gram-data``: the data command line.

    gram-data validate --annotations FILE.json [--video-dir DIR] [--audio-dir DIR] [--dataset NAME]
    gram-data prepare ...            (data_pipelines.prepare.main)
    gram-data extract-audio --video-dir DIR --audio-dir DIR   (data_pipelines.extract_audio.main)
    gram-data build NAME ...         (data_pipelines.datasets.NAME.build_main, e.g. tridigits)

Each subcommand's module is imported only when it runs, so a missing optional part (or a broken
one) only affects its own command, and the error names the module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from data_pipelines.datasets import load_dataset_module

USAGE = """usage: gram-data COMMAND [ARGS...]

commands:
  validate   report every problem of a dataset's annotations and media (exit 1 if any)
  prepare    decode a dataset into ArrayRecord shards for fast training
  extract-audio
             write <video id>.mp3 (16 kHz mono) for every video with audio (the released layout)
  build      build a dataset from its sources: gram-data build NAME [ARGS...] (e.g. tridigits)

'gram-data COMMAND --help' describes a command's arguments.
"""

# command -> (module, function); `build` is resolved per dataset name.
COMMANDS = {
    "validate": ("data_pipelines.validate", "main"),
    "prepare": ("data_pipelines.prepare", "main"),
    "extract-audio": ("data_pipelines.extract_audio", "main"),
}


def _entry_point(module_name: str, function: str):
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise SystemExit(f"gram-data: module {module_name} is not available ({err})") from err
        raise
    entry = getattr(module, function, None)
    if not callable(entry):
        raise SystemExit(f"gram-data: {module_name} defines no {function}(argv) entry point")
    return entry


def run(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``); returns the subcommand's exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "build":
        if not rest or rest[0].startswith("-"):
            print("usage: gram-data build NAME [ARGS...]  (e.g. gram-data build tridigits)")
            return 2
        name, rest = rest[0], rest[1:]
        try:
            module = load_dataset_module(name)
        except ValueError as err:
            print(f"gram-data build: {err}", file=sys.stderr)
            return 2
        entry = getattr(module, "build_main", None)
        if not callable(entry):
            print(
                f"gram-data build: dataset {name!r} has no builder "
                f"(data_pipelines.datasets.{name}.build_main is not defined)",
                file=sys.stderr,
            )
            return 2
    elif command in COMMANDS:
        entry = _entry_point(*COMMANDS[command])
    else:
        print(f"gram-data: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    status = entry(rest)
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(run())
