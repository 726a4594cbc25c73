"""What the Butler tests share: whether the Rubin packages are there, the
simulated tracts' parameters, small helpers (imported by conftest and tests)."""

from __future__ import annotations

import os
from pathlib import Path

def _missing() -> str | None:
    try:
        import lsst.ctrl.mpexec  # noqa: F401
        import lsst.daf.butler  # noqa: F401
        import lsst.images  # noqa: F401
        import lsst.pipe.base  # noqa: F401

        import bgdask.butler  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


MISSING = _missing()
SKIP_REASON = (
    "bgdask[butler] is not installed (the Rubin Butler packages need Python >= 3.12; "
    f"see .ci/butler-env): {MISSING}"
)
WHERE = "skymap='bgdask_sim' AND tract={tract} AND band='r'"
SIM_ARGS = dict(n_visits=3, num_patches=(2, 2), patch_inner=128, patch_border=8)
CONFIG = dict(x_bin=32, y_bin=32, binning=16)



def file_map(sim, directory) -> dict:
    from bgdask.simulate import warp_filename

    return {(sim.skymap.tract, v, p): str(Path(directory) / warp_filename(v, p)) for v, p in sim.warps}


# -- helpers for the tests ---------------------------------------------------------

def butler_state(repo: str) -> tuple:
    """What a failed command must leave unchanged: collections, dataset types, datasets."""
    from lsst.daf.butler import Butler

    butler = Butler.from_config(repo)
    collections = tuple(sorted(butler.collections.query("*")))
    types = tuple(sorted(t.name for t in butler.registry.queryDatasetTypes()))
    count = sum(len(butler.query_datasets(t, collections="*", find_first=False, limit=None, explain=False))
                for t in types)
    return collections, types, count
