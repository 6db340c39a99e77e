"""The twin's Optuna study: one study holds the trials of one data set, and resumes.

:func:`open_study` creates (or loads) the study of :meth:`DigitalTwin.fit
<bluesky_twin.twin.DigitalTwin.fit>` and guards two things:

* **Identity.**  The study records the data's sha256
  (:meth:`~bluesky_twin.data.ScanTable.fingerprint`) and its axis names (``x_names``,
  ``y_name``) in its user attributes.  A study that already holds completed trials
  of other data (or of unknown data) is refused with one line
  (:class:`~bluesky_twin.errors.InputError`): the final ensemble is built from the
  study's completed trials, so mixing data sets would silently build a model of the
  other data.  A study without completed trials (all pruned or failed) takes the new
  data's identity.
* **Resuming.**  Every trial records the worker that ran it (``worker`` user
  attribute: host name and seed).  The trials a worker finished (complete or pruned)
  count towards its ``trials``, so re-running the same fit after an interruption (a
  lost database connection, Ctrl-C) runs only the missing trials; other workers
  sharing the study run their own ``trials``.  The worker processes of
  ``bluesky-twin fit --processes`` and ``bluesky-twin worker``
  (:mod:`bluesky_twin.twin.workers`) record ``host/pid=N`` instead and share one
  target for the whole study.

A database connection lost while the study runs ends it with
:class:`~bluesky_twin.twin.storage_url.StorageLostError` (one line, no password);
the finished trials stay in the database.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from bluesky_twin.errors import InputError
from bluesky_twin.twin.storage_url import (
    StorageError,
    StorageLostError,
    connection_error,
    mask_url,
    one_line,
    open_storage,
)

__all__ = ["IDENTITY_KEYS", "WORKER_ATTR", "open_study", "study_identity", "worker_id"]

#: User attributes of the study that tie it to one data set.
IDENTITY_KEYS = ("data_sha256", "x_names", "y_name")
#: Trial user attribute naming the worker that ran the trial.
WORKER_ATTR = "worker"


def worker_id(seed: int) -> str:
    """The worker identity recorded with every trial: host name and seed."""
    return f"{socket.gethostname()}/seed={int(seed)}"


def study_identity(table: Any) -> dict[str, Any]:
    """The user attributes that tie a study to *table* (a :class:`~bluesky_twin.data.ScanTable`)."""
    return {"data_sha256": table.fingerprint(), "x_names": list(table.x_names), "y_name": str(table.y_name)}


@contextlib.contextmanager
def storage_errors(url: str, study_name: str, done: Any | None = None) -> Iterator[None]:
    """Turn a storage failure inside the block into one line without the password.

    Parameters
    ----------
    url
        The storage URL (its password is scrubbed from every message).
    study_name
        Named in the message.
    done
        A callable returning how many trials this worker has finished (for the message).

    Raises
    ------
    StorageLostError
        The database connection was lost.
    StorageError
        Another database error (the driver's first line, scrubbed).
    """
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        shown = mask_url(url)
        lost = connection_error(exc)
        if isinstance(lost, StorageLostError):  # already told in one line, deeper down
            raise StorageLostError(str(lost)) from None
        if lost is not None:
            kept = f" ({done()} finished by this worker)" if done is not None else ""
            raise StorageLostError(
                f"lost the connection to Optuna storage {shown} in study {study_name!r} "
                f"({one_line(lost, url)}); the finished trials{kept} are kept there: "
                "run the same command again to resume the study"
            ) from None
        db = _database_error(exc)
        if db is not None:
            raise StorageError(f"Optuna storage {shown} failed in study {study_name!r}: {one_line(db, url)}") from None
        raise


def _database_error(exc: BaseException) -> BaseException | None:
    import sys

    sa_exc = sys.modules.get("sqlalchemy.exc")
    optuna_exc = sys.modules.get("optuna.exceptions")
    kinds = tuple(
        k
        for k in (getattr(sa_exc, "SQLAlchemyError", None), getattr(optuna_exc, "StorageInternalError", None))
        if k is not None
    )
    e: BaseException | None = exc
    while e is not None and kinds:
        if isinstance(e, kinds):
            return e
        e = e.__cause__ or e.__context__
    return None


_CLASSES: dict[str, type] = {}


def _study_class() -> type:
    """``optuna.Study`` that tags trials with their worker and reports storage loss in one line."""
    if "TwinStudy" not in _CLASSES:
        import optuna

        class TwinStudy(optuna.Study):
            _twin_url = ""
            _twin_worker = ""
            _twin_done = 0

            def _finished(self) -> int:
                return self._twin_done

            def ask(self, fixed_distributions: Any = None) -> Any:
                trial = super().ask(fixed_distributions)
                trial.set_user_attr(WORKER_ATTR, self._twin_worker)
                return trial

            def optimize(self, func: Any, *args: Any, **kwargs: Any) -> None:
                finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

                def _count(study: Any, trial: Any) -> None:
                    if trial.state in finished:
                        self._twin_done += 1

                kwargs["callbacks"] = [_count, *(kwargs.get("callbacks") or [])]
                with storage_errors(self._twin_url, self.study_name, self._finished):
                    return super().optimize(func, *args, **kwargs)

            def get_trials(self, *args: Any, **kwargs: Any) -> Any:
                with storage_errors(self._twin_url, self.study_name, self._finished):
                    return super().get_trials(*args, **kwargs)

        TwinStudy.__module__ = __name__
        TwinStudy.__qualname__ = "TwinStudy"
        _CLASSES["TwinStudy"] = TwinStudy
    return _CLASSES["TwinStudy"]


def open_study(
    storage_url: str,
    study_name: str,
    table: Any,
    *,
    sampler: Any,
    pruner: Any,
    seed: int,
    trials: int,
    storage: Any = None,
    worker: str | None = None,
) -> tuple[Any, int]:
    """Create or load the twin's study, check that it belongs to *table*, count what is done.

    Parameters
    ----------
    storage_url
        Optuna storage URL (see :mod:`bluesky_twin.twin.storage_url`).
    study_name
        The study's name.
    table
        The :class:`~bluesky_twin.data.ScanTable` the study tunes on.
    sampler, pruner
        Optuna's sampler and pruner for this run.
    seed
        The fit's seed (part of the worker identity).
    trials
        Trials this worker should have finished in all.
    storage
        The storage opened from *storage_url* (``None``: opened here with the default
        heartbeat settings).
    worker
        The worker identity recorded with its trials (``None``: :func:`worker_id` of *seed*).

    Returns
    -------
    study, int
        The study, and how many trials are still to run: *trials* less the trials this
        worker finished (complete or pruned) in earlier runs on the same data.

    Raises
    ------
    InputError
        The study holds completed trials of other data or other axes, or the storage
        cannot be opened (one line, without the password).
    """
    import optuna

    if storage is None:
        storage = open_storage(storage_url)
    shown = mask_url(storage_url)
    want = study_identity(table)
    worker = worker if worker is not None else worker_id(seed)
    with storage_errors(storage_url, study_name):
        try:
            base = optuna.create_study(
                study_name=study_name,
                storage=storage,
                direction="minimize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        except (UnicodeDecodeError, KeyError, TypeError) as exc:  # a journal written by something else
            raise InputError(f"Optuna storage {shown} is not readable: {one_line(exc, storage_url)}") from None
        study = _study_class()(study_name=study_name, storage=base._storage, sampler=sampler, pruner=pruner)
        study._twin_url, study._twin_worker = storage_url, worker
        trials_now = study.get_trials(deepcopy=False)
        complete = [t for t in trials_now if t.state == optuna.trial.TrialState.COMPLETE]
        attrs = study.user_attrs
        if complete:
            have = {k: attrs.get(k) for k in IDENTITY_KEYS}
            if have != want:
                raise InputError(
                    f"study {study_name!r} in {shown} holds {len(complete)} completed trial(s) of "
                    f"{_difference(have, want)}: its model would be built from them; "
                    "choose another study name (or give the same data to resume it)"
                )
        for key, value in want.items():
            if attrs.get(key) != value:
                study.set_user_attr(key, value)
        done = sum(
            1
            for t in trials_now
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            and t.user_attrs.get(WORKER_ATTR) == worker
        )
    study._twin_done = done
    return study, max(0, int(trials) - done)


def _difference(have: dict[str, Any], want: dict[str, Any]) -> str:
    if have.get("data_sha256") is None:
        return "unknown data (no data fingerprint recorded)"
    if (have.get("x_names"), have.get("y_name")) != (want["x_names"], want["y_name"]):
        return (
            f"{have.get('y_name')}({', '.join(map(str, have.get('x_names') or []))}), "
            f"not {want['y_name']}({', '.join(want['x_names'])})"
        )
    return f"other data (sha256 {str(have['data_sha256'])[:12]}..., not {want['data_sha256'][:12]}...)"
