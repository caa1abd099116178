"""Client-side stages of a fit: initialisation, Lloyd, runs, scores."""
