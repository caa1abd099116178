"""Compiled code: NumPy arrays in and out, no Dask and no scikit-learn."""
