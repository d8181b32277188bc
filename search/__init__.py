"""search: the staged PS-VAE hyperparameter search service and the ``psvae`` command line."""
