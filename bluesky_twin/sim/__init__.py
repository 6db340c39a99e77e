"""bluesky_twin.sim (package)."""
