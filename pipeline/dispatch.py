"""Subcommand dispatch shared by `dupn` and `dupn bench`: a name maps to a module with `main(argv)`.

Modules are imported only when their name is run, so `dupn synth` never loads TensorFlow.
"""
from __future__ import annotations

import importlib
import sys


def usage(prog: str, table: dict, placeholder: str = "COMMAND",
          what: str = "a command's options", heading: str = "commands") -> str:
    width = max(map(len, table))
    lines = [f"usage: {prog} {placeholder} [options]   ({prog} {placeholder} --help for {what})", "",
             f"{heading}:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in table.items()]
    return "\n".join(lines)


def dispatch(argv: list[str], prog: str, table: dict, noun: str, **usage_words) -> int:
    """Runs `table[argv[0]]`'s module's main(argv[1:]); table maps a name to (module, help).

    Shared by `dupn` and `dupn bench`; a module is imported only when its name is run.
    """
    shown = usage(prog, table, **usage_words)
    if not argv or argv[0] in ("-h", "--help"):
        print(shown)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in table:
        print(f"{prog}: unknown {noun} '{name}'\n\n{shown}", file=sys.stderr)
        return 2
    module_name = table[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        print(f"{prog} {name}: not built yet", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


def command_parser(prog: str, doc: str):
    """The argument parser of a command whose module docstring is its help: the first line the
    description, the rest (usage examples, notes) the epilog, as written."""
    import argparse
    return argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(doc.splitlines()[1:]))
