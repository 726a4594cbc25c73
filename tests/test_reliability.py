"""Reliability: lost workers, interrupted runs, read-only inputs, full disks.

Whatever happens to a run (a worker killed, the command killed or
interrupted, the disk full), the store never passes for a finished one, and
``--resume`` (``resume=True``) finishes it bitwise equal to an undisturbed
run. Inputs are never written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr
from distributed import Client, LocalCluster

import bgdask
from bgdask import cli
from bgdask.errors import BgdaskError, InputError
from bgdask import match_backgrounds, testing
from bgdask.simulate import write_tract

from _terminal import terminal_env

#: Rows per stage-C block in the lost-worker and disk tests (3 blocks a warp).
ROWS = 100
#: Rows per stage-C block of the interrupted command (9 blocks a warp: a slow stage C).
CLI_ROWS = 32
PIXEL_ARRAYS = ("image", "mask", "variance")


# -- comparing stores ---------------------------------------------------------------------

def assert_stores_equal(got, want) -> None:
    """Bitwise equal to the undisturbed run, and complete."""
    testing.assert_stores_equal(got, want)
    assert zarr.open_group(str(got), mode="r").attrs["complete"] is True


def store_state(path) -> tuple[int, int, bool]:
    """(warps done, warps present, complete) of a store."""
    group = zarr.open_group(str(path), mode="r")
    present, done = group["present"][:], group["done"][:]
    return int((done & present).sum()), int(present.sum()), group.attrs.get("complete") is True


@pytest.fixture(scope="module")
def reference_store(small_tract, tmp_path_factory):
    """The undisturbed run (sync scheduler) for a number of rows per block."""
    made: dict[int, Path] = {}

    def get(chunk_rows: int) -> Path:
        if chunk_rows not in made:
            out = tmp_path_factory.mktemp(f"undisturbed{chunk_rows}") / "out.zarr"
            match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync", chunk_rows=chunk_rows)
            made[chunk_rows] = out
        return made[chunk_rows]

    return get


@pytest.fixture(scope="module")
def inproc_scheduler():
    """A scheduler with one worker thread in this process, for `bgdask match
    --scheduler`: monkeypatches made here reach its tasks."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


def run_cli(capsys, *argv) -> tuple[int | None, str, str, BaseException | None]:
    """``bgdask ARGV`` in this process: (status, stdout, stderr, exception that escaped)."""
    capsys.readouterr()
    rc, escaped = None, None
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        escaped = exc
    out, err = capsys.readouterr()
    return rc, out, err, escaped


def assert_clean_cli_failure(rc, out, err, escaped, names=()) -> str:
    assert escaped is None, (
        f"the command raised {type(escaped).__name__}: {escaped} (the user sees a traceback) "
        "instead of printing one 'bgdask: error:' message and exiting non-zero")
    assert rc not in (0, None), f"exit status {rc}\n{out}\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("bgdask: error:")]
    assert len(lines) == 1, f"expected one error line in {err!r}"
    for name in names:
        assert str(name) in lines[0], f"{name!r} not in {lines[0]!r}"
    return lines[0]


# -- 1. a worker lost in stage B or C ----------------------------------------------------------

def _install_kill_point(stage: str, marker: str, nth: int) -> int:
    """Runs in each worker process. The ``nth`` call there of stage B's
    difference statistics (stage C's row writer, after its rows landed)
    writes this process's pid to ``marker`` (first process only) and waits
    to be killed."""
    from bgdask import background
    from bgdask.io.store import Store

    module, name = (background, "difference_stats") if stage == "B" else (Store, "write_rows")
    original = getattr(module, name)
    calls = itertools.count(1)

    def hooked(*args, **kwargs):
        result = original(*args, **kwargs)
        if next(calls) == nth:
            try:  # the lock file stays: only the first process gets here
                os.close(os.open(marker + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return result
            with open(marker + ".tmp", "w") as fh:
                fh.write(str(os.getpid()))
            os.rename(marker + ".tmp", marker)
            time.sleep(120)
        return result

    hooked.__wrapped__ = original
    setattr(module, name, hooked)
    return os.getpid()


def _remove_kill_points() -> None:
    """Runs in each worker process: undo _install_kill_point."""
    from bgdask import background
    from bgdask.io.store import Store

    for module, name in ((background, "difference_stats"), (Store, "write_rows")):
        fn = getattr(module, name)
        while hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        setattr(module, name, fn)


def _kill_when_announced(marker: Path, workers: set[int], box: dict, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists():
            pid = int(marker.read_text())
            if pid in workers:  # only ever a worker of this test's cluster
                os.kill(pid, signal.SIGKILL)
                box["killed"] = pid
            else:
                box["error"] = f"pid {pid} is not one of the workers {workers}"
            return
        time.sleep(0.01)
    box["error"] = "the kill point was never reached"


@pytest.fixture(scope="module")
def two_workers():
    """A LocalCluster of two worker processes and its client. Functions of
    this module reach the workers by value (the workers need not import it)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster) as client:
        try:
            yield client
        finally:
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
@pytest.mark.parametrize("stage, nth", [("B", 1), ("C", 3)])
def test_lost_worker(stage, nth, small_tract, reference_store, two_workers, tmp_path):
    """SIGKILL one of two workers in the middle of a stage-B (stage-C) task:
    Dask recomputes, the nanny restarts the worker, the store is the same."""
    want = reference_store(ROWS)
    client = two_workers
    client.wait_for_workers(2, timeout=240)  # a restart takes long on a loaded machine
    out, marker = tmp_path / "out.zarr", tmp_path / "kill-me"
    workers = set(client.run(os.getpid).values())
    assert len(workers) == 2
    client.run(_install_kill_point, stage, str(marker), nth)
    try:
        box: dict = {}
        killer = threading.Thread(target=_kill_when_announced, args=(marker, workers, box), daemon=True)
        killer.start()
        result = match_backgrounds(small_tract / "manifest.csv", out, client=client, chunk_rows=ROWS)
        killer.join(10)
        assert "error" not in box, box.get("error")
        assert box.get("killed") in workers
        client.wait_for_workers(2, timeout=240)  # LocalCluster restarted the lost one
        now = set(client.run(os.getpid).values())
        assert box["killed"] not in now and len(now) == 2
    finally:
        client.run(_remove_kill_points)
    assert result.reference_visit == zarr.open_group(str(want), mode="r").attrs["reference_visit"]
    assert_stores_equal(out, want)


# -- 2. the command killed, or interrupted, in stage C ------------------------------------------

def _wait_until_partly_done(out: Path, proc: subprocess.Popen, errfile: Path,
                            timeout: float = 240) -> tuple[int, int]:
    """Poll the store until some, but not nearly all, warps are done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before it could be interrupted:\n"
                        f"{errfile.read_text()}")
        try:
            done, total, _ = store_state(out) if (out / "zarr.json").exists() else (0, 0, False)
        except Exception:  # noqa: BLE001 - the store is being written: look again
            done, total = 0, 0
        if total and 2 <= done <= total - 3:
            return done, total
        time.sleep(0.02)
    pytest.fail("stage C never got under way")


def _alive(procs) -> list[psutil.Process]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


# Run by every Python process the command starts (tests/_terminal.py): each
# warp's stage C lingers after its done flag, so that a poll of the store
# sees the run part-way through stage C however fast the machine is.
SLOW_WARPS = """
import os
import time

import bgdask.io.store as _store

_finish = _store.Store.finish_warp


def finish_warp(self, *args, **kwargs):
    _finish(self, *args, **kwargs)
    time.sleep(float(os.environ["BGDASK_TEST_WARP_PAUSE"]))


_store.Store.finish_warp = finish_warp
"""


def _slow_warps_env(directory: Path, pause: float = 0.3) -> dict:
    """The environment of a command started as from a terminal whose warps
    each take ``pause`` seconds more in stage C."""
    return {**terminal_env(directory, SLOW_WARPS), "BGDASK_TEST_WARP_PAUSE": str(pause)}


@pytest.mark.slow
@pytest.mark.parametrize("sig, group", [(signal.SIGKILL, False), (signal.SIGINT, False), (signal.SIGINT, True)],
                         ids=["SIGKILL", "SIGINT", "ctrl-c"])
def test_interrupted_command_resumes(sig, group, small_tract, reference_store, inproc_scheduler, tmp_path,
                                     capsys):
    """Kill the command (SIGKILL), or interrupt it (SIGINT to the command; to
    its whole process group as Ctrl-C in a terminal does) in stage C: the
    store says it is incomplete, and --resume finishes it. A killed command's
    workers live on to finish the task they run, which may hold the last
    warps: then every warp is done, and the store is still not complete."""
    want = reference_store(CLI_ROWS)
    manifest, out = small_tract / "manifest.csv", tmp_path / "out.zarr"
    args = ["match", str(manifest), "-o", str(out), "--no-progress", "--chunk-rows", str(CLI_ROWS)]
    outfile, errfile = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(outfile, "w") as fo, open(errfile, "w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bgdask.cli", *args, "--workers", "1", "--threads-per-worker", "1"],
            stdout=fo, stderr=fe, cwd=tmp_path, start_new_session=True, env=_slow_warps_env(tmp_path / "slow"))
    kids: list[psutil.Process] = []
    try:
        _wait_until_partly_done(out, proc, errfile)
        kids = psutil.Process(proc.pid).children(recursive=True)
        t0 = time.monotonic()
        if group:
            os.killpg(proc.pid, sig)  # the command's own new session
        else:
            os.kill(proc.pid, sig)
        try:
            status = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the command did not exit within 60 s of {sig.name}")
        elapsed = time.monotonic() - t0
        stderr = errfile.read_text()
        if sig == signal.SIGINT:
            assert status != 0, stderr
            assert elapsed < 30, f"{elapsed:.1f} s to exit after SIGINT"
            assert "--resume" in stderr, f"no word on how to resume:\n{stderr}"
            psutil.wait_procs(kids, timeout=20)
            left = _alive(kids)
            assert not left, f"processes left behind after SIGINT: {[(p.pid, p.cmdline()) for p in left]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in _alive(kids):  # the command's own workers: end them by pid
            p.kill()

    # the interrupted store says so
    n_done, n_present, complete = store_state(out)
    assert not complete and n_done <= n_present, (n_done, n_present, complete)
    if sig == signal.SIGINT:   # the command cancelled its tasks
        assert n_done < n_present, (n_done, n_present)
    rc, o, e, escaped = run_cli(capsys, "inspect", out)
    assert escaped is None and rc not in (0, None), f"inspect of an incomplete store exited {rc}"
    assert "incomplete" in (o + e).lower() or "complete: no" in (o + e).lower(), o + e
    with refuses_or_warns(InputError):
        bgdask.open_warps(out)

    # --resume finishes it, the same as an undisturbed run
    rc, o, e, escaped = run_cli(capsys, *args, "--resume", "--scheduler", inproc_scheduler)
    assert escaped is None and rc == 0, f"resume failed ({rc}, {escaped!r}):\n{e}"
    assert_stores_equal(out, want)
    if sig == signal.SIGINT:  # last, so that the checks above run whatever this says
        assert "Traceback" not in stderr, f"an interrupted run printed a traceback:\n{stderr}"


@contextlib.contextmanager
def refuses_or_warns(error, words=("incomplete", "not done", "resume")):
    """Passes when the block raises ``error`` or warns with one of ``words``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except error:
            return
    said = [str(w.message) for w in caught]
    assert any(word in m.lower() for m in said for word in words), (
        f"neither {error.__name__} nor a warning that the store is incomplete (warnings: {said})")


# -- 3. inputs are read-only ---------------------------------------------------------------------

def _snapshot(root: Path) -> dict[str, tuple]:
    snap = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if p.is_file():
            snap[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            snap[rel] = ("dir", st.st_mtime_ns)
    return snap


def _assert_unchanged(before, after, what):
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"{what}: added {added}, removed {removed}, changed {changed}"


@pytest.mark.slow
def test_inputs_are_read_only(small_sim, two_workers, tmp_path):
    src = write_tract(small_sim, tmp_path / "in")
    outputs = tmp_path / "out"
    outputs.mkdir()
    before = _snapshot(src)
    time.sleep(0.01)  # mtimes would show a rewrite

    match_backgrounds(src / "manifest.csv", outputs / "sync.zarr", scheduler="sync",
                      skymap=src / "skymap.yaml")
    _assert_unchanged(before, _snapshot(src), "sync run")

    match_backgrounds(src / "warps", outputs / "cluster.zarr", client=two_workers)
    _assert_unchanged(before, _snapshot(src), "LocalCluster run")

    # a Zarr store as input is not written either
    store_before = _snapshot(outputs / "sync.zarr")
    match_backgrounds(outputs / "sync.zarr", outputs / "again.zarr", scheduler="sync")
    _assert_unchanged(store_before, _snapshot(outputs / "sync.zarr"), "run from a Zarr store")


# -- 4. unwritable output, full disk -----------------------------------------------------------

def test_output_under_a_regular_file(small_tract, reference_store, inproc_scheduler, tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be\n")
    out = blocker / "out.zarr"
    manifest = small_tract / "manifest.csv"
    with pytest.raises(BgdaskError, match="not-a-dir"):
        match_backgrounds(manifest, out, scheduler="sync", chunk_rows=ROWS)
    rc, o, e, escaped = run_cli(capsys, "match", manifest, "-o", out, "--scheduler", inproc_scheduler,
                                "--no-progress", "--chunk-rows", ROWS)
    assert_clean_cli_failure(rc, o, e, escaped, ["not-a-dir"])
    assert blocker.read_text().startswith("a file"), "the file in the way was touched"

    blocker.unlink()  # the fault removed
    blocker.mkdir()
    match_backgrounds(manifest, out, scheduler="sync", chunk_rows=ROWS, resume=True)
    assert_stores_equal(out, reference_store(ROWS))


def _pixel_chunk(parts) -> bool:
    return any(parts[i] in PIXEL_ARRAYS and parts[i + 1] == "c" for i in range(len(parts) - 1))


def _metadata(parts) -> bool:
    return parts[-1] == "zarr.json"


class DiskFull:
    """zarr's local writes of the files ``kind`` selects (pixel chunks, or
    metadata) fail with ENOSPC after ``after`` of them succeeded."""

    def __init__(self, monkeypatch, after: int, kind=_pixel_chunk):
        import zarr.storage._local as local

        self.original = local._put
        self.after = after
        self.kind = kind
        self.count = 0
        self.failed = 0
        self.on = True
        self.lock = threading.Lock()
        monkeypatch.setattr(local, "_put", self)

    def __call__(self, path, value, exclusive: bool = False):
        if self.on and self.kind(Path(path).parts):
            with self.lock:
                self.count += 1
                fail = self.count > self.after
                self.failed += fail
            if fail:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return self.original(path, value, exclusive=exclusive)


def test_disk_full_is_a_clear_error(small_tract, monkeypatch, tmp_path):
    out = tmp_path / "out.zarr"
    fault = DiskFull(monkeypatch, after=20)
    try:
        match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync", chunk_rows=ROWS)
    except BgdaskError as exc:
        msg = str(exc)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"a full disk raised {type(exc).__module__}.{type(exc).__name__}: {exc} "
                    "(a traceback for the user) instead of a BgdaskError naming the store")
    else:
        pytest.fail("a full disk went unnoticed")
    assert fault.failed
    assert "out.zarr" in msg and ("space" in msg.lower() or "ENOSPC" in msg), msg
    assert not store_state(out)[2]


def test_disk_full_leaves_a_resumable_store(small_tract, reference_store, monkeypatch, tmp_path):
    out = tmp_path / "out.zarr"
    manifest = small_tract / "manifest.csv"
    fault = DiskFull(monkeypatch, after=20)
    with pytest.raises(Exception):  # noqa: B017 - which one: test_disk_full_is_a_clear_error
        match_backgrounds(manifest, out, scheduler="sync", chunk_rows=ROWS)
    assert fault.failed
    done, present, complete = store_state(out)
    assert not complete and done < present
    fault.on = False  # space freed
    result = match_backgrounds(manifest, out, scheduler="sync", chunk_rows=ROWS, resume=True)
    assert result.store == str(out.resolve())
    assert_stores_equal(out, reference_store(ROWS))


@pytest.mark.slow
@pytest.mark.parametrize("after", [0, 4, 20], ids=["first-file", "fifth-file", "21st-file"])
def test_disk_full_while_creating_the_store(small_tract, reference_store, monkeypatch, tmp_path, after):
    """The disk fills up while the store's metadata is being written: a clear
    error, and --resume (resume=True) still finishes the run."""
    out = tmp_path / "out.zarr"
    manifest = small_tract / "manifest.csv"
    fault = DiskFull(monkeypatch, after=after, kind=_metadata)
    with pytest.raises(BgdaskError):
        match_backgrounds(manifest, out, scheduler="sync", chunk_rows=ROWS)
    assert fault.failed
    fault.on = False  # space freed
    try:
        match_backgrounds(manifest, out, scheduler="sync", chunk_rows=ROWS, resume=True)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"--resume after a full disk during store creation raised {type(exc).__name__}: {exc}")
    assert_stores_equal(out, reference_store(ROWS))


@pytest.mark.slow
def test_disk_full_through_the_command(small_tract, reference_store, inproc_scheduler, monkeypatch,
                                       tmp_path, capsys):
    out = tmp_path / "out.zarr"
    argv = ["match", small_tract / "manifest.csv", "-o", out, "--scheduler", inproc_scheduler,
            "--no-progress", "--chunk-rows", ROWS]
    fault = DiskFull(monkeypatch, after=20)
    failed = run_cli(capsys, *argv)
    assert fault.failed
    assert not store_state(out)[2]
    fault.on = False
    rc, _, e, escaped = run_cli(capsys, *argv, "--resume")
    assert escaped is None and rc == 0, (rc, escaped, e)
    assert_stores_equal(out, reference_store(ROWS))
    assert_clean_cli_failure(*failed, [out.name])


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 1 MiB tmpfs (root only); yields (mount point, grow) where grow()
    makes it large."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)

    try:
        yield mnt, grow
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


@pytest.mark.slow
def test_real_full_filesystem(small_tract, reference_store, inproc_scheduler, tiny_filesystem, capsys):
    mnt, grow = tiny_filesystem
    out = mnt / "out.zarr"
    argv = ["match", small_tract / "manifest.csv", "-o", out, "--scheduler", inproc_scheduler,
            "--no-progress", "--chunk-rows", ROWS]
    failed = run_cli(capsys, *argv)
    assert out.exists(), f"the store was not even created: {failed}"
    done, present, complete = store_state(out)
    assert not complete and done < present, (done, present, complete)
    grow()
    rc, _, e, escaped = run_cli(capsys, *argv, "--resume")
    assert escaped is None and rc == 0, (rc, escaped, e)
    assert_stores_equal(out, reference_store(ROWS))
    assert_clean_cli_failure(*failed, [out.name])
