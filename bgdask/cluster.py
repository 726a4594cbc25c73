"""Where bgdask gets its Dask cluster: the one place that turns options into a Client.

Four ways to run, chosen by :class:`ClusterOptions`:

* ``kind="local"`` (default): a :class:`distributed.LocalCluster` of worker
  processes on this machine, bound to 127.0.0.1 (scheduler, workers, dashboard
  on a free port).
* ``scheduler="tcp://host:8786"``: connect to a scheduler that already runs
  (Docker compose, Kubernetes, a cluster someone else started); overrides ``kind``.
* ``kind="slurm"`` / ``kind="pbs"``: a dask-jobqueue cluster; every job runs
  ``processes`` Dask workers sharing ``cores`` threads and ``memory``.  Options
  left at ``None`` are taken from dask-jobqueue's own configuration
  (``~/.config/dask/jobqueue.yaml``, see ``deploy/jobqueue-*.yaml``), so sites
  keep their settings.

Typical use::

    with connect(ClusterOptions(kind="slurm", jobs=4, cores=8, memory="12GB")) as client:
        print(dashboard_link(client))
        ...

:class:`KernelWarmUp` compiles the numba kernels in a process of its own
while the inputs are read and the cluster starts, so that workers only load them.

dask-jobqueue is imported only for slurm/pbs; install it with ``pip install bgdask[hpc]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import subprocess
import sys
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import dask

from bgdask.config import setting_flag
from bgdask.errors import BgdaskError

__all__ = [
    "ClusterError",
    "ClusterOptions",
    "KINDS",
    "KernelWarmUp",
    "add_cluster_arguments",
    "check_scheduler_address",
    "connect",
    "dashboard_line",
    "dashboard_link",
    "job_script",
    "make_cluster",
    "options_from_args",
]

logger = logging.getLogger(__name__)

KINDS = ("local", "slurm", "pbs")
JOBQUEUE_KINDS = ("slurm", "pbs")

#: default seconds connect() waits for the first worker, per kind
DEFAULT_WORKER_TIMEOUT = {"local": 60.0, "scheduler": 60.0, "slurm": 600.0, "pbs": 600.0}
#: seconds to wait for a connection to an existing scheduler
CONNECT_TIMEOUT = 30.0


class ClusterError(BgdaskError):
    """The cluster cannot be created, reached, or got no worker in time."""


@dataclass
class ClusterOptions:
    """How to get Dask workers.  ``None`` means: the library's own default/config."""

    kind: str = "local"  # "local" | "slurm" | "pbs"
    scheduler: str | None = None  # address of an existing scheduler; overrides kind
    workers: int | None = None  # local: n_workers
    threads_per_worker: int | None = None
    memory_limit: str | None = None  # local per-worker limit, e.g. "4GB" or "auto"
    # the Dask dashboard of a cluster bgdask starts; None: ``bgdask.dashboard``
    # of Dask's configuration (bgdask.yaml: true)
    dashboard: bool | None = None
    # jobqueue (None = take dask-jobqueue's own configuration, jobqueue.yaml, so sites keep theirs)
    jobs: int = 1
    cores: int | None = None  # cores (threads) per job
    memory: str | None = None  # memory per job, e.g. "12GB"
    processes: int | None = None  # worker processes per job
    walltime: str | None = None
    queue: str | None = None
    account: str | None = None
    adapt: tuple[int, int] | None = None  # (min, max): jobs for slurm/pbs, workers for local
    job_extra_directives: list[str] = field(default_factory=list)  # appended to jobqueue.yaml's
    local_directory: str | None = None  # worker spill directory (fast local disk)
    # Where the scheduler binds.  None: 127.0.0.1 for local; for slurm/pbs the
    # site's jobqueue.yaml (scheduler-options / interface), else all interfaces,
    # so workers on compute nodes can reach it.  A loopback host for slurm/pbs
    # also binds the workers to it (single-node SLURM for tests and CI).
    host: str | None = None
    log_directory: str | None = None  # slurm/pbs: where job stdout/stderr go
    worker_timeout: float | None = None  # seconds connect() waits for a first worker
    # connect() waits for this many workers instead of one (and, with a
    # scheduler address, for that scheduler to come up), within worker_timeout:
    # for runners started together with their workers (compose, batch jobs)
    wait_for_workers: int | None = None

    def __post_init__(self) -> None:
        if self.dashboard is None:
            self.dashboard = setting_flag("dashboard", True, ClusterError)   # bgdask.yaml: true
        if self.kind not in KINDS:
            raise ClusterError(f"unknown cluster kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.adapt is not None:
            lo, hi = self.adapt
            if not (0 <= int(lo) <= int(hi)) or int(hi) < 1:
                raise ClusterError(f"--adapt MIN MAX needs 0 <= MIN <= MAX and MAX >= 1, got {lo} {hi}")
            self.adapt = (int(lo), int(hi))
        if self.jobs < 0:
            raise ClusterError(f"--jobs must be >= 0, got {self.jobs}")
        for name in ("workers", "threads_per_worker", "cores", "processes", "wait_for_workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ClusterError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        self.job_extra_directives = list(self.job_extra_directives or [])

    @property
    def effective_kind(self) -> str:
        """``"scheduler"`` when connecting to an existing scheduler, else ``kind``."""
        return "scheduler" if self.scheduler else self.kind


# --------------------------------------------------------------------------- helpers

#: Protocols by which a scheduler in another process can be reached.
SCHEDULER_PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")


def check_scheduler_address(address: str | None) -> str | None:
    """``address`` (``--scheduler``) if a scheduler could be reached at it
    (PROTOCOL://HOST:PORT, or HOST:PORT for tcp), else a one-line ClusterError."""
    if address is None:
        return None
    from distributed.comm.addressing import parse_address, parse_host_port

    text = str(address).strip()
    expected = "expected tcp://HOST:PORT (or tls://, ws://, wss://, ucx://)"
    try:
        scheme, location = parse_address(text)
        if scheme not in SCHEDULER_PROTOCOLS:
            raise ClusterError(f"--scheduler {text!r}: a scheduler cannot be reached by {scheme}:// from this "
                               f"command; {expected}")
        host, port = parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise ClusterError(f"--scheduler {text!r} is not a scheduler address ({exc}); {expected}") from None
    if not host or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ClusterError(f"--scheduler {text!r}: needs a host and a port from 1 to 65535; {expected}")
    return text


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _jobqueue_classes(kind: str) -> tuple[type, type]:
    """(ClusterClass, JobClass) of dask-jobqueue for ``kind``, imported lazily."""
    try:
        import dask_jobqueue
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ClusterError(
            f"--cluster {kind} needs dask-jobqueue, which is not installed: "
            "pip install 'bgdask[hpc]' (or pip install dask-jobqueue)"
        ) from exc
    _restore_sigint()
    if kind == "slurm":
        return dask_jobqueue.SLURMCluster, dask_jobqueue.slurm.SLURMJob
    if kind == "pbs":
        return dask_jobqueue.PBSCluster, dask_jobqueue.pbs.PBSJob
    raise ClusterError(f"{kind!r} is not a dask-jobqueue cluster kind ({', '.join(JOBQUEUE_KINDS)})")


def _restore_sigint() -> None:
    from ._compat import restore_sigint_after_jobqueue

    restore_sigint_after_jobqueue()


def _recording_job_cls(job_cls: type) -> type:
    """The Job class of ``job_cls`` that records a failed submission in
    ``submit_error`` (one line, logged) instead of losing it in the event loop."""
    from ._compat import recording_job_class

    def on_error(job, exc) -> str:
        message = _brief(exc)
        logger.error("submitting a %s job failed: %s", job.config_name, message)
        return message

    return recording_job_class(job_cls, on_error)


def _brief(exc: BaseException) -> str:
    """One line of a job submission error: the batch system's stderr when quoted."""
    message = str(exc)
    if "stderr:" in message:  # dask-jobqueue quotes the command and its output
        message = message.split("stderr:", 1)[1].strip() or message
    return " ".join(message.split())


def _submit_errors(cluster) -> tuple[list[str], bool]:
    """(messages of failed job submissions, whether any job was submitted)."""
    errors, submitted = [], False
    for job in list(getattr(cluster, "workers", {}).values()):
        error = getattr(job, "submit_error", None)
        if error is not None:
            errors.append(error)
        elif getattr(job, "job_id", None):
            submitted = True
    return errors, submitted


def _jobqueue_kwargs(options: ClusterOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split options into (job keywords, scheduler options) for dask-jobqueue.

    Only what the user set is passed, so everything else comes from the site's
    jobqueue.yaml.  Lists (extra directives, worker arguments) and the scheduler
    options are merged with the configuration rather than replacing it.
    """
    import dask.config

    kind = options.kind
    cfg = f"jobqueue.{kind}"

    job: dict[str, Any] = {}
    for name in ("cores", "memory", "processes", "walltime", "queue", "account",
                 "local_directory", "log_directory"):
        value = getattr(options, name)
        if value is not None:
            job[name] = value

    # Enough to build a job?  dask-jobqueue's own message names its arguments;
    # ours names the command-line flags and the configuration keys.
    for name in ("cores", "memory"):
        if name not in job and dask.config.get(f"{cfg}.{name}", None) is None:
            raise ClusterError(
                f"--cluster {kind} needs --{name} (per job), or jobqueue.{kind}.{name} "
                f"in your dask-jobqueue configuration (see deploy/jobqueue-{kind}.yaml)"
            )

    if options.job_extra_directives:
        configured = dask.config.get(f"{cfg}.job-extra-directives", None) or []
        job["job_extra_directives"] = list(configured) + list(options.job_extra_directives)

    scheduler_options: dict[str, Any] = dict(dask.config.get(f"{cfg}.scheduler-options", None) or {})
    if options.host:
        scheduler_options["host"] = options.host
        scheduler_options.pop("interface", None)
        scheduler_options["dashboard_address"] = f"{options.host}:0"
        if _is_loopback(options.host):
            # Workers must bind where the scheduler can reach them: the same
            # loopback host (works only when jobs run on this node).
            extra = list(dask.config.get(f"{cfg}.worker-extra-args", None) or [])
            if "--host" not in extra:
                extra += ["--host", options.host]
            job["worker_extra_args"] = extra
    if not options.dashboard:
        # no dashboard plots; the scheduler's small HTTP server (/health) stays,
        # on a free port rather than 8787
        scheduler_options["dashboard"] = False
        scheduler_options["dashboard_address"] = f"{options.host or ''}:0"
    return job, scheduler_options


#: What a local worker's nanny reads from Dask's configuration as it is made
#: (also for a worker ``--adapt`` adds later): bgdask's worker preload
#: (:mod:`bgdask._worker_preload`), and no MALLOC_TRIM_THRESHOLD_: Dask's
#: 65536 makes every large NumPy temporary page-fault in afresh, a third of
#: the workers' CPU time (round one; ``python benchmarks/bench_pipeline.py``
#: against ``--dask-malloc``). A value in this process's environment still
#: wins (Dask's rule; a plain LocalCluster started before leaves one there).
_LOCAL_WORKER_CONFIG = {"distributed.worker.preload": ["bgdask._worker_preload"],
                        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def _local_nanny_class():
    from distributed import Nanny

    class LocalNanny(Nanny):
        """A nanny made under :data:`_LOCAL_WORKER_CONFIG`."""

        def __init__(self, *args, **kwargs):
            with dask.config.set(_LOCAL_WORKER_CONFIG):
                super().__init__(*args, **kwargs)

    return LocalNanny


def _make_local(options: ClusterOptions):
    from distributed import LocalCluster

    host = options.host or "127.0.0.1"
    kwargs: dict[str, Any] = dict(
        processes=True,
        host=host,
        # a free port: never clashes with another run.  Without the dashboard
        # the scheduler still serves /health; keep that off 8787 as well.
        dashboard_address=f"{host}:0",
        silence_logs=logging.WARNING,
    )
    if not options.dashboard:
        kwargs["scheduler_kwargs"] = {"dashboard": False}
    if options.adapt is not None:
        kwargs["n_workers"] = options.adapt[0]
    elif options.workers is not None:
        kwargs["n_workers"] = options.workers
    if options.threads_per_worker is not None:
        kwargs["threads_per_worker"] = options.threads_per_worker
    if options.memory_limit is not None:
        kwargs["memory_limit"] = options.memory_limit
    if options.local_directory is not None:
        kwargs["local_directory"] = options.local_directory
    try:
        return LocalCluster(worker_class=_local_nanny_class(), **kwargs)
    except Exception as exc:
        raise ClusterError(f"could not start the local Dask cluster: {exc}") from exc


_LOCAL_ONLY = ("workers", "threads_per_worker", "memory_limit")
_JOBQUEUE_ONLY = ("cores", "memory", "processes", "walltime", "queue", "account", "log_directory")


def _warn_ignored(options: ClusterOptions) -> None:
    """Log options that do not apply to the cluster being made (a likely mix-up)."""
    kind = options.effective_kind
    if kind == "local":
        ignored = [n for n in _JOBQUEUE_ONLY if getattr(options, n) is not None]
        ignored += ["job_extra_directives"] if options.job_extra_directives else []
    elif kind == "scheduler":
        ignored = [n for n in _LOCAL_ONLY + _JOBQUEUE_ONLY if getattr(options, n) is not None]
    else:
        ignored = [n for n in _LOCAL_ONLY if getattr(options, n) is not None]
    if ignored:
        flags = ", ".join("--" + n.replace("_", "-") for n in ignored)
        logger.warning("%s: not used with %s", flags,
                       f"--scheduler {options.scheduler}" if kind == "scheduler" else f"--cluster {kind}")


# --------------------------------------------------------------------------- API


def make_cluster(options: ClusterOptions):
    """Create the cluster ``options`` describe, without scaling it.

    Returns a LocalCluster (its ``workers`` already started), a SLURMCluster or
    PBSCluster (scheduler running, no job submitted yet), or ``None`` when
    ``options.scheduler`` names an existing scheduler.
    """
    _warn_ignored(options)
    if options.scheduler:
        return None
    if options.kind == "local":
        return _make_local(options)
    cluster_cls, job_cls = _jobqueue_classes(options.kind)
    job, scheduler_options = _jobqueue_kwargs(options)
    try:
        return cluster_cls(scheduler_options=scheduler_options, job_cls=_recording_job_cls(job_cls), **job)
    except (ValueError, TypeError) as exc:
        raise ClusterError(f"invalid {options.kind} cluster options: {exc}") from exc


def job_script(options: ClusterOptions) -> str:
    """The batch script a slurm/pbs cluster would submit for one job.

    Built without starting a scheduler or submitting anything; the scheduler
    address in it is a placeholder.  ValueError for local clusters.
    """
    if options.scheduler or options.kind not in JOBQUEUE_KINDS:
        raise ValueError(
            f"job_script is only defined for --cluster {' or '.join(JOBQUEUE_KINDS)}, "
            f"not {options.effective_kind!r}"
        )
    _warn_ignored(options)
    _, job_cls = _jobqueue_classes(options.kind)
    job, _ = _jobqueue_kwargs(options)
    import dask.config

    interface = dask.config.get(f"jobqueue.{options.kind}.interface", None)
    try:
        return job_cls(
            "tcp://<scheduler-address>:8786",
            name="dummy-name",
            config_name=options.kind,
            interface=interface,
            **job,
        ).job_script()
    except (ValueError, TypeError) as exc:
        raise ClusterError(f"invalid {options.kind} cluster options: {exc}") from exc


#: Clients connect() made for clusters started without a dashboard.
_NO_DASHBOARD: "weakref.WeakSet" = weakref.WeakSet()


def dashboard_line(client) -> str:
    """What a command prints of the dashboard of ``client``: its link, or why
    there is none (off, for a cluster :func:`connect` started without one)."""
    if client in _NO_DASHBOARD:
        return "dask dashboard: off (--dashboard, or bgdask.dashboard: true, to serve one)"
    link = dashboard_link(client)
    return f"dask dashboard: {link}" if link else "dask dashboard: not available"


def dashboard_link(client) -> str | None:
    """The dashboard address of ``client``'s scheduler, or None if it has none."""
    if client in _NO_DASHBOARD:
        return None
    try:
        services = client.scheduler_info().get("services", {})
        if "dashboard" not in services:
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - a link is a convenience, never an error
        return None


def _worker_timeout(options: ClusterOptions) -> float:
    if options.worker_timeout is not None:
        return options.worker_timeout
    return DEFAULT_WORKER_TIMEOUT[options.effective_kind]


def _wait_for_worker(client, options: ClusterOptions, cluster) -> None:
    kind = options.effective_kind
    timeout = _worker_timeout(options)
    needed = options.wait_for_workers or 1
    deadline = time.monotonic() + timeout
    warned = False
    while True:
        if len(client.nthreads()) >= needed:
            return
        if kind in JOBQUEUE_KINDS:
            errors, submitted = _submit_errors(cluster)
            if errors and not submitted:
                raise ClusterError(f"submitting the {kind} job failed: {errors[0]}")
            if errors and not warned:
                logger.warning("%d of the %s jobs could not be submitted: %s", len(errors), kind, errors[0])
                warned = True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if kind == "scheduler":
        where = f"the scheduler at {options.scheduler}"
        hint = "start workers with `dask worker " + str(options.scheduler) + "`"
    elif kind == "local":
        where = "the local cluster"
        hint = "check memory (--memory-limit) and the worker logs above"
    else:
        job_ids = [getattr(job, "job_id", None) for job in getattr(cluster, "workers", {}).values()]
        job_ids = [j for j in job_ids if j]
        where = f"the {kind} cluster (jobs {', '.join(job_ids) or 'none submitted'})"
        queue_cmd = "squeue --me" if kind == "slurm" else "qstat -u $USER"
        hint = (f"the jobs may still wait in the queue ({queue_cmd}), or workers cannot reach the "
                f"scheduler at {getattr(cluster, 'scheduler_address', '?')}: check the job logs "
                "(--log-directory) and the scheduler host (--host / jobqueue interface)")
    if needed > 1:
        raise ClusterError(f"only {len(client.nthreads())} of {needed} Dask workers connected to {where} "
                           f"within {timeout:g} s; {hint}")
    raise ClusterError(f"no Dask worker connected to {where} within {timeout:g} s; {hint}")


@contextmanager
def connect(options: ClusterOptions) -> Iterator["distributed.Client"]:  # noqa: F821
    """Start (or reach) the cluster, scale it, wait for a worker, yield a Client.

    Everything started here is closed on exit, also on exceptions and
    KeyboardInterrupt (jobqueue jobs are cancelled).  Connecting to an existing
    scheduler leaves that scheduler and its workers running.
    """
    from distributed import Client

    kind = options.effective_kind
    check_scheduler_address(options.scheduler)
    cluster = None
    client = None
    try:
        cluster = make_cluster(options)
        if cluster is None:
            connect_timeout = CONNECT_TIMEOUT
            if options.wait_for_workers is not None:  # the scheduler may be starting too
                connect_timeout = max(connect_timeout, _worker_timeout(options))
            try:
                client = Client(options.scheduler, timeout=f"{connect_timeout:g}s")
            except (OSError, TimeoutError) as exc:
                raise ClusterError(f"cannot connect to the Dask scheduler at {options.scheduler}: {exc}") from exc
        else:
            if kind in JOBQUEUE_KINDS:
                if options.adapt is not None:
                    cluster.adapt(minimum_jobs=options.adapt[0], maximum_jobs=options.adapt[1])
                else:
                    cluster.scale(jobs=options.jobs)
            elif options.adapt is not None:
                cluster.adapt(minimum=options.adapt[0], maximum=options.adapt[1])
            client = Client(cluster)
        if not (options.dashboard or options.scheduler):
            _NO_DASHBOARD.add(client)
        needs_worker = options.wait_for_workers is not None or (
            not (options.adapt is not None and options.adapt[0] == 0)
            and not (kind in JOBQUEUE_KINDS and options.adapt is None and options.jobs == 0)
        )
        if needs_worker:
            _wait_for_worker(client, options, cluster)
        yield client
    finally:
        for thing in (client, cluster):
            if thing is None:
                continue
            try:
                thing.close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the real error
                logger.warning("closing %s failed: %s", type(thing).__name__, exc)


class KernelWarmUp:
    """Compiles bgdask's kernels (or loads them from numba's cache) in
    processes of their own, ``python -m bgdask.kernels.warm PART`` for each
    part of :data:`bgdask.kernels.warm.PARTS` not already cached (as its
    stamp says: :func:`bgdask.kernels.warm.is_warm`; one process for all on
    a single core), while this one reads its inputs and starts the cluster;
    :meth:`wait` for them before submitting work, so that the workers only
    load the kernels.

    Processes rather than a thread: numba compiles mostly in Python, and a
    thread of this process would share the GIL with the local cluster's
    scheduler. A context manager: leaving it stops a warm-up still running
    (a run that failed early). If the warm-up fails, the workers compile
    the kernels themselves."""

    def __init__(self, commands: list[tuple[str, ...]] | None = None):
        import bgdask
        from bgdask.kernels.warm import PARTS, is_warm

        if commands is None:
            cold = [(part,) for part in PARTS if not is_warm(part)]   # a part its stamp says is cached: nothing to do
            if len(cold) > 1 and (os.cpu_count() or 1) == 1:
                cold = [()]   # one process for every part
            commands = [("-m", "bgdask.kernels.warm", *part) for part in cold]
        env = dict(os.environ)
        root = str(Path(bgdask.__file__).resolve().parents[1])  # the same bgdask, however it was found
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.started = time.monotonic()
        self.procs = []
        try:
            for command in commands:
                self.procs.append(subprocess.Popen([sys.executable, *command], env=env, stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        except BaseException:
            self.close()
            raise

    def wait(self, announce=None, after: float = 3.0) -> bool:
        """Wait until the kernels are compiled; ``announce(text)`` once if the
        warm-up has run for ``after`` seconds and is still running (it is
        compiling, not loading). True if it succeeded."""
        from bgdask.kernels.warm import NOTE

        if announce is not None and any(p.poll() is None for p in self.procs):
            try:
                for p in self.procs:
                    p.wait(timeout=max(0.0, after - (time.monotonic() - self.started)))
            except subprocess.TimeoutExpired:
                announce(NOTE)
        codes = [p.wait() for p in self.procs]
        if any(codes):
            logger.info("the kernels' warm-up exited with status %s: the workers compile them", codes)
        return not any(codes)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            p.wait()

    def __enter__(self) -> "KernelWarmUp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- command line


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the cluster options (one argument group) to ``parser``."""
    g = parser.add_argument_group(
        "cluster",
        "Where the work runs: a local cluster (default), an existing scheduler, or "
        "SLURM/PBS jobs via dask-jobqueue (unset job options come from jobqueue.yaml).",
    )
    where = g.add_mutually_exclusive_group()
    where.add_argument("--cluster", choices=KINDS, default="local",
                       help="local worker processes, or SLURM/PBS jobs")
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="connect to an existing Dask scheduler, e.g. tcp://host:8786")
    g.add_argument("--workers", type=int, metavar="N", default=None,
                   help="local: number of worker processes")
    g.add_argument("--threads-per-worker", type=int, metavar="T", default=None,
                   help="local: threads per worker process")
    g.add_argument("--memory-limit", metavar="M", default=None,
                   help="local: memory limit per worker, e.g. 4GB or auto")
    g.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=None,
                   help="serve the Dask dashboard (default: bgdask.dashboard of Dask's configuration, "
                        "true); without it a cluster starts about a second sooner")
    g.add_argument("--jobs", type=int, metavar="N", default=1,
                   help="slurm/pbs: number of jobs to submit")
    g.add_argument("--cores", type=int, metavar="N", default=None, help="slurm/pbs: cores per job")
    g.add_argument("--memory", metavar="M", default=None, help="slurm/pbs: memory per job, e.g. 12GB")
    g.add_argument("--processes", type=int, metavar="N", default=None,
                   help="slurm/pbs: worker processes per job (cores are shared among them)")
    g.add_argument("--walltime", metavar="T", default=None, help="slurm/pbs: job walltime, e.g. 02:00:00")
    g.add_argument("--queue", metavar="Q", default=None, help="slurm/pbs: partition or queue")
    g.add_argument("--account", metavar="A", default=None, help="slurm/pbs: account to charge")
    g.add_argument("--adapt", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="scale adaptively between MIN and MAX jobs (local: workers)")
    g.add_argument("--job-extra-directive", action="append", metavar="LINE", default=None,
                   dest="job_extra_directive",
                   help="slurm/pbs: extra #SBATCH/#PBS directive (repeatable); write it with '=' "
                        "when it starts with '-': --job-extra-directive=--constraint=haswell")
    g.add_argument("--local-directory", metavar="DIR", default=None,
                   help="workers' scratch/spill directory (fast local disk)")
    g.add_argument("--log-directory", metavar="DIR", default=None,
                   help="slurm/pbs: directory for the jobs' stdout/stderr")
    g.add_argument("--host", metavar="HOST", default=None,
                   help="address the scheduler binds (default: 127.0.0.1 for local; "
                        "jobqueue configuration or all interfaces for slurm/pbs)")
    g.add_argument("--worker-timeout", type=float, metavar="SECONDS", default=None,
                   help="how long to wait for the first worker (default: 60 local, 600 slurm/pbs)")
    g.add_argument("--wait-for-workers", type=int, metavar="N", default=None,
                   help="wait for N workers, not only the first (with --scheduler: also for the "
                        "scheduler to come up), at most --worker-timeout seconds; for a runner "
                        "started together with its scheduler and workers (e.g. Docker compose)")


def options_from_args(args: argparse.Namespace) -> ClusterOptions:
    """The ClusterOptions of arguments added by :func:`add_cluster_arguments`."""
    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    adapt = get("adapt")
    return ClusterOptions(
        kind=get("cluster") or "local",
        scheduler=check_scheduler_address(get("scheduler")),
        workers=get("workers"),
        threads_per_worker=get("threads_per_worker"),
        memory_limit=get("memory_limit"),
        dashboard=get("dashboard"),
        jobs=get("jobs", 1) if get("jobs") is not None else 1,
        cores=get("cores"),
        memory=get("memory"),
        processes=get("processes"),
        walltime=get("walltime"),
        queue=get("queue"),
        account=get("account"),
        adapt=tuple(adapt) if adapt is not None else None,
        job_extra_directives=list(get("job_extra_directive") or []),
        local_directory=get("local_directory"),
        host=get("host"),
        log_directory=get("log_directory"),
        worker_timeout=get("worker_timeout"),
        wait_for_workers=get("wait_for_workers"),
    )
