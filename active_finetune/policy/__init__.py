"""Task-conditioned Gaussian policies, their checkpoints and an inference wrapper."""
