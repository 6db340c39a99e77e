"""``python -m bluesky_twin`` is the same as the ``bluesky-twin`` command."""

from bluesky_twin.cli import main

raise SystemExit(main())
