"""Compute kernels: pure functions of NumPy arrays (no Dask, no I/O, no config objects)."""
