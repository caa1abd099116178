"""Dask plumbing: placing rows on the workers, mapping tasks or actor calls
over them, reducing in a fixed tree, recovering from lost workers."""
