"""The direct channel between routers and replicas: one framing format, the router's end, the replica's end."""
