"""Every subcommand of the healthbook command names a function that exists."""

import argparse
import importlib

from commands.cli import parser


def leaves(command: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    """Each runnable subcommand's words and its `module.function` target."""
    found = {}
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found |= leaves(child, (*path, name))
    if not found and command.get_default("run"):
        found[path] = command.get_default("run")
    return found


def test_every_subcommand_runs_a_function_of_the_commands_package():
    targets = leaves(parser())
    assert {("worker",), ("demo",), ("dlq", "retry"), ("clinic", "register"), ("replay",)} <= targets.keys()
    for words, target in targets.items():
        module, _, function = target.rpartition(".")
        assert callable(getattr(importlib.import_module(f"commands.{module}"), function, None)), words
