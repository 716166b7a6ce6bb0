"""raygate replicas."""
