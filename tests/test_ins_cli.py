"""``bluesky-twin ins generate``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bluesky_twin.cli import main
from bluesky_twin.ins import InsDataset


def test_generate_writes_a_loadable_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cut.npz"
    rc = main(["ins", "generate", "--n", "6", "--seed", "3", "--geometry", "cut", "--size", "16", "--out", str(out)])
    assert rc == 0
    ds = InsDataset.load(out)
    assert ds.convolved.shape == (6, 16, 16) and ds.labels.sum() == 3 and ds.seed == 3
    assert "wrote" in capsys.readouterr().out
    powder = tmp_path / "powder.npz"
    assert (
        main(
            [
                "ins",
                "generate",
                "--n",
                "2",
                "--geometry",
                "powder",
                "--size",
                "16",
                "--out",
                str(powder),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    assert InsDataset.load(powder).geometry == "powder"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "--n must be a positive integer"),
        (["--n", "4", "--size", "3"], "--size"),
        (["--n", "4", "--workers", "0"], "--workers"),
    ],
)
def test_bad_arguments_exit_2_and_keep_existing_output(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    out = tmp_path / "keep.npz"
    out.write_bytes(b"previous content")
    assert main(["ins", "generate", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert out.read_bytes() == b"previous content"


def test_bad_suffix_and_argparse_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ins", "generate", "--n", "2", "--out", str(tmp_path / "x.csv")]) == 2
    assert ".npz" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["ins", "generate", "--n", "2", "--geometry", "sphere", "--out", str(tmp_path / "x.npz")])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["ins", "generate", "--n", "two", "--out", str(tmp_path / "x.npz")])
    assert exc.value.code == 2
    assert not list(tmp_path.glob("*.npz"))


def test_package_import_stays_light() -> None:
    code = (
        "import sys, bluesky_twin.ins, bluesky_twin.ins.cli;"
        "heavy = [m for m in ('torch', 'resins', 'scipy', 'sklearn') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
