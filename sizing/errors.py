"""The one error type the sizing library raises for bad input.

A `SizingError` names the command-line flag (or API argument) that was wrong and carries one sentence that says
what was wrong and what is valid. The CLI prints the sentence and exits with status 2; the library never prints.
"""

from __future__ import annotations


class SizingError(ValueError):
    """Bad input: `flag` is the option at fault (e.g. ``--gpu``), `message` one sentence for a person."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag
        self.message = message

    def __str__(self) -> str:
        return self.message
