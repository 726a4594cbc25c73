"""bgdask.cluster and the deployment files (deploy/, docker/).

Every scheduler, worker and dashboard started here binds 127.0.0.1.  The SLURM
test needs the single-node SLURM of deploy/slurm/start-slurm.sh: it skips
without it, except on CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import ipaddress
import json
import operator
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import dask
import dask.array as da
import pytest
import yaml

from bgdask import cluster as bgcluster
from bgdask.cluster import (
    ClusterError,
    ClusterOptions,
    add_cluster_arguments,
    connect,
    dashboard_link,
    job_script,
    make_cluster,
    options_from_args,
)
from bgdask.errors import BgdaskError

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKER = ROOT / "docker"
ON_CI = bool(os.environ.get("CI"))


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def jobqueue_defaults():
    """dask-jobqueue's shipped configuration only: a developer's jobqueue.yaml must not leak in."""
    import dask_jobqueue

    shipped = yaml.safe_load((Path(dask_jobqueue.__file__).parent / "jobqueue.yaml").read_text())
    with dask.config.set(shipped):
        yield


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_cluster_arguments(parser)
    return parser


# --------------------------------------------------------------------------- local cluster


@pytest.mark.slow
def test_local_cluster_computes_and_serves_dashboard_on_loopback():
    options = ClusterOptions(workers=2, threads_per_worker=1, memory_limit="1GB", dashboard=True)
    with pytest.raises(KeyboardInterrupt):
        with connect(options) as client:
            assert client.scheduler.address.startswith("tcp://127.0.0.1:")
            workers = client.nthreads()
            assert len(workers) == 2
            assert all(addr.startswith("tcp://127.0.0.1:") for addr in workers)
            assert set(workers.values()) == {1}

            assert client.submit(operator.mul, 6, 7).result() == 42
            x = da.ones((400, 400), chunks=100)
            assert float(x.sum().compute()) == 160000.0  # the client is the default scheduler here

            link = dashboard_link(client)
            assert link is not None
            parsed = urlparse(link)
            assert parsed.hostname == "127.0.0.1" and parsed.port
            base = f"{parsed.scheme}://{parsed.netloc}"
            assert _get(base + "/info/main/workers.html") == 200
            assert _get(base + "/status") == 200
            # an interrupt inside the block still closes everything
            raise KeyboardInterrupt
    assert client.status == "closed"
    with pytest.raises(OSError):
        _get(base + "/info/main/workers.html")


def test_local_cluster_without_dashboard():
    with connect(ClusterOptions(workers=1, threads_per_worker=1, dashboard=False)) as client:
        assert dashboard_link(client) is None
        assert client.submit(operator.add, 1, 2).result() == 3


def _worker_setup() -> tuple:
    import signal

    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_local_workers_added_later_are_set_up_as_the_first(monkeypatch):
    """Every local worker, also one --adapt starts once there is work, runs
    bgdask's preload (SIGINT ignored) without Dask's MALLOC_TRIM_THRESHOLD_.
    (Dask's nanny sets the variable in its own process's environment, where
    later workers inherit it: a plain LocalCluster started earlier by this
    test process leaves it there.)"""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with connect(ClusterOptions(adapt=(0, 1), threads_per_worker=1, dashboard=False)) as client:
        assert not client.scheduler_info()["workers"]
        assert client.submit(_worker_setup, pure=False).result(timeout=120) == (None, True)
    with connect(ClusterOptions(workers=1, threads_per_worker=1, dashboard=False)) as client:
        assert client.submit(_worker_setup, pure=False).result(timeout=120) == (None, True)


@pytest.mark.parametrize("configured, expected", [(True, True), (False, False), ("false", False),
                                                  ("True", True), ("off", False), ("1", True), (None, True)])
def test_dashboard_follows_the_configuration_unless_given(configured, expected):
    """bgdask.dashboard (as set in YAML, Python, or a DASK_BGDASK__DASHBOARD
    string) is the default; --dashboard / --no-dashboard and the argument win."""
    with dask.config.set({"bgdask.dashboard": configured}):
        assert ClusterOptions().dashboard is expected
        assert options_from_args(_parser().parse_args([])).dashboard is expected
        assert options_from_args(_parser().parse_args(["--dashboard"])).dashboard is True
        assert options_from_args(_parser().parse_args(["--no-dashboard"])).dashboard is False
        assert ClusterOptions(dashboard=not expected).dashboard is (not expected)


def test_a_dashboard_setting_that_is_no_flag_is_refused():
    with dask.config.set({"bgdask.dashboard": "sometimes"}), pytest.raises(ClusterError, match="bgdask.dashboard"):
        ClusterOptions()


def test_users_get_the_dashboard_by_default():
    """Without the tests' own setting (conftest turns it off), a cluster has one."""
    env = {k: v for k, v in os.environ.items() if k != "DASK_BGDASK__DASHBOARD"}
    proc = subprocess.run([sys.executable, "-c", "from bgdask.cluster import ClusterOptions as C; print(C().dashboard)"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "True", proc.stderr


# --------------------------------------------------------------------------- existing scheduler


@pytest.fixture(scope="module")
def external_cluster():
    """A scheduler (and one in-process worker) started outside bgdask."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as ext:
        yield ext


def test_existing_scheduler(external_cluster):
    address = external_cluster.scheduler_address
    assert address.startswith("tcp://127.0.0.1:")
    # --scheduler overrides --cluster: no jobqueue, no new cluster
    for kind in ("local", "slurm"):
        options = ClusterOptions(kind=kind, scheduler=address)
        assert make_cluster(options) is None
        with connect(options) as client:
            assert client.scheduler.address == address
            assert client.submit(operator.add, 40, 2).result() == 42
            link = dashboard_link(client)
            assert link and urlparse(link).hostname == "127.0.0.1"
            assert _get(link.replace("/status", "/info/main/workers.html")) == 200
        # leaving the block leaves the user's scheduler and workers running
        assert external_cluster.status.name == "running"
        assert len(external_cluster.scheduler.workers) == 1


def test_existing_scheduler_without_workers_times_out_clearly():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=None) as ext:
        t0 = time.monotonic()
        with pytest.raises(ClusterError) as info:
            with connect(ClusterOptions(scheduler=ext.scheduler_address, worker_timeout=1)):
                pass
        assert time.monotonic() - t0 < 15
        assert ext.scheduler_address in str(info.value) and "worker" in str(info.value)
        assert isinstance(info.value, BgdaskError)


def _start_worker(address: str) -> subprocess.Popen:
    """A `dask worker` process for ``address``, bound to 127.0.0.1."""
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
         "--nthreads", "1", "--no-dashboard", "--no-nanny", "--memory-limit", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_wait_for_workers_waits_for_all_of_them_or_fails_in_one_line():
    """--wait-for-workers N: what a compose runner needs, started with its workers."""
    from distributed import LocalCluster

    procs = []
    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None) as ext:
        address = ext.scheduler_address
        try:
            procs.append(_start_worker(address))
            # one worker is there: that alone used to be enough for connect()
            with connect(ClusterOptions(scheduler=address, worker_timeout=60)) as client:
                assert len(client.nthreads()) == 1

            # two needed, one there, none coming: a clear one-line error within the timeout
            t0 = time.monotonic()
            with pytest.raises(ClusterError) as info:
                with connect(ClusterOptions(scheduler=address, wait_for_workers=2, worker_timeout=2)):
                    pass
            assert 2 <= time.monotonic() - t0 < 15
            message = str(info.value)
            assert "\n" not in message
            assert message.startswith(f"only 1 of 2 Dask workers connected to the scheduler at {address} "
                                      "within 2 s")

            # a second worker starting now: connect() returns only once it has joined
            procs.append(_start_worker(address))
            with connect(ClusterOptions(scheduler=address, wait_for_workers=2, worker_timeout=60)) as client:
                assert len(client.nthreads()) == 2
                assert client.submit(operator.add, 40, 2).result() == 42
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)


def test_wait_for_workers_on_the_command_line():
    parser = _parser()
    assert options_from_args(parser.parse_args([])).wait_for_workers is None
    options = options_from_args(parser.parse_args(
        ["--scheduler", "tcp://127.0.0.1:8786", "--wait-for-workers", "2", "--worker-timeout", "300"]))
    assert options.wait_for_workers == 2 and options.worker_timeout == 300
    with pytest.raises(ClusterError, match="--wait-for-workers must be >= 1"):
        options_from_args(parser.parse_args(["--wait-for-workers", "0"]))


def test_unreachable_scheduler(monkeypatch):
    monkeypatch.setattr(bgcluster, "CONNECT_TIMEOUT", 1.0)
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(ClusterError, match="cannot connect"):
        with connect(ClusterOptions(scheduler=address)):
            pass


# --------------------------------------------------------------------------- job scripts


def test_pbs_job_script_carries_resources(jobqueue_defaults, tmp_path):
    script = job_script(ClusterOptions(
        kind="pbs", cores=4, memory="6GB", processes=2, walltime="01:30:00", queue="workq",
        account="proj42", job_extra_directives=["-l place=scatter", "-m n"],
        local_directory="/local/scratch", log_directory=str(tmp_path),
    ))
    lines = script.splitlines()
    assert "#PBS -q workq" in lines
    assert "#PBS -A proj42" in lines
    select = next(line for line in lines if line.startswith("#PBS -l select="))
    assert "ncpus=4" in select and "mem=" in select
    assert "#PBS -l walltime=01:30:00" in lines
    assert "#PBS -l place=scatter" in lines and "#PBS -m n" in lines
    assert f"#PBS -o {tmp_path}/" in lines
    worker = lines[-1]
    assert "--nworkers 2" in worker and "--nthreads 2" in worker
    assert "--local-directory /local/scratch" in worker
    assert "<scheduler-address>" in worker  # nothing started, nothing submitted
    assert "--host" not in worker  # workers on compute nodes bind their own address


def test_slurm_job_script_carries_resources(jobqueue_defaults):
    with dask.config.set({"jobqueue.slurm.job-extra-directives": ["--qos=low"]}):
        script = job_script(ClusterOptions(
            kind="slurm", cores=4, memory="6GB", processes=2, walltime="01:30:00", queue="debug",
            account="proj42", job_extra_directives=["--constraint=haswell"], host="127.0.0.1",
        ))
    lines = script.splitlines()
    for line in ("#SBATCH -p debug", "#SBATCH -A proj42", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --mem=6G", "#SBATCH -t 01:30:00",
                 "#SBATCH --qos=low", "#SBATCH --constraint=haswell"):  # site's directives kept
        assert line in lines, line
    worker = lines[-1]
    assert worker.startswith(sys.executable + " -m distributed.cli.dask_worker")
    assert "--nworkers 2" in worker and "--nthreads 2" in worker
    # a loopback scheduler host binds the workers to it as well
    assert "--host 127.0.0.1" in worker


def test_job_script_takes_unset_options_from_jobqueue_config(jobqueue_defaults):
    with dask.config.set({"jobqueue.slurm.cores": 6, "jobqueue.slurm.memory": "9GB",
                          "jobqueue.slurm.queue": "site-queue"}):
        script = job_script(ClusterOptions(kind="slurm"))
    assert "#SBATCH --cpus-per-task=6" in script and "#SBATCH -p site-queue" in script


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_deploy_jobqueue_examples_are_valid_configuration(kind, jobqueue_defaults):
    config = yaml.safe_load((DEPLOY / f"jobqueue-{kind}.yaml").read_text())
    assert set(config) == {"jobqueue"} and set(config["jobqueue"]) == {kind}
    import dask_jobqueue

    shipped = yaml.safe_load((Path(dask_jobqueue.__file__).parent / "jobqueue.yaml").read_text())
    unknown = set(config["jobqueue"][kind]) - set(shipped["jobqueue"][kind])
    assert not unknown, f"keys dask-jobqueue does not know: {unknown}"
    # as a file in ~/.config/dask would: merged over the defaults
    merged = dask.config.merge(dask.config.config, config)
    with dask.config.set(jobqueue=merged["jobqueue"]):
        script = job_script(ClusterOptions(kind=kind))
    per_job_cpus = "--cpus-per-task=8" if kind == "slurm" else "ncpus=8"
    assert per_job_cpus in script and "--nworkers 2" in script and "--nthreads 4" in script


def test_job_script_errors(jobqueue_defaults):
    with pytest.raises(ValueError):
        job_script(ClusterOptions())
    with pytest.raises(ValueError):
        job_script(ClusterOptions(kind="slurm", scheduler="tcp://127.0.0.1:8786"))
    with pytest.raises(ClusterError, match="--cores"):
        job_script(ClusterOptions(kind="slurm", memory="2GB"))
    with pytest.raises(ClusterError, match="--memory"):
        make_cluster(ClusterOptions(kind="pbs", cores=2))
    with pytest.raises(ClusterError, match="unknown cluster kind"):
        ClusterOptions(kind="sge")
    with pytest.raises(ClusterError, match="adapt"):
        ClusterOptions(adapt=(3, 1))


def test_dask_jobqueue_is_imported_lazily_with_a_clear_error(monkeypatch):
    code = (
        "import signal, sys\n"
        "import bgdask.cluster as c\n"
        "assert 'dask_jobqueue' not in sys.modules\n"
        "c.job_script(c.ClusterOptions(kind='slurm', cores=1, memory='1GB'))\n"
        "assert 'dask_jobqueue' in sys.modules\n"
        # dask-jobqueue 0.9 turns Ctrl-C into sys.exit() (status 0); bgdask undoes that
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import now raises ImportError
    with pytest.raises(BgdaskError, match=r"pip install"):
        job_script(ClusterOptions(kind="slurm", cores=1, memory="1GB"))


# --------------------------------------------------------------------------- argparse


def _argv(options: ClusterOptions) -> list[str]:
    """The command line that means ``options``."""
    argv = ["--scheduler", options.scheduler] if options.scheduler else ["--cluster", options.kind]
    for name in ("workers", "threads_per_worker", "memory_limit", "jobs", "cores", "memory",
                 "processes", "walltime", "queue", "account", "local_directory", "log_directory",
                 "host", "worker_timeout", "wait_for_workers"):
        value = getattr(options, name)
        if value is not None:
            argv += ["--" + name.replace("_", "-"), str(value)]
    if options.adapt:
        argv += ["--adapt", *map(str, options.adapt)]
    for line in options.job_extra_directives:
        argv += [f"--job-extra-directive={line}"]
    argv += ["--dashboard" if options.dashboard else "--no-dashboard"]
    return argv


@pytest.mark.parametrize("options", [
    ClusterOptions(),
    ClusterOptions(workers=3, threads_per_worker=2, memory_limit="4GB", local_directory="/tmp/x"),
    ClusterOptions(workers=1, dashboard=True),
    ClusterOptions(workers=1, dashboard=False),
    ClusterOptions(scheduler="tcp://127.0.0.1:8786"),
    ClusterOptions(scheduler="tcp://scheduler:8786", wait_for_workers=2, worker_timeout=300.0),
    ClusterOptions(kind="slurm", jobs=4, cores=8, memory="12GB", processes=2, walltime="02:00:00",
                   queue="debug", account="proj", job_extra_directives=["--constraint=cpu", "--qos=low"],
                   local_directory="/local", log_directory="/logs", host="127.0.0.1",
                   worker_timeout=30.0),
    ClusterOptions(kind="pbs", adapt=(0, 10), cores=4, memory="6GB", job_extra_directives=["-l place=scatter"]),
])
def test_argparse_round_trip(options):
    args = _parser().parse_args(_argv(options))
    assert options_from_args(args) == options


def test_argparse_defaults_and_flags():
    parser = _parser()
    assert options_from_args(parser.parse_args([])) == ClusterOptions()
    args = parser.parse_args(shlex.split(
        "--cluster slurm --jobs 2 --cores 1 --memory 1GB --adapt 1 4 "
        "--job-extra-directive=--constraint=a --job-extra-directive=--qos=b"))
    options = options_from_args(args)
    assert options.kind == "slurm" and options.jobs == 2 and options.adapt == (1, 4)
    assert options.job_extra_directives == ["--constraint=a", "--qos=b"]
    with pytest.raises(SystemExit):  # a scheduler address or a cluster kind, not both
        parser.parse_args(["--cluster", "slurm", "--scheduler", "tcp://127.0.0.1:8786"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--cluster", "sge"])


# --------------------------------------------------------------------------- real SLURM


def _slurm_problem() -> str | None:
    """Why the local SLURM cannot run jobs, or None when it can."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "SLURM commands (sinfo, sbatch) not found; run deploy/slurm/start-slurm.sh"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()}; run deploy/slurm/start-slurm.sh"
    states = {s.rstrip("*~#!%$@^-") for s in out.stdout.split()}
    if not states & {"idle", "mixed", "allocated", "completing"}:
        return f"no SLURM node is up (states: {sorted(states) or 'none'}); run deploy/slurm/start-slurm.sh"
    return None


def _squeue_states(job_ids) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%T"],
                         capture_output=True, text=True, timeout=15)
    return out.stdout.split()


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_cluster_runs_on_two_jobs(tmp_path):
    problem = _slurm_problem()
    if problem:
        if ON_CI:
            pytest.fail(f"SLURM is required on CI: {problem}")
        pytest.skip(problem)

    options = ClusterOptions(
        kind="slurm", jobs=2, cores=1, processes=1, memory="1GB", walltime="00:10:00",
        host="127.0.0.1", log_directory=str(tmp_path), worker_timeout=90, dashboard=True,
    )
    with pytest.raises(KeyboardInterrupt), connect(options) as client:
        client.wait_for_workers(2, timeout=60)
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        workers = sorted(client.nthreads())
        assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
        # each worker is its own SLURM job
        job_ids = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        assert all(job_ids.values()) and len(set(job_ids.values())) == 2
        # a computation on both workers
        futures = [client.submit(operator.add, i, 100, workers=[w], allow_other_workers=False, pure=False)
                   for i, w in enumerate(workers)]
        assert client.gather(futures) == [100, 101]
        assert float(da.arange(10_000, chunks=1000).sum().compute()) == 49_995_000.0
        link = dashboard_link(client)
        assert link and urlparse(link).hostname == "127.0.0.1"
        assert sorted(_squeue_states(job_ids.values())) == ["RUNNING", "RUNNING"]
        raise KeyboardInterrupt  # Ctrl-C: leaving the block must still cancel the jobs

    # closing cancelled the jobs
    deadline = time.monotonic() + 20
    while (states := _squeue_states(job_ids.values())) and time.monotonic() < deadline:
        assert set(states) <= {"RUNNING", "COMPLETING", "CANCELLED"}, states
        time.sleep(0.5)
    assert not [s for s in _squeue_states(job_ids.values()) if s in ("RUNNING", "PENDING")]
    assert list(tmp_path.glob("*.err")), "job logs go to --log-directory"


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_rejected_job_fails_fast(tmp_path):
    problem = _slurm_problem()
    if problem:
        if ON_CI:
            pytest.fail(f"SLURM is required on CI: {problem}")
        pytest.skip(problem)
    # more memory than any node has: sbatch refuses, and connect() says so at once
    options = ClusterOptions(kind="slurm", cores=1, memory="100TB", host="127.0.0.1",
                             log_directory=str(tmp_path), worker_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match="submitting the slurm job failed"):
        with connect(options):
            pass
    assert time.monotonic() - t0 < 30


def test_start_stop_scripts_are_valid_bash():
    for name in ("start-slurm.sh", "stop-slurm.sh"):
        script = DEPLOY / "slurm" / name
        assert os.access(script, os.X_OK), f"{script} is not executable"
        subprocess.run(["bash", "-n", str(script)], check=True)


# --------------------------------------------------------------------------- Kubernetes


def test_kubernetes_manifests():
    docs = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict) and "kind" in doc, path
            docs.setdefault(doc["kind"], []).append(doc)
    (cluster,), (job,), (pvc,) = docs["DaskCluster"], docs["Job"], docs["PersistentVolumeClaim"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    name = cluster["metadata"]["name"]
    replicas = cluster["spec"]["worker"]["replicas"]
    assert isinstance(replicas, int) and replicas >= 1, "a DaskCluster without workers never runs the Job"
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    claim = pvc["metadata"]["name"]

    scheduler_pod = cluster["spec"]["scheduler"]["spec"]
    worker_pod = cluster["spec"]["worker"]["spec"]
    job_pod = job["spec"]["template"]["spec"]
    images = {c["image"] for pod in (scheduler_pod, worker_pod, job_pod) for c in pod["containers"]}
    assert len(images) == 1, f"scheduler, workers and runner must share one image: {images}"

    def claims(pod):
        return {v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
                if "persistentVolumeClaim" in v}

    assert claims(worker_pod) == claims(job_pod) == {claim}
    for pod in (worker_pod, job_pod):
        mounts = {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert "/data" in mounts

    (runner,) = job_pod["containers"]
    argv = runner["command"] + runner["args"]
    assert argv[:2] == ["bgdask", "match"]
    # the runner's input and output are on the volume the workers mount
    assert argv[2].startswith("/data/") and argv[argv.index("-o") + 1].startswith("/data/")
    assert argv[argv.index("--scheduler") + 1] == f"tcp://{name}-scheduler:8786"
    _check_bgdask_argv(argv)

    ports = {p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"]}
    assert {8786, 8787} <= ports
    (sched,) = scheduler_pod["containers"]
    (worker,) = worker_pod["containers"]
    _check_dask_argv(sched["command"] + sched.get("args", []))
    _check_dask_argv(worker["command"] + worker.get("args", []))

    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).is_file(), resource


# --------------------------------------------------------------------------- Docker


def _project_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("scripts", {}))


def _check_bgdask_argv(argv: list[str]) -> argparse.Namespace:
    """argv[0] is a script pyproject.toml declares; bgdask's own parser accepts the rest."""
    from bgdask.cli import build_parser

    assert argv[0] in _project_scripts(), argv
    return build_parser().parse_args(argv[1:])


def _check_dask_argv(argv: list[str]) -> dict:
    """``dask scheduler|worker ...``: dask's own command line accepts the options; their values."""
    assert argv[0] == "dask", argv
    assert [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "dask"]
    if argv[1] == "scheduler":
        from distributed.cli.dask_scheduler import main
    elif argv[1] == "worker":
        from distributed.cli.dask_worker import main
    else:
        raise AssertionError(f"unexpected dask command {argv}")
    return main.make_context(f"dask {argv[1]}", list(argv[2:])).params  # parses, runs nothing


def _compose() -> tuple[dict, dict[str, dict]]:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return compose, compose["services"]


def _service_argv(service: dict) -> list[str]:
    return list(service.get("entrypoint") or []) + list(service["command"])


def test_compose_services_run_commands_the_image_has():
    compose, services = _compose()
    assert {"scheduler", "runner"} <= set(services)
    for name, service in services.items():
        # the image's entrypoint is `tini -- bgdask`: a command not reset would go to bgdask
        assert service.get("entrypoint") == [], f"{name}: the image's entrypoint (bgdask) must be reset"
        argv = _service_argv(service)
        assert argv[0] in {"dask"} | _project_scripts(), f"{name}: {argv[0]} is not an executable here"
        if argv[0] == "dask":
            _check_dask_argv(argv)
        else:
            _check_bgdask_argv(argv)
        # inputs and output on storage every worker sees at the same path
        volume, _, path = next(v for v in service["volumes"] if v.endswith(":/data")).partition(":")
        assert path == "/data" and volume in compose["volumes"], name


def test_compose_services_reach_each_other():
    """Workers and runner name the scheduler service and its port; the runner waits for the workers."""
    from bgdask.cluster import _is_loopback, options_from_args

    _, services = _compose()
    by_role: dict[str, list[tuple[str, dict]]] = {}
    for name, service in services.items():
        argv = _service_argv(service)
        by_role.setdefault(" ".join(argv[:2]), []).append((name, service))
    ((scheduler_name, scheduler),) = by_role["dask scheduler"]
    params = _check_dask_argv(_service_argv(scheduler))
    # other containers connect to it: it must not bind the container's loopback
    assert not _is_loopback(params["host"]), params["host"]
    expected = f"tcp://{scheduler_name}:{params['port']}"

    workers = by_role["dask worker"]
    assert workers
    for name, worker in workers:
        assert _check_dask_argv(_service_argv(worker))["scheduler"] == expected, name
        assert scheduler_name in worker.get("depends_on", []), name

    ((_, runner),) = [(n, s) for n, s in services.items() if _service_argv(s)[0] in _project_scripts()]
    args = _check_bgdask_argv(_service_argv(runner))
    options = options_from_args(args)
    assert options.scheduler == expected
    # podman does not honour healthy-conditions: the runner waits itself, for workers that exist
    assert options.wait_for_workers is not None and 1 <= options.wait_for_workers <= len(workers)
    assert set(runner.get("depends_on", [])) >= {scheduler_name} | {name for name, _ in workers}
    # the workers read the simulated warps and write the store: the output is on the shared volume
    assert Path(args.output).is_relative_to("/data"), args.output


def _published(port) -> tuple[str, int]:
    """(host address, container port) of a compose `ports` entry ('' when on every interface)."""
    if isinstance(port, dict):  # long syntax
        return str(port.get("host_ip", "")), int(port["target"])
    parts = str(port).split(":")  # [[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]
    return ":".join(parts[:-2]), int(parts[-1].split("/")[0])


def test_compose_publishes_the_dashboard_on_loopback_only():
    _, services = _compose()
    published: dict[str, set[int]] = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip, target = _published(port)
            try:
                loopback = ipaddress.ip_address(host_ip.strip("[]")).is_loopback
            except ValueError:  # no address: every interface
                loopback = False
            assert loopback, f"{name}: port {port} is published on every interface; bind it to 127.0.0.1"
            published.setdefault(name, set()).add(target)
    ((name, scheduler),) = [(n, s) for n, s in services.items() if _service_argv(s)[:2] == ["dask", "scheduler"]]
    dashboard = _check_dask_argv(_service_argv(scheduler))["dashboard_address"]
    assert int(dashboard.rsplit(":", 1)[1]) in published.get(name, set()), "the dashboard is not published"


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            current = ""
    return instructions


def test_dockerfile_takes_what_pip_install_needs_from_the_context():
    """What the Dockerfile takes from the build context exists, and is what `pip install` needs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    taken = set()
    for keyword, rest in _dockerfile():
        if keyword in ("COPY", "ADD") and "--from=" not in rest:
            taken |= set(shlex.split(rest)[:-1])
        for target in re.findall(r"--mount=type=bind,(?:\S*,)?target=(\S+?)(?:[,\s]|$)", rest):
            taken |= set(re.findall(re.escape(target.rstrip("/")) + r"/(\S+)", rest))
    for path in taken:
        assert (ROOT / path).exists(), f"the Dockerfile takes {path} from the context: not in the repository"
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert needed <= {p.rstrip("/") for p in taken}, f"the build lacks {needed - taken}"
    # pip only warns about an extra the project does not have
    extras = set(project["project"]["optional-dependencies"])
    installs = [rest for keyword, rest in _dockerfile() if keyword == "RUN" and "pip install" in rest]
    requested = {e for rest in installs for group in re.findall(r"/src\[([^\]]*)\]", rest)
                 for e in group.split(",")}
    assert requested and requested <= extras, requested - extras


def test_dockerfile_entrypoint_runs_bgdask_and_base_is_an_argument():
    instructions = _dockerfile()
    ((_, entrypoint),) = [(k, r) for k, r in instructions if k == "ENTRYPOINT"]
    assert json.loads(entrypoint)[-1] in _project_scripts()
    # every stage starts from the BASE build argument (docker/build-base.sh's image replaces it)
    first_from = next(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    assert any(k == "ARG" and r.startswith("BASE=") for k, r in instructions[:first_from])
    assert all(r.split()[0] == "${BASE}" for k, r in instructions if k == "FROM")


def test_container_scripts_are_valid():
    for script in (DOCKER / "build-base.sh", ROOT / ".ci" / "containers"):
        assert os.access(script, os.X_OK), f"{script} is not executable"
        subprocess.run(["bash", "-n", str(script)], check=True)
    conf = tomllib.loads((DOCKER / "containers.conf").read_text())
    for limit in conf["containers"]["default_ulimits"]:
        name, _, values = limit.partition("=")
        soft, hard = map(int, values.split(":"))
        assert name in {"nofile", "nproc"} and 0 < soft <= hard, limit
