"""Errors that end a command with exit 2 and one clear line (no traceback)."""
from __future__ import annotations


class UsageError(Exception):
    """Bad command line, bad spec or unusable input: exit 2, the message on one line."""


class DataError(UsageError):
    """The data cannot be read or used at all (D100 when inside a report)."""


class ModelBuildError(Exception):
    """The model spec cannot be built (M200): names the layer and the shapes."""

    def __init__(self, message: str, layer: str | None = None, evidence: dict | None = None):
        super().__init__(message)
        self.layer = layer
        self.evidence = evidence or {}
