"""bevis signing."""
