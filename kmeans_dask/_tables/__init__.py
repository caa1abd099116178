"""Tables for segmentation: the transformers behind :mod:`kmeans_dask.preprocessing`
and the fitted-pipeline file format."""
