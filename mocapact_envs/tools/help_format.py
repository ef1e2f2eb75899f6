"""One ``--help`` layout for the package's argparse commands: each option's default, said once.

argparse's ``ArgumentDefaultsHelpFormatter`` appends ``(default: ...)`` to every option, also where the help
already says the default in its own words (``(default: $MOCAPACT_MOCAP_PATH)``) and where there is none to say
(``None``, flags' ``False``). :class:`DefaultsHelpFormatter` appends it only where it tells something.
"""

from __future__ import annotations

import argparse


def shown_default(value) -> str:
    """A default as a user types it: lists space-separated (``1 2 3``), paths and numbers as they print."""
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help names its default itself, the default is
    ``None`` or the option is a flag (``store_true`` and the like). Descriptions keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if (
            "default" in help_text.lower()
            or default is None
            or default is argparse.SUPPRESS
            or action.nargs == 0  # flags: their default is the flag's absence
        ):
            return help_text
        shown = shown_default(default).replace("%", "%%")  # the help is %-formatted
        return f"{help_text} (default: {shown})" if help_text else f"(default: {shown})"
