"""Training recipes, one module each, over the shared epoch loop (``train.epochs``)."""
