"""The options of one twin fit, checked once: :class:`FitConfig`.

This module imports nothing heavy (no numpy, torch or optuna), so
``bluesky_twin.twin`` re-exports it eagerly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from bluesky_twin.errors import InputError

#: Optuna trials of a fit when the caller does not say.
DEFAULT_TRIALS = 30
#: Trials of a warm-start refit when the caller does not say.
DEFAULT_WARM_TRIALS = 4
#: Members of the final ensemble in all (spread over the top-k configurations).
DEFAULT_ENSEMBLE_SIZE = 6
#: Configurations in the final ensemble, at most.
DEFAULT_TOP_K = 3
#: Cross-validation folds of held-out scan lines.
DEFAULT_FOLDS = 3
#: From this many rows on, a search trial trains one cross-validation fold, not all,
#: and the final ensemble trains one member per thread group.
LARGE_DATA_ROWS = 10_000
#: Trials asked and told together in a search without a time limit, at least
#: (see :meth:`FitConfig.batch_width`): ``jobs`` 1 and 2 give the same twin.
DEFAULT_TRIAL_BATCH = 2
#: Seeds seed numpy's legacy generator inside Optuna's sampler, which takes 32 bits.
MAX_SEED = 2**32 - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _positive_seconds(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and value > 0  # NaN fails too


@dataclass(frozen=True)
class FitConfig:
    """How :meth:`DigitalTwin.fit <bluesky_twin.twin.DigitalTwin.fit>` searches and trains.

    Every field is checked when the object is made; a bad value raises
    :class:`~bluesky_twin.errors.InputError` with one line naming the field.

    Parameters
    ----------
    trials
        Optuna trials (``None``: :data:`DEFAULT_TRIALS`, or :data:`DEFAULT_WARM_TRIALS`
        for a warm start; see :meth:`trial_count`).
    timeout
        Seconds for the search: no trial starts after it, and running trials stop at
        it, keeping the best weights they reached (the final ensemble is trained after it).
    budget
        Seconds for the whole fit, search and final ensemble together.  After every
        trial the final ensemble's cost is estimated from the measured speed of the
        finished trials, and the search (running trials included) stops early enough
        to leave it that time.
    jobs
        Trials (and final-ensemble groups) run in parallel threads in this process.
        Without ``timeout`` and ``budget`` the twin does not depend on it beyond
        :meth:`batch_width`.
    storage
        Optuna storage URL (see :mod:`bluesky_twin.twin.storage_url`); ``None``: a
        journal file that is saved with the model.
    study_name
        Optuna study name (``None`` or empty: generated).  With a shared database
        storage several processes or machines can work on one study.
    seed
        Seed of the sampler, the folds and the network initialisation, in
        ``[0, 2**32 - 1]``.
    ensemble_size
        Members of the final ensemble in all.
    top_k
        Most configurations in the final ensemble (members are spread over them).
    n_folds
        Cross-validation folds of held-out scan lines.
    search_folds
        How many of the folds each trial trains (``None``: see :meth:`folds_to_search`).
    progress
        Show a tqdm progress bar over trials.
    trial_batch
        Trials the search asks for and tells back together, and the final ensemble's
        training groups on small data (``None``: see :meth:`batch_width`).
    restarts
        Independent searches whose final ensembles are pooled into one twin (see
        :meth:`restart_seeds`), each with ``trials`` trials and ``ensemble_size``
        members: an ensemble over configurations as well as weights, whose answer
        depends less on the seed (docs/twin.md, "Dependence on the seed") at
        ``restarts`` times the cost.  More than one takes no ``timeout``, ``budget`` or
        ``storage``: each restart is a seeded search in a journal of its own (restart
        *k* > 0 names its study ``f"{study_name}-r{k}"``), and a clock would make the
        pool depend on the machine's load.

    Raises
    ------
    InputError
        A count is not a positive integer, a time is not a positive number of seconds,
        the seed is out of range, a name is not a string, or restarts are combined
        with a time limit or a storage.

    Examples
    --------
    >>> FitConfig(trials=8, budget=60.0).trial_count(warm_start=False)
    8
    >>> FitConfig().trial_count(warm_start=True)
    4
    """

    trials: int | None = None
    timeout: float | None = None
    budget: float | None = None
    jobs: int = 1
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    ensemble_size: int = DEFAULT_ENSEMBLE_SIZE
    top_k: int = DEFAULT_TOP_K
    n_folds: int = DEFAULT_FOLDS
    search_folds: int | None = None
    progress: bool = False
    trial_batch: int | None = None
    restarts: int = 1

    def __post_init__(self) -> None:
        for name in ("trials", "search_folds", "trial_batch", "restarts"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 1):
                raise InputError(f"{name} must be >= 1")
        if not (_is_int(self.jobs) and self.jobs >= 1):
            raise InputError("jobs must be >= 1")
        if not (_is_int(self.ensemble_size) and _is_int(self.top_k) and self.ensemble_size >= 1 and self.top_k >= 1):
            raise InputError("ensemble_size and top_k must be >= 1")
        if not (_is_int(self.n_folds) and self.n_folds >= 1):
            raise InputError("n_folds must be >= 1")
        if self.timeout is not None and not _positive_seconds(self.timeout):
            raise InputError("timeout must be a positive number of seconds")
        if self.budget is not None and not _positive_seconds(self.budget):
            raise InputError("budget must be a positive number of seconds")
        if not (_is_int(self.seed) and 0 <= self.seed <= MAX_SEED):
            raise InputError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        for name in ("storage", "study_name"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise InputError(f"{name} must be a string")
        if self.restarts > 1:
            given = [n for n in ("timeout", "budget", "storage") if getattr(self, n) is not None]
            if given:
                raise InputError(
                    f"restarts > 1 takes no {' or '.join(given)}: each restart is a seeded search of its own"
                )

    def restart_seeds(self) -> list[int]:
        """The seed of each restart: :attr:`seed` first, then seeds spawned from it.

        The later seeds come from :class:`numpy.random.SeedSequence` ``(seed).spawn``, so
        two seeds' restarts are independent searches (neighbouring seeds share none), and
        ``restarts=1`` is the plain fit of :attr:`seed`.

        Examples
        --------
        >>> FitConfig(seed=7, restarts=3).restart_seeds()[0]
        7
        >>> len(set(FitConfig(seed=0, restarts=4).restart_seeds()) | set(FitConfig(seed=1, restarts=4).restart_seeds()))
        8
        """
        import numpy as np

        children = np.random.SeedSequence(self.seed).spawn(self.restarts - 1)
        return [self.seed] + [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]

    def trial_count(self, warm_start: bool) -> int:
        """Trials to run: :attr:`trials`, else the default for a cold or warm fit.

        Parameters
        ----------
        warm_start
            Whether the fit starts from a previous twin.
        """
        if self.trials is not None:
            return int(self.trials)
        return DEFAULT_WARM_TRIALS if warm_start else DEFAULT_TRIALS

    def folds_to_search(self, n_folds: int, n_rows: int) -> int:
        """How many of *n_folds* folds each search trial trains.

        :attr:`search_folds` if given, else all of them below :data:`LARGE_DATA_ROWS`
        rows, and one from there on: on a large map one fold of every third interior
        line already holds thousands of validation points, and the search costs a third.

        Parameters
        ----------
        n_folds
            Folds the data were split into.
        n_rows
            Rows of the data.
        """
        if self.search_folds is not None:
            return int(self.search_folds)
        return n_folds if n_rows < LARGE_DATA_ROWS else 1

    def search_seconds(self) -> float:
        """Seconds the search may run at most: the smaller of :attr:`timeout` and :attr:`budget` (or ``inf``)."""
        return min(v for v in (self.timeout, self.budget, math.inf) if v is not None)

    @property
    def reproducible(self) -> bool:
        """Whether the fit depends on its inputs alone: no ``timeout`` and no ``budget``.

        Then the search runs in synchronous batches of :meth:`batch_width` trials and
        takes no decision from the clock, so a seed gives the same twin on a busy or an
        idle machine, whatever ``jobs`` is (up to :meth:`batch_width`).
        """
        return self.timeout is None and self.budget is None

    def batch_width(self) -> int:
        """Trials per synchronous search batch, and final-ensemble groups on small data.

        :attr:`trial_batch` if given, else the larger of :data:`DEFAULT_TRIAL_BATCH`
        and :attr:`jobs`: ``jobs=1`` and ``jobs=2`` search and train the same way, one
        batch trial after the other or both at once.

        Examples
        --------
        >>> FitConfig(jobs=1).batch_width(), FitConfig(jobs=2).batch_width(), FitConfig(jobs=4).batch_width()
        (2, 2, 4)
        """
        return int(self.trial_batch) if self.trial_batch is not None else max(DEFAULT_TRIAL_BATCH, self.jobs)
