"""Custom commands: ``/name args`` from markdown files, in the chat and in ``crew run``.

``catalog`` finds the files (Claude Code's, OpenCode's and stagecrew's places, the person's and
the project's) and the skills the person may invoke; ``expand`` turns one into the prompt the
model gets (``$ARGUMENTS``, ``$1``, ``@file``, ``!`cmd```). The session builder
(``actors/builder.py``) is the one caller that decides what a command changes in a run.
"""

from stagecrew.commands.catalog import (
    CommandCatalog,
    CommandFileError,
    CustomCommand,
    command_locations,
    discover_commands,
    load_command,
    split_invocation,
)
from stagecrew.commands.expand import (
    CommandExpansionError,
    Confirm,
    Expansion,
    expand_command,
    split_arguments,
)

__all__ = [
    "CommandCatalog",
    "CommandExpansionError",
    "CommandFileError",
    "Confirm",
    "CustomCommand",
    "Expansion",
    "command_locations",
    "discover_commands",
    "expand_command",
    "load_command",
    "split_arguments",
    "split_invocation",
]
