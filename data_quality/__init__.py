"""bevis data_quality."""
