"""raygate gateway."""
