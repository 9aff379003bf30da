"""bevis transforms."""
