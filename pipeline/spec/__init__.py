"""Environment specs: the model, loading and validation."""
