"""``bluesky-twin store serve``: a tiled server whose catalog and run tables live in PostgreSQL.

The server runs in a subprocess started through the CLI (on a free port, ``--port 0``);
runs are written through a RunEngine and ``make_tiled_writer``, read back with
``bluesky-twin replay``, and found in the database itself.  A missing or wrong API key
and bad server input end with exit 2 and one line, quickly.
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bluesky_twin.cli import main

pytestmark = pytest.mark.services

X_FIELDS = ["mpms_temperature", "mpms_field"]
Y_FIELD = "mpms_magnetisation"
#: How long a refusal (no key, wrong key, bad server input) may take.
QUICK_S = 15.0


@contextmanager
def served(catalog_url: str, tmp_path: Path, *args: str, env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Run ``bluesky-twin store serve --catalog URL ... --port 0`` in a subprocess.

    Yields the server's base URI and its first line of output; stops it with SIGTERM
    (it must exit 0 and say so).  The ``TILED_*`` variables of this process are not
    passed on; *env* adds to the server's environment.
    """
    log = tmp_path / f"server-{secrets.token_hex(3)}.err"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TILED_")}
    full_env.update(env)
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bluesky_twin", "store", "serve", "--catalog", catalog_url, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=full_env,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        try:
            first = lines.get(timeout=45)
        except queue.Empty:
            first = None
        if first is None:
            proc.kill()
            pytest.fail(f"the server did not start: {log.read_text()[-2000:]}")
        match = re.match(r"tiled server at (http://\S+/api/v1):", first)
        assert match, first
        yield match.group(1), first
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    rest = []
    while (line := lines.get(timeout=5)) is not None:
        rest.append(line)
    assert rc == 0 and "tiled server stopped" in "".join(rest), (rc, rest, log.read_text()[-2000:])


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("bluesky-twin: error: "), err
    return err[0]


def _database_contents(url: str) -> dict:
    """What the catalog database holds: top-level node keys, run tables and their row counts."""
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT key FROM nodes WHERE parent = 0 ORDER BY key")
        keys = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT parameters->>'table_name', (parameters->>'dataset_id')::int FROM data_sources "
            "WHERE mimetype = 'application/x-tiled-sql-table'"
        )
        rows = 0
        tables = set()
        for table, dataset in cursor.fetchall():
            tables.add(table)
            cursor.execute(f'SELECT count(*) FROM "{table}" WHERE _dataset_id = %s', (dataset,))
            rows += cursor.fetchone()[0]
        cursor.execute("SELECT data_uri FROM assets")
        assets = [row[0] for row in cursor.fetchall()]
    connection.close()
    return {"keys": keys, "tables": tables, "rows": rows, "assets": assets}


def test_runs_written_to_a_postgres_server_replay_and_keys_are_checked(
    fresh_postgres_url, tmp_path, monkeypatch, capsys, RE, mpms
):
    import bluesky.plans as bp
    import httpx

    from bluesky_twin.storage import close_store, make_tiled_writer, open_tiled

    key = secrets.token_hex(32)
    data_dir = tmp_path / "arrays"
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    # tiled's own switch for anonymous access is on in the server's environment: still refused
    env = {"TILED_ALLOW_ANONYMOUS_ACCESS": "true"}
    args = ("--data-dir", str(data_dir), "--api-key-file", str(key_file))
    with served(fresh_postgres_url, tmp_path, *args, env=env) as (uri, first):
        assert "a new catalog, initialised now" in first and key not in first
        with httpx.Client(trust_env=False, timeout=10) as anonymous:
            assert anonymous.get(f"{uri}/search/").status_code == 401
            wrong_header = {"Authorization": "Apikey wrongkey0123456789"}
            assert anonymous.get(f"{uri}/search/", headers=wrong_header).status_code == 401
        client = open_tiled(uri, api_key=key)
        try:
            RE.subscribe(make_tiled_writer(client))
            md = {"twin_x": X_FIELDS, "twin_y": Y_FIELD}
            (u1,) = RE(bp.grid_scan([mpms], mpms.field, 0.5, 1.0, 2, mpms.temperature, 26, 44, 6, md=md))
            (u2,) = RE(bp.grid_scan([mpms], mpms.field, 1.5, 2.0, 2, mpms.temperature, 26, 44, 6, md=md))
        finally:
            close_store(client)

        out = tmp_path / "twin"
        monkeypatch.setenv("TILED_API_KEY", key)
        rc = main(["replay", "--tiled", uri, "--out", str(out), "--trials", "1", "--max-epochs", "5"])
        text = capsys.readouterr().out
        assert rc == 0, text
        assert "2 run(s): 2 accepted" in text and f"run {u1[:8]}: accepted" in text

        refused = tmp_path / "refused"
        monkeypatch.delenv("TILED_API_KEY")
        start = time.monotonic()
        assert main(["replay", "--tiled", uri, "--out", str(refused)]) == 2
        line = _one_error_line(capsys)
        assert "needs an API key" in line and time.monotonic() - start < QUICK_S

        wrong = secrets.token_hex(32)
        monkeypatch.setenv("TILED_API_KEY", wrong)
        start = time.monotonic()
        assert main(["replay", "--tiled", uri, "--out", str(refused)]) == 2
        line = _one_error_line(capsys)
        assert "refused the API key" in line and wrong not in line and time.monotonic() - start < QUICK_S

        # the demo checks the server and its key before it writes anything
        monkeypatch.delenv("TILED_API_KEY")
        assert main(["demo", "--out", str(refused), "--tiled", uri, "--trials", "1"]) == 2
        assert "needs an API key" in _one_error_line(capsys)
        assert not refused.exists()

    # the catalog and the event tables are in PostgreSQL, nothing went to the data directory
    held = _database_contents(fresh_postgres_url)
    assert held["keys"] == sorted([u1, u2])
    assert held["tables"] and all(t.startswith("table_") for t in held["tables"])
    assert held["rows"] == 2 * 12
    assert all(a.startswith("postgresql://") and "@" not in a for a in held["assets"])
    assert not any(p.is_file() for p in data_dir.rglob("*"))

    # tiled finds run tables by database name: a catalog whose tables are recorded in another
    # database (a backup restored under a new name) is refused instead of serving unreadable runs
    import psycopg2

    with psycopg2.connect(fresh_postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("UPDATE assets SET data_uri = 'postgresql://db.example.org:5432/elsewhere'")
    connection.close()
    monkeypatch.setenv("TILED_SINGLE_USER_API_KEY", key)
    assert main(["store", "serve", "--catalog", fresh_postgres_url, "--port", "0"]) == 2
    assert "records run tables in database 'elsewhere'" in _one_error_line(capsys)


def test_serve_refuses_bad_input_in_one_line(fresh_postgres_url, tmp_path, monkeypatch, capsys):
    import psycopg2

    def serve(*args: str) -> str:
        start = time.monotonic()
        assert main(["store", "serve", *args, "--port", "0"]) == 2
        assert time.monotonic() - start < QUICK_S
        return _one_error_line(capsys)

    for name in [k for k in os.environ if k.startswith("TILED_")] + ["BLUESKY_TWIN_TILED_CATALOG"]:
        monkeypatch.delenv(name, raising=False)
    assert "no API key: set TILED_SINGLE_USER_API_KEY" in serve("--catalog", fresh_postgres_url)
    monkeypatch.setenv("TILED_SINGLE_USER_API_KEY", "short1")
    line = serve("--catalog", fresh_postgres_url)
    assert "at least 16" in line and "short1" not in line
    key_file = tmp_path / "key"
    key_file.write_text(secrets.token_hex(32))
    key_file.chmod(0o644)
    assert "chmod 600" in serve("--catalog", fresh_postgres_url, "--api-key-file", str(key_file))

    monkeypatch.setenv("TILED_SINGLE_USER_API_KEY", secrets.token_hex(32))
    assert "no catalog database" in serve()
    assert "is not a PostgreSQL URL" in serve("--catalog", "mysql+pymysql://root:hunter2@127.0.0.1/test")
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    line = serve("--catalog", f"postgresql://postgres:hunter2@127.0.0.1:{closed}/tiled")
    assert "cannot connect" in line and "postgres:***@" in line and "hunter2" not in line
    # from the environment, as the docs recommend, it is masked the same way
    monkeypatch.setenv("BLUESKY_TWIN_TILED_CATALOG", f"postgresql://postgres:hunter2@127.0.0.1:{closed}/tiled")
    line = serve()
    assert "postgres:***@" in line and "hunter2" not in line
    monkeypatch.delenv("BLUESKY_TWIN_TILED_CATALOG")

    # a database that holds something else is refused and left as it was
    connection = psycopg2.connect(fresh_postgres_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE studies (study_id integer)")
    line = serve("--catalog", fresh_postgres_url)
    assert "holds 1 table(s) (studies) and is not a tiled catalog" in line
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        assert [row[0] for row in cursor.fetchall()] == ["studies"]
    connection.close()


def test_catalog_is_initialised_once_and_other_nodes_are_refused(fresh_postgres_url, tmp_path, monkeypatch, capsys):
    """Concurrent first starts initialise once; a tiled catalog whose top-level nodes are not
    Bluesky runs belongs to something else."""
    from concurrent.futures import ThreadPoolExecutor

    from bluesky_twin.storage import close_store, open_store, prepare_catalog_database

    # two servers starting together on a new database: one initialises it, the other finds it
    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(prepare_catalog_database, [fresh_postgres_url] * 2))
    assert results == [False, True]
    assert prepare_catalog_database(fresh_postgres_url) is False  # an existing, empty catalog of runs
    client = open_store(tmp_path / "store", catalog_uri=fresh_postgres_url)
    try:
        client.create_container("not-a-run")
    finally:
        close_store(client)
    capsys.readouterr()  # tiled's app prints its version when it starts
    monkeypatch.setenv("TILED_SINGLE_USER_API_KEY", secrets.token_hex(32))
    assert main(["store", "serve", "--catalog", fresh_postgres_url, "--port", "0"]) == 2
    assert "top-level nodes that are not Bluesky runs ('not-a-run')" in _one_error_line(capsys)
