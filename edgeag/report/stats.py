"""Aggregate scores over runs and tasks, with interval estimates, the way rliable
reports them: Agarwal et al., "Deep Reinforcement Learning at the Edge of the
Statistical Precipice", NeurIPS 2021 (https://github.com/google-research/rliable).
numpy and scipy only.

A *score matrix* has shape ``(n_runs, n_tasks)``: one column per task, one row per run
(seed), each entry a normalised score (`normalise`). An aggregate of one matrix is a
float. Every aggregate here also accepts a stack of matrices, shape
``(..., n_runs, n_tasks)``, and reduces the last two axes. That is what lets
`stratified_bootstrap_ci` evaluate thousands of bootstrap replicates in one call instead
of one Python call per replicate.

The definitions are rliable's (``rliable/metrics.py`` and ``rliable/library.py``):

- `iqm`: the 25% trimmed mean of all scores pooled, across runs and tasks together;
- `median`: the median over tasks of each task's mean score (not the median of the
  pooled scores);
- `mean`: the mean over tasks of each task's mean score;
- `optimality_gap`: how far the scores, capped at ``gamma``, fall short of ``gamma``;
- `probability_of_improvement`: P(X > Y) per task from the Mann-Whitney U statistic,
  averaged over tasks;
- `performance_profile`: rliable's default *run-score distribution*, the fraction of
  all (run, task) scores above each threshold;
- `stratified_bootstrap_ci`: percentile intervals from a bootstrap that resamples runs
  with replacement within each task, independently per task.

The one place this module departs from rliable is the random stream. rliable (1.2.0)
draws its resampling indices from numpy's global generator, so its ``random_state``
argument does not make its intervals reproducible. Here every interval comes from its own
``numpy.random.default_rng(seed)``. The intervals therefore agree with rliable's only
up to Monte Carlo error; the point estimates agree exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import scipy.stats

_CHUNK_ELEMENTS = 1 << 20
"""At most this many resampled scores (8 MiB in float64, and as much again for their
indices) exist at a time. `stratified_bootstrap_ci` evaluates the replicates in chunks of
this size, so beyond one aggregate value per replicate its memory does not grow with
``reps``."""


@dataclass(frozen=True, eq=False)
class IntervalEstimate:
    """A point estimate and the bounds of its confidence interval.

    The fields are floats for a scalar aggregate. For a vector aggregate they are arrays
    of one shape, e.g. a performance profile with one entry per threshold. ``str`` gives
    ``0.62 [0.48, 0.75]`` (two decimals); ``format(e, ".3f")`` picks the digits. A vector
    prints as one such entry per element, separated by ``; ``.
    """

    point: float | np.ndarray
    low: float | np.ndarray
    high: float | np.ndarray

    def __format__(self, spec: str) -> str:
        spec = spec or ".2f"
        points, lows, highs = (np.ravel(v) for v in (self.point, self.low, self.high))
        return "; ".join(f"{p:{spec}} [{lo:{spec}}, {hi:{spec}}]"
                         for p, lo, hi in zip(points, lows, highs))

    def __str__(self) -> str:
        return format(self, "")


def normalise(returns, random_return, reference_return) -> np.ndarray:
    """``(returns - random_return) / (reference_return - random_return)``: 0 is the
    random policy's return and 1 is the reference's.

    The reference is the caller's choice and must be named wherever the scores are
    reported, e.g. a published figure such as a paper's final return on that task. It
    changes every aggregate, and this module picks none. The random and reference
    returns may be scalars or arrays that broadcast against ``returns``. With one entry
    per task (shape ``(n_tasks,)``), they normalise each column of a score matrix. A
    normalised score grows with the return only when the reference is above the random
    return.

    Raises ValueError when a reference return equals its random return, because the
    score would divide by zero.
    """
    returns = np.asarray(returns, dtype=float)
    random_return, reference_return = np.broadcast_arrays(
        np.asarray(random_return, dtype=float), np.asarray(reference_return, dtype=float))
    same = np.argwhere(random_return == reference_return)
    if len(same):
        index = tuple(same[0].tolist())
        at = f" at index {index[0] if len(index) == 1 else index}" if index else ""
        value = float(random_return[index])
        raise ValueError(f"reference_return equals random_return ({value!r}){at}: normalised "
                         "scores would divide by zero")
    span = reference_return - random_return
    return (returns - random_return) / span


def _scores(scores, name: str = "scores") -> np.ndarray:
    """``scores`` as a float array of one or more matrices ``(..., n_runs, n_tasks)``;
    ValueError for fewer than two axes, no runs or tasks, or a score that is not finite."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim < 2 or scores.shape[-2] == 0 or scores.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (n_runs, n_tasks) with at least one run and "
                         f"one task, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name}: a score is NaN or infinite; drop the failed runs or score them")
    return scores


def iqm(scores) -> np.ndarray:
    """Interquartile mean: the mean of the middle half of all scores, pooled across runs
    and tasks (rliable's ``aggregate_iqm``).

    This is ``scipy.stats.trim_mean(scores, 0.25, axis=None)``. It drops
    ``floor(N / 4)`` of the ``N`` pooled scores from each end. When ``N`` is a multiple
    of 4, exactly the middle half remains. Otherwise slightly more than half remains,
    e.g. the middle 6 of 10 scores, and no score is weighted fractionally. rliable
    behaves the same because it makes this same call.
    """
    scores = _scores(scores)
    pooled = scores.reshape(*scores.shape[:-2], -1)
    return scipy.stats.trim_mean(pooled, 0.25, axis=-1)


def median(scores) -> np.ndarray:
    """The median over tasks of each task's mean score (rliable's ``aggregate_median``).

    This is not the median of the pooled scores: each task counts once, as its mean
    over runs."""
    return np.median(_scores(scores).mean(axis=-2), axis=-1)


def mean(scores) -> np.ndarray:
    """The mean over tasks of each task's mean score (rliable's ``aggregate_mean``).
    This equals the mean of the pooled scores, because every task has the same number
    of runs."""
    return _scores(scores).mean(axis=(-2, -1))


def optimality_gap(scores, gamma: float = 1.0) -> np.ndarray:
    """``gamma`` minus the mean of the scores capped at ``gamma`` (rliable's
    ``aggregate_optimality_gap``). It is 0 when every run reaches ``gamma`` on every
    task, and lower is better. A score above ``gamma`` earns nothing extra, so one
    outstanding task cannot hide the others."""
    return gamma - np.minimum(_scores(scores), gamma).mean(axis=(-2, -1))


def probability_of_improvement(x, y) -> np.ndarray:
    """The average over tasks of P(X > Y). X is a run of algorithm ``x`` and Y a run of
    ``y``, both on the same task. Ties count half (rliable's
    ``probability_of_improvement``).

    ``x`` has shape ``(n, n_tasks)`` and ``y`` shape ``(m, n_tasks)``; the run counts
    may differ. Per task this is the Mann-Whitney U statistic of ``x`` divided by
    ``n * m``: the share of the ``n * m`` pairs in which x's run scores higher. It equals
    ``scipy.stats.mannwhitneyu(x_task, y_task).statistic / (n * m)``. The value here
    comes from the average ranks of the two samples pooled, so that a whole stack of
    bootstrap replicates is ranked in one call. Identical samples give exactly 0.5, the
    value rliable special-cases. For the interval, pass the pair as a tuple:
    ``stratified_bootstrap_ci((x, y), probability_of_improvement)``. This resamples
    x's and y's runs independently within each task, as rliable does.
    """
    x, y = _scores(x, "x"), _scores(y, "y")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must score the same tasks, got {x.shape[-1]} and "
                         f"{y.shape[-1]} task columns")
    n, m = x.shape[-2], y.shape[-2]
    lead = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    pooled = np.concatenate([np.broadcast_to(x, (*lead, *x.shape[-2:])),
                             np.broadcast_to(y, (*lead, *y.shape[-2:]))], axis=-2)
    ranks = scipy.stats.rankdata(pooled, axis=-2)  # ties share their average rank
    u = ranks[..., :n, :].sum(axis=-2) - n * (n + 1) / 2
    return (u / (n * m)).mean(axis=-1)


def performance_profile(scores, taus) -> np.ndarray:
    """The fraction of scores strictly above each threshold in ``taus``: rliable's
    run-score distribution, its default profile (``use_score_distribution=True``).

    The (run, task) scores are pooled. Every task has the same number of runs, so this
    equals the per-task fractions averaged over tasks. rliable's other profile, the
    fraction of *tasks* whose mean score is above tau, is not provided; rliable
    recommends the run-score distribution for its smaller variance. Returns shape
    ``(..., len(taus))``; a single tau counts as a list of one.
    """
    scores = _scores(scores)
    taus = np.atleast_1d(np.asarray(taus, dtype=float))
    if taus.ndim != 1:
        raise ValueError(f"taus must be one-dimensional, got shape {taus.shape}")
    return np.stack([(scores > tau).mean(axis=(-2, -1)) for tau in taus], axis=-1)


def _resample(scores: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` stratified bootstrap replicates of one score matrix, shape
    ``(reps, n_runs, n_tasks)``. Each (run, task) cell draws a run of its own task with
    replacement, independently of every other cell, as rliable's ``StratifiedBootstrap``
    does. A task's column is therefore only ever filled from that task's own runs."""
    n_runs, n_tasks = scores.shape
    runs = rng.integers(n_runs, size=(reps, n_runs, n_tasks))
    return scores[runs, np.arange(n_tasks)]


def stratified_bootstrap_ci(scores, aggregate: Callable[..., np.ndarray], *, reps: int = 2000,
                            confidence: float = 0.95, seed: int = 0):
    """The point estimate ``aggregate(scores)`` and its percentile confidence interval
    from a stratified bootstrap (rliable's ``get_interval_estimates`` with
    ``method='percentile'``).

    Each of the ``reps`` replicates resamples the runs with replacement within each task
    (column), independently per task, so every replicate keeps all tasks and their
    number of runs. The interval reflects what another set of seeds on the same tasks
    would give. The bounds are the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    percentiles of the replicates' aggregates, as numpy's ``percentile`` computes them
    (linear interpolation, like rliable through ``arch``). A percentile interval need
    not contain the point estimate when the aggregate is strongly skewed. When every run
    of each task scores the same, the interval collapses to the point. ``reps`` defaults
    to rliable's figure for performance profiles; its ``get_interval_estimates`` defaults
    to 50,000. rliable's ``task_bootstrap`` option, which resamples the tasks as well, is
    not provided.

    ``scores`` is one of:

    - a score matrix ``(n_runs, n_tasks)``;
    - a tuple of score matrices over the same tasks, e.g. ``(x, y)`` for
      `probability_of_improvement`. Each matrix is resampled independently, and
      ``aggregate`` receives them as separate arguments;
    - a mapping from a name (an optimizer, say) to either of the above. The result is
      then a dict with one estimate per name. Every entry uses the same ``seed``, so an
      entry's interval does not depend on what else is in the mapping.

    ``aggregate`` must reduce the last two axes of a stack ``(k, n_runs, n_tasks)`` to
    shape ``(k,)``, or ``(k, d)`` for a vector aggregate such as
    ``functools.partial(performance_profile, taus=taus)``. Every aggregate in this
    module does so. Replicates are evaluated in chunks of bounded size
    (`_CHUNK_ELEMENTS`). Given ``seed`` the result is deterministic.

    Returns an `IntervalEstimate`, or a dict of them for a mapping.
    """
    if isinstance(scores, Mapping):
        return {name: stratified_bootstrap_ci(s, aggregate, reps=reps, confidence=confidence,
                                              seed=seed)
                for name, s in scores.items()}
    if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    group = tuple(_scores(s) for s in (scores if isinstance(scores, tuple) else (scores,)))
    if any(s.ndim != 2 for s in group):
        raise ValueError("scores must be one (n_runs, n_tasks) matrix or a tuple of them, got "
                         f"shapes {[s.shape for s in group]}")
    point = np.asarray(aggregate(*group), dtype=float)
    per_replicate = sum(s.size for s in group)
    chunk = max(1, _CHUNK_ELEMENTS // per_replicate)
    rng = np.random.default_rng(seed)
    replicates = []
    for start in range(0, reps, chunk):
        k = min(chunk, reps - start)
        values = np.asarray(aggregate(*(_resample(s, k, rng) for s in group)), dtype=float)
        if values.shape != (k, *point.shape):
            raise ValueError(f"aggregate must reduce a stack of shape (k, n_runs, n_tasks) to "
                             f"{(k, *point.shape)}, got {values.shape}")
        replicates.append(values)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(np.concatenate(replicates), [tail, 100 - tail], axis=0)
    if point.ndim == 0:
        return IntervalEstimate(float(point), float(low), float(high))
    return IntervalEstimate(point, low, high)


def performance_profile_bands(scores, taus, *, reps: int = 2000, confidence: float = 0.95,
                              seed: int = 0):
    """`performance_profile` at each threshold in ``taus``, with its stratified bootstrap
    band (`stratified_bootstrap_ci`), as rliable's ``create_performance_profile``
    computes them. Returns an `IntervalEstimate` of arrays of shape ``(len(taus),)``, or a
    dict of them when ``scores`` is a mapping."""
    taus = np.atleast_1d(np.asarray(taus, dtype=float))
    return stratified_bootstrap_ci(scores, lambda s: performance_profile(s, taus), reps=reps,
                                   confidence=confidence, seed=seed)
