"""bgdask: background matching of warped exposures, as a Dask workflow.

The Python API::

    import bgdask
    ds = bgdask.open_warps("warps/")                 # lazy (visit, patch) Dataset
    result = bgdask.match(ds)                        # reference, models, lazy `matched`
    result = bgdask.match_backgrounds("warps/", "out.zarr", client=client)   # and a store
    result.reference_visit, result.table
"""

__version__ = "0.1.0"


def _load_dask_config() -> None:
    """Register bgdask.yaml's defaults with dask.config (Dask's convention for libraries)."""
    import os

    import dask.config
    import yaml

    path = os.path.join(os.path.dirname(__file__), "bgdask.yaml")
    with open(path) as fh:
        dask.config.update_defaults(yaml.safe_load(fh))


_load_dask_config()

from .config import MatchConfig  # noqa: E402
from .errors import (  # noqa: E402
    BgdaskError, ConfigError, GeometryError, InputError, ModelError, NothingMatchedWarning, StoreError,
    UnusableWarpWarning,
)
from .geometry import SkyMap  # noqa: E402


def __getattr__(name):
    # Import the heavier parts (dask, xarray, zarr) on first use.
    if name == "open_warps":
        from .collection import open_warps

        return open_warps
    if name in ("match", "match_arrays", "MatchResult"):
        from . import matching as _match

        return getattr(_match, name)
    if name == "match_backgrounds":
        from .pipeline import match_backgrounds

        return match_backgrounds
    if name == "io":
        import importlib

        return importlib.import_module(".io", __name__)
    raise AttributeError(f"module 'bgdask' has no attribute {name!r}")


__all__ = [
    "BgdaskError", "ConfigError", "GeometryError", "InputError", "MatchConfig", "ModelError",
    "MatchResult", "NothingMatchedWarning", "SkyMap", "StoreError", "UnusableWarpWarning", "match", "match_arrays", "match_backgrounds",
    "open_warps", "__version__",
]
