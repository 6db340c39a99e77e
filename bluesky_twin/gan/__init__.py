"""bluesky_twin.gan (package)."""
