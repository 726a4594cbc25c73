"""Errors that bgdask reports to its users, and the command's exit statuses.

Every error a user can cause (a bad file, a bad configuration, a tract that
cannot be matched) is a :class:`BgdaskError`. The command line prints its
message, one line naming the file, warp or field at fault, and exits with
status 2; anything else is a bug and keeps its traceback.

The exit statuses of ``bgdask`` (documented in the README, "Failures and
resuming"), in one place:
"""

#: The command did what was asked.
EXIT_OK = 0
#: ``bgdask inspect``: the store is incomplete, or (``--verify``) damaged.
EXIT_INCOMPLETE = 1
#: Bad input, bad usage, or a run that failed with a :class:`BgdaskError`
#: (argparse's own usage errors exit 2 as well).
EXIT_ERROR = 2
#: Interrupted (SIGINT, Ctrl-C): 128 + SIGINT, the shell's convention.
EXIT_INTERRUPTED = 130
#: ``bgdask inspect --strict``: the store is complete and a visit is flagged
#: (its match_ratio above max_match_ratio).
EXIT_FLAGGED = 3

#: Each status and what it means, for ``--help`` and the README.
EXIT_STATUSES = {
    EXIT_OK: "success",
    EXIT_INCOMPLETE: "inspect: the store is incomplete or damaged",
    EXIT_ERROR: "bad input, bad usage, or a failed run (one line `bgdask: error: ...`)",
    EXIT_FLAGGED: "inspect --strict: the store is complete and a visit is flagged",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGINT); finish the run with --resume",
}


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


class StoreLockedError(StoreError):
    """Another run holds the output store's lock."""


class DamagedStoreError(StoreError):
    """A store's metadata or data do not read back as written."""


class UnusableWarpWarning(UserWarning):
    """A warp has no usable pixel (all NaN or all under bad mask planes)."""


class UnnamedMaskBitsWarning(UserWarning):
    """A warp's mask has bits set that no ``MP_`` card names; they are kept
    as planes named ``UNNAMED_<bit>``."""


class VarianceWarning(UserWarning):
    """A warp has pixels of zero or negative variance; they are treated as bad."""


class StaleLockWarning(UserWarning):
    """A run's lock was left by a process that is gone; it was taken over."""


class NothingMatchedWarning(UserWarning):
    """A run in which no visit is matched to the reference (one visit, or
    every other visit skipped or empty)."""
