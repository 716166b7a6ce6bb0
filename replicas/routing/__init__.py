"""Reaching a deployment's replicas: the routing table, version split, replica choice, retries and ejection."""
