"""Shared fixtures: small simulated tracts and their stores, made once per session."""

from __future__ import annotations

import pytest

from bgdask.simulate import make_tract, write_tract


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


@pytest.hookimpl(trylast=True)   # after -m and -k have deselected
def pytest_collection_modifyitems(session, config, items):
    """Start the Butler suite (a separate process, test_butler_suite.py) at
    once when it is selected, and check its result last."""
    suite = [item for item in items if item.name == "test_the_butler_tests_pass_in_a_python_with_the_rubin_packages"]
    if not suite:
        return
    items[:] = [item for item in items if item not in suite] + suite
    if not config.option.collectonly:
        config._bgdask_butler_suite = suite[0].module.start()


def pytest_unconfigure(config):
    started = getattr(config, "_bgdask_butler_suite", None)
    if started is not None and started[0].poll() is None:   # the session ended before its test
        started[0].kill()
        started[0].wait()


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs the single-node SLURM of deploy/slurm")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


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
    from pathlib import Path

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
