"""edgeag.report.stats: aggregates on matrices small enough to check by hand, the
stratified bootstrap's properties, and (where rliable is installed) agreement with
rliable's own functions on the same scores."""

import functools

import numpy as np
import pytest
import scipy.stats

from edgeag.report import stats
from edgeag.report.stats import (
    IntervalEstimate,
    iqm,
    mean,
    median,
    normalise,
    optimality_gap,
    performance_profile,
    performance_profile_bands,
    probability_of_improvement,
    stratified_bootstrap_ci,
)

# Three runs of three tasks. Per-task means are 0, 4 and 10, so rliable's median (of the
# task means) is 4 and the mean 14/3. The pooled scores have median 2, which a median of
# all scores would report instead.
THREE_BY_THREE = np.array([[0.0, 2.0, 10.0],
                           [0.0, 2.0, 10.0],
                           [0.0, 8.0, 10.0]])


def gamma_scores(n_runs, n_tasks, seed):
    return np.random.default_rng(seed).gamma(2.0, 0.5, size=(n_runs, n_tasks))


# --- aggregates -------------------------------------------------------------------------

def test_iqm_of_eight_scores_is_the_mean_of_the_middle_four():
    # Pooled: 1..7 and an outlier of 100. Two scores leave from each end: 3, 4, 5, 6 remain.
    scores = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 100.0]])
    assert iqm(scores) == pytest.approx(4.5)


@pytest.mark.parametrize("shape", [(4, 1), (8, 3), (10, 6), (2, 2)])
def test_iqm_is_scipy_trim_mean_of_the_pooled_scores(shape):
    scores = gamma_scores(*shape, seed=sum(shape))
    assert iqm(scores) == pytest.approx(scipy.stats.trim_mean(scores.ravel(), 0.25))


def test_iqm_of_a_size_not_a_multiple_of_four_keeps_more_than_half():
    # N = 10: floor(10 / 4) = 2 scores leave from each end, so the middle 6 remain,
    # unweighted, and the result is still scipy's trim_mean.
    scores = np.array([[10.0, -50.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 99.0]])
    middle = np.sort(scores.ravel())[2:8]
    assert middle.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert iqm(scores) == pytest.approx(4.5)
    assert iqm(scores) == pytest.approx(scipy.stats.trim_mean(scores.ravel(), 0.25))


def test_median_is_of_the_task_means_and_mean_of_the_task_means():
    assert median(THREE_BY_THREE) == pytest.approx(4.0)
    assert np.median(THREE_BY_THREE) == pytest.approx(2.0)  # what the median is not
    assert mean(THREE_BY_THREE) == pytest.approx(14 / 3)


def test_optimality_gap_caps_scores_at_gamma():
    # Capped at 1: each row is (0, 1, 1), mean 2/3.
    assert optimality_gap(THREE_BY_THREE) == pytest.approx(1 / 3)
    # Capped at 5: rows (0, 2, 5), (0, 2, 5), (0, 5, 5), mean 24/9.
    assert optimality_gap(THREE_BY_THREE, gamma=5.0) == pytest.approx(5 - 24 / 9)


def test_aggregates_reduce_a_stack_of_matrices_one_by_one():
    stack = np.stack([gamma_scores(6, 4, seed) for seed in range(3)])
    for aggregate in (iqm, median, mean, optimality_gap):
        np.testing.assert_allclose(aggregate(stack), [aggregate(m) for m in stack])
    y = gamma_scores(5, 4, seed=9)
    np.testing.assert_allclose(probability_of_improvement(stack, y),
                               [probability_of_improvement(m, y) for m in stack])


@pytest.mark.parametrize("bad, message", [
    (np.array([1.0, 2.0]), r"^scores must have shape \(n_runs, n_tasks\) .* got shape \(2,\)$"),
    (np.zeros((0, 3)), r"^scores must have shape .* got shape \(0, 3\)$"),
    (np.array([[1.0, np.nan]]), r"^scores: a score is NaN or infinite; drop the failed runs or score them$"),
])
def test_aggregates_reject_a_malformed_score_matrix(bad, message):
    for aggregate in (iqm, median, mean):
        with pytest.raises(ValueError, match=message):
            aggregate(bad)


# --- probability of improvement ---------------------------------------------------------

def test_probability_of_improvement_extremes():
    low = np.array([[0.0, 1.0], [0.2, 1.5], [0.1, 1.2]])
    high = low + 10
    assert probability_of_improvement(high, low) == 1.0
    assert probability_of_improvement(low, high) == 0.0
    assert probability_of_improvement(low, low) == 0.5
    assert probability_of_improvement(np.ones((3, 2)), np.ones((4, 2))) == 0.5


def test_probability_of_improvement_counts_ties_half_and_averages_tasks():
    # Task 0: x = {1, 2}, y = {2, 3}. Of the 4 pairs x wins none and ties one (2 vs 2): 1/8.
    # Task 1: x always wins: 1. The average over tasks is 9/16.
    x = np.array([[1.0, 5.0], [2.0, 6.0]])
    y = np.array([[2.0, 0.0], [3.0, 1.0]])
    assert probability_of_improvement(x[:, :1], y[:, :1]) == pytest.approx(1 / 8)
    assert probability_of_improvement(x, y) == pytest.approx(9 / 16)
    assert probability_of_improvement(y, x) == pytest.approx(1 - 9 / 16)


def test_probability_of_improvement_is_mann_whitney_u_over_nm():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 5, size=(6, 4)).astype(float)  # small integers: many ties
    y = rng.integers(0, 5, size=(9, 4)).astype(float)
    per_task = [scipy.stats.mannwhitneyu(x[:, t], y[:, t]).statistic / (6 * 9) for t in range(4)]
    assert probability_of_improvement(x, y) == pytest.approx(np.mean(per_task))


def test_probability_of_improvement_needs_the_same_tasks():
    with pytest.raises(ValueError, match=r"^x and y must score the same tasks, got 2 and 3 task"):
        probability_of_improvement(np.ones((3, 2)), np.ones((3, 3)))


# --- performance profiles ---------------------------------------------------------------

def test_performance_profile_counts_scores_strictly_above_tau():
    scores = np.array([[0.1, 0.5], [0.9, 1.2]])
    np.testing.assert_allclose(performance_profile(scores, [0.0, 0.5, 1.0, 2.0]),
                               [1.0, 0.5, 0.25, 0.0])


def test_performance_profile_pools_runs_and_tasks():
    # Above 0.5: 1 of 4 runs on task 0, 3 of 4 on task 1, 1 of 4 on task 2, so 5 of the
    # 12 scores. (With equal runs per task, pooling equals averaging the per-task
    # fractions.) rliable's other profile counts tasks whose *mean* is above 0.5: the
    # means are 0.25, 0.75 and 0.375, which gives 1/3 instead.
    scores = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.5]])
    assert performance_profile(scores, 0.5)[0] == pytest.approx(5 / 12)
    assert np.mean(scores.mean(axis=0) > 0.5) == pytest.approx(1 / 3)


def test_performance_profile_falls_as_tau_rises():
    profile = performance_profile(gamma_scores(10, 5, seed=2), np.linspace(0, 3, 31))
    assert profile[0] == 1.0 and profile[-1] < 0.1
    assert np.all(np.diff(profile) <= 0)


# --- stratified bootstrap ---------------------------------------------------------------

@pytest.mark.parametrize("aggregate", [iqm, median, mean, optimality_gap])
def test_interval_contains_its_point_estimate(aggregate):
    for seed in range(3):
        est = stratified_bootstrap_ci(gamma_scores(8, 5, seed), aggregate, seed=seed)
        assert est.low <= est.point <= est.high
        assert est.low < est.high


def test_interval_is_deterministic_per_seed():
    scores = gamma_scores(10, 6, seed=0)
    a, b = (stratified_bootstrap_ci(scores, iqm, seed=7) for _ in range(2))
    c = stratified_bootstrap_ci(scores, iqm, seed=8)
    assert (a.point, a.low, a.high) == (b.point, b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_interval_narrows_as_runs_grow():
    few = stratified_bootstrap_ci(gamma_scores(5, 4, seed=1), iqm)
    many = stratified_bootstrap_ci(gamma_scores(80, 4, seed=1), iqm)
    assert many.high - many.low < 0.5 * (few.high - few.low)


def test_interval_collapses_when_every_run_of_a_task_scores_the_same():
    scores = np.tile([0.2, 0.7, 1.3], (6, 1))
    for aggregate in (iqm, median, mean):
        est = stratified_bootstrap_ci(scores, aggregate)
        assert est.low == est.point == est.high


def test_confidence_sets_the_width():
    scores = gamma_scores(10, 4, seed=3)
    wide = stratified_bootstrap_ci(scores, mean, confidence=0.95)
    narrow = stratified_bootstrap_ci(scores, mean, confidence=0.5)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_resampling_keeps_each_task_in_its_column_and_draws_cells_independently():
    # Task t's runs score 1000 * t + run, so a score names its task and its run. The
    # tasks' scales differ by orders of magnitude: a replicate that mixed columns would show.
    n_runs, n_tasks = 10, 6
    scores = 1000.0 * np.arange(n_tasks) + np.arange(n_runs)[:, None]
    seen = []

    def record(stack):
        seen.append(stack)
        return stack.mean(axis=(-2, -1))

    stratified_bootstrap_ci(scores, record, reps=500)
    replicates = np.concatenate(seen[1:])  # seen[0] is the point estimate's matrix
    assert replicates.shape == (500, n_runs, n_tasks)
    task, run = np.divmod(replicates, 1000)
    assert np.all(task == np.arange(n_tasks))
    assert np.all((run >= 0) & (run < n_runs))
    # With replacement: a replicate repeats some runs of a task.
    assert np.mean([len(np.unique(r)) < n_runs for r in run.transpose(0, 2, 1).reshape(-1, n_runs)]) > 0.9
    # Independently per task, as rliable does, not whole rows: a row's cells come from
    # different runs.
    same_run_across_tasks = np.all(run == run[..., :1], axis=-1)
    assert same_run_across_tasks.mean() < 0.01


def test_a_pair_is_resampled_independently_within_each_task():
    x = 1000.0 * np.arange(3) + np.arange(4)[:, None]          # 4 runs, 3 tasks
    y = -(1000.0 * np.arange(3) + np.arange(7)[:, None]) - 1    # 7 runs, 3 tasks, all < 0
    seen = []

    def record(a, b):
        seen.append((a, b))
        return probability_of_improvement(a, b)

    est = stratified_bootstrap_ci((x, y), record, reps=200)
    xs = np.concatenate([a for a, _ in seen[1:]])
    ys = np.concatenate([b for _, b in seen[1:]])
    assert xs.shape == (200, 4, 3) and ys.shape == (200, 7, 3)
    assert np.all(np.divmod(xs, 1000)[0] == np.arange(3))
    assert np.all(np.divmod(-ys - 1, 1000)[0] == np.arange(3))
    assert est.low == est.point == est.high == 1.0  # every x beats every y in every replicate


def test_probability_of_improvement_interval():
    rng = np.random.default_rng(5)
    x = rng.normal(0.6, 0.2, size=(10, 4))
    y = rng.normal(0.4, 0.2, size=(8, 4))
    est = stratified_bootstrap_ci((x, y), probability_of_improvement)
    assert est.point == pytest.approx(probability_of_improvement(x, y))
    assert 0.5 < est.low < est.point < est.high <= 1.0


def test_performance_profile_bands_hold_the_profile():
    scores = gamma_scores(10, 5, seed=6)
    taus = np.linspace(0, 3, 13)
    bands = performance_profile_bands(scores, taus, reps=500)
    np.testing.assert_array_equal(bands.point, performance_profile(scores, taus))
    assert bands.low.shape == bands.high.shape == (13,)
    assert np.all(bands.low <= bands.point) and np.all(bands.point <= bands.high)
    assert np.any(bands.low < bands.high)


def test_a_mapping_gives_one_estimate_per_name_independent_of_the_others():
    a, b = gamma_scores(6, 3, seed=1), gamma_scores(9, 3, seed=2)
    both = stratified_bootstrap_ci({"adam": a, "alphagrad": b}, iqm, reps=300)
    alone = stratified_bootstrap_ci({"alphagrad": b}, iqm, reps=300)
    assert set(both) == {"adam", "alphagrad"}
    assert (both["alphagrad"].low, both["alphagrad"].high) == (alone["alphagrad"].low,
                                                               alone["alphagrad"].high)
    assert both["adam"].point == pytest.approx(iqm(a))


def test_chunked_replicates_give_the_same_interval_in_bounded_memory(monkeypatch):
    scores = gamma_scores(7, 3, seed=4)
    whole = stratified_bootstrap_ci(scores, iqm, reps=301, seed=2)
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 50)
    sizes = []

    def record(stack):
        sizes.append(stack.size)
        return iqm(stack)

    chunked = stratified_bootstrap_ci(scores, record, reps=301, seed=2)
    assert max(sizes[1:]) <= 50 and len(sizes) > 100
    assert (chunked.low, chunked.high) == (whole.low, whole.high)


def test_an_aggregate_that_does_not_reduce_a_stack_is_an_error():
    with pytest.raises(ValueError, match=r"^aggregate must reduce a stack .* to \(10,\), got \(\)$"):
        stratified_bootstrap_ci(np.ones((4, 2)), lambda s: float(np.mean(s)), reps=10)


@pytest.mark.parametrize("kwargs, message", [
    ({"reps": 0}, r"^reps must be a positive integer, got 0$"),
    ({"reps": 2.5}, r"^reps must be a positive integer, got 2.5$"),
    ({"confidence": 1.0}, r"^confidence must be between 0 and 1 \(exclusive\), got 1.0$"),
])
def test_bootstrap_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stratified_bootstrap_ci(np.ones((4, 2)), iqm, **kwargs)


def test_a_stack_is_not_a_score_matrix():
    with pytest.raises(ValueError, match=r"^scores must be one \(n_runs, n_tasks\) matrix or a tuple"):
        stratified_bootstrap_ci(np.ones((2, 4, 2)), iqm, reps=10)


# --- normalise and the estimate's text --------------------------------------------------

def test_normalise_maps_random_to_zero_and_reference_to_one():
    np.testing.assert_allclose(normalise([10.0, 50.0, 90.0, 130.0], 10.0, 90.0),
                               [0.0, 0.5, 1.0, 1.5])
    # One random and reference return per task normalise each column.
    returns = np.array([[-200.0, 0.0], [-100.0, 250.0]])
    np.testing.assert_allclose(normalise(returns, [-300.0, 0.0], [-100.0, 500.0]),
                               [[0.5, 0.0], [1.0, 0.5]])


def test_normalise_refuses_a_reference_equal_to_random():
    with pytest.raises(ValueError, match=r"^reference_return equals random_return \(5\.0\): "
                                         r"normalised scores would divide by zero$"):
        normalise([1.0, 2.0], 5.0, 5.0)
    with pytest.raises(ValueError, match=r"^reference_return equals random_return \(3\.0\) at "
                                         r"index 1: normalised"):
        normalise(np.ones((2, 3)), [0.0, 3.0, 1.0], [1.0, 3.0, 2.0])


def test_interval_estimate_text():
    assert str(IntervalEstimate(0.6234, 0.481, 0.7549)) == "0.62 [0.48, 0.75]"
    assert f"{IntervalEstimate(0.6234, 0.481, 0.7549):.3f}" == "0.623 [0.481, 0.755]"
    vector = IntervalEstimate(np.array([1.0, 0.5]), np.array([1.0, 0.25]), np.array([1.0, 0.75]))
    assert str(vector) == "1.00 [1.00, 1.00]; 0.50 [0.25, 0.75]"


# --- rliable ----------------------------------------------------------------------------

def test_agrees_with_rliable():
    """The same scores through rliable's own functions: point estimates equal, intervals
    equal up to Monte Carlo error. rliable draws from numpy's global generator (its
    ``random_state`` does not reach the resampling), hence ``np.random.seed``."""
    pytest.importorskip("rliable")
    from rliable import library, metrics

    scores = gamma_scores(10, 5, seed=1)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, size=(6, 3)).astype(float)  # ties, and unequal run counts
    y = rng.integers(0, 4, size=(8, 3)).astype(float)
    taus = np.linspace(0, 3, 11)

    pairs = [(iqm, metrics.aggregate_iqm), (median, metrics.aggregate_median),
             (mean, metrics.aggregate_mean), (optimality_gap, metrics.aggregate_optimality_gap)]
    for ours, theirs in pairs:
        assert ours(scores) == pytest.approx(theirs(scores), rel=1e-12)
    assert probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    assert probability_of_improvement(x, x) == metrics.probability_of_improvement(x, x) == 0.5

    def close(ours, lows_highs, tolerance):
        width = lows_highs[1] - lows_highs[0]
        assert abs(ours.low - lows_highs[0]) < tolerance * width
        assert abs(ours.high - lows_highs[1]) < tolerance * width

    for ours, theirs in pairs[:3]:
        np.random.seed(0)
        point, ci = library.get_interval_estimates(
            {"a": scores}, lambda s, f=theirs: np.array([f(s)]), reps=2000)
        est = stratified_bootstrap_ci(scores, ours)
        assert est.point == pytest.approx(point["a"][0])
        close(est, ci["a"][:, 0], 0.1)

    # rliable's pair bootstrap calls scipy per task per replicate: few replicates, wider margin.
    np.random.seed(0)
    point, ci = library.get_interval_estimates(
        {"xy": [x, y]}, lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
        reps=300)
    est = stratified_bootstrap_ci((x, y), probability_of_improvement)
    assert est.point == pytest.approx(point["xy"][0])
    close(est, ci["xy"][:, 0], 0.2)

    np.random.seed(0)
    profiles, bands = library.create_performance_profile({"a": scores}, taus, reps=2000)
    ours = performance_profile_bands(scores, taus)
    np.testing.assert_allclose(ours.point, profiles["a"])
    np.testing.assert_allclose(performance_profile(scores, taus), profiles["a"])
    # A band moves in steps of 1/50 (50 scores); allow two steps.
    np.testing.assert_allclose(ours.low, bands["a"][0], atol=0.041)
    np.testing.assert_allclose(ours.high, bands["a"][1], atol=0.041)


def test_partial_profile_is_an_aggregate():
    # functools.partial is the documented way to bootstrap a profile directly.
    scores = gamma_scores(6, 2, seed=8)
    taus = [0.5, 1.0]
    direct = stratified_bootstrap_ci(scores, functools.partial(performance_profile, taus=taus),
                                     reps=200)
    bands = performance_profile_bands(scores, taus, reps=200)
    np.testing.assert_array_equal(direct.low, bands.low)
    np.testing.assert_array_equal(direct.high, bands.high)
