"""Serving a store over HTTP, and opening a store or a tiled server by location."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InputError
from ._catalog import _require_catalog
from ._store import build_store_app, open_store

__all__ = ["SERVER_PROBE_TIMEOUT", "open_tiled", "redact_uri", "run_tiled_server", "serve_store"]

#: Seconds to wait for a tiled server to answer before it counts as unreachable.
SERVER_PROBE_TIMEOUT = 5.0


@contextmanager
def serve_store(
    directory: str | os.PathLike,
    *,
    api_key: str,
    host: str = "127.0.0.1",
    port: int = 0,
    catalog_uri: str | None = None,
    tabular_uri: str | None = None,
) -> Iterator[str]:
    """Serve the store in *directory* over HTTP in a background thread (for other processes).

    Parameters
    ----------
    directory, catalog_uri, tabular_uri
        See :func:`build_store_app`.
    api_key
        The single-user API key clients must present.
    host, port
        Where to listen (``port=0``: any free port).

    Yields
    ------
    str
        The server's base URI, e.g. ``"http://127.0.0.1:43567/api/v1"``; open it with
        ``open_tiled(uri, api_key=api_key)``. The server stops when the block exits.
    """
    import time

    import httpx
    import uvicorn
    from tiled.server.simple import ThreadedServer

    if not (api_key and api_key.isascii() and api_key.isalnum()):
        raise InputError("serve_store needs a non-empty, alphanumeric api_key (e.g. secrets.token_hex(32))")
    app = build_store_app(directory, catalog_uri=catalog_uri, tabular_uri=tabular_uri, api_key=api_key)
    server = ThreadedServer(uvicorn.Config(app, host=host, port=port, loop="asyncio", log_level="warning"))
    with server.run_in_thread() as base_url:
        deadline = time.monotonic() + 30.0
        with httpx.Client(trust_env=False) as probe:
            while True:
                try:
                    if probe.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx.RequestError:
                    pass
                if time.monotonic() > deadline or not server.thread.is_alive():
                    raise RuntimeError(f"tiled server for {directory} did not become ready")
                time.sleep(0.05)
        yield f"{base_url}/api/v1"


def _listen(host: str, port: int) -> Any:
    """A listening TCP socket on *host*:*port*, or a one-line InputError."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc}") from None
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def run_tiled_server(
    catalog_uri: str,
    *,
    api_key: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    tabular_uri: str | None = None,
    data_dir: str | os.PathLike | None = None,
    readable_storage: Iterable[str | os.PathLike] = (),
    on_ready: Callable[[str, bool], None] | None = None,
) -> None:
    """Serve a catalog of Bluesky runs in PostgreSQL over HTTP until SIGINT or SIGTERM.

    The port is bound first, then the database is checked and, if empty, initialised
    (:func:`~bluesky_twin.storage.prepare_catalog_database`), then the app is served
    in the foreground by uvicorn (no access log: request lines never reach a log).

    Parameters
    ----------
    catalog_uri, api_key, tabular_uri, data_dir, readable_storage
        See :func:`~bluesky_twin.storage.build_server_app`.
    host, port
        Where to listen (``port=0``: a free port, reported to *on_ready*).
    on_ready
        Called as ``on_ready(base_uri, initialised)`` once the socket listens and the
        catalog is ready, with the server's ``http://HOST:PORT/api/v1`` and whether the
        catalog was initialised now.

    Raises
    ------
    InputError
        One line, before anything is served: the port cannot be bound, or see
        :func:`~bluesky_twin.storage.build_server_app`.
    RuntimeError
        If the app fails to start (its lifespan startup).
    """
    import signal
    import threading

    import uvicorn

    from ._postgres import _server_app, check_api_key, check_postgres_url

    check_api_key(api_key)
    check_postgres_url(catalog_uri)
    sock = _listen(host, port)
    try:
        app, initialised = _server_app(
            catalog_uri, api_key=api_key, tabular_uri=tabular_uri, data_dir=data_dir, readable_storage=readable_storage
        )
        bound_host, bound_port = sock.getsockname()[:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        base_uri = f"http://{shown_host}:{bound_port}/api/v1"
        config = uvicorn.Config(app, loop="asyncio", log_level="warning", access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        if on_ready is not None:
            on_ready(base_uri, initialised)
        stopped: list[int] = []
        previous = {}
        if threading.current_thread() is threading.main_thread():
            # uvicorn re-raises the signal that stopped it once it has shut down; a
            # handler here turns that into a normal return.
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda signum, frame: stopped.append(signum))
        try:
            if not stopped:  # a signal before uvicorn took over stops it before it starts
                server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not server.started and not stopped:
            raise RuntimeError(f"the tiled server on {base_uri} failed to start (see the log above)")
    finally:
        sock.close()


def open_tiled(uri_or_dir: str | os.PathLike, *, api_key: str | None = None, create: bool = False) -> Any:
    """Open a tiled catalog of runs: an embedded store directory or a tiled server URI.

    Parameters
    ----------
    uri_or_dir
        ``http(s)://host:port[/api/v1/metadata/path]`` of a tiled server, or a directory
        made by :func:`open_store`.
    api_key
        API key for a server (ignored for a directory); default: the
        ``TILED_API_KEY`` environment variable.
    create
        Create a new embedded store if the directory does not exist yet.

    Raises
    ------
    InputError
        If the directory does not hold a store (and *create* is False); or the server
        cannot be reached within :data:`SERVER_PROBE_TIMEOUT` seconds, needs an API key
        that was not given, or refuses the key (the message never contains the key).

    Notes
    -----
    A server must register the json-seq exporter for replay, in its config file::

        media_types:
          BlueskyRun:
            application/json-seq: bluesky_tiled_plugins.exporters:json_seq_exporter
    """
    text = os.fspath(uri_or_dir)
    if text.startswith(("http://", "https://")):
        return _open_server(text, api_key=api_key)
    if text.startswith(("tiled://", "ws://")) or "://" in text:
        raise InputError(f"unsupported tiled location {text!r}: give a directory or an http(s):// URI")
    root = Path(text).expanduser()
    if not create:
        _require_catalog(root)
    return open_store(root)


def redact_uri(uri: str) -> str:
    """*uri* without user info, query and fragment (where an API key or a password could hide).

    Parameters
    ----------
    uri
        A tiled server URI, e.g. ``http://user:pw@host:8000/api/v1?api_key=KEY``.

    Returns
    -------
    str
        ``http://host:8000/api/v1``: safe to print or to record in a summary.
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _open_server(uri: str, *, api_key: str | None) -> Any:
    """Open a tiled server's catalog, turning connection and authentication failures into one-line InputErrors.

    The server is probed once, without retries, so an unreachable server fails within
    :data:`SERVER_PROBE_TIMEOUT` seconds instead of after tiled's retry schedule.
    """
    from urllib.parse import urlsplit

    import httpx

    shown = redact_uri(uri)
    parts = urlsplit(uri)
    if not parts.hostname:
        raise InputError(f"tiled server URI {shown!r} has no host")
    if api_key is None:
        api_key = os.environ.get("TILED_API_KEY") or None
    from urllib.parse import parse_qs

    secrets = [k for k in [api_key, *parse_qs(parts.query).get("api_key", [])] if k]

    def clean(message: str) -> str:
        for secret in secrets:
            message = message.replace(secret, "***")
        return " ".join(message.split())[:300]

    try:
        with httpx.Client(timeout=SERVER_PROBE_TIMEOUT) as probe:
            probe.get(f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/healthz")
    except httpx.HTTPError as exc:
        reason = clean(str(exc)) or type(exc).__name__
        raise InputError(f"cannot reach the tiled server at {shown}: {reason}") from None

    from tiled.client import from_uri
    from tiled.client.context import CannotPrompt

    no_key = f"the tiled server at {shown} needs an API key: pass --api-key KEY (api_key=...) or set TILED_API_KEY"
    try:
        return from_uri(uri, api_key=api_key)
    except CannotPrompt:
        raise InputError(no_key) from None
    except httpx.HTTPStatusError as exc:
        code = exc.response.status_code
        if code in (401, 403):
            if secrets:
                raise InputError(f"the tiled server at {shown} refused the API key (HTTP {code})") from None
            raise InputError(no_key) from None
        raise InputError(f"the tiled server at {shown} answered HTTP {code}: {clean(str(exc))}") from None
    except httpx.HTTPError as exc:
        raise InputError(
            f"cannot read from the tiled server at {shown}: {type(exc).__name__}: {clean(str(exc))}"
        ) from None
    except RuntimeError as exc:
        if "API key" in str(exc):
            raise InputError(no_key) from None
        raise
