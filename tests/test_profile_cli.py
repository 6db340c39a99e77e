"""``bluesky-twin profile install DIR`` copies the shipped startup files and never replaces silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluesky_twin.cli import main
from bluesky_twin.profile_cli import install, startup_source

REPO = Path(__file__).resolve().parents[1]
NAMES = ["00-base.py", "10-instruments.py", "20-twin.py", "90-plans.py"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("bluesky-twin: error: DIR:")
    return err[0]


def test_source_is_the_profile_collection() -> None:
    src = startup_source()
    assert sorted(p.name for p in src.glob("*.py")) == NAMES


def test_install_copies_the_startup_files(tmp_path, capsys) -> None:
    target = tmp_path / "profile_twin"
    assert main(["profile", "install", str(target)]) == 0
    assert "ipython --profile-dir=" in capsys.readouterr().out
    assert sorted(p.name for p in (target / "startup").iterdir()) == NAMES
    for name in NAMES:
        assert (target / "startup" / name).read_bytes() == (REPO / "profile_collection" / "startup" / name).read_bytes()


def test_existing_files_are_kept_without_overwrite(tmp_path, capsys) -> None:
    startup = tmp_path / "startup"
    startup.mkdir()
    (startup / "10-instruments.py").write_text("# my real devices\n")
    (startup / "50-mine.py").write_text("# mine\n")
    assert main(["profile", "install", str(tmp_path)]) == 2
    line = _one_error_line(capsys)
    assert "10-instruments.py" in line and "--overwrite" in line
    # nothing written: the user's file is intact and no other startup file appeared
    assert (startup / "10-instruments.py").read_text() == "# my real devices\n"
    assert sorted(p.name for p in startup.iterdir()) == ["10-instruments.py", "50-mine.py"]


def test_overwrite_replaces_only_the_profile_files(tmp_path) -> None:
    startup = tmp_path / "startup"
    startup.mkdir()
    (startup / "10-instruments.py").write_text("# old\n")
    (startup / "50-mine.py").write_text("# mine\n")
    assert main(["profile", "install", str(tmp_path), "--overwrite"]) == 0
    assert (startup / "10-instruments.py").read_bytes() == (startup_source() / "10-instruments.py").read_bytes()
    assert (startup / "50-mine.py").read_text() == "# mine\n"
    assert not list(startup.glob(".*.tmp"))


@pytest.mark.parametrize("where", ["dir", "startup"])
def test_a_file_where_a_directory_belongs_exits_2(tmp_path, capsys, where) -> None:
    if where == "dir":
        target = tmp_path / "not-a-dir"
        target.write_text("x")
    else:
        target = tmp_path / "profile"
        target.mkdir()
        (target / "startup").write_text("x")
    assert main(["profile", "install", str(target)]) == 2
    assert "is not a directory" in _one_error_line(capsys)


def test_install_returns_the_written_paths(tmp_path) -> None:
    written = install(tmp_path / "p")
    assert [p.name for p in written] == NAMES and all(p.is_file() for p in written)


def test_profile_without_subcommand_prints_help(capsys) -> None:
    assert main(["profile"]) == 2
    assert "install" in capsys.readouterr().out
