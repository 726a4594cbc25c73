"""Shared fixtures: small simulated tracts and their stores, made once per session."""

from __future__ import annotations

import compileall
import os
from pathlib import Path

import dask
import pytest

import bgdask
from bgdask.simulate import make_tract, write_tract

# The clusters the tests start serve no dashboard (0.8 s of CPU less per start,
# Bokeh's import), here and in the commands they run, unless a test asks for
# one (`--dashboard`, ``ClusterOptions(dashboard=True)``): the tests of the
# dashboard itself.
os.environ["DASK_BGDASK__DASHBOARD"] = "False"
dask.config.set({"bgdask.dashboard": False})


def _butler_stack_missing() -> str | None:
    try:
        import lsst.daf.butler  # noqa: F401
        import lsst.images  # noqa: F401
        import lsst.pipe.base  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


# tests/butler need the Rubin packages (Python >= 3.12): where they are missing,
# test_butler_suite.py runs those tests in a Python that has them instead.
collect_ignore = ["butler"] if _butler_stack_missing() else ["test_butler_suite.py"]


# -- pytest-xdist (`-n 2`): which tests run on one worker ---------------------------------

def pytest_itemcollected(item):
    """Groups for pytest-xdist's ``loadgroup`` distribution (harmless
    without it): the SLURM tests run one after another on one worker (the
    single node has 2 CPUs, and each test wants every job of its own
    running), and the tests of a module that share a module-scoped fixture
    (a cluster, a 200-visit tract, a recomputed store) run on the worker
    that builds it, once."""
    module = item.getparent(pytest.Module)
    if item.get_closest_marker("slurm"):
        item.add_marker(pytest.mark.xdist_group("slurm"))
    elif any(fixturedef.scope == "module" and fixturedef.baseid == module.nodeid
             for fixturedefs in item._fixtureinfo.name2fixturedefs.values() for fixturedef in fixturedefs):
        item.add_marker(pytest.mark.xdist_group(module.nodeid))


def _seconds(item) -> float:
    """About how long a test takes: ``slow(SECONDS)`` when a slow test says,
    10 s for another slow test, under one for the others."""
    slow = item.get_closest_marker("slow")
    return 0.5 if slow is None else float(slow.args[0]) if slow.args else 10.0


def _heaviest_first(items):
    """On a pytest-xdist worker: the groups and tests that take longest
    first, so that the workers, each handed the next group or test as it
    runs out, end together. Every worker sorts the same collection alike."""
    units = {}
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        units.setdefault(mark.args[0] if mark else item.nodeid, []).append(item)
    return [item for unit in sorted(units.values(), key=lambda unit: -sum(map(_seconds, unit))) for item in unit]


# -- the kernels, compiled once ------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)   # before pytest-xdist starts its workers
def pytest_sessionstart(session):
    """Compile the numba kernels before any test runs (the command line's
    warm-up: nothing to do when numba's cache holds them). On a fresh clone
    the cache is empty, and every process the first tests start -- pytest's
    own, their clusters' workers, the commands they run -- would compile the
    same kernels at once."""
    config = session.config
    if config.option.collectonly or hasattr(config, "workerinput"):
        return
    # With PYTHONDONTWRITEBYTECODE set (as on CI's machines) Python caches no
    # bytecode, and every process the tests start -- a hundred or more --
    # compiled bgdask's modules again: 0.1 s each. Written once here, they are read.
    compileall.compile_dir(Path(bgdask.__file__).parent, quiet=1)
    from bgdask.cluster import KernelWarmUp

    with KernelWarmUp() as warming:
        warming.wait()


# -- the Butler suite ---------------------------------------------------------------------

BUTLER_TEST = "test_the_butler_tests_pass_in_a_python_with_the_rubin_packages"


def _butler_dir(config):
    """The directory of this session's Butler suite (made on first use)."""
    import tempfile

    if getattr(config, "_bgdask_butler_dir", None) is None:
        config._bgdask_butler_dir = Path(tempfile.mkdtemp(prefix="bgdask-butler-suite-"))
    return config._bgdask_butler_dir


def _start_butler_suite(config, module) -> None:
    """Start the Butler suite in the background (once per session)."""
    if config.option.collectonly or hasattr(config, "_bgdask_butler_module"):
        return
    config._bgdask_butler_module = module
    module.start(_butler_dir(config))


@pytest.hookimpl(trylast=True)   # after -m and -k have deselected
def pytest_collection_modifyitems(session, config, items):
    """On a pytest-xdist worker, order the tests heaviest first. Start the
    Butler suite (a separate process, test_butler_suite.py) at once when it
    is selected, and check its result last (under pytest-xdist the
    controller starts it: pytest_xdist_node_collection_finished)."""
    if hasattr(config, "workerinput"):
        items[:] = _heaviest_first(items)
    suite = [item for item in items if item.name == BUTLER_TEST]
    if not suite:
        return
    items[:] = [item for item in items if item not in suite] + suite
    if not hasattr(config, "workerinput"):
        _start_butler_suite(config, suite[0].module)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist controller: tell each worker where the Butler suite's
    output will be, and whether tests are distributed by group."""
    config = node.config
    node.workerinput["bgdask_butler_suite"] = str(_butler_dir(config))
    node.workerinput["bgdask_loadgroup"] = config.option.dist == "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """pytest-xdist controller: start the Butler suite once, as soon as a
    worker has collected its test (after -m and -k)."""
    if any(i.split("@")[0].endswith("::" + BUTLER_TEST) for i in ids):
        import importlib.util

        spec = importlib.util.spec_from_file_location("bgdask_butler_suite",
                                                      Path(__file__).with_name("test_butler_suite.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _start_butler_suite(node.config, module)


def pytest_unconfigure(config):
    """Stop the Butler suite if the session ended before its test; remove its files."""
    module = getattr(config, "_bgdask_butler_module", None)
    if module is not None:
        module.stop(config._bgdask_butler_dir, remove=True)
    elif getattr(config, "_bgdask_butler_dir", None) is not None:
        import shutil

        shutil.rmtree(config._bgdask_butler_dir, ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs the single-node SLURM of deploy/slurm")
    config.addinivalue_line("markers", "slow(seconds): takes more than a few seconds (about SECONDS, when given)")
    config.addinivalue_line("markers", "xdist_group(name): run on the same pytest-xdist worker as the rest of the group")
    # pytest-xdist: `-n N` alone distributes as `--dist loadgroup` (the groups
    # of pytest_itemcollected hold), in the order of _heaviest_first
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
    if getattr(config.option, "dist", "no") == "loadgroup":
        config.option.loadscopereorder = False
    if getattr(config, "workerinput", {}).get("bgdask_loadgroup"):   # a worker parses `-n N` itself
        config.option.loadgroup = True


@pytest.fixture(scope="session")
def small_sim():
    """3 visits on 2 x 2 patches of 256 pixels (border 16): the quick tract."""
    return make_tract(n_visits=3, num_patches=(2, 2), patch_inner=256, patch_border=16, seed=3)


@pytest.fixture(scope="session")
def small_tract(small_sim, tmp_path_factory):
    """``small_sim`` written as afw FITS; returns its directory."""
    return write_tract(small_sim, tmp_path_factory.mktemp("small_tract"))


@pytest.fixture(scope="session")
def sync_store(small_tract, tmp_path_factory):
    """``small_tract`` matched on the synchronous scheduler (default
    configuration, reference chosen): (result, store path). Read-only."""
    from bgdask import match_backgrounds

    out = tmp_path_factory.mktemp("sync") / "out.zarr"
    return match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync"), out


@pytest.fixture(scope="session")
def demo_sim():
    """4 visits on 3 x 3 patches of 400 pixels: the demo's tract (partial visits)."""
    return make_tract(n_visits=4, seed=1)


@pytest.fixture(scope="session")
def gp():
    """benchmarks/global_proto.py, the global solve's prototype (a reference to measure against)."""
    import importlib
    import sys

    bench = str(Path(__file__).parent.parent / "benchmarks")
    sys.path.insert(0, bench)
    try:
        yield importlib.import_module("global_proto")
    finally:
        sys.path.remove(bench)


@pytest.fixture
def cli(capsys):
    """``cli(*argv)``: run ``bgdask ARGV`` in this process; returns (exit
    status, stdout, stderr). A Python exception escaping the command (the
    user would see a traceback) fails the test."""
    from bgdask.cli import main

    def run(*argv):
        capsys.readouterr()
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            rc = exc.code
        except BaseException as exc:  # noqa: BLE001 - the command would print a traceback
            out, err = capsys.readouterr()
            pytest.fail(f"`bgdask {' '.join(map(str, argv))}` raised {type(exc).__name__}: {exc} "
                        f"instead of printing one message (stderr: {err!r})")
        out, err = capsys.readouterr()
        return rc, out, err

    return run
