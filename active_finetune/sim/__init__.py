"""Meta-World simulation with scripted expert operators."""
