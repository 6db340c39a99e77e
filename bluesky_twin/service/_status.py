"""Where the trainer service writes its status, and reading it back (standard library only)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["STATUS_SUFFIX", "read_status", "status_path"]

#: The status file of the service publishing to ``MODEL_DIR`` is ``MODEL_DIR`` + this suffix.
STATUS_SUFFIX = ".service.json"


def status_path(model_dir: str | os.PathLike) -> Path:
    """The status file of the service that publishes into *model_dir*.

    It lies beside the model directory (``/shared/twins/mpms`` ->
    ``/shared/twins/mpms.service.json``), not inside it: a model directory holds
    model versions only.
    """
    root = Path(os.path.abspath(model_dir))
    return root.parent / f"{root.name}{STATUS_SUFFIX}"


def read_status(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The last status the service wrote for *model_dir*, ``None`` if there is none (yet).

    The file is replaced atomically, so a reader sees one whole status.
    """
    try:
        data = json.loads(status_path(model_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
