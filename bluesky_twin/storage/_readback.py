"""Reading runs back: select runs, replay their documents, read their streams."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..errors import InputError

__all__ = ["iter_run_documents", "last_scan_id", "read_stream", "select_runs"]


def last_scan_id(client: Any) -> int:
    """``scan_id`` of the most recent run in *client* (0 if empty), to continue numbering.

    Use ``RE.md["scan_id"] = last_scan_id(catalog)`` after opening a persistent store.
    """
    if len(client) == 0:
        return 0
    try:
        start = client.values().last().metadata.get("start", {})
    except (KeyError, IndexError):
        return 0
    scan_id = start.get("scan_id", 0)
    return int(scan_id) if isinstance(scan_id, (int, float)) and math.isfinite(scan_id) else 0


def _as_query_list(query: Any) -> list[Any]:
    if query is None:
        return []
    if isinstance(query, Mapping):
        from tiled.queries import Key

        return [Key(key) == value for key, value in query.items()]
    if isinstance(query, (list, tuple)):
        return [q for item in query for q in _as_query_list(item)]
    if isinstance(query, str):
        raise InputError(f"query {query!r}: pass a tiled query object or a mapping {{start-document key: value}}")
    return [query]


def select_runs(client: Any, uids: Iterable[str] | None = None, query: Any = None) -> list[Any]:
    """The runs to replay: the given *uids* (full or partial), else all runs matching *query*.

    Parameters
    ----------
    client
        A catalog of runs.
    uids
        Run uids (a partial uid of at least 8 characters is enough); order is kept.
    query
        A tiled query, a list of them, or a mapping ``{key: value}`` of start-document
        equalities (``Key(key) == value``); combined with AND.

    Returns
    -------
    list
        ``BlueskyRun`` clients, by uid order given, else in the catalog's (time) order.

    Raises
    ------
    InputError
        If a uid matches no run or the selection is empty.
    """
    node = client
    for q in _as_query_list(query):
        node = node.search(q)
    if uids is not None:
        uids = list(uids)
        runs = []
        for uid in uids:
            try:
                runs.append(node[str(uid)])
            except (KeyError, ValueError) as err:
                raise InputError(f"no stored run with uid {uid!r}{' matching the query' if query else ''}") from err
        return runs
    runs = list(node.values())
    if not runs:
        raise InputError("no stored runs" + (" match the query" if query is not None else " in the catalog"))
    return runs


def iter_run_documents(client: Any, uids: Iterable[str] | None = None, query: Any = None) -> Iterator[tuple[str, dict]]:
    """Yield ``(name, doc)`` for every document of the selected runs, run after run.

    The documents are those the RunEngine emitted (``start``, ``descriptor``, ``event``
    ..., ``stop``), in emission order, as JSON data (tuples become lists). Feed them to
    any callback, e.g. a ``TwinTrainer``, exactly as live.  A run that never got a stop
    document is replayed without one (and with only the events written before the
    interruption; see :func:`make_tiled_writer`'s ``batch_size``).

    Parameters
    ----------
    client, uids, query
        See :func:`select_runs`.
    """
    for run in select_runs(client, uids=uids, query=query):
        for name, doc in run.documents():
            if name == "stop" and not doc:
                # the exporter emits an empty stop for a run that never got one
                # (crash, kill); replay it as it was: without a stop document
                continue
            yield name, doc


def read_stream(run: Any, stream: str = "primary", fields: Iterable[str] | None = None) -> dict[str, Any]:
    """Read a stream of a stored run as ``{field: numpy array}``, one array per data key.

    Reads each variable separately, which avoids xarray's duplicate-dimension warning
    for square 2D frames (TiledWriter names both axes of an N x N frame alike).

    Parameters
    ----------
    run
        A ``BlueskyRun`` client.
    stream
        Stream name.
    fields
        Data keys to read (default: all of them).

    Raises
    ------
    InputError
        If the stream or a field does not exist.
    """
    import numpy as np

    try:
        node = run[stream]
    except KeyError as err:
        raise InputError(f"run {run.start.get('uid', '?')[:8]} has no stream {stream!r}") from err
    data_keys = dict(node.metadata.get("data_keys", {}))
    wanted = list(data_keys) if fields is None else list(fields)
    missing = [f for f in wanted if f not in data_keys]
    if missing:
        raise InputError(f"stream {stream!r} has no field(s) {missing}; fields: {sorted(data_keys)}")
    # One request per table (scalars and small arrays live in the stream's "internal"
    # table) is much faster than one request per variable; large arrays are array nodes.
    out: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    try:
        children = dict(node.base.items())
    except AttributeError:  # not a composite stream node: fall back to per-variable reads
        children = {}
    for child in children.values():
        if getattr(child, "structure_family", None) == "table":
            frame = child.read()
            for column in frame.columns:
                tables[str(column)] = frame[column]
    for field in wanted:
        column = tables.get(field)
        if column is not None:
            values = column.to_numpy()
            if values.dtype == object:
                values = np.stack([np.asarray(v) for v in values]) if len(values) else values
            out[field] = values
        else:
            out[field] = np.asarray(node[field].read())
    return out
