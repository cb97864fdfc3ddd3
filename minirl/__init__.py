"""minirl."""
