"""Reading inputs and writing outputs: arrays, Zarr and .npy files, tables (CSV,
Parquet, DataFrames), model files, checkpoints and pipeline files (safetensors with a
declared schema), output paths."""
