"""The output store: Zarr v3, readable by ``xarray.open_zarr``.

:class:`Store` is the one place that knows the layout: it creates a store,
opens and decodes it (attributes, index arrays, table, models, flags), and
writes into it. The pipeline, ``bgdask inspect`` and ``export``, the report
and the catalog (a store as an input) all go through it.

Layout
------
* ``image``, ``mask``, ``variance`` (visit, patch, y, x): matched warps,
  padded to the largest warp (NaN, mask 0); chunks of ``chunk_rows`` rows of
  one warp; absent warps have no chunk on disk. ``mask`` is in one bit layout
  for all warps, named in the attribute ``mask_planes``.
* ``offset_coarse`` (visit, patch, cy, cx): each warp's coarse offset grid,
  its first cell at ``coarse_x0``, ``coarse_y0`` (patch).
* ``diff_model`` (visit, sy, sx): each visit's superpixel difference model.
* ``present``, ``done``, ``usable`` (visit, patch): which warps exist, which
  have been written completely, which had a usable pixel.
* ``x0``, ``y0``, ``width``, ``height`` (patch): the patches' outer boxes.
* the per-visit table (visit): the columns of :data:`bgdask.table.COLUMNS`
  (the quality columns, :data:`bgdask.table.QUALITY_COLUMNS`, written after stage C).
* ``seam`` (seam, sy, sx): per superpixel, the spread (RMS about the mean)
  of the visits' levels, before and after matching
  (:data:`bgdask.table.SEAM_PLANES`; :mod:`bgdask.quality`).
* attributes: ``reference_visit``, ``config``, ``skymap``, ``mask_planes``
  (JSON), ``fingerprint``, ``source``, ``models_done``, ``models_checksum``,
  ``complete``, ``stage_times`` (JSON), ``bgdask_version``.
* the global method only: the per-pair table (pair): arrays ``pair_<column>``
  of :data:`bgdask.table.PAIR_COLUMNS`, and the attribute ``global_solve``
  (JSON: the solve's size, solver and residual).

* ``checksum`` (visit, patch): uint64, each done warp's checksum (below).

The metadata is written once from a template built beside the target and
renamed into place; afterwards every writer covers whole chunks (one row
block of one warp, or one warp's flag), so concurrent writes from many
workers never share a chunk. ``done`` is set for a warp only after its rows,
coarse grid and checksum have landed, and ``complete`` only when every
present warp is done.

Checksums
---------
Every stage-C task computes the CRC-32 of each block it writes (image, mask,
variance, as decoded: the padded rows handed to zarr, an all-NaN block as the
fill value zarr then returns); the task that marks the warp done adds its
coarse grid's and writes one 64-bit checksum of them all (BLAKE2b of the
CRCs in row and plane order) before the ``done`` flag. :meth:`Store.verify`
reads every chunk of every done warp back and recomputes it: a chunk
deleted (read back as fill), truncated or with a flipped bit (a decoding
error, or other values) is found and the warp named. The per-visit arrays
(models, table, flags, boxes) are covered by the attribute
``models_checksum``. Checksumming decoded values rather than the files'
bytes keeps them independent of the codec, and equal between a resumed and
an uninterrupted run.

One writer per store
--------------------
:meth:`Store.lock` takes an exclusive lock for a run: ``fcntl.flock`` on
the file ``.NAME.lock`` beside the store (the store itself is replaced by
``--overwrite``), holding the holder's host, pid and start time. A second
run finds it held and stops at once, naming the holder. The kernel releases
a ``flock`` when its process dies however it dies, so a lock left by a
killed run is free: the next run takes it over with a warning naming the
run that left it. On one machine this is exact. Across machines it is as
good as the filesystem's locks: NFS (Linux clients since 2.6.12) turns
``flock`` into byte-range locks that the server arbitrates between clients,
unless mounted ``nolock`` or ``local_lock=flock``/``all`` (then each client
sees only its own locks); Lustre shares them only when mounted with
``-o flock`` (``localflock`` keeps them per node; without either, ``flock``
fails and the run stops with a clear error). ``O_EXCL`` file creation and
``mkdir`` are atomic on NFSv3+ and Lustre, but a holder that dies leaves
them behind and another host cannot tell whether it is alive, which is why
bgdask relies on ``flock``. ``dask.config`` key ``bgdask.store-lock: false``
runs without the lock where a filesystem has none.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
import struct
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import DamagedStoreError, StaleLockWarning, StoreError, StoreLockedError
from ..geometry import Box, SkyMap, coarse_cells, coarse_shape, superpixel_shape
from ..table import (COLUMNS, PAIR_COLUMNS, QUALITY_COLUMNS, SEAM_PLANES, pair_table_from_arrays,
                     pair_table_to_arrays, table_from_arrays, table_to_arrays)
from .warp import PLANE_DTYPES, PLANE_FILL, PLANES, grid_coords

__all__ = ["Store", "StoreWarp", "StoreLock", "fingerprint", "is_store", "check_replaceable", "write_error"]

#: Arrays every bgdask store has.
REQUIRED = (*PLANES, "present", "done", "visit", "patch", "x0", "y0", "width", "height")
#: Attributes holding JSON text.
JSON_ATTRS = ("config", "skymap", "mask_planes", "stage_times", "global_solve")
#: Arrays written per warp by stage C (their chunks are what ``checksum`` covers).
WARP_ARRAYS = (*PLANES, "offset_coarse", "done", "checksum")
#: The one message a zarr warning about consolidated metadata deserves: none
#: (it is a zarr-python extension of Zarr v3 that xarray reads).
_CONSOLIDATED_WARNING = "Consolidated metadata is currently not part"


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding Zarr metadata."""
    path = Path(path)
    return path.is_dir() and ((path / "zarr.json").exists() or (path / ".zgroup").exists())


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is a Zarr store or an empty directory (safe to replace)."""
    path = Path(path)
    if not (is_store(path) or (path.is_dir() and not any(path.iterdir()))):
        raise StoreError(f"{path}: exists and is not a Zarr store; refusing to overwrite it")


def fingerprint(items: Iterable[tuple[tuple[int, int], Any]], config_json: str, skymap_json: str,
                chunk_rows: int) -> str:
    """A hash of what defines a run: inputs ((visit, patch), source) with
    their files' size and mtime, the configuration and the geometry."""
    h = hashlib.sha256()
    h.update(config_json.encode())
    h.update(skymap_json.encode())
    h.update(str(chunk_rows).encode())
    for (visit, patch), source in items:
        path = getattr(source, "path", None)
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except (OSError, TypeError):
            stamp = "?"
        where = os.path.abspath(path) if path else "memory"
        h.update(f"{visit},{patch},{where},{stamp};".encode())
    return h.hexdigest()


def _zarr():
    import zarr

    return zarr


@functools.lru_cache(maxsize=256)
def _cached_array(where: str, mtime_ns: int, mode: str):
    """An array of a store, opened once per process (an LRU of open arrays,
    keyed by the metadata file's mtime so that a replaced store is reopened)."""
    return _zarr().open_array(where, mode=mode)


def _array(path: str, name: str, mode: str = "r+"):
    where = os.path.join(path, name)
    try:
        mtime = os.stat(os.path.join(where, "zarr.json")).st_mtime_ns
    except OSError as exc:
        raise DamagedStoreError(f"{path}: array {name!r} is missing ({exc.strerror})",
                                **_REPAIR) from None
    try:
        return _cached_array(where, mtime, mode)
    except Exception as exc:  # noqa: BLE001 - zarr raises many kinds on damaged metadata
        raise DamagedStoreError(f"{path}: the metadata of array {name!r} ({where}/zarr.json) is damaged "
                                f"({_brief(exc)})", **_REPAIR) from None


#: How to get past a store whose metadata is damaged.
_REPAIR = dict(api="the store cannot be repaired in place: pass overwrite=True to make it again",
               cli="the store cannot be repaired in place: run again with --overwrite")


def _brief(exc: BaseException) -> str:
    """An exception in one short line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def write_error(path, exc: OSError) -> StoreError:
    """The error a failed write into the store at ``path`` becomes (raised by
    the workers too: a bgdask error, so they log no traceback)."""
    return StoreError(f"{path}: cannot write the store ({exc}); the warps written so far are kept",
                      api="fix the cause and run again with resume=True",
                      cli="fix the cause and run again with --resume")


# -- checksums ----------------------------------------------------------------------

def block_crc(block: np.ndarray, fill) -> int:
    """CRC-32 of a block as the store returns it: zarr does not store a chunk
    that equals its fill value (NaN payloads included), and reads it back as
    the fill value."""
    block = np.ascontiguousarray(block)
    if block.size and isinstance(fill, float | np.floating) and np.isnan(fill) and np.isnan(block.flat[0]) \
            and np.isnan(block).all():
        block = np.full(block.shape, fill, dtype=block.dtype)
    return zlib.crc32(memoryview(block).cast("B"))


def combine_crcs(crcs: Iterable[int]) -> int:
    """One 64-bit checksum of a warp from its blocks' CRCs, in order."""
    data = b"".join(struct.pack("<I", int(c) & 0xFFFFFFFF) for c in crcs)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


# -- the lock ------------------------------------------------------------------------

@contextlib.contextmanager
def _sigint_deferred():
    """SIGINT blocked in the main thread for the block: a Ctrl-C then
    raises KeyboardInterrupt as the block ends, not half way through it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), to tell a
    live holder from a new process that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """An exclusive ``flock`` on ``lock_path``, held by this process for one
    run on ``store`` (see the module's docstring); :meth:`release` frees it."""

    def __init__(self, store: str, lock_path: str, fd: int, holder: dict):
        self.store, self.path, self._fd, self.holder = store, lock_path, fd, holder

    def __repr__(self) -> str:
        return f"StoreLock({self.store!r}, held={self._fd is not None})"

    @property
    def held(self) -> bool:
        return self._fd is not None

    @staticmethod
    def describe(holder: Mapping) -> str:
        host, pid, started = holder.get("host", "?"), holder.get("pid", "?"), holder.get("started", "?")
        return f"host {host}, pid {pid}, started {started}"

    @classmethod
    def acquire(cls, store: str | os.PathLike, lock_path: str | os.PathLike) -> "StoreLock":
        store, lock_path = str(store), str(lock_path)
        try:
            os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{store}: cannot create its directory ({exc})") from None
        for _ in range(20):
            lock = None
            try:
                with _sigint_deferred():  # a Ctrl-C now would leave a lock file behind
                    lock = cls._attempt(store, lock_path)
            except BaseException:
                if lock is not None:  # Ctrl-C came while SIGINT was deferred
                    lock.release()
                raise
            if lock is not None:
                return lock
        raise StoreError(f"{store}: could not take the lock {lock_path}: it keeps changing hands")

    @classmethod
    def _attempt(cls, store: str, lock_path: str) -> "StoreLock | None":
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StoreError(f"{store}: cannot create the lock file {lock_path} ({exc})") from None
        try:
            lock = cls._take(store, lock_path, fd)
        except StoreError as exc:
            if getattr(exc, "remove_file", False):
                cls._drop(fd, lock_path)
            else:
                os.close(fd)  # another run's lock: leave it as it is
            raise
        except BaseException:
            cls._drop(fd, lock_path)  # never leave a file behind that names no live run
            raise
        if lock is None:
            os.close(fd)
        return lock

    @classmethod
    def _take(cls, store: str, lock_path: str, fd: int) -> "StoreLock | None":
        """Lock ``fd`` (the lock file opened; the caller closes it unless
        this returns the lock): the lock, None to try again (the file was
        replaced meanwhile), or StoreLockedError."""
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = cls._read(fd)
            raise StoreLockedError(
                f"{store}: another bgdask run is writing it ({cls.describe(holder)}; lock {lock_path})",
                api="wait for that run to end, or choose another output",
                cli="wait for that run to end, or choose another output path") from None
        except OSError as exc:
            raise StoreError(
                f"{store}: cannot lock {lock_path} ({exc.strerror or exc}): this filesystem offers no "
                "flock (Lustre without -o flock?)",
                api="set dask config bgdask.store-lock: false to run without the lock (then no two runs "
                    "may write this output at once)",
                cli="set DASK_BGDASK__STORE_LOCK=false to run without the lock (then no two runs may "
                    "write this output at once)") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if not same:  # the holder released it (and removed the file) meanwhile: again
            return None
        previous = cls._read(fd)
        if previous and cls._still_running(previous):
            raise StoreLockedError(
                f"{store}: its lock names a live process ({cls.describe(previous)}; lock {lock_path}) "
                "although its flock is free: this filesystem does not share locks",
                api="wait for that run to end, or choose another output",
                cli="wait for that run to end, or choose another output path")
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "process_start": _process_start(os.getpid()),
                  "command": " ".join(sys.argv)[:500]}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            error = write_error(store, exc)
            error.remove_file = True
            raise error from None
        if previous:
            warnings.warn(f"{store}: took over the lock left by a run that ended without releasing it "
                          f"({cls.describe(previous)})", StaleLockWarning, stacklevel=4)
        return cls(store, lock_path, fd, holder)

    @staticmethod
    def _drop(fd: int, lock_path: str) -> None:
        """After a failure while taking the lock: remove the file if this
        descriptor holds its flock, and close it (if still open)."""
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already, or free: then ours
            if os.path.samestat(os.fstat(fd), os.stat(lock_path)):
                os.unlink(lock_path)
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = os.pread(fd, 65536, 0)
            holder = json.loads(data.decode()) if data.strip() else {}
            return holder if isinstance(holder, dict) else {"raw": data[:100].decode(errors="replace")}
        except (OSError, ValueError):
            return {"raw": "unreadable"}

    @staticmethod
    def _still_running(holder: Mapping) -> bool:
        """The recorded holder runs on this host and is alive (the same process:
        the same start time), though its flock is free."""
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        pid = holder["pid"]
        if pid == os.getpid() or not _alive(pid):
            return False
        start = holder.get("process_start")
        return start is not None and start == _process_start(pid)

    def release(self) -> None:
        """Free the lock and remove its file (idempotent)."""
        import fcntl

        with _sigint_deferred():
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    os.unlink(self.path)  # before unlocking: a waiter then sees the file gone and retries
            except OSError:
                pass
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "StoreLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter exit anything may be gone
            pass


def _encode(v):
    return v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v)


@dataclass(frozen=True)
class StoreWarp:
    """A warp inside a store (a :class:`~bgdask.io.warp.WarpSource`): its
    planes are read from the store's arrays; its mask is in the store's layout."""

    path: str
    vi: int
    pi: int
    box: Box
    mask_planes: Mapping[str, int]

    def read(self, plane: str, rows: slice | None = None) -> np.ndarray:
        if plane not in PLANES:
            raise ValueError(f"plane must be one of {PLANES}, not {plane!r}")
        start, stop, _ = (rows or slice(None)).indices(self.box.height)
        arr = _array(self.path, plane, mode="r")
        try:
            return np.asarray(arr[self.vi, self.pi, start:stop, : self.box.width])
        except Exception as exc:  # noqa: BLE001 - a damaged chunk: the codecs raise anything
            raise DamagedStoreError(f"{self.path}: cannot read the {plane} of the warp at index "
                                    f"({self.vi}, {self.pi}) ({_brief(exc)})",
                                    api="check the store with Store.verify()",
                                    cli="check it with bgdask inspect --verify") from None


class Store:
    """A bgdask output store at ``path``.

    Construct with :meth:`open` (an existing store: its layout is checked) or
    :meth:`create`. An instance holds only its path, so it travels cheaply to
    the workers that write into it; what it reads is cached per instance.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    def __reduce__(self):
        return (Store, (self.path,))

    # -- one writer ------------------------------------------------------------
    @staticmethod
    def lock_path(path: str | os.PathLike) -> str:
        """The lock file of the store at ``path``: ``.NAME.lock`` beside it."""
        path = Path(path)
        return str(path.with_name(f".{path.name}.lock"))

    @classmethod
    def lock(cls, path: str | os.PathLike) -> StoreLock | None:
        """Take the exclusive lock of a run writing the store at ``path``
        (None when dask config ``bgdask.store-lock`` is false). Raises
        StoreLockedError naming the holder when another run has it."""
        from ..config import setting_flag

        if not setting_flag("store-lock", True):
            return None
        return StoreLock.acquire(path, cls.lock_path(path))

    # -- opening -------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> "Store":
        """Open a store, checking that it is one of bgdask's; any problem is
        a :class:`~bgdask.errors.StoreError` naming the store."""
        st = cls(path)
        if not Path(st.path).exists():
            raise StoreError(f"{st.path}: no such store")
        try:
            group = st.group
            names = set(group.array_keys())
        except Exception as exc:  # noqa: BLE001 - zarr raises many kinds on damaged metadata
            if is_store(st.path):
                raise DamagedStoreError(f"{st.path}: the store's metadata ({st.path}/zarr.json) is damaged "
                                        f"({_brief(exc)})", **_REPAIR) from None
            raise StoreError(f"{st.path}: not a readable bgdask store ({_brief(exc)})") from None
        missing = [n for n in REQUIRED if n not in names]
        if missing:
            raise StoreError(f"{st.path}: not a bgdask store (no {', '.join(missing)} array)")
        st.check_metadata(names)
        return st

    def check_metadata(self, names: Iterable[str] | None = None) -> None:
        """Open every array from its own metadata and compare its shape, type
        and chunks with the group's consolidated view (which readers such as
        xarray use): a damaged ``zarr.json`` is a DamagedStoreError naming it."""
        group = self.group
        for name in sorted(names if names is not None else group.array_keys()):
            own = _array(self.path, name, mode="r")
            try:
                seen = group[name]
                same = (own.shape, own.dtype, own.chunks) == (seen.shape, seen.dtype, seen.chunks)
            except Exception as exc:  # noqa: BLE001
                raise DamagedStoreError(f"{self.path}: the metadata of array {name!r} is damaged ({_brief(exc)})",
                                        **_REPAIR) from None
            if not same:
                raise DamagedStoreError(
                    f"{self.path}: the metadata of array {name!r} ({self.path}/{name}/zarr.json) disagrees with "
                    f"the store's consolidated metadata: shape {own.shape} vs {seen.shape}, chunks {own.chunks} "
                    f"vs {seen.chunks}", **_REPAIR)

    @cached_property
    def group(self):
        return _zarr().open_group(self.path, mode="r")

    # -- attributes ----------------------------------------------------------
    @cached_property
    def attrs(self) -> dict[str, Any]:
        """The store's attributes with the JSON ones decoded."""
        out = dict(self.group.attrs)
        for key in JSON_ATTRS:
            if isinstance(out.get(key), str):
                try:
                    out[key] = json.loads(out[key])
                except json.JSONDecodeError:
                    raise StoreError(f"{self.path}: attribute {key!r} is not valid JSON") from None
        return out

    @property
    def config(self):
        from ..config import MatchConfig

        d = self.attrs.get("config")
        return None if d is None else MatchConfig.from_dict(d, source=f"{self.path} (config)")

    @property
    def skymap(self) -> SkyMap | None:
        d = self.attrs.get("skymap")
        return None if d is None else SkyMap.from_dict(d, source=f"{self.path} (skymap)")

    @property
    def mask_planes(self) -> dict[str, int]:
        return dict(self.attrs.get("mask_planes") or {})

    @property
    def reference_visit(self) -> int | None:
        ref = self.attrs.get("reference_visit")
        return None if ref is None else int(ref)

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete"))

    @property
    def models_done(self) -> bool:
        return bool(self.attrs.get("models_done"))

    @property
    def fingerprint(self) -> str | None:
        return self.attrs.get("fingerprint")

    @property
    def stage_times(self) -> dict[str, float]:
        return dict(self.attrs.get("stage_times") or {})

    # -- index arrays --------------------------------------------------------
    def _read(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self.group[name][...])
        except Exception as exc:  # noqa: BLE001
            raise DamagedStoreError(f"{self.path}: cannot read array {name!r} ({_brief(exc)})", **_REPAIR) from None

    @cached_property
    def visits(self) -> list[int]:
        return [int(v) for v in self._read("visit")]

    @cached_property
    def patches(self) -> list[int]:
        return [int(p) for p in self._read("patch")]

    @cached_property
    def present(self) -> np.ndarray:
        return self._read("present").astype(bool)

    def done(self) -> np.ndarray:
        """Which warps are written completely (read afresh at every call)."""
        return self._read("done").astype(bool)

    @cached_property
    def usable(self) -> np.ndarray:
        return self._read("usable").astype(bool) if "usable" in self.group else self.present

    @cached_property
    def boxes(self) -> dict[int, Box]:
        """Each patch's outer box."""
        cols = [self._read(n) for n in ("x0", "y0", "width", "height")]
        return {p: Box(*(int(c[i]) for c in cols)) for i, p in enumerate(self.patches)}

    @cached_property
    def chunk_rows(self) -> int:
        return int(self.group["image"].chunks[2])

    def keys(self) -> list[tuple[int, int]]:
        """(visit, patch) of every present warp, sorted."""
        return [(v, p) for i, v in enumerate(self.visits) for j, p in enumerate(self.patches)
                if self.present[i, j]]

    def index(self, visit: int, patch: int) -> tuple[int, int]:
        return self.visits.index(visit), self.patches.index(patch)

    def warp_source(self, visit: int, patch: int) -> StoreWarp:
        vi, pi = self.index(visit, patch)
        return StoreWarp(self.path, vi, pi, self.boxes[patch], self.mask_planes)

    # -- results ----------------------------------------------------------------
    def table(self):
        """The per-visit table (a pandas DataFrame indexed by visit)."""
        names = set(self.group.array_keys())
        return table_from_arrays(self.visits, {name: self._read(name) for name in COLUMNS if name in names})

    def seam(self) -> dict[str, np.ndarray] | None:
        """The seam map, plane name -> (sy, sx) array (None in a store without one)."""
        if "seam" not in set(self.group.array_keys()):
            return None
        return dict(zip(SEAM_PLANES, self._read("seam")))
    def pairs(self):
        """The global method's per-pair table (a pandas DataFrame), or None
        (the reference method)."""
        names = set(self.group.array_keys())
        wanted = [f"pair_{n}" for n in PAIR_COLUMNS]
        if not all(n in names for n in wanted):
            return None
        return pair_table_from_arrays({n: self._read(n) for n in wanted})

    @property
    def solve_info(self) -> dict | None:
        """The global method's solve figures (attribute ``global_solve``), or None."""
        info = self.attrs.get("global_solve")
        return dict(info) if info else None

    def models(self) -> dict:
        """Each visit's :class:`~bgdask.background.VisitModel` as stage B stored it."""
        from ..background import VisitModel

        diff = self._read("diff_model")
        table = self.table()
        return {v: VisitModel(v, diff[i], int(table.loc[v, "n_good"]), table.loc[v, "model_mean"],
                              table.loc[v, "model_rms"], table.loc[v, "fit_rms"], table.loc[v, "status"],
                              extrap_frac=table.loc[v, "extrap_frac"])
                for i, v in enumerate(self.visits)}

    def coarse(self, visit: int, patch: int) -> tuple[np.ndarray, int, int]:
        """A warp's stored coarse offset grid and its first cell (ky0, kx0)."""
        sm, cfg = self.skymap, self.config
        kx, ky = coarse_cells(self.boxes[patch], cfg.binning, coarse_shape(sm.width, sm.height, cfg.binning))
        vi, pi = self.index(visit, patch)
        grid = np.asarray(self.group["offset_coarse"][vi, pi])
        return grid[: ky[1] - ky[0], : kx[1] - kx[0]], ky[0], kx[0]

    def dataset(self):
        """The store as a lazy xarray Dataset, its JSON attributes decoded."""
        import xarray as xr

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
            ds = xr.open_zarr(self.path)
        ds.attrs.update({k: v for k, v in self.attrs.items() if k in JSON_ATTRS})
        return ds

    # -- creating -----------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, *, visits, patches, present: np.ndarray, skymap: SkyMap,
               config, chunk_rows: int, attrs: Mapping[str, object], overwrite: bool = False) -> "Store":
        """Write a store's metadata and index variables; no pixel yet.

        Built beside the target and renamed into place, so a failure (full
        disk, kill) never leaves a half-made store under ``path``."""
        import dask.array as da
        import xarray as xr
        from zarr.codecs import BloscCodec

        from .. import __version__

        path = Path(path)
        if path.exists():
            if not overwrite:
                raise StoreError(f"{path}: already exists")
            check_replaceable(path)
            shutil.rmtree(path)
        nv, npch = len(visits), len(patches)
        h, w = skymap.max_outer_shape
        sy, sx = superpixel_shape(skymap.width, skymap.height, config.x_bin, config.y_bin)
        cshape = coarse_shape(skymap.width, skymap.height, config.binning)
        boxes = [skymap.outer_box(p) for p in patches]
        cells = [coarse_cells(b, config.binning, cshape) for b in boxes]
        cy = max(ky[1] - ky[0] for _, ky in cells)
        cx = max(kx[1] - kx[0] for kx, _ in cells)
        rows = min(chunk_rows, h)

        def lazy(shape, chunks, dtype, fill):
            return da.full(shape, fill, chunks=chunks, dtype=dtype)

        pix = ("visit", "patch", "y", "x")
        data_vars = {name: (pix, lazy((nv, npch, h, w), (1, 1, rows, w), PLANE_DTYPES[name], PLANE_FILL[name]))
                     for name in PLANES}
        data_vars.update({
            "offset_coarse": (("visit", "patch", "cy", "cx"), lazy((nv, npch, cy, cx), (1, 1, cy, cx), np.float64, np.nan)),
            "diff_model": (("visit", "sy", "sx"), lazy((nv, sy, sx), (1, sy, sx), np.float64, np.nan)),
            "seam": (("seam", "sy", "sx"), lazy((len(SEAM_PLANES), sy, sx), (len(SEAM_PLANES), sy, sx), np.float64,
                                                np.nan)),
            "done": (("visit", "patch"), lazy((nv, npch), (1, 1), bool, False)),
            "checksum": (("visit", "patch"), lazy((nv, npch), (1, 1), np.uint64, 0)),
            "usable": (("visit", "patch"), lazy((nv, npch), (nv, npch), bool, False)),
            "present": (("visit", "patch"), np.asarray(present, dtype=bool)),
        })
        for name, (dtype, fill, _) in COLUMNS.items():
            data_vars[name] = (("visit",), lazy((nv,), (nv,), np.dtype(dtype), fill))
        coords = {
            **grid_coords(visits, patches, boxes),
            "coarse_x0": ("patch", np.array([kx[0] for kx, _ in cells], dtype=np.int64)),
            "coarse_y0": ("patch", np.array([ky[0] for _, ky in cells], dtype=np.int64)),
        }
        ds = xr.Dataset(data_vars, coords=coords)
        from ..table import STATUS_CODES

        ds["status"].attrs.update(flag_values=list(STATUS_CODES.values()), flag_meanings=" ".join(STATUS_CODES))
        ds["image"].attrs["units"] = "nJy"
        ds["seam"].attrs.update(units="nJy", planes=list(SEAM_PLANES))
        ds.attrs.update({k: _encode(v) for k, v in attrs.items()})
        ds.attrs.update(bgdask_version=__version__, models_done=False, complete=False)
        encoding = {name: {"chunks": ds[name].data.chunksize} for name in ds.data_vars
                    if isinstance(ds[name].data, da.Array)}
        for name in PLANES:
            # lz4 with byte shuffle: 3.6x faster to write than zarr's default
            # zstd for a slightly better ratio on warps (measured in round one)
            encoding[name]["compressors"] = [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
                ds.to_zarr(tmp, mode="w-", compute=False, zarr_format=3, consolidated=True, encoding=encoding)
            os.replace(tmp, path)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"{path}: cannot create the store ({exc})") from None
        return cls(path)

    # -- writing (the client) --------------------------------------------------------
    def _writable(self):
        try:
            return _zarr().open_group(self.path, mode="r+")
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{self.path}: cannot open the store for writing ({exc})") from None

    def _consolidate(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
            _zarr().consolidate_metadata(self.path)
        self.__dict__.pop("group", None)
        self.__dict__.pop("attrs", None)

    def set_attrs(self, **attrs) -> None:
        """Add attributes (and refresh the consolidated metadata)."""
        group = self._writable()
        group.attrs.update({k: _encode(v) for k, v in attrs.items()})
        self._consolidate()

    def write_models(self, models: Mapping, table, reference: int, usable: np.ndarray) -> None:
        """The per-visit models and table and the warps' usable flags (after stage B)."""
        group = self._writable()
        group["usable"][:] = usable
        diff = group["diff_model"]
        for vi, v in enumerate(self.visits):
            diff[vi] = models[v].model
        for name, values in table_to_arrays(table.loc[self.visits]).items():
            group[name][:] = values
        group.attrs.update(reference_visit=int(reference), models_done=True,
                           models_checksum=self.models_checksum())
        self._consolidate()

    def write_quality(self, table, seam: np.ndarray) -> None:
        """The quality measured in stage C: the table's quality columns and the seam map."""
        group = self._writable()
        for name, values in table_to_arrays(table.loc[self.visits]).items():
            if name in QUALITY_COLUMNS:
                group[name][:] = values
        group["seam"][:] = seam
        group.attrs.update(models_checksum=self.models_checksum())   # the table and seam as they are now
        self._consolidate()

    def write_pairs(self, table, solve_info: Mapping[str, Any]) -> None:
        """The global method's per-pair table (arrays along ``pair``) and its
        solve's figures (attribute ``global_solve``); before :meth:`write_models`."""
        group = self._writable()
        for name, values in pair_table_to_arrays(table).items():
            arr = group.create_array(name, shape=values.shape, dtype=values.dtype,
                                     chunks=(max(len(values), 1),), dimension_names=["pair"],
                                     fill_value=0, overwrite=True)
            if len(values):
                arr[:] = values
        group.attrs.update(global_solve=_encode(dict(solve_info)))
        self._consolidate()

    # -- checksums and verification -------------------------------------------------------
    def models_checksum(self) -> str:
        """A digest of every array that is not per warp: the models, the
        table, the flags ``present`` and ``usable``, the boxes and indexes."""
        h = hashlib.sha256()
        for name in sorted(set(self.group.array_keys()) - set(WARP_ARRAYS)):
            a = np.ascontiguousarray(self._read(name))
            h.update(f"{name}:{a.dtype.str}{a.shape};".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def check_models(self) -> None:
        """Raise a DamagedStoreError unless the per-visit arrays read back as written."""
        want = self.attrs.get("models_checksum")
        if not self.models_done:
            return
        if want is None:
            raise DamagedStoreError(f"{self.path}: the store records no checksums (made by bgdask "
                                    f"{self.attrs.get('bgdask_version', '?')} before they existed)", **_REPAIR)
        if self.models_checksum() != want:
            raise DamagedStoreError(f"{self.path}: the models, table or flags do not read back as written "
                                    "(models_checksum differs)", **_REPAIR)

    def has_checksums(self) -> bool:
        return "checksum" in set(self.group.array_keys())

    def _row_blocks(self, patch: int) -> list[tuple[int, int]]:
        """(start, rows) of each stage-C block of a warp of ``patch``."""
        height, rows = self.boxes[patch].height, self.chunk_rows
        return [(y, min(rows, height - y)) for y in range(0, height, rows)]

    def _planes_and_checksum(self, vi: int, pi: int) -> tuple[dict[str, np.ndarray], int]:
        """A warp's planes as stored (its box's rows, the store's width) and
        the checksum of what the store holds now, its blocks' CRCs computed
        as :meth:`write_rows` and :meth:`finish_warp` do (decoding errors propagate)."""
        patch = self.patches[pi]
        planes = {name: np.asarray(_array(self.path, name, mode="r")[vi, pi, : self.boxes[patch].height, :])
                  for name in PLANES}
        crcs = [block_crc(planes[name][start:start + n], PLANE_FILL[name])
                for start, n in self._row_blocks(patch) for name in PLANES]
        crcs.append(block_crc(np.asarray(_array(self.path, "offset_coarse", mode="r")[vi, pi]), np.float64(np.nan)))
        return planes, combine_crcs(crcs)

    def warp_checksum(self, vi: int, pi: int) -> int:
        """A warp's checksum computed from what the store holds now (reads
        every chunk of the warp; decoding errors propagate)."""
        return self._planes_and_checksum(vi, pi)[1]

    def verify_warp(self, vi: int, pi: int) -> str | None:
        """None if warp (vi, pi) reads back as written, else what is wrong."""
        try:
            want = int(np.asarray(_array(self.path, "checksum", mode="r")[vi, pi]))
            got = self.warp_checksum(vi, pi)
        except DamagedStoreError as exc:
            return exc.message
        except Exception as exc:  # noqa: BLE001 - a damaged chunk: the codecs raise anything
            return f"a chunk cannot be read ({_brief(exc)})"
        if got != want:
            return "its chunks do not match the checksum recorded when it was written (a chunk missing or changed)"
        return None

    def verify(self, keys: Iterable[tuple[int, int]] | None = None, threads: int = 4) -> dict[tuple[int, int], str]:
        """Check every done warp (or ``keys``): (visit, patch) -> what is
        wrong, for each damaged one. Raises DamagedStoreError when the
        store's metadata or per-visit arrays are damaged."""
        from concurrent.futures import ThreadPoolExecutor

        if not self.has_checksums():
            raise DamagedStoreError(f"{self.path}: the store records no checksums (made by bgdask "
                                    f"{self.attrs.get('bgdask_version', '?')} before they existed)", **_REPAIR)
        self.check_models()
        if keys is None:
            done = self.done() & self.present
            keys = [(v, p) for v, p in self.keys() if done[self.index(v, p)]]
        keys = list(keys)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            reasons = list(pool.map(lambda k: self.verify_warp(*self.index(*k)), keys))
        return {k: r for k, r in zip(keys, reasons) if r is not None}

    def read_verified(self, visit: int, patch: int) -> dict[str, np.ndarray]:
        """A done warp's planes (cropped to its box), checked against its
        checksum; a DamagedStoreError names the warp otherwise."""
        vi, pi = self.index(visit, patch)
        box = self.boxes[patch]
        where = f"{self.path}: warp (visit {visit}, patch {patch})"
        fix = dict(api="repair it with resume=True", cli="repair it with bgdask match INPUT -o STORE --resume")
        try:
            want = int(np.asarray(_array(self.path, "checksum", mode="r")[vi, pi]))
            planes, got = self._planes_and_checksum(vi, pi)
        except DamagedStoreError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DamagedStoreError(f"{where}: a chunk cannot be read ({_brief(exc)})", **fix) from None
        if got != want:
            raise DamagedStoreError(f"{where}: its chunks do not match their checksum (a chunk missing or "
                                    "changed)", **fix)
        return {name: a[:, : box.width] for name, a in planes.items()}

    def reset_warps(self, keys: Iterable[tuple[int, int]]) -> None:
        """Mark warps not done (to be written again), and the store incomplete."""
        done = _array(self.path, "done")
        for v, p in keys:
            done[self.index(v, p)] = False
        self.set_attrs(complete=False)

    def mark_complete(self, **extra_attrs) -> bool:
        """Set ``complete`` when every present warp is done; returns it."""
        complete = bool(np.all(self.done()[self.present]))
        self.set_attrs(complete=complete, **extra_attrs)
        return complete

    # -- writing (the workers) ---------------------------------------------------------
    def write_rows(self, vi: int, pi: int, start: int, image: np.ndarray, mask: np.ndarray,
                   variance: np.ndarray) -> tuple[int, int, int]:
        """Rows [start, start + len) of one warp: whole chunks, padded to the
        store's width. Returns the CRC-32 of each plane's block (for
        :meth:`finish_warp`). A failed write is a StoreError."""
        crcs = []
        try:
            for name, data in (("image", image), ("mask", mask), ("variance", variance)):
                arr = _array(self.path, name)
                width = arr.shape[-1]
                if data.shape[1] == width and data.dtype == arr.dtype:
                    block = data
                else:
                    block = np.full((data.shape[0], width), PLANE_FILL[name], dtype=arr.dtype)
                    block[:, : data.shape[1]] = data
                arr[vi, pi, start:start + data.shape[0], :] = block
                crcs.append(block_crc(block, PLANE_FILL[name]))
        except OSError as exc:
            raise write_error(self.path, exc) from None
        return tuple(crcs)

    def read_rows(self, vi: int, pi: int, plane: str, rows: slice, width: int) -> np.ndarray:
        """Rows ``rows`` of one warp's plane as written (``width`` columns, no padding)."""
        return np.asarray(_array(self.path, plane, mode="r")[vi, pi, rows, :width])

    def finish_warp(self, vi: int, pi: int, coarse: np.ndarray, crcs: Iterable[int] = ()) -> None:
        """Write a warp's coarse offsets and its checksum (``crcs``: its row
        blocks' CRCs in order, from :meth:`write_rows`), then mark it done."""
        try:
            arr = _array(self.path, "offset_coarse")
            block = np.full(arr.shape[2:], np.nan)
            block[: coarse.shape[0], : coarse.shape[1]] = coarse
            arr[vi, pi] = block
            checksum = combine_crcs([*crcs, block_crc(block, np.float64(np.nan))])
            _array(self.path, "checksum")[vi, pi] = np.uint64(checksum)
            _array(self.path, "done")[vi, pi] = True
        except OSError as exc:
            raise write_error(self.path, exc) from None
