"""Reading the files a user names without hanging or exhausting memory.

* :func:`open_regular`: only regular files (after symlinks) are opened.
  FIFOs, devices, sockets and directories are refused by ``stat`` before
  anything is read, and once more on the open descriptor, which is opened
  with ``O_NONBLOCK`` so that a FIFO swapped in between cannot block the
  ``open`` itself (a FIFO in a manifest once blocked a run forever; reading
  ``/dev/zero`` grew without end).
* :func:`read_text`: a small text file (a configuration, a skymap, a
  manifest), at most ``limit`` bytes, a UTF-8 byte-order mark dropped.
* :func:`load_yaml`: YAML without aliases (``*name``). A 449-byte "billion
  laughs" of nested aliases expands to gigabytes; bgdask's YAML files never
  need an alias, so any alias is refused while the document is composed,
  before anything is built.
"""

from __future__ import annotations

import os
import stat
from typing import Any, BinaryIO

from .errors import InputError

__all__ = ["open_regular", "check_regular", "read_text", "load_yaml", "TEXT_LIMIT"]

#: The largest configuration, skymap or manifest file read (bytes).
TEXT_LIMIT = 64 * 2**20

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_regular(path, mode: int, error=InputError) -> None:
    """Raise ``error`` naming ``path`` unless ``mode`` (from ``stat``) is a regular file's."""
    if not stat.S_ISREG(mode):
        raise error(f"{path}: not a regular file but {_kind(mode)}; bgdask reads only regular files")


def open_regular(path, error=InputError) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file; else ``error``."""
    path = os.fspath(path)
    try:
        check_regular(path, os.stat(path).st_mode, error)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        check_regular(path, os.fstat(fd).st_mode, error)  # the file may have changed since stat
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text(path, what: str, error=InputError, limit: int = TEXT_LIMIT) -> str:
    """The text of the regular file ``path`` (UTF-8, a byte-order mark
    dropped), refused beyond ``limit`` bytes; ``what`` names the file's role."""
    with open_regular(path, error) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path}: larger than {limit} bytes: not a {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file (a {what} is text)") from None


def _loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """yaml.SafeLoader that refuses aliases (``*name``) as it meets them."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"an alias (*{event.anchor}): bgdask's YAML files take no aliases",
                    event.start_mark)
            return super().compose_node(parent, index)

    return NoAliasLoader


_LOADER = None


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` without aliases; raises ``yaml.YAMLError`` (also
    for nesting too deep to compose)."""
    import yaml

    global _LOADER
    if _LOADER is None:
        _LOADER = _loader()
    try:
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
