"""The repository layout maps plans/ and callbacks/ into bluesky_twin; both install modes work."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> tuple[list[str], dict[str, str]]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return cfg["packages"], cfg["package-dir"]


def test_every_package_directory_is_declared() -> None:
    packages, package_dir = _declared()
    found = {"bluesky_twin.plans", "bluesky_twin.callbacks"}
    for init in (ROOT / "bluesky_twin").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    assert found == set(packages), "pyproject.toml [tool.setuptools] packages is out of date"
    assert package_dir["bluesky_twin.plans"] == "plans" and package_dir["bluesky_twin.callbacks"] == "callbacks"


def test_torch_requirement_admits_the_local_wheel() -> None:
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(Requirement(d) for d in deps if d.startswith("torch"))
    assert torch.specifier.contains("2.13.0")
    assert not torch.specifier.contains("2.14.0"), "a newer torch would download a CUDA build"


def test_editable_install_imports_the_mapped_packages() -> None:
    import bluesky_twin.callbacks
    import bluesky_twin.plans

    assert Path(bluesky_twin.plans.__file__).resolve().parent == ROOT / "plans"
    assert Path(bluesky_twin.callbacks.__file__).resolve().parent == ROOT / "callbacks"


@pytest.mark.slow
def test_regular_wheel_contains_and_imports_the_mapped_packages(tmp_path) -> None:
    """Build a wheel, install it into a scratch target, import from there."""
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("bluesky_twin-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import bluesky_twin.plans as p, bluesky_twin.callbacks as c, bluesky_twin.twin as t; "
            "print(p.__file__); print(c.__file__)")
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert all(line.startswith(str(target)) for line in out), out
