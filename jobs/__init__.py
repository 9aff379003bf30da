"""bevis jobs."""
