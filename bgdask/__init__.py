"""bgdask: background matching of warped exposures, as a Dask workflow."""

__version__ = "0.1.0"
