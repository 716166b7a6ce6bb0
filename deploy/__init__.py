"""raygate deploy."""
