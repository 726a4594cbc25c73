"""One writer per store, and a store that can prove it is whole (issue 19,
findings 2 and 4).

* A run holds an exclusive lock on its output from before it looks at what
  the output holds until the store is complete or the run fails: a second
  run (plain, --overwrite or --resume) stops at once, naming the holder; a
  lock left by a dead run is taken over with a warning. Two real commands
  started together on one output end with one complete store and one
  refusal, whichever flags they carry and whichever comes first.
* Every done warp carries a checksum: ``bgdask inspect --verify`` finds a
  deleted, a truncated and a bit-flipped chunk and names the warps;
  ``--resume`` writes them again, bitwise equal to a clean run; damaged
  metadata is one clear error, not a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import dask.config
import numpy as np
import pytest
import zarr
from distributed import LocalCluster

import bgdask
from bgdask import match_backgrounds, testing
from bgdask.config import MatchConfig, setting_flag
from bgdask.errors import ConfigError, DamagedStoreError, StaleLockWarning, StoreLockedError
from bgdask.io.store import Store
from bgdask.pipeline import prepare

ROWS = 100
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clean_store(small_tract, tmp_path_factory):
    """A clean run (sync scheduler, ROWS rows a chunk): the bitwise reference."""
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync", chunk_rows=ROWS)
    return out


def lock_file(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


# -- the lock, in one process --------------------------------------------------------------

def test_second_run_is_refused_at_once_naming_the_holder(small_tract, tmp_path):
    out = tmp_path / "out.zarr"
    first = prepare(small_tract / "manifest.csv", out)
    try:
        assert lock_file(out).exists()
        holder = json.loads(lock_file(out).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        for flags in ({}, {"overwrite": True}, {"resume": True}):
            t0 = time.perf_counter()
            with pytest.raises(StoreLockedError) as caught:
                prepare(small_tract / "manifest.csv", out, **flags)
            assert time.perf_counter() - t0 < 5
            msg = str(caught.value)
            assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and holder["started"] in msg, msg
            assert str(out) in msg
    finally:
        first.release()
    assert not lock_file(out).exists(), "the lock file outlived its run"
    prepare(small_tract / "manifest.csv", out).release()  # free again


def test_lock_is_released_when_the_run_fails(small_tract, tmp_path):
    out = tmp_path / "out.zarr"
    p = prepare(small_tract / "manifest.csv", out, MatchConfig(ref_visit=1000, on_no_overlap="raise"))
    p.config = MatchConfig(x_bin=1 << 20, y_bin=1 << 20, min_frac=1.0)  # no good superpixel: stage B fails
    with pytest.raises(bgdask.errors.BgdaskError):
        bgdask.pipeline.run(p, scheduler="sync")
    assert not lock_file(out).exists()
    prepare(small_tract / "manifest.csv", out, overwrite=True).release()


@pytest.mark.parametrize("setting", [False, "false", "False", "no", "0", "off"])
def test_the_lock_can_be_turned_off(small_tract, tmp_path, setting):
    """bgdask.store-lock: false, as YAML, Python or DASK_BGDASK__STORE_LOCK=false
    (a string) give it: no lock file, and a second run is not refused."""
    out = tmp_path / "out.zarr"
    with dask.config.set({"bgdask.store-lock": setting}):
        first = prepare(small_tract / "manifest.csv", out)
        try:
            assert not lock_file(out).exists()
            prepare(small_tract / "manifest.csv", out, overwrite=True).release()
        finally:
            first.release()


def test_a_lock_setting_that_is_no_flag_is_refused(small_tract, tmp_path):
    out = tmp_path / "out.zarr"
    with dask.config.set({"bgdask.store-lock": "sometimes"}):
        with pytest.raises(ConfigError, match="bgdask.store-lock must be true or false, got 'sometimes'"):
            prepare(small_tract / "manifest.csv", out)
    assert not out.exists() and not lock_file(out).exists()


def test_setting_flags_read_every_form_the_configuration_gives():
    for empty in (None, "", " "):
        with dask.config.set({"bgdask.store-lock": empty}):
            assert setting_flag("store-lock", True) is True and setting_flag("store-lock", False) is False
    for value, expected in [(True, True), (1, True), (1.0, True), (np.True_, True), ("TRUE", True),
                            (" on ", True), ("yes", True), (False, False), (0, False), (np.int64(0), False),
                            ("False", False), ("off", False), ("no", False)]:
        with dask.config.set({"bgdask.store-lock": value}):
            assert setting_flag("store-lock", True) is expected, value
    for value in (2, 0.5, "maybe", [True]):
        with dask.config.set({"bgdask.store-lock": value}), pytest.raises(ConfigError, match="store-lock"):
            setting_flag("store-lock", True)


def test_stale_lock_is_taken_over_with_a_warning(small_tract, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out.zarr"
    lock_file(out).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                          "started": "2001-02-03T04:05:06", "process_start": "1"}))
    with pytest.warns(StaleLockWarning, match=f"pid {dead.pid}.*2001-02-03"):
        p = prepare(small_tract / "manifest.csv", out)
    try:
        assert json.loads(lock_file(out).read_text())["pid"] == os.getpid()
    finally:
        p.release()


HOLD = """
import fcntl, json, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "then"}).encode())
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.timeout(60)
def test_command_refuses_a_store_another_process_writes(small_tract, tmp_path, cli):
    out = tmp_path / "out.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_file(out))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for flags in ([], ["--overwrite"], ["--resume"]):
            t0 = time.perf_counter()
            rc, o, e = cli("match", small_tract / "manifest.csv", "-o", out, "--no-progress", *flags)
            assert rc == 2, (rc, o, e)
            lines = [line for line in e.splitlines() if line.startswith("bgdask: error:")]
            assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and out.name in lines[0], e
            assert "dask dashboard" not in o, "a cluster was started before the refusal"
            assert time.perf_counter() - t0 < 20
            assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


# -- two real commands on one output -----------------------------------------------------------

CONFIGS = {"a": {}, "b": {"x_bin": 64, "y_bin": 64}}
CLI_ROWS = 64


@pytest.fixture(scope="module")
def gate():
    """Stage C's row writer, in this process (the scheduler below runs its
    worker here), waits for ``gate.event``: a winning run holds its lock
    until the test has seen the other run end."""
    event = threading.Event()
    original = Store.write_rows

    def gated(self, *args, **kwargs):
        if threading.current_thread() is not threading.main_thread():  # the scheduler's worker thread
            event.wait(120)
        return original(self, *args, **kwargs)

    Store.write_rows = gated
    try:
        yield event
    finally:
        Store.write_rows = original


@pytest.fixture(scope="module")
def shared_scheduler(gate):
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def config_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("configs")
    out = {}
    for name, fields in CONFIGS.items():
        out[name] = d / f"{name}.yaml"
        out[name].write_text("".join(f"{k}: {v}\n" for k, v in fields.items()) or "{}\n")
    return out


@pytest.fixture(scope="module")
def wanted(small_tract, tmp_path_factory):
    """The store each configuration makes alone."""
    made = {}
    for name, fields in CONFIGS.items():
        made[name] = tmp_path_factory.mktemp(f"alone-{name}") / "out.zarr"
        match_backgrounds(small_tract / "manifest.csv", made[name], MatchConfig(**fields), scheduler="sync",
                          chunk_rows=CLI_ROWS)
    return made


def _start(small_tract, out, config, flags, scheduler, tmp_path, tag):
    err = open(tmp_path / f"{tag}.err", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgdask.cli", "match", str(small_tract / "manifest.csv"), "-o", str(out),
         "--config", str(config), "--scheduler", scheduler, "--no-progress", "--chunk-rows", str(CLI_ROWS),
         *flags], stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    return proc, tmp_path / f"{tag}.err"


FLAGS = {"plain": [], "overwrite": ["--overwrite"], "resume": ["--resume"]}


def _race(runs: dict, gate, out: Path, holder_first: bool, small_tract, scheduler, config_files, tmp_path):
    """Start the runs {tag: (config, flags)} on ``out``: the first alone
    until it holds the lock, the others then (``holder_first``), or all at
    once. The winner waits in stage C until every other run has ended.
    Returns {tag: (exit status, stderr, pid)}."""
    gate.clear()
    procs = {}
    try:
        for n, (tag, (config, flags)) in enumerate(runs.items()):
            procs[tag] = _start(small_tract, out, config_files[config], FLAGS[flags], scheduler, tmp_path, tag)
            if holder_first and n == 0:
                first, err = procs[tag]
                deadline = time.monotonic() + 120
                while not lock_file(out).exists():
                    assert first.poll() is None, err.read_text()
                    assert time.monotonic() < deadline, "the first run never took the lock"
                    time.sleep(0.01)
        deadline = time.monotonic() + 150
        while sum(p.poll() is None for p, _ in procs.values()) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        gate.set()
        status = {k: p.wait(timeout=200) for k, (p, _) in procs.items()}
    finally:
        gate.set()
        for p, _ in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    return {k: (status[k], e.read_text(), p.pid) for k, (p, e) in procs.items()}


def _one_winner(results: dict, out: Path, wanted: dict, runs: dict) -> str:
    """Exactly one run wrote the store, equal to its configuration's run
    alone; every other stopped with one line naming it."""
    winners = [k for k, (rc, _, _) in results.items() if rc == 0]
    assert len(winners) == 1, {k: (rc, err) for k, (rc, err, _) in results.items()}
    (winner,) = winners
    for tag, (rc, err, _) in results.items():
        if tag == winner:
            continue
        lines = [line for line in err.splitlines() if line.startswith("bgdask: error:")]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (tag, rc, err)
        assert "another bgdask run is writing it" in lines[0] and f"pid {results[winner][2]}" in lines[0], lines[0]
    testing.assert_stores_equal(out, wanted[runs[winner][0]])
    assert zarr.open_group(str(out), mode="r").attrs["complete"] is True
    assert not Store.open(out).verify()
    assert not lock_file(out).exists()
    return winner


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("first", list(FLAGS))
def test_runs_on_a_held_output_are_refused(first, small_tract, shared_scheduler, gate, config_files, wanted,
                                          tmp_path):
    """A `bgdask match` holds the output; three more with another
    configuration start meanwhile, plain, --overwrite and --resume: each
    stops naming the first, which writes its store undisturbed."""
    out = tmp_path / "out.zarr"
    runs = {"holder": ("a", first), **{f"then-{f}": ("b", f) for f in FLAGS}}
    results = _race(runs, gate, out, True, small_tract, shared_scheduler, config_files, tmp_path)
    assert _one_winner(results, out, wanted, runs) == "holder"


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("flags", [("plain", "overwrite"), ("overwrite", "resume"), ("resume", "plain")],
                         ids=lambda f: "-".join(f))
def test_runs_started_together(flags, small_tract, shared_scheduler, gate, config_files, wanted, tmp_path):
    """Two `bgdask match` with different configurations started at the
    same moment: whichever takes the lock writes its store; the other stops."""
    out = tmp_path / "out.zarr"
    runs = {"one": ("a", flags[0]), "two": ("b", flags[1])}
    results = _race(runs, gate, out, False, small_tract, shared_scheduler, config_files, tmp_path)
    _one_winner(results, out, wanted, runs)


# -- checksums and verification ------------------------------------------------------------------

def _chunks(store: Path, array: str) -> list[Path]:
    return sorted(p for p in (store / array / "c").rglob("*") if p.is_file())


def _warp_of(store: Path, chunk: Path) -> tuple[int, int]:
    vi, pi = (int(x) for x in chunk.relative_to(store).parts[2:4])
    g = zarr.open_group(str(store), mode="r")
    return int(g["visit"][vi]), int(g["patch"][pi])


def _damage(store: Path) -> dict[str, tuple[int, int]]:
    """Delete an image chunk, truncate a mask chunk, flip a bit of a
    variance chunk, each of another warp: {how: (visit, patch)}."""
    image, mask, variance = (_chunks(store, a) for a in ("image", "mask", "variance"))
    done: dict[str, tuple[int, int]] = {}
    deleted = image[0]
    done["deleted"] = _warp_of(store, deleted)
    truncated = next(c for c in mask if _warp_of(store, c) not in done.values())
    done["truncated"] = _warp_of(store, truncated)
    flipped = next(c for c in variance if _warp_of(store, c) not in done.values())
    done["bit flipped"] = _warp_of(store, flipped)
    before = zarr.open_group(str(store), mode="r")["variance"][...]
    deleted.unlink()
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    data = bytearray(flipped.read_bytes())
    data[len(data) * 2 // 3] ^= 0x04
    flipped.write_bytes(bytes(data))
    try:  # the flip changes what the chunk decodes to (or it no longer decodes)
        assert zarr.open_group(str(store), mode="r")["variance"][...].tobytes() != before.tobytes()
    except AssertionError:
        raise
    except Exception:  # noqa: BLE001 - decoding fails: damaged too
        pass
    return done


def test_inspect_verify_names_damaged_warps_and_resume_repairs_them(clean_store, small_tract, tmp_path, cli):
    out = tmp_path / "out.zarr"
    shutil.copytree(clean_store, out)
    rc, o, e = cli("inspect", out, "--verify")
    assert rc == 0 and "complete: yes (verified)" in o, (rc, o, e)
    damaged = _damage(out)
    assert len(set(damaged.values())) == 3

    rc, o, e = cli("inspect", out)  # without --verify: the flags say complete
    assert rc == 0, (rc, o, e)
    rc, o, e = cli("inspect", out, "--verify")
    assert rc == 1, (rc, o, e)
    assert "Traceback" not in e
    for how, (v, p) in damaged.items():
        assert f"damaged: warp (visit {v}, patch {p})" in o, f"{how} chunk of ({v}, {p}) not found:\n{o}"
    assert o.count("damaged: warp") == 3, o

    rc, o, e = cli("export", out, "--fits", tmp_path / "fits")  # refuses to export damage
    assert rc == 2 and "Traceback" not in e and "damaged" not in o, (rc, o, e)
    assert any(f"(visit {v}, patch {p})" in e for v, p in damaged.values()), e

    result = match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync", chunk_rows=ROWS, resume=True)
    assert result.store == str(out.resolve())
    testing.assert_stores_equal(out, clean_store)
    rc, o, e = cli("inspect", out, "--verify")
    assert rc == 0 and "0 damaged" in o, (rc, o, e)


def test_resume_without_verify_trusts_done_warps(clean_store, small_tract, tmp_path):
    out = tmp_path / "out.zarr"
    shutil.copytree(clean_store, out)
    damaged = _damage(out)
    match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync", chunk_rows=ROWS, resume=True,
                      verify=False)
    assert set(Store.open(out).verify()) == set(damaged.values())


def test_checksums_survive_an_interrupted_run(small_tract, clean_store, tmp_path, monkeypatch):
    """Warps written by two runs (one cut short, then --resume) verify."""
    out = tmp_path / "out.zarr"
    calls = {"n": 0}
    original = Store.finish_warp

    def dies_after_five(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Store, "finish_warp", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync", chunk_rows=ROWS)
    monkeypatch.setattr(Store, "finish_warp", original)
    assert not lock_file(out).exists()
    match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync", chunk_rows=ROWS, resume=True)
    assert not Store.open(out).verify()
    testing.assert_stores_equal(out, clean_store)


@pytest.mark.parametrize("what", ["image/zarr.json", "zarr.json", "diff_model"])
def test_damaged_metadata_is_one_clear_error(what, clean_store, small_tract, tmp_path, cli):
    out = tmp_path / "out.zarr"
    shutil.copytree(clean_store, out)
    if what == "diff_model":  # the per-visit arrays a resume reuses
        chunk = _chunks(out, "diff_model")[0]
        data = bytearray(chunk.read_bytes())
        data[-9] ^= 0xFF
        chunk.write_bytes(bytes(data))
    else:
        (out / what).write_text("{ not json")
    rc, o, e = cli("inspect", out, "--verify")
    assert rc in (1, 2) and "Traceback" not in e, (rc, o, e)
    assert len([line for line in e.splitlines() if line.startswith("bgdask: error:")]) == 1, e
    rc, o, e = cli("match", small_tract / "manifest.csv", "-o", out, "--resume", "--chunk-rows", ROWS,
                   "--no-progress")
    assert rc == 2 and "Traceback" not in e, (rc, o, e)
    lines = [line for line in e.splitlines() if line.startswith("bgdask: error:")]
    assert len(lines) == 1 and out.name in lines[0] and "--overwrite" in lines[0], e
    assert "dask dashboard" not in o
    assert not lock_file(out).exists()
