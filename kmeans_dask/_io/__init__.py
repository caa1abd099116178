"""Files in and out: model files and fit checkpoints (safetensors with a declared schema)."""
