"""Core's own features, registered as plugins through the same hooks as everyone else's."""
