"""The trainer as a service on the Bluesky document bus, and the twin source that follows it.

At a facility the RunEngine host does not train: its documents leave on the 0MQ
document bus (:class:`bluesky.callbacks.zmq.Publisher` -> ``bluesky-0MQ-proxy`` ->
:class:`~bluesky.callbacks.zmq.RemoteDispatcher`), and ``bluesky-twin trainer
serve`` trains elsewhere, publishing every refit into a shared model directory.

- :class:`TrainerService` / :class:`ServiceConfig` (``_service``): the service;
- :class:`PublishedTwinSource` (``_source``): the RunEngine side, a
  :class:`~bluesky_twin.protocols.TwinSource` that follows the model directory;
- :class:`BusRunTracker` / :class:`GapCounts` (``_gaps``): gap detection on the bus
  and filling from the store;
- :func:`status_path` / :func:`read_status` (``_status``): the service's status file.

Names are imported lazily (the command line imports this package for ``--help``).
"""

from __future__ import annotations

from bluesky_twin._lazy import lazy_exports

__all__ = [
    "BusRunTracker",
    "GapCounts",
    "PublishedTwinSource",
    "ServiceConfig",
    "TrainerService",
    "read_status",
    "status_path",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BusRunTracker": "._gaps",
        "GapCounts": "._gaps",
        "PublishedTwinSource": "._source",
        "ServiceConfig": "._service",
        "TrainerService": "._service",
        "read_status": "._status",
        "status_path": "._status",
    },
)
