"""The project's own error types: each carries a message fit to show a user."""

from __future__ import annotations


class WhaleIdError(Exception):
    """Base class: anything the package raises on bad input or a bad setup."""


class InvalidImageError(WhaleIdError):
    """The bytes are not a usable photograph (corrupt, not an image, a bomb, too small)."""


class InvalidArchiveError(WhaleIdError):
    """A ZIP that cannot be read safely (not a ZIP, encrypted, too large, a bomb)."""


class ModelLoadError(WhaleIdError):
    """The checkpoint or catalogue is missing, corrupt or from an incompatible version."""


class LabelsError(WhaleIdError):
    """An evaluation or enrolment CSV is malformed or names missing images."""
