"""Test helpers for stored runs: record live documents and compare them with the ones a store gives back.

``documents_equal``, ``replay_comparable`` and ``jsonable_document`` used to be public
names of ``bluesky_twin.storage``; only tests use them.
``tests/`` is on ``sys.path`` (``tests/conftest.py`` lives there), so a test imports
them with ``from storage_helpers import Recorder, documents_equal, replay_comparable``.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["Recorder", "documents_equal", "jsonable_document", "replay_comparable"]


class Recorder:
    """A document callback that keeps what the RunEngine produced, to compare with the store."""

    def __init__(self) -> None:
        self.docs: list[tuple[str, dict]] = []

    def __call__(self, name: str, doc: dict) -> None:
        self.docs.append((name, doc))

    def run(self, uid: str) -> list[tuple[str, dict]]:
        """The documents of the run *uid*, from its start document on, in emission order."""
        out, inside = [], False
        for name, doc in self.docs:
            if name == "start":
                inside = doc["uid"] == uid
            if inside:
                out.append((name, doc))
        return out

    def events(self, uid: str) -> list[dict]:
        """The event documents of the run *uid*."""
        return [doc for name, doc in self.run(uid) if name == "event"]


def jsonable_document(doc: Any) -> Any:
    """*doc* as JSON data (numpy values to Python, tuples to lists, NaN kept as float NaN).

    Live documents compare equal to replayed ones after this normalisation.
    """

    def default(obj: Any) -> Any:
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if hasattr(obj, "item"):
            return obj.item()
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    return json.loads(json.dumps(doc, default=default, allow_nan=True))


def replay_comparable(name: str, doc: Any) -> Any:
    """*doc* JSON-normalised, without the fields that a TiledWriter round trip does not keep.

    TiledWriter stores event *data* in tables, so the json-seq exporter regenerates
    each event's ``uid`` (``"event-<descriptor uid>-<seq_num>"``) and omits an empty
    ``filled``; a PostgreSQL catalog does not keep the order of the descriptor's
    ``object_keys`` lists (sorted here). Everything a callback consumes (data, timestamps, seq_num, time,
    descriptor) is kept; compare live and replayed documents with
    ``documents_equal(replay_comparable(n, live), replay_comparable(n, replayed))``.
    """
    doc = jsonable_document(doc)
    if name == "descriptor" and isinstance(doc.get("object_keys"), dict):
        # rebuilt from data_keys, whose order a JSONB catalog (PostgreSQL) does not keep
        doc["object_keys"] = {obj: sorted(keys) for obj, keys in doc["object_keys"].items()}
    if name == "event":
        doc.pop("uid", None)
        if not doc.get("filled"):
            doc.pop("filled", None)
    return doc


def documents_equal(a: Any, b: Any) -> bool:
    """Compare two (JSON-normalised) documents, treating NaN as equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(documents_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(documents_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
