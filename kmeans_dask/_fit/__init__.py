"""The client-side stages of a fit: checks, initialisation, the Lloyd loop,
runs and restarts, mini-batches, progress."""
