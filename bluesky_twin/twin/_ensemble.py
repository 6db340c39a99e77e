"""The final ensemble: which configurations it holds, how long its members train,
what that costs, and the training itself.

After the search, the best few configurations (at most ``top_k``, each within
:data:`TOP_K_SCORE_RATIO` of the best validation loss) are refitted on all rows,
``ensemble_size`` members in all (:func:`plan_ensemble`).  The members form groups
(:func:`group_count`, :func:`split_groups`) that train in parallel threads
(:func:`train_ensemble`), each for the epochs its trial needed (:func:`final_epochs`,
:func:`final_schedule`).  A fit's budget asks :func:`estimate_final_seconds` how long
that will take while the search is still running.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bluesky_twin.twin._config import DEFAULT_ENSEMBLE_SIZE, DEFAULT_TOP_K, LARGE_DATA_ROWS
from bluesky_twin.twin._params import matching_model, model_params
from bluesky_twin.twin.space import DEFAULT_FINAL_EPOCHS, TwinSearchSpace

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from bluesky_twin.twin.network import BatchedMLP
    from bluesky_twin.twin.training import MonotonePenalty

#: A configuration joins the ensemble only if its validation loss is at most this
#: multiple of the best one.
TOP_K_SCORE_RATIO = 1.5
#: A time-boxed final-ensemble member trains at least this many epochs.
MIN_FINAL_EPOCHS = 20


def plan_ensemble(complete: Sequence[Any], ensemble_size: int, top_k: int) -> tuple[list[Any], list[int]]:
    """The configurations of the final ensemble and the members each gets.

    Parameters
    ----------
    complete
        Completed Optuna trials (anything with a ``value``, lower is better).
    ensemble_size
        Members in all.
    top_k
        Configurations at most.

    Returns
    -------
    chosen, shares
        The best ``top_k`` trials within :data:`TOP_K_SCORE_RATIO` of the best value,
        best first, and the members of each: *ensemble_size* dealt out as evenly as
        possible, the better configurations first.

    Examples
    --------
    >>> from types import SimpleNamespace as T
    >>> chosen, shares = plan_ensemble([T(value=1.0), T(value=1.2), T(value=9.0)], 5, 3)
    >>> [t.value for t in chosen], shares
    ([1.0, 1.2], [3, 2])
    """
    ranked = sorted(complete, key=lambda t: t.value)
    chosen = [t for t in ranked[: max(1, min(top_k, ensemble_size))] if t.value <= TOP_K_SCORE_RATIO * ranked[0].value]
    shares = [ensemble_size // len(chosen) + (1 if i < ensemble_size % len(chosen) else 0) for i in range(len(chosen))]
    return chosen, shares


def group_count(jobs: int, ensemble_size: int, n_rows: int) -> int:
    """How many training groups the final ensemble's members form.

    Small data: ``jobs`` groups, because batching members into one model is nearly
    free where per-step overhead dominates.  Large maps (:data:`LARGE_DATA_ROWS` rows
    or more) are compute-bound, so batching saves nothing and one member per group
    packs best onto the threads (6 members on 2 threads: 3 member-times, against 4
    for three groups of 2).

    Parameters
    ----------
    jobs
        Training threads.
    ensemble_size
        Members in all.
    n_rows
        Rows of the data.

    Examples
    --------
    >>> group_count(2, 6, 808), group_count(2, 6, 30_000)
    (2, 6)
    """
    return max(jobs, ensemble_size) if n_rows >= LARGE_DATA_ROWS else jobs


def split_groups(shares: Sequence[tuple[Any, int]], groups: int) -> list[tuple[Any, int]]:
    """Split ``(config, members)`` shares until there are *groups* of them (or one member each).

    The largest share is halved first; the order of configurations is kept.

    Parameters
    ----------
    shares
        ``(config, members)`` pairs, e.g. ``zip(*plan_ensemble(...))``.
    groups
        Groups wanted (usually :func:`group_count`).

    Examples
    --------
    >>> split_groups([("a", 6)], 2)
    [('a', 3), ('a', 3)]
    >>> split_groups([("a", 1), ("b", 1)], 4)
    [('a', 1), ('b', 1)]
    """
    out = list(shares)
    while len(out) < groups:
        i = max(range(len(out)), key=lambda k: out[k][1])
        config, members = out[i]
        if members < 2:
            break
        out[i : i + 1] = [(config, members - members // 2), (config, members // 2)]
    return out


def final_epochs(trial: Any, space: TwinSearchSpace, warm: bool, search_steps: int = 1, final_steps: int = 1) -> int:
    """Epochs of a final-ensemble member: the search's best epoch, with a floor.

    The floor is :attr:`TwinSearchSpace.min_final_epochs` (default
    :data:`~bluesky_twin.twin.space.DEFAULT_FINAL_EPOCHS`); starting from trained
    weights (*warm*) it is a third of that.  When a final epoch is capped differently
    from a search epoch (:attr:`TwinSearchSpace.final_steps_per_epoch`, e.g. full
    passes), the search's best epoch is converted to the same number of optimiser
    steps, so a trial that needed 500 short epochs does not become 500 full passes.

    Parameters
    ----------
    trial
        A completed trial; its ``best_epoch`` user attribute is read (default: the
        space's ``max_epochs``).
    space
        The search space of the fit.
    warm
        Whether the member starts from a previous twin's weights.
    search_steps, final_steps
        Optimiser steps of a search epoch and of a final epoch.
    """
    base = space.min_final_epochs if space.min_final_epochs is not None else DEFAULT_FINAL_EPOCHS
    floor = base // 3 if warm else base
    best = int(trial.user_attrs.get("best_epoch", space.max_epochs))
    if space.final_step_cap != space.max_steps_per_epoch:
        best = math.ceil(best * search_steps / max(1, final_steps))
    return int(max(best, floor))


def final_schedule(
    trial: Any, space: TwinSearchSpace, batch: int, n_train: int, n_all: int, warm: bool = False
) -> tuple[int, int]:
    """Epochs of a final member of *trial*'s configuration, and its optimiser steps per epoch.

    A final epoch runs over all *n_all* rows (capped by
    :attr:`TwinSearchSpace.final_step_cap`), a search epoch ran over *n_train*.

    Parameters
    ----------
    trial
        A completed trial.
    space
        The search space of the fit.
    batch
        The configuration's batch size.
    n_train, n_all
        Training rows of a search trial, and rows of the data.
    warm
        Whether the member starts from a previous twin's weights (see :func:`final_epochs`).

    Returns
    -------
    epochs, steps_per_epoch
    """
    from bluesky_twin.twin.training import steps_per_epoch

    final_steps = steps_per_epoch(n_all, min(batch, n_all), space.final_step_cap)
    search_steps = steps_per_epoch(n_train, batch, space.max_steps_per_epoch)
    return final_epochs(trial, space, warm, search_steps, final_steps), final_steps


def estimate_final_seconds(
    study: Any,
    space: TwinSearchSpace,
    ensemble_size: int,
    top_k: int,
    jobs: int,
    n_train: int,
    n_all: int,
    width: int | None = None,
) -> float:
    """Wall seconds the final ensemble would take if the search stopped now.

    Uses each chosen trial's measured seconds per member and optimiser step (older
    trials: per member-epoch, scaled by the steps of a final epoch against a search
    epoch), the steps of a final epoch (:attr:`TwinSearchSpace.final_step_cap`) and
    the epochs :func:`train_ensemble` would run from a cold start; the member groups
    are then packed onto ``jobs`` threads as :func:`train_ensemble` runs them (three
    equal groups on two threads take two groups' time, not one and a half).

    Parameters
    ----------
    study
        The Optuna study of the search.
    space
        The search space of the fit.
    ensemble_size, top_k, jobs
        As for :func:`train_ensemble`.
    n_train, n_all
        Training rows of a search trial, and rows of the data.
    width
        As for :func:`train_ensemble`.

    Returns
    -------
    float
        Seconds; ``0`` before any trial has completed.
    """
    import optuna

    from bluesky_twin.twin.training import steps_per_epoch

    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if "seconds_per_member_epoch" in t.user_attrs
    ]
    if not complete:
        return 0.0
    chosen, shares = plan_ensemble(complete, ensemble_size, top_k)
    member_seconds: dict[int, float] = {}
    for t in chosen:
        batch = int(model_params(t.params, space, n_train)["batch_size"])
        # a cold start's floor: the larger estimate
        epochs, final_steps = final_schedule(t, space, batch, n_train, n_all)
        if "seconds_per_member_step" in t.user_attrs:
            per_epoch = final_steps * float(t.user_attrs["seconds_per_member_step"])
        else:  # trials recorded before step timing: whole epochs, validation included
            per_epoch = (
                float(t.user_attrs["seconds_per_member_epoch"])
                * final_steps
                / steps_per_epoch(n_train, batch, space.max_steps_per_epoch)
            )
        member_seconds[id(t)] = epochs * per_epoch
    # the groups train_ensemble will run, longest first onto the least busy of `jobs` threads
    loads = [0.0] * max(1, jobs)
    groups = split_groups(list(zip(chosen, shares, strict=True)), group_count(width or jobs, ensemble_size, n_all))
    for t, members in sorted(groups, key=lambda g: -g[1] * member_seconds[id(g[0])]):
        loads[loads.index(min(loads))] += members * member_seconds[id(t)]
    return max(loads)


def train_ensemble(
    complete: Sequence[Any],
    space: TwinSearchSpace,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    n_train: int,
    seed: int = 0,
    ensemble_size: int = DEFAULT_ENSEMBLE_SIZE,
    top_k: int = DEFAULT_TOP_K,
    jobs: int = 1,
    warm_models: Sequence[BatchedMLP] = (),
    precision: str = "float32",
    monotone: MonotonePenalty | None = None,
    epoch_scale: float = 1.0,
    deadline: float | None = None,
    width: int | None = None,
) -> tuple[torch.nn.ModuleList, list[dict[str, Any]]]:
    """Refit the top-k configurations on all rows, ``ensemble_size`` members in all.

    The members are split into :func:`group_count` groups (a configuration's members
    may form several groups) that train in up to ``jobs`` parallel threads, each with
    its own generator seeded from the fit's seed and the group's index, so the result
    does not depend on thread timing, nor on ``jobs`` once *width* is given.

    Parameters
    ----------
    complete
        The completed trials of the search (see :func:`plan_ensemble`).
    space
        The (resolved) search space of the fit.
    X, y
        ``(n, d)`` and ``(n, 1)`` standardised float32 tensors: all rows.
    n_train
        Training rows of a search trial (batch bounds and epoch conversion).
    seed
        The fit's seed.
    ensemble_size, top_k
        Members in all, and configurations at most.
    jobs
        Training threads.
    warm_models
        A previous twin's networks: a group whose architecture matches one starts
        from its weights, with the warm epoch floor.
    precision
        Training precision (see :func:`bluesky_twin.twin.training.train_members`).
    monotone
        The search's monotone penalty (:attr:`SearchData.monotone
        <bluesky_twin.twin._search.SearchData.monotone>`), which every member trains with.
    epoch_scale
        Below 1 (a fit's budget), every member's schedule, the learning-rate drop
        included, shrinks to that fraction (at least :data:`MIN_FINAL_EPOCHS` epochs).
    deadline
        A :func:`time.monotonic` time at which training stops outright.
    width
        What :func:`group_count` counts groups from (``None``: ``jobs``); a fit passes
        :meth:`FitConfig.batch_width <bluesky_twin.twin.FitConfig.batch_width>`.

    Returns
    -------
    models, entries
        One :class:`~bluesky_twin.twin.network.BatchedMLP` per group, and per group
        the record kept in the twin's metadata (``trial``, ``params``, ``members``,
        ``epochs``, ``lr_drop_epoch``, ``cv_score``).
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from bluesky_twin.twin.network import BatchedMLP
    from bluesky_twin.twin.training import train_members

    chosen, shares = plan_ensemble(complete, ensemble_size, top_k)
    groups = split_groups(list(zip(chosen, shares, strict=True)), group_count(width or jobs, ensemble_size, len(X)))
    full = torch.arange(len(X))

    def train_group(index: int) -> tuple[BatchedMLP, dict[str, Any]]:
        trial, members = groups[index]
        gen = torch.Generator().manual_seed(seed * 7919 + 1 + 104_729 * index)
        params = model_params(trial.params, space, n_train)
        model = BatchedMLP.from_params(members, X.shape[1], params, generator=gen)
        previous = matching_model(warm_models, params)
        if previous is not None:
            model.load_members_from(previous)
        epochs, _ = final_schedule(trial, space, int(params["batch_size"]), n_train, len(X), warm=previous is not None)
        lr_drop = space.lr_drop_epoch
        short = max(MIN_FINAL_EPOCHS, math.ceil(epochs * epoch_scale))
        if short < epochs:  # a budget's time box: the whole schedule shrinks, drop included
            lr_drop = max(1, round(lr_drop * short / epochs))
            epochs = short
        train_members(
            model,
            X,
            y,
            [full] * members,
            None,
            lr=params["lr"],
            batch_size=min(params["batch_size"], len(X)),
            weight_decay=params["weight_decay"],
            max_epochs=epochs,
            lr_drop_epoch=lr_drop,
            lr_drop_factor=space.lr_drop_factor,
            generator=gen,
            max_steps_per_epoch=space.final_step_cap,
            precision=precision,
            deadline=deadline,
            monotone=monotone,
        )
        return model, {
            "trial": trial.number,
            "params": params,
            "members": members,
            "epochs": epochs,
            "lr_drop_epoch": lr_drop,
            "cv_score": float(trial.value),
        }

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(groups)))) as pool:
        results = list(pool.map(train_group, range(len(groups))))
    return torch.nn.ModuleList(m for m, _ in results), [e for _, e in results]
