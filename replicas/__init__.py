"""raygate replicas: one user callable per process, served over the direct channel."""

from replicas.user_errors import BadInput, Reply

__all__ = ["BadInput", "Reply"]
