"""bluesky_twin.analysis (package)."""
