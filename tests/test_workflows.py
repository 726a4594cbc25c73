"""The ready-to-run workflows in workflows/, each run as a script on a tiny tract."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bgdask.simulate import make_tract, write_tract

ON_CI = bool(os.environ.get("CI"))
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
SCRIPTS = ["demo.py", "laptop.py", "slurm_tract.py", "notebook_client.py"]
TIMEOUT = 600


@pytest.fixture(scope="module")
def tract(tmp_path_factory):
    sim = make_tract(n_visits=3, num_patches=(2, 2), patch_inner=256, patch_border=16, seed=3)
    return write_tract(sim, tmp_path_factory.mktemp("workflow_tract"))


def run(script: str, *args, cwd: Path, timeout: float = TIMEOUT, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(WORKFLOWS / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=None if env is None else {**os.environ, **env})
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def assert_complete(store: Path) -> str:
    """`bgdask inspect` exits 0 only for a complete store."""
    proc = subprocess.run([sys.executable, "-m", "bgdask.cli", "inspect", str(store)], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "complete: yes" in proc.stdout
    return proc.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_guarded_and_has_help(script, tmp_path):
    """Worker processes re-import scripts: nothing but definitions may run on import."""
    tree = ast.parse((WORKFLOWS / script).read_text())
    guard = False
    for node in tree.body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
            guard = True
            continue
        ok = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)) or (
            isinstance(node, (ast.Assign, ast.AnnAssign)) and not any(isinstance(n, ast.Call) for n in ast.walk(node))
        ) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        assert ok, f"{script}:{node.lineno}: top-level statement runs on import: {ast.unparse(node)[:80]}"
    assert guard, f"{script} has no `if __name__ == \"__main__\":` guard"
    proc = run(script, "--help", cwd=tmp_path, timeout=120)
    assert "usage:" in proc.stdout


def test_readme_lists_every_workflow():
    text = (WORKFLOWS / "README.md").read_text()
    for script in SCRIPTS:
        assert script in text


@pytest.mark.slow
def test_demo(tmp_path):
    out = tmp_path / "demo"
    proc = run("demo.py", "-o", out, "--visits", 3, "--patches", 2, 2, "--patch-size", 256, "--border", 16,
               "--workers", 1, cwd=tmp_path)
    assert "reference visit:" in proc.stdout and "offset error against the injected truth" in proc.stdout
    assert_complete(out / "demo.zarr")
    assert (out / "report.html").stat().st_size > 10_000


@pytest.mark.slow
def test_laptop(tract, tmp_path):
    store = tmp_path / "laptop.zarr"
    proc = run("laptop.py", tract / "warps", store, "--workers", 1, "--threads-per-worker", 2,
               "--report", tmp_path / "report.html", cwd=tmp_path, env={"DASK_BGDASK__DASHBOARD": "True"})
    assert "dask dashboard: http://127.0.0.1:" in proc.stdout
    assert_complete(store)
    assert (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_notebook_client(tract, tmp_path):
    store = tmp_path / "nb.zarr"
    proc = run("notebook_client.py", tract / "manifest.csv", store, "--workers", 1, cwd=tmp_path)
    assert "dashboard: http://127.0.0.1:" in proc.stdout
    assert "reference visit:" in proc.stdout and "store complete: True" in proc.stdout
    assert_complete(store)


def test_slurm_job_script_dry_run(tract, tmp_path):
    """--print-job-script: the batch script, with the sizing asked for; nothing submitted."""
    proc = run("slurm_tract.py", tract / "manifest.csv", tmp_path / "never.zarr", "--cores", 4,
               "--processes", 2, "--memory", "6GB", "--walltime", "00:30:00", "--queue", "debug",
               "--job-extra-directive=--constraint=cpu", "--print-job-script", cwd=tmp_path, timeout=120)
    script = proc.stdout
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#SBATCH --cpus-per-task=4", "#SBATCH --mem=6G", "#SBATCH -t 00:30:00", "#SBATCH -p debug",
                 "#SBATCH --constraint=cpu"):
        assert line in script, script
    assert "dask_worker" in script and "--nworkers 2" in script and "--nthreads 2" in script
    assert not (tmp_path / "never.zarr").exists()


def _slurm_state() -> str | None:
    """Why SLURM cannot run a job here, or None when it can."""
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return "SLURM is not installed (sudo deploy/slurm/start-slurm.sh installs and starts it)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    states = out.split()
    if not any(s.rstrip("*~#") in ("idle", "mixed", "mix", "allocated", "alloc", "completing") for s in states):
        return f"no SLURM node is up (sinfo: {out.strip() or 'nothing'}); start it: deploy/slurm/start-slurm.sh"
    return None


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_tract_on_real_slurm(tract, tmp_path):
    why = _slurm_state()
    if why:
        if ON_CI:
            pytest.fail(f"CI needs a running single-node SLURM: {why}")
        pytest.skip(why)
    store = tmp_path / "slurm.zarr"
    logs = tmp_path / "slurm-logs"
    logs.mkdir()
    proc = run("slurm_tract.py", tract / "manifest.csv", store, "--jobs", 1, "--cores", 1, "--processes", 1,
               "--memory", "2GB", "--walltime", "00:15:00", "--host", "127.0.0.1", "--log-directory", logs,
               "--worker-timeout", 300, cwd=tmp_path)
    assert "scheduler: tcp://127.0.0.1:" in proc.stdout
    assert_complete(store)
    assert any(logs.iterdir()), "the SLURM job wrote no log: did a job run?"
