"""Shared pytest fixtures of bluesky-twin.  Keep the names stable: other test modules use them.

Fixtures
--------
``RE``
    A fresh :class:`bluesky.RunEngine` per test (``RE(plan)`` returns the run uids).
    Halted at teardown if a test leaves it paused or running.
``hw``
    ``ophyd.sim.hw()``: bluesky's standard simulated motors and detectors (``det``,
    ``motor``, ``motor1``, ...), fresh per test.
``sim_hw``
    ``bluesky_twin.sim.make_instruments(seed=0)``: a namespace with ``mpms``
    (magnetometer), ``ppms`` (transport), ``arpes`` and ``ins`` (INS spectrometer),
    zero-delay (nothing sleeps).  Per test.
``mpms``, ``ppms``, ``arpes``, ``ins_spectrometer``
    One fresh instrument each (seeded, zero-delay); cheaper than ``sim_hw``.
``tiled_store``
    An embedded tiled catalog of runs (``bluesky_twin.storage.open_store``) in a
    temporary directory, ready in about 1 s (a cached, initialised catalog template is
    copied in).  Its directory is ``tiled_store_dir``.  Write runs with::

        RE.subscribe(bluesky_twin.storage.make_tiled_writer(tiled_store))

``tiled_store_dir``
    The directory behind ``tiled_store`` (for CLIs: ``--tiled <dir>``).
``postgres_url`` / ``mariadb_url``
    Base URLs of the local test services, checked for reachability with a real login:
    ``postgresql://<user>@127.0.0.1:5432/test`` (trust auth; user ``postgres``, else
    ``root``) and ``mysql+pymysql://root@127.0.0.1:3306/test``.
``fresh_postgres_url`` / ``fresh_mariadb_url``
    A throw-away database on that server (created for the test, dropped afterwards),
    so that tests of different modules never share tables (optuna and tiled both keep
    an ``alembic_version`` table).

``require_service(kind)``
    The function behind those fixtures (``kind`` is ``"postgres"``, ``"mariadb"`` or
    ``"redis"``, which gives ``"127.0.0.1:6379"`` for bluesky-queueserver);
    returns the URL, or skips the test when the service is unreachable -- unless the
    environment sets ``BLUESKY_TWIN_REQUIRE_SERVICES=1``, in which case an unreachable
    service *fails* the test loudly.  Mark such tests ``@pytest.mark.services``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SERVICES = {
    "postgres": {"host": "127.0.0.1", "port": 5432, "database": "test", "users": ("postgres", "root")},
    "mariadb": {"host": "127.0.0.1", "port": 3306, "database": "test", "users": ("root",)},
    "redis": {"host": "127.0.0.1", "port": 6379, "database": "", "users": ()},  # bluesky-queueserver
}
_service_cache: dict[str, tuple[str | None, str]] = {}


def _services_required() -> bool:
    return os.environ.get("BLUESKY_TWIN_REQUIRE_SERVICES", "") == "1"


def _probe(kind: str) -> tuple[str | None, str]:
    """Return ``(url, "")`` if the service accepts a login, else ``(None, reason)``."""
    spec = SERVICES[kind]
    try:
        with socket.create_connection((spec["host"], spec["port"]), timeout=2) as sock:
            if kind == "redis":  # a Redis server answers PING with +PONG
                sock.sendall(b"PING\r\n")
                if not sock.recv(64).startswith(b"+PONG"):
                    return None, f"redis at {spec['host']}:{spec['port']} did not answer PING"
                return f"{spec['host']}:{spec['port']}", ""
    except OSError as err:
        return None, f"{kind} not reachable at {spec['host']}:{spec['port']} ({err})"
    errors = []
    for user in spec["users"]:
        try:
            if kind == "postgres":
                import psycopg2

                conn = psycopg2.connect(
                    host=spec["host"], port=spec["port"], user=user, dbname=spec["database"], connect_timeout=3
                )
                conn.close()
                return f"postgresql://{user}@{spec['host']}:{spec['port']}/{spec['database']}", ""
            import pymysql

            conn = pymysql.connect(
                host=spec["host"], port=spec["port"], user=user, database=spec["database"], connect_timeout=3
            )
            conn.close()
            return f"mysql+pymysql://{user}@{spec['host']}:{spec['port']}/{spec['database']}", ""
        except Exception as err:  # noqa: BLE001 - any failure means "not usable"
            errors.append(f"{user}: {err}")
    return None, f"{kind} at {spec['host']}:{spec['port']} refused every login ({'; '.join(errors)})"


def require_service(kind: str) -> str:
    """URL of a reachable local service, else skip (or fail with ``BLUESKY_TWIN_REQUIRE_SERVICES=1``).

    Parameters
    ----------
    kind
        ``"postgres"``, ``"mariadb"`` or ``"redis"`` (gives ``host:port``).
    """
    if kind not in SERVICES:
        raise ValueError(f"unknown service {kind!r}; known: {sorted(SERVICES)}")
    if kind not in _service_cache:
        _service_cache[kind] = _probe(kind)
    url, reason = _service_cache[kind]
    if url is None:
        if _services_required():
            pytest.fail(f"BLUESKY_TWIN_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_url() -> str:
    """``postgresql://<user>@127.0.0.1:5432/test`` if reachable (see module docstring)."""
    return require_service("postgres")


@pytest.fixture
def mariadb_url() -> str:
    """``mysql+pymysql://root@127.0.0.1:3306/test`` if reachable (see module docstring)."""
    return require_service("mariadb")


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for this test (dropped afterwards); plain ``postgresql://`` URL."""
    import psycopg2

    base, _, _ = postgres_url.rpartition("/")
    name = f"bt_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"{base}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def fresh_mariadb_url(mariadb_url: str) -> Iterator[str]:
    """A new, empty MariaDB database for this test (dropped afterwards); ``mysql+pymysql://`` URL."""
    import pymysql

    spec = SERVICES["mariadb"]
    base, _, _ = mariadb_url.rpartition("/")
    user = mariadb_url.split("://", 1)[1].split("@", 1)[0]
    name = f"bt_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(host=spec["host"], port=spec["port"], user=user, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        yield f"{base}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def RE() -> Iterator[Any]:  # noqa: N802 - the Bluesky convention
    """A fresh RunEngine per test."""
    from bluesky import RunEngine

    engine = RunEngine({})
    yield engine
    if engine.state != "idle":
        engine.halt()


@pytest.fixture
def hw() -> Any:
    """``ophyd.sim.hw()``: the standard simulated motors and detectors."""
    from ophyd.sim import hw as make_hw

    return make_hw()


@pytest.fixture
def sim_hw() -> Any:
    """All simulated instruments (``mpms``, ``ppms``, ``arpes``, ``ins``), seeded, zero-delay."""
    from bluesky_twin.sim import make_instruments

    return make_instruments(seed=0)


@pytest.fixture
def mpms() -> Any:
    """A fresh simulated magnetometer named ``mpms`` (seed 0, zero-delay)."""
    from bluesky_twin.sim import Magnetometer

    return Magnetometer(name="mpms", seed=0)


@pytest.fixture
def ppms() -> Any:
    """A fresh simulated transport cell named ``ppms`` (seed 0, zero-delay)."""
    from bluesky_twin.sim import TransportCell

    return TransportCell(name="ppms", seed=0)


@pytest.fixture
def arpes() -> Any:
    """A fresh simulated ARPES manipulator named ``arpes`` (seed 0, zero-delay)."""
    from bluesky_twin.sim import ArpesManipulator

    return ArpesManipulator(name="arpes", seed=0)


@pytest.fixture
def ins_spectrometer() -> Any:
    """A fresh simulated INS spectrometer named ``ins`` (seed 0, zero-delay)."""
    from bluesky_twin.sim import InsSpectrometer

    return InsSpectrometer(name="ins", seed=0)


@pytest.fixture
def tiled_store_dir(tmp_path: Path) -> Path:
    """Directory of the ``tiled_store`` fixture's embedded store."""
    return tmp_path / "tiled"


@pytest.fixture
def tiled_store(tiled_store_dir: Path) -> Iterator[Any]:
    """An embedded tiled ``CatalogOfBlueskyRuns`` in a temporary directory (closed afterwards)."""
    from bluesky_twin.storage import close_store, open_store

    client = open_store(tiled_store_dir)
    try:
        yield client
    finally:
        close_store(client)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for the test, restored afterwards.

    On a shared 2-core machine more threads spin and run up to 10x slower.  Use it
    per module with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def reseal_model_dir(root: Path, *, keep_entries: bool = False) -> Path:
    """Recompute the checksums of a model directory's current version after a test edited it.

    Simulates a crafted directory whose checksums are consistent, so a test reaches the
    checks behind them (safe loading, size bounds, paths).  Returns the version directory.
    With *keep_entries* only the listed files are re-hashed (an unlisted file stays unlisted).
    """
    import hashlib
    import json

    from bluesky_twin.modeldir import current_path

    vdir = current_path(root)
    meta = json.loads((vdir / "metadata.json").read_text())
    files = sorted(p for p in vdir.rglob("*") if p.is_file() and p != vdir / "metadata.json")
    table = {str(p.relative_to(vdir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    if keep_entries:
        table = {k: v for k, v in table.items() if k in meta.get("files", {})}
    meta["files"] = table
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    (vdir / "metadata.json").write_text(text)
    ptr = json.loads((root / "CURRENT").read_text())
    ptr["metadata_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (root / "CURRENT").write_text(json.dumps(ptr, sort_keys=True) + "\n")
    return vdir


@pytest.fixture
def reseal_model():
    """:func:`reseal_model_dir` as a fixture (fault tests craft model directories)."""
    return reseal_model_dir


_FAULTS_DIR = Path(__file__).parent / "faults"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of ``tests/faults/`` with ``faults`` (``pytest -m faults`` runs the fault suite).

    Each test there reproduces one way a user could lose data or get a wrong answer silently
    (docs/reliability.md lists the cases) and asserts what was stored against what was produced.
    """
    for item in items:
        if Path(str(item.fspath)).parent == _FAULTS_DIR:
            item.add_marker(pytest.mark.faults)
