"""Command-line entry points (pretrain, evaluate, experiment, demo loop)."""
