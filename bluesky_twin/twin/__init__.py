"""bluesky_twin.twin (package)."""
