"""Errors raised by the presets package.

Every error names the Workspace field a user has to change, so the operator, the admission
webhook and the CLI can all show the same one-line explanation.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A Workspace asks for something the catalog cannot provide; `field` is the path to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class SourceUnavailable(SpecError):
    """A source the spec names (the model hub) cannot be read now; the spec may well be right.

    Callers retry later instead of rejecting the Workspace for good.
    """


class FitError(SpecError):
    """The model does not fit the chosen instance type or nodes; the message says what would fit."""


class CatalogError(ValueError):
    """A catalog or SKU data file is malformed; the message names file, entry and field."""
