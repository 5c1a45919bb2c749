"""verify: PyTorch Monte Carlo checks."""
