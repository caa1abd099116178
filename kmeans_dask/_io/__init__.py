"""Reading inputs and writing outputs: arrays, Zarr and .npy files, model
files, checkpoints, output paths."""
