"""The pipeline where users run it: SLURM jobs, an existing scheduler, the dashboard.

Every scheduler, worker and dashboard binds 127.0.0.1. The SLURM test needs the
single-node SLURM of deploy/slurm/start-slurm.sh (CI starts it); on CI it fails
rather than skips when SLURM is not there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from bgdask.cluster import ClusterOptions, connect, dashboard_link
from bgdask.testing import assert_stores_equal
from bgdask import match_backgrounds

ON_CI = bool(os.environ.get("CI"))  # on CI, SLURM must be there


@pytest.fixture
def reference_store(sync_store):
    return sync_store[1]




def _slurm_up() -> str | None:
    if not shutil.which("sinfo"):
        return "sinfo not found"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if out.returncode or not ({"idle", "mixed"} & set(out.stdout.split())):
        return f"no idle SLURM node ({out.stdout.strip() or out.stderr.strip()})"
    return None


@pytest.mark.slurm
@pytest.mark.slow
def test_match_on_slurm_equals_local(small_tract, reference_store, tmp_path):
    problem = _slurm_up()
    if problem:
        if ON_CI:
            pytest.fail(f"SLURM must run on CI (deploy/slurm/start-slurm.sh): {problem}")
        pytest.skip(problem)
    options = ClusterOptions(kind="slurm", jobs=2, cores=1, processes=1, memory="2GB",
                             walltime="00:10:00", host="127.0.0.1", log_directory=str(tmp_path / "logs"))
    with connect(options) as client:
        client.wait_for_workers(2, timeout=120)
        assert len(client.scheduler_info()["workers"]) == 2
        match_backgrounds(small_tract / "manifest.csv", tmp_path / "slurm.zarr", client=client)
    assert_stores_equal(reference_store, tmp_path / "slurm.zarr")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_match_on_an_existing_scheduler(small_tract, reference_store, tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                 "--nthreads", "1", "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with connect(ClusterOptions(scheduler=address, worker_timeout=60)) as client:
            client.wait_for_workers(2, timeout=60)
            match_backgrounds(small_tract / "manifest.csv", tmp_path / "sched.zarr", client=client)
        assert_stores_equal(reference_store, tmp_path / "sched.zarr")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.slow
def test_dashboard_serves_while_a_match_runs(small_tract, tmp_path):
    seen = []
    with connect(ClusterOptions(workers=1, threads_per_worker=1, dashboard=True)) as client:
        link = dashboard_link(client)
        assert link.startswith("http://127.0.0.1:")
        base = link.rsplit("/", 1)[0]
        done = threading.Event()

        def poll():
            while not done.is_set():
                try:
                    busy = any(client.processing().values())   # tasks running as we ask
                    with urllib.request.urlopen(f"{base}/info/main/workers.html", timeout=5) as r:
                        seen.append((r.status, busy and any(client.processing().values())))
                except OSError as exc:  # noqa: PERF203
                    seen.append((str(exc), False))
                time.sleep(0.05)

        t = threading.Thread(target=poll)
        t.start()
        try:
            match_backgrounds(small_tract / "manifest.csv", tmp_path / "o.zarr", client=client)
        finally:
            done.set()
            t.join()
    assert seen and all(status == 200 for status, _ in seen), seen[:3]
    assert any(busy for _, busy in seen), "no poll happened while tasks were processing"
