"""Shared fixtures: small simulated tracts, made once per session."""

from __future__ import annotations

import pytest

from bgdask.simulate import make_tract, write_tract


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
def demo_sim():
    """4 visits on 3 x 3 patches of 400 pixels: the demo's tract (partial visits)."""
    return make_tract(n_visits=4, seed=1)
