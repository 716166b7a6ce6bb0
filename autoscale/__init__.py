"""raygate autoscale."""
