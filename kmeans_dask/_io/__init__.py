"""Reading inputs and writing outputs: arrays, Zarr and .npy files, model files and
checkpoints (safetensors with a declared schema), output paths."""
