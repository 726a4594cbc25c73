"""Errors that bgdask reports to its users.

Every error a user can cause (a bad file, a bad configuration, a tract that
cannot be matched) is a :class:`BgdaskError`. The command line prints its
message, one line naming the file, warp or field at fault, and exits with
status 2; anything else is a bug and keeps its traceback.
"""


class BgdaskError(Exception):
    """Base class of the errors bgdask reports to users.

    ``api`` and ``cli`` say how to fix it, in the words of each audience: a
    Python caller reads parameter names (``str(exc)`` ends with ``api``), a
    user of the command reads flags (:meth:`cli_message` ends with ``cli``).
    """

    def __init__(self, message: str = "", *, api: str | None = None, cli: str | None = None):
        super().__init__(message)
        self.message, self.api, self.cli = message, api, cli

    def __str__(self) -> str:
        return f"{self.message}; {self.api}" if self.api else self.message

    def cli_message(self) -> str:
        fix = self.cli or self.api
        return f"{self.message}; {fix}" if fix else self.message

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.api, self.cli))


def _rebuild(cls, message, api, cli):
    return cls(message, api=api, cli=cli)


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


class UnusableWarpWarning(UserWarning):
    """A warp has no usable pixel (all NaN or all under bad mask planes)."""


class UnnamedMaskBitsWarning(UserWarning):
    """A warp's mask has bits set that no ``MP_`` card names; they are kept
    as planes named ``UNNAMED_<bit>``."""


class VarianceWarning(UserWarning):
    """A warp has pixels of zero or negative variance; they are treated as bad."""


class NothingMatchedWarning(UserWarning):
    """A run in which no visit is matched to the reference (one visit, or
    every other visit skipped or empty)."""
