"""raygate gateway: the HTTP edge over the router (see gateway/http_app.py for the map)."""

__all__: list[str] = []
