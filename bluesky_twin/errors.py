"""Exception types shared across bluesky-twin.

Every error a user can cause with bad input derives from :class:`InputError`
(a ``ValueError``), so the CLI can turn it into exit code 2 and one clear line.
"""

from __future__ import annotations


class BlueskyTwinError(Exception):
    """Base class of all bluesky-twin errors."""


class InputError(BlueskyTwinError, ValueError):
    """User-supplied data or arguments are unusable (missing column, NaN, too few points...)."""


class ModelFileError(BlueskyTwinError, ValueError):
    """A saved model directory is missing, corrupt, or does not match what was asked for."""


class LimitError(BlueskyTwinError, ValueError):
    """A proposed position lies outside a positioner's limits."""
