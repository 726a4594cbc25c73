"""bgdask and the Rubin Data Butler: warps from a Butler repository, matched
warps back into it, and a PipelineTask for ``pipetask run``.

Needs the optional extra ``bgdask[butler]`` (the Rubin packages
lsst-daf-butler, lsst-pipe-base, lsst-ctrl-mpexec, lsst-images; they need
Python >= 3.12)::

    import bgdask
    from bgdask.butler import find_warps

    catalog = find_warps("/repo", ["u/me/warps"], "skymap='s' AND tract=9813 AND band='r'")
    result = bgdask.match_backgrounds(catalog, "out.zarr", client=client)

See docs/butler.md.
"""

from __future__ import annotations

import sys

#: What to install, said once for every way of reaching this package.
REQUIREMENT = (
    "bgdask.butler needs the Rubin Butler packages: install the extra "
    "with pip install 'bgdask[butler]' (it needs Python >= 3.12; this is Python "
    f"{sys.version_info.major}.{sys.version_info.minor})"
)


def _check_requirements() -> None:
    missing = []
    for name in ("lsst.daf.butler", "lsst.images", "lsst.resources"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if sys.version_info < (3, 12) or missing:
        detail = f" (missing: {', '.join(missing)})" if missing else ""
        raise ImportError(REQUIREMENT + detail, name=__name__)


_check_requirements()

from ._query import ButlerWarps, find_warp_groups, find_warps, open_butler  # noqa: E402
from ._sink import output_dataset_types, put_outputs, read_store  # noqa: E402
from ._run import GroupResult, match_groups  # noqa: E402

#: The pipeline file shipped with the package, for ``pipetask run -p``.
PIPELINE = "resource://bgdask.butler/pipelines/MatchBackgroundsDask.yaml"


def __getattr__(name):
    # lsst.pipe.base is imported only by those who use the PipelineTask.
    if name in ("MatchBackgroundsDaskTask", "MatchBackgroundsDaskConfig", "MatchBackgroundsDaskConnections"):
        from . import task

        return getattr(task, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ButlerWarps", "GroupResult", "MatchBackgroundsDaskConfig", "MatchBackgroundsDaskConnections",
    "MatchBackgroundsDaskTask", "PIPELINE", "REQUIREMENT", "find_warp_groups", "find_warps",
    "match_groups", "open_butler", "output_dataset_types", "put_outputs", "read_store",
]
