"""Error types shared by the library.

All derive from ValueError so callers that only know Python's built-ins still catch bad input, while the node
layer can tell our own, user-facing messages apart from crashes.
"""


class MMAudioError(ValueError):
    """Base class for every user-facing error raised by the library."""


class WrongCheckpointError(MMAudioError):
    """A weights file is not what the caller asked for (other component, other variant, corrupt, truncated)."""


class InvalidInputError(MMAudioError):
    """An input value (frames, frame rate, duration, steps, ...) cannot be used."""


class IncompatibleComponentsError(MMAudioError):
    """Two components that must be paired do not fit (a 16 kHz decoder with a 44.1 kHz network, ...)."""
