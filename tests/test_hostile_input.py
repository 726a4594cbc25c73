"""Hostile input (issue 19, findings 1, 3, 5-8): no input lost or written,
no mask bit dropped, no hang, and a clear answer to every bad value.

Each test names its finding. Tests of hangs run the work where a hang
cannot take the test session with it: in a subprocess with a timeout, or
with a helper that ends the blocking after a few seconds (then the test
fails on time, not by hanging).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import dask
import numpy as np
import psutil
import pytest
import zarr
from astropy.io import fits

import bgdask
from bgdask import match_backgrounds, testing
from bgdask.config import MatchConfig
from bgdask.errors import (ConfigError, InputError, StoreError, UnnamedMaskBitsWarning, VarianceWarning)
from bgdask.io import read_warp, read_warp_header, write_warp
from bgdask.io.catalog import find_warps
from bgdask.pipeline import prepare
from bgdask.simulate import warp_filename

from _terminal import terminal_env

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def python(code: str, *args, timeout: float = 20) -> subprocess.CompletedProcess:
    """``code`` run by a fresh Python (this tree first on its path), killed after ``timeout`` s."""
    try:
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=ENV, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s (a hang): {code[:200]}")


@pytest.fixture
def tract(small_tract, tmp_path):
    """A private copy of the small tract."""
    return Path(shutil.copytree(small_tract, tmp_path / "in"))


def one_error_line(rc, out, err, *names) -> str:
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("bgdask: error:")]
    assert len(lines) == 1, err
    for name in names:
        assert str(name) in lines[0], f"{name!r} not in {lines[0]!r}"
    assert "dask dashboard" not in out, "a cluster was started before the error"
    return lines[0]


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- finding 1: an input and the output are never the same thing, nor nested ------------------------

def _store_copy(sync_store, where: Path) -> Path:
    _, store = sync_store
    return Path(shutil.copytree(store, where))


CASES = {
    # name: build(tmp_path, tract, sync_store) -> (source, output, overwrite)
    "input store through a symlink": lambda t, tr, ss: (
        _symlink(t / "inlink.zarr", _store_copy(ss, t / "in.zarr")), t / "in.zarr", True),
    "output through a symlink to the input store": lambda t, tr, ss: (
        _store_copy(ss, t / "in.zarr"), _symlink(t / "outlink.zarr", t / "in.zarr"), True),
    "output through '..' onto the input store": lambda t, tr, ss: (
        _store_copy(ss, t / "in.zarr"), _mkdir(t / "sub") / ".." / "in.zarr", True),
    "output inside the input directory": lambda t, tr, ss: (tr / "warps", tr / "warps" / "out.zarr", False),
    "output inside the input directory through a symlink": lambda t, tr, ss: (
        tr / "warps", _symlink(t / "there", tr / "warps") / "out.zarr", False),
    "output inside the input store": lambda t, tr, ss: (
        _store_copy(ss, t / "in.zarr"), t / "in.zarr" / "out.zarr", False),
    "input directory inside the output store": lambda t, tr, ss: (
        _move(tr / "warps", _store_copy(ss, t / "out.zarr") / "warps"), t / "out.zarr", True),
    "input store inside the output": lambda t, tr, ss: (
        _store_copy(ss, _mkdir(t / "out.zarr") / "in.zarr"), t / "out.zarr", True),
    "warp files inside the output, listed through a symlink": lambda t, tr, ss: (
        _relist(tr, _symlink(t / "link", _move(tr / "warps", _store_copy(ss, t / "out.zarr") / "w"))),
        t / "out.zarr", True),
}


def _symlink(link: Path, target: Path) -> Path:
    link.symlink_to(target, target_is_directory=target.is_dir())
    return link


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True)
    return p


def _move(src: Path, dst: Path) -> Path:
    shutil.move(str(src), str(dst))
    return dst


def _relist(tract: Path, warps: Path) -> Path:
    """The tract's manifest, listing its files under ``warps``."""
    text = (tract / "manifest.csv").read_text().replace("warps/", f"{warps}/")
    (tract / "manifest.csv").write_text(text)
    return tract / "manifest.csv"


@pytest.mark.parametrize("case", list(CASES))
def test_an_input_and_the_output_never_overlap(case, tract, sync_store, tmp_path):
    """Finding 1: refused before anything is written, whatever way the two
    meet (resolved symlinks and '..'); every input file is left as it was."""
    source, output, overwrite = CASES[case](tmp_path, tract, sync_store)
    before = _snapshot(tmp_path)
    with pytest.raises(StoreError, match="output") as caught:
        prepare(source, output, overwrite=overwrite).release()
    assert str(output) in str(caught.value) or Path(output).name in str(caught.value)
    assert _snapshot(tmp_path) == before


def test_the_command_keeps_an_input_store_behind_a_symlink(sync_store, tmp_path, cli):
    """Finding 1 as reported: `match zin/inlink.zarr -o zin/in.zarr --overwrite`."""
    zin = tmp_path / "zin"
    store = _store_copy(sync_store, zin / "in.zarr")
    _symlink(zin / "inlink.zarr", store)
    before = _snapshot(store)
    one_error_line(*cli("match", zin / "inlink.zarr", "-o", zin / "in.zarr", "--overwrite", "--no-progress"),
                   "in.zarr")
    assert _snapshot(store) == before


# -- finding 3: mask bits without a name are kept -------------------------------------------------

UNNAMED = (30, 12)


@pytest.fixture
def unnamed_tract(tract):
    """The tract with bits 30 and 12, named by no MP_ card, set on rows 10-19 of one warp."""
    path = tract / warp_filename(1001, 1)
    w = read_warp(path)
    assert not set(UNNAMED) & set(w.mask_planes.values())
    for bit in UNNAMED:
        w.mask[10:20, :] |= np.int32(1 << bit)
    write_warp(path, w, overwrite=True)
    return tract, path


def test_unnamed_mask_bits_are_kept_as_planes(unnamed_tract, tmp_path):
    tract, path = unnamed_tract
    out = tmp_path / "out.zarr"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        match_backgrounds(tract / "manifest.csv", out, scheduler="sync", chunk_rows=100)
    said = [str(w.message) for w in caught if issubclass(w.category, UnnamedMaskBitsWarning)]
    assert len(said) == 1 and str(path) in said[0] and "30" in said[0] and "12" in said[0], said
    g = zarr.open_group(str(out), mode="r")
    planes = json.loads(g.attrs["mask_planes"])
    visits, patches = list(g["visit"][:]), list(g["patch"][:])
    for bit in UNNAMED:
        name = f"UNNAMED_{bit}"
        assert name in planes, planes
        m = g["mask"][...] & np.int32(1 << planes[name])
        hit = np.argwhere(m)
        assert {(int(v), int(p)) for v, p in hit[:, :2]} == {(visits.index(1001), patches.index(1))}
        assert set(hit[:, 2]) == set(range(10, 20))


def test_unnamed_mask_bits_refused_by_the_switch(unnamed_tract, tmp_path):
    tract, path = unnamed_tract
    with dask.config.set({"bgdask.unnamed-mask-bits": "error"}), \
            pytest.raises(InputError, match=r"mask bits 12, 30 .*no MP_ card") as caught:
        match_backgrounds(tract / "manifest.csv", tmp_path / "out.zarr", scheduler="sync", chunk_rows=100)
    assert str(path) in str(caught.value)


def test_unnamed_mask_bits_in_the_lazy_match(small_sim):
    warps = dict(small_sim.warps)
    key = (1001, 1)
    w = warps[key]
    mask = w.mask.copy()
    mask[3, :5] |= np.int32(1 << 30)
    warps[key] = type(w)(image=w.image, mask=mask, variance=w.variance, x0=w.x0, y0=w.y0,
                         mask_planes=w.mask_planes, visit=w.visit, patch=w.patch, tract=w.tract)
    with pytest.warns(UnnamedMaskBitsWarning, match="visit 1001, patch 1"):
        result = bgdask.match_arrays(warps, small_sim.skymap)
    bit = result.mask_planes["UNNAMED_30"]
    got = result.warp(*key).mask
    assert (got[3, :5] & (1 << bit)).all() and not (np.delete(got, 3, axis=0) & (1 << bit)).any()


# -- finding 5: only regular files, bounded headers -----------------------------------------------------

class _Breaker:
    """Writers that keep opening ``fifo`` (each waits for a reader) and
    close it after ``seconds``: a reader that blocks on it gets an end of
    file, late, however often it opens it again. Without it, a reader
    blocked on the FIFO would hang the test session."""

    def __init__(self, fifo: Path, seconds: float):
        self.fifo, self.seconds, self.stop = fifo, seconds, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY)
            except OSError:
                return
            self.stop.wait(self.seconds)
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop.set()
        try:  # lets a writer still waiting for a reader go
            os.close(os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK))
        except OSError:
            pass
        self.thread.join(10)


@pytest.mark.timeout(60)
def test_a_fifo_in_the_manifest_is_refused_at_once(tract, tmp_path, cli):
    """Finding 5: a FIFO listed as a warp once blocked the header read forever."""
    fifo = tmp_path / "warp.fits"
    os.mkfifo(fifo)
    manifest = tract / "manifest.csv"
    manifest.write_text(manifest.read_text() + f"1003,0,9813,{fifo}\n")
    with _Breaker(fifo, 3):
        t0 = time.perf_counter()
        rc, o, e = cli("match", manifest, "-o", tmp_path / "out.zarr", "--no-progress")
        elapsed = time.perf_counter() - t0
    msg = one_error_line(rc, o, e, fifo)
    assert "FIFO" in msg and elapsed < 3, (elapsed, msg)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("role", ["manifest", "config"])
def test_a_fifo_as_the_manifest_or_config_is_refused(role, tract, tmp_path, cli):
    fifo = tmp_path / f"{role}.{'csv' if role == 'manifest' else 'yaml'}"
    os.mkfifo(fifo)
    with _Breaker(fifo, 3):
        t0 = time.perf_counter()
        if role == "manifest":
            rc, o, e = cli("match", fifo, "-o", tmp_path / "out.zarr", "--no-progress")
        else:
            rc, o, e = cli("match", tract / "manifest.csv", "-o", tmp_path / "out.zarr", "--config", fifo)
        elapsed = time.perf_counter() - t0
    assert "FIFO" in one_error_line(rc, o, e, fifo) and elapsed < 3, (role, elapsed)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("what", ["/dev/zero", "directory"])
def test_devices_and_directories_are_refused_by_stat(what, tmp_path):
    target = "/dev/zero" if what == "/dev/zero" else str(_mkdir(tmp_path / "d.fits"))
    r = python("import sys\nfrom bgdask.io import read_warp_header\nfrom bgdask.errors import InputError\n"
               "try:\n    read_warp_header(sys.argv[1])\nexcept InputError as e:\n    print(e)\n", target,
               timeout=15)
    assert r.returncode == 0 and target in r.stdout and "not a regular file" in r.stdout, (r.stdout, r.stderr)


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_header_reads_are_bounded(tmp_path):
    """A 64 MiB 'header' with no END card: refused after reading a few MiB."""
    path = tmp_path / "huge.fits"
    with open(path, "wb") as fh:
        fh.write(b"SIMPLE  =                    T".ljust(80) + b"BITPIX  =                    8".ljust(80)
                 + b"NAXIS   =                    0".ljust(80))
        block = (b"COMMENT " + b"x" * 72) * 36
        for _ in range(64 * 2**20 // len(block)):
            fh.write(block)

    def rchar() -> int:
        with open("/proc/self/io") as fh:
            return int(next(line for line in fh if line.startswith("rchar:")).split()[1])

    before = rchar()
    with pytest.raises(InputError, match="END card") as caught:
        read_warp_header(path)
    assert str(path) in str(caught.value)
    assert rchar() - before < 8 * 2**20


# -- findings 6 and 7: bounded, typed configuration ----------------------------------------------------

BOMB = "bad_mask_planes:\n- &a [BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD]\n" + "".join(
    f"- &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.timeout(30)
def test_a_yaml_alias_bomb_fails_at_once(tmp_path):
    """Finding 6: 449 bytes that expand to 9**9 names."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB.encode()) < 600
    r = python("import sys, time\nfrom bgdask.config import MatchConfig\nfrom bgdask.errors import ConfigError\n"
               "t0 = time.perf_counter()\ntry:\n    MatchConfig.from_file(sys.argv[1])\n"
               "except ConfigError as e:\n    print(time.perf_counter() - t0)\n    print(e)\n", path, timeout=20)
    assert r.returncode == 0 and r.stdout, (r.stdout, r.stderr[-2000:])
    elapsed, message = r.stdout.split("\n", 1)
    assert float(elapsed) < 0.5, elapsed
    assert "alias" in message and path.name in message


@pytest.mark.parametrize("value, says", [
    ([["BAD"]], "not a list"), ([1, 2], "names"), ("[BAD, [SAT]]", "names"), (["BAD SAT"], "not a mask plane name"),
    (["X" * 65], "not a mask plane name"), (["BAD"] * 65, "at most 64"), ({"BAD": 1}, "list"),
], ids=["nested", "numbers", "nested-yaml", "space", "long", "many", "mapping"])
def test_bad_mask_planes_is_a_list_of_short_names(value, says):
    if isinstance(value, str):
        import yaml

        value = yaml.safe_load(value)
    if value == [["BAD"]]:
        says = "names"
    with pytest.raises(ConfigError, match="bad_mask_planes") as caught:
        MatchConfig(bad_mask_planes=value)
    assert says in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", ["num_iter: 100000\n", "num_iter: 1e9\n", "num_iter: 101\n",
                                  "num_iter = 1000000000000000000000\n", "x_bin = 1e21\n",
                                  "binning: 2e6\n", "smooth_scale: 1e300\n", "num_sigma_clip: .inf\n",
                                  "ref_visit = 100000000000000000000000\n"])
def test_numbers_are_bounded_before_any_kernel(text, tmp_path, cli, small_tract):
    """Finding 7: num_iter 1e5 ran 110 s, 1e9 forever, a TOML 1e21 ended in a numba traceback."""
    field = text.split()[0].rstrip(":")
    path = tmp_path / ("c.toml" if "=" in text else "c.yaml")
    path.write_text(text)
    with pytest.raises(ConfigError, match=field):
        MatchConfig.from_file(path)
    one_error_line(*cli("match", small_tract / "manifest.csv", "-o", tmp_path / "out.zarr", "--config", path),
                   field, path.name)


def test_num_iter_range_is_documented():
    assert MatchConfig(num_iter=0).num_iter == 0 and MatchConfig(num_iter=100).num_iter == 100
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert "clipping iterations (MEANCLIP), 0 to 100" in text


# -- finding 8: clear answers ------------------------------------------------------------------------------

def test_unknown_bad_mask_planes_are_named_with_the_known_ones(small_tract, sync_store, tmp_path, cli):
    cfg = MatchConfig(bad_mask_planes=["BADD", "SATT", "EDGEE", "NO_DATAA", "BAD"])
    with pytest.raises(ConfigError) as caught:
        prepare(small_tract / "manifest.csv", tmp_path / "out.zarr", cfg)
    msg = str(caught.value)
    assert "BADD, SATT, EDGEE, NO_DATAA" in msg and "known planes: BAD, SAT" in msg, msg
    ds = bgdask.open_warps(small_tract / "manifest.csv")
    with pytest.raises(ConfigError, match="BADD"):
        bgdask.match(ds, cfg, scheduler="sync")
    path = tmp_path / "c.yaml"
    path.write_text("bad_mask_planes: [BADD, SATT, EDGEE, NO_DATAA]\n")
    one_error_line(*cli("match", small_tract / "manifest.csv", "-o", tmp_path / "out.zarr", "--config", path),
                   "BADD", "NO_DATAA", "known planes")
    assert not (tmp_path / "out.zarr").exists()


def test_a_manifest_with_a_byte_order_mark(tract):
    manifest = tract / "manifest.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    assert len(find_warps(manifest)) == len(find_warps(tract / "warps"))


def test_a_header_that_does_not_fit_the_file(tract, tmp_path, cli):
    path = tract / warp_filename(1000, 1)
    data = bytearray(path.read_bytes())
    for key in (b"NAXIS1  = ", b"NAXIS2  = "):  # the IMAGE header's cards, as a hostile editor would
        at = data.index(key, 2880)
        data[at + 10:at + 30] = b"100000".rjust(20)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as caught:
        read_warp_header(path)
    msg = str(caught.value)
    assert str(path) in msg and "NAXIS (100000 x 100000" in msg and "does not fit the file size" in msg, msg
    assert "no MASK" not in msg
    one_error_line(*cli("match", tract / "manifest.csv", "-o", tmp_path / "out.zarr"), path.name, "NAXIS")


@pytest.mark.slow
def test_zero_and_negative_variance_warned_and_bad(small_sim, tmp_path):
    """Pixels of variance <= 0 are counted in a warning naming the file, and
    matched as if masked BAD (the same models, bitwise)."""
    key = (1002, 2)
    w = small_sim.warps[key]
    rows = slice(40, 90)
    hostile, masked = dict(small_sim.warps), dict(small_sim.warps)
    variance = w.variance.copy()
    variance[rows, ::2] = -1.0
    variance[rows, 1::2] = 0.0
    hostile[key] = type(w)(image=w.image, mask=w.mask, variance=variance, x0=w.x0, y0=w.y0,
                           mask_planes=w.mask_planes, visit=w.visit, patch=w.patch, tract=w.tract)
    mask = w.mask.copy()
    mask[rows] |= np.int32(1 << w.mask_planes["BAD"])
    masked[key] = type(w)(image=w.image, mask=mask, variance=w.variance, x0=w.x0, y0=w.y0,
                          mask_planes=w.mask_planes, visit=w.visit, patch=w.patch, tract=w.tract)
    n = variance[rows].size
    outs = {}
    for name, warps in (("hostile", hostile), ("masked", masked)):
        manifest = testing.write_warps(warps, tmp_path / name)
        outs[name] = tmp_path / f"{name}.zarr"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            match_backgrounds(manifest, outs[name], scheduler="sync", skymap=small_sim.skymap, chunk_rows=100)
        said = [str(c.message) for c in caught if issubclass(c.category, VarianceWarning)]
        if name == "hostile":
            assert len(said) == 1 and warp_filename(*key) in said[0] and f"{n} pixels" in said[0], said
        else:
            assert not said
    a, b = (zarr.open_group(str(outs[k]), mode="r") for k in ("hostile", "masked"))
    assert a["diff_model"][...].tobytes() == b["diff_model"][...].tobytes()
    assert a["image"][...].tobytes() == b["image"][...].tobytes()


@pytest.mark.parametrize("address", ["inproc://x", "unix:///tmp/bgdask.sock", "http://127.0.0.1:8786",
                                     "tcp://127.0.0.1:notaport", "tcp://:8786", "tcp://127.0.0.1:0",
                                     "tcp://127.0.0.1:70000", "scheduler.json", "127.0.0.1"])
def test_unusable_scheduler_addresses_are_one_line(address, small_tract, tmp_path, cli):
    msg = one_error_line(*cli("match", small_tract / "manifest.csv", "-o", tmp_path / "out.zarr",
                              "--scheduler", address), address)
    assert "--scheduler" in msg
    assert not (tmp_path / "out.zarr").exists()


# -- finding 8: interrupts and full disks print no worker traceback ------------------------------------------

def _run_and_interrupt(manifest: Path, out: Path, when, tmp_path: Path) -> tuple[int, str]:
    err = tmp_path / "stderr.txt"
    with open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "bgdask.cli", "match", str(manifest), "-o", str(out),
                                 "--no-progress", "--chunk-rows", "32", "--workers", "2", "--threads-per-worker", "1"],
                                stdout=subprocess.DEVNULL, stderr=fe, env=terminal_env(tmp_path / "terminal", base=ENV),
                                cwd=tmp_path, start_new_session=True)
    kids = []
    try:
        deadline = time.monotonic() + 240
        while not when(out):
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the moment to interrupt never came"
            time.sleep(0.005)
        kids = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        psutil.wait_procs(kids, timeout=20)
        for k in kids:
            if k.is_running():
                k.kill()
    return rc, err.read_text()


def _lock_taken(out: Path) -> bool:
    return out.with_name(f".{out.name}.lock").exists()


class _AfterLock:
    """True ``delay`` seconds after the lock file names its holder (the cluster is starting)."""

    def __init__(self, delay: float):
        self.delay, self.seen = delay, None

    def __call__(self, out: Path) -> bool:
        if self.seen is None:
            lock = out.with_name(f".{out.name}.lock")
            if lock.exists() and lock.read_text().strip():
                self.seen = time.monotonic()
            return False
        return time.monotonic() - self.seen >= self.delay


def _stage_c(out: Path) -> bool:
    try:
        g = zarr.open_group(str(out), mode="r")
        return int(g["done"][...].sum()) >= 2
    except Exception:  # noqa: BLE001 - not there yet, or being written
        return False


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("when", ["lock-taken", "cluster-starting", "stage-C"])
def test_ctrl_c_prints_no_worker_traceback(when, small_tract, tmp_path):
    """Ctrl-C (SIGINT to the process group, workers included) as the lock
    is taken, while the local cluster starts, and in stage C."""
    out = tmp_path / "out.zarr"
    moment = {"lock-taken": _lock_taken, "cluster-starting": _AfterLock(1.0), "stage-C": _stage_c}[when]
    rc, err = _run_and_interrupt(small_tract / "manifest.csv", out, moment, tmp_path)
    assert rc == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("bgdask: interrupted"), err
    assert not out.with_name(f".{out.name}.lock").exists()


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 1 MiB tmpfs (root only): its mount point."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_full_disk_prints_no_worker_traceback(small_tract, tiny_filesystem):
    out = tiny_filesystem / "out.zarr"
    r = subprocess.run([sys.executable, "-m", "bgdask.cli", "match", str(small_tract / "manifest.csv"), "-o", str(out),
                        "--no-progress", "--chunk-rows", "100", "--workers", "1", "--threads-per-worker", "1"],
                       capture_output=True, text=True, env=ENV, timeout=240)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "Compute Failed" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgdask: error:") and "No space left" in lines[0], r.stderr
