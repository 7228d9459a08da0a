"""Run configs for the CLI: ``--config run.yaml`` and the ``args.yaml`` a run leaves behind.

As timm's ``train.py`` does: values in the YAML file override the command's defaults and flags
on the command line override the YAML. The file's keys are the command's option names
(``batch_size`` or ``batch-size``); a list is an option of several values (``ranks: [36, 64, 64]``),
``true`` / ``false`` switch a flag on / leave it off. The file is turned into command-line
tokens placed before the user's own, so every value is checked by the same parser as a typed
flag (its type, range and choices), and a later flag wins.

Each command that writes outputs also writes the resolved options as ``args.yaml`` beside them
(``command`` plus every option that has a value), so ``tucker-init CMD --config args.yaml``
repeats the run from that file alone.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import atomic_write

__all__ = ["ARGS_FILE", "config_tokens", "expand_config", "read_config", "write_args_yaml"]

ARGS_FILE = "args.yaml"
_SKIP = ("config", "command")  # never written to / read from a config as options


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML file.

    Raises:
        FileNotFoundError: no such file. ValueError: not YAML, or not a mapping of options.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {str(path)!r}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"--config {str(path)!r} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"--config {str(path)!r} must hold a mapping of options, found {type(data).__name__}")
    return dict(data)


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by destination name (``batch_size``)."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", *_SKIP)}


def config_tokens(parser: argparse.ArgumentParser, config: Mapping[str, Any], command: str) -> list[str]:
    """Command-line tokens that say what ``config`` says, for ``parser`` (one subcommand's).

    Raises:
        ValueError: keys that are not options of the command (named, with the valid ones), a
            ``command`` key for another command, or a value of the wrong shape.
    """
    actions = _actions(parser)
    given = {str(k).replace("-", "_"): v for k, v in config.items()}
    if given.get("command", command) != command:
        raise ValueError(f"the config is for `{given['command']}`, not for `{command}`")
    unknown = sorted(set(given) - set(actions) - set(_SKIP))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} in the config of `{command}`; its options are {sorted(actions)}")
    tokens: list[str] = []
    for key, value in given.items():
        if key in _SKIP or value is None:
            continue
        action = actions[key]
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ValueError(f"{key} is a switch: expected true or false, found {value!r}")
            tokens += [flag] if value else []
        elif isinstance(value, list | tuple):
            tokens += [flag, *map(str, value)]
        elif isinstance(value, Mapping):
            raise ValueError(f"{key} takes a value or a list, found a mapping {dict(value)!r}")
        else:
            tokens += [flag, str(value)]
    return tokens


def expand_config(argv: Sequence[str], commands: Mapping[str, argparse.ArgumentParser]) -> list[str]:
    """``argv`` with its ``--config FILE`` replaced by the file's options, placed right after the
    command so that the user's own flags (later) override them."""
    argv = list(argv)
    if not argv or argv[0] not in commands:
        return argv
    rest, files = [], []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" and i + 1 < len(argv):
            files.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    tokens = [t for path in files for t in config_tokens(commands[argv[0]], read_config(path), argv[0])]
    return [argv[0], *tokens, *rest]


def write_args_yaml(args: argparse.Namespace, folder: str | os.PathLike, name: str = ARGS_FILE) -> Path:
    """Write ``command`` and every option with a value to ``folder/name`` (atomically)."""
    import yaml

    values = {k: v for k, v in vars(args).items() if k not in _SKIP and v is not None and v is not False}
    text = yaml.safe_dump({"command": args.command, **values}, sort_keys=False)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write(folder / name, lambda tmp: Path(tmp).write_text(text))
