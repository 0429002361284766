"""Episode containers and on-disk formats."""
