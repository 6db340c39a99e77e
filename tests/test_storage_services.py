"""The service fixtures of conftest: throw-away databases, skip-or-fail policy."""

from __future__ import annotations

import socket

import conftest
import pytest


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("required", ["1", ""])
def test_unreachable_service_skips_or_fails_loudly(monkeypatch, required):
    monkeypatch.setitem(conftest.SERVICES, "postgres", dict(conftest.SERVICES["postgres"], port=_closed_port()))
    monkeypatch.setattr(conftest, "_service_cache", {})
    monkeypatch.setenv("BLUESKY_TWIN_REQUIRE_SERVICES", required)
    expected = pytest.fail.Exception if required == "1" else pytest.skip.Exception
    with pytest.raises(expected, match="postgres not reachable"):
        conftest.require_service("postgres")
    with pytest.raises(ValueError, match="unknown service"):
        conftest.require_service("oracle")


@pytest.mark.services
def test_fresh_postgres_database_is_private_and_usable(fresh_postgres_url, postgres_url):
    import sqlalchemy

    assert fresh_postgres_url != postgres_url
    engine = sqlalchemy.create_engine(fresh_postgres_url)
    try:
        with engine.begin() as conn:
            assert (
                conn.execute(sqlalchemy.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar()
                == 0
            )
            conn.execute(sqlalchemy.text("CREATE TABLE probe (x integer)"))
            conn.execute(sqlalchemy.text("INSERT INTO probe VALUES (42)"))
            assert conn.execute(sqlalchemy.text("SELECT x FROM probe")).scalar() == 42
    finally:
        engine.dispose()


@pytest.mark.services
def test_fresh_mariadb_database_is_private_and_usable(fresh_mariadb_url, mariadb_url):
    import sqlalchemy

    assert fresh_mariadb_url != mariadb_url
    engine = sqlalchemy.create_engine(fresh_mariadb_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sqlalchemy.text("SHOW TABLES")).fetchall() == []
            conn.execute(sqlalchemy.text("CREATE TABLE probe (x integer)"))
            conn.execute(sqlalchemy.text("INSERT INTO probe VALUES (42)"))
            assert conn.execute(sqlalchemy.text("SELECT x FROM probe")).scalar() == 42
    finally:
        engine.dispose()
