"""What runs on one chunk of rows, on the worker that holds it."""
