"""The repository layout maps plans/ and callbacks/ into bluesky_twin; both install modes work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> tuple[list[str], dict[str, str]]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return cfg["packages"], cfg["package-dir"]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_package_directory_is_declared() -> None:
    packages, package_dir = _declared()
    # plans/, callbacks/ and the data-only profile_collection/ are mapped in from the root
    found = {"bluesky_twin.plans", "bluesky_twin.callbacks", "bluesky_twin.profile_collection"}
    for init in (ROOT / "bluesky_twin").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    assert found == set(packages), "pyproject.toml [tool.setuptools] packages is out of date"
    assert package_dir["bluesky_twin.plans"] == "plans" and package_dir["bluesky_twin.callbacks"] == "callbacks"
    assert package_dir["bluesky_twin.profile_collection"] == "profile_collection"


def test_classifiers_are_valid_trove_classifiers() -> None:
    trove = pytest.importorskip("trove_classifiers")
    declared = _project()["classifiers"]
    invalid = [c for c in declared if c not in trove.classifiers]
    assert not invalid, f"not trove classifiers: {invalid}"
    assert len(set(declared)) == len(declared)


def test_license_file_is_bsd_3_clause() -> None:
    project = _project()
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause License" in text and "bluesky-twin developers" in text


def test_extras() -> None:
    extras = _project()["optional-dependencies"]
    assert any(r.startswith("ipython") for r in extras["profile"])
    assert {"sphinx", "numpydoc", "myst-parser"} <= {r.split(">")[0].split("=")[0] for r in extras["docs"]}
    assert any(r.startswith("ruff") for r in extras["test"])
    for extra in ("ins", "services", "dashboard", "profile", "test", "docs"):
        assert extra in extras["all"][0], extra


def test_setup_pins_torch_through_the_constraints_file() -> None:
    from packaging.requirements import Requirement

    pins = [
        Requirement(line)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    torch = next(r for r in pins if r.name == "torch")
    assert str(torch.specifier) == "==2.13.0"
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert setup.count('-c "$CONSTRAINTS"') >= 2 and "constraints.txt" in setup


def test_torch_requirement_admits_the_local_wheel() -> None:
    from packaging.requirements import Requirement

    deps = _project()["dependencies"]
    torch = next(Requirement(d) for d in deps if d.startswith("torch"))
    assert torch.specifier.contains("2.13.0")
    # a plain lower bound: the CUDA-download guard is the set-up's constraints file
    assert all(spec.operator == ">=" for spec in torch.specifier)


def test_tested_lower_bounds() -> None:
    from packaging.requirements import Requirement

    deps = {Requirement(d).name: Requirement(d) for d in _project()["dependencies"]}
    assert "databroker" in deps and "client" in deps["databroker"].extras
    assert not deps["tiled"].specifier.contains("0.1.0"), "tiled 0.1 catalogs differ from the tested 0.2"
    assert not deps["bluesky-tiled-plugins"].specifier.contains("2.0.0")


def test_editable_install_imports_the_mapped_packages() -> None:
    import bluesky_twin.callbacks
    import bluesky_twin.plans

    assert Path(bluesky_twin.plans.__file__).resolve().parent == ROOT / "plans"
    assert Path(bluesky_twin.callbacks.__file__).resolve().parent == ROOT / "callbacks"


@pytest.mark.slow
def test_regular_wheel_contains_and_imports_the_mapped_packages(tmp_path) -> None:
    """Build a wheel, install it into a scratch target, import from there."""
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(wheel_dir.glob("bluesky_twin-*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import bluesky_twin.plans as p, bluesky_twin.callbacks as c, bluesky_twin.twin as t; "
        "from bluesky_twin.profile_cli import startup_source; "
        "print(p.__file__); print(c.__file__); print(startup_source())"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert all(line.startswith(str(target)) for line in out), out
    startup = Path(out[-1])
    assert sorted(p.name for p in startup.glob("*.py")) == [
        "00-base.py",
        "10-instruments.py",
        "20-twin.py",
        "90-plans.py",
    ]
    assert list(target.glob("bluesky_twin-*.dist-info/licenses/LICENSE"))
