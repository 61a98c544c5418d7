"""Errors caused by user input.

Anything the user can fix (a bad path, a misspelt key, a malformed annotation) raises a
:class:`UserError` whose message is one sentence saying what went wrong, where, and what to do.
Tools catch it, print the message on one line to stderr and exit with status 2 (see
:func:`detlab.utils.cli.run_tool`); library users can catch it like any exception.
"""

from __future__ import annotations

__all__ = ["ConfigError", "ContractError", "UserError", "UnknownNameError"]


class UserError(Exception):
    """An error the user can fix; ``str(err)`` is a single readable sentence."""


class ConfigError(UserError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad ``_BASE_`` chain)."""


class UnknownNameError(UserError, KeyError):
    """A registry lookup failed; the message lists registered names and the closest match."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ContractError(UserError, TypeError):
    """A registered component breaks its registry's contract (wrong call shape, names, strides).

    Raised when the component is built, with one sentence naming the component and the
    mismatch.
    """
