"""Errors that bgdask reports to its users.

Every error a user can cause (a bad file, a bad configuration, a tract that
cannot be matched) is a :class:`BgdaskError`. The command line prints its
message, one line naming the file, warp or field at fault, and exits with
status 2; anything else is a bug and keeps its traceback.
"""


class BgdaskError(Exception):
    """Base class of the errors bgdask reports to users."""


class InputError(BgdaskError, ValueError):
    """A warp file, manifest or input collection is unusable."""


class GeometryError(InputError):
    """Warp boxes do not fit the tract geometry (skymap)."""


class ConfigError(BgdaskError, ValueError):
    """A configuration field is unknown or out of range."""


class ModelError(BgdaskError):
    """A background model cannot be built (no good superpixel, no overlap)."""


class StoreError(BgdaskError):
    """The output store is missing, incomplete, or belongs to another run."""
