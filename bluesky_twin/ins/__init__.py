"""bluesky_twin.ins (package)."""
