"""The bgdask command end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from bgdask.cli import main
from bgdask.io import read_warp


def run(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "bgdask.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command(cli):
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("match", "simulate", "demo", "inspect", "export", "plot", "report", "cluster"):
        assert cmd in out.stdout
        # the same parser in this process (the command above started one Python already)
        rc, stdout, _ = cli(cmd, "--help")
        assert rc == 0 and stdout.startswith(f"usage: bgdask {cmd}"), stdout[:200]


@pytest.mark.slow
def test_simulate_match_inspect_export(tmp_path, small_sim):
    sim_dir = tmp_path / "sim"
    out = run("simulate", sim_dir, "--visits", 3, "--patches", 2, 2, "--patch-size", 256,
              "--border", 16, "--seed", 3)
    assert out.returncode == 0, out.stderr
    assert (sim_dir / "manifest.csv").exists() and (sim_dir / "skymap.yaml").exists()
    store = tmp_path / "out.zarr"
    out = run("match", sim_dir / "warps", "-o", store, "--workers", 1, "--threads-per-worker", 1,
              "--no-progress", "--performance-report", tmp_path / "perf.html", "--dashboard")
    assert out.returncode == 0, out.stderr
    assert "dask dashboard: http://127.0.0.1:" in out.stdout
    assert "inferred tract geometry" in out.stdout
    assert "reference visit:" in out.stdout and "model_rms" in out.stdout
    assert "stage C" in out.stdout
    assert (tmp_path / "perf.html").stat().st_size > 1000
    for v in small_sim.visits:
        assert str(v) in out.stdout

    out = run("inspect", store)
    assert out.returncode == 0, out.stderr
    assert "complete: yes" in out.stdout and "reference visit" in out.stdout

    out = run("export", store, "--fits", tmp_path / "fits")
    assert out.returncode == 0, out.stderr
    ds = xr.open_zarr(store)
    files = sorted((tmp_path / "fits").glob("*.fits"))
    assert len(files) == int(ds.present.sum())
    w = read_warp(files[0])
    sel = dict(visit=w.visit, patch=w.patch)
    np.testing.assert_array_equal(w.image, ds.image.sel(sel).values[: w.height, : w.width])
    assert (w.x0, w.y0) == (int(ds.x0.sel(patch=w.patch)), int(ds.y0.sel(patch=w.patch)))


def test_errors_are_one_line_and_nonzero(tmp_path, capsys):
    assert main(["match", str(tmp_path / "nothing"), "-o", str(tmp_path / "o.zarr"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bgdask: error: ") and "nothing" in err and "Traceback" not in err
    assert not (tmp_path / "o.zarr").exists()
    assert main(["inspect", str(tmp_path)]) == 2


def test_cluster_job_script():
    out = run("cluster", "--print-job-script", "--cluster", "slurm", "--cores", 2, "--memory", "3GB",
              "--walltime", "00:10:00", "--queue", "debug")
    assert out.returncode == 0, out.stderr
    assert "#SBATCH" in out.stdout and "00:10:00" in out.stdout and "debug" in out.stdout
