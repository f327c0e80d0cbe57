"""Reading ``edgeag tune`` studies back for a report: the studies in a storage, their
complete trials, each run's figures, and the floor a task's score is measured from.

Used by the scripts that run studies and report on them (``scripts/tune_presets.py``,
``scripts/evaluate_optimizers.py``). Imports optuna (the ``tune`` extra) only in
`load_study`.
"""

from __future__ import annotations

import statistics


def load_study(storage: str, name: str):
    """The study ``name`` in ``storage`` (a journal file or database URL), or None when
    it does not exist yet."""
    import optuna

    from edgeag.tune.storage import open_storage, resolve_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(resolve_storage(storage)))
    except KeyError:
        return None


def complete_trials(study) -> list:
    """The study's COMPLETE trials (none for a study that does not exist)."""
    if study is None:
        return []
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def run_curve_mean(run: dict) -> float | None:
    """The training return averaged over a run's whole learning curve (the area under
    it, per logged point), from a trial's ``runs`` record; None without a curve."""
    curve = [r for _, r in run.get("curve") or [] if r is not None]
    return statistics.fmean(curve) if curve else None


def curve_mean(trial) -> float:
    """Mean over the trial's seeds of `run_curve_mean`: which of two settings that both
    end at the same return learns sooner."""
    means = [m for m in map(run_curve_mean, trial.user_attrs.get("runs") or []) if m is not None]
    return statistics.fmean(means) if means else float("nan")


def random_return(env_id: str, episodes: int = 20, seed: int = 0) -> float:
    """Mean return of uniformly random actions over ``episodes`` seeded episodes: the
    floor of a task's normalised score."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(seed)
    total = []
    try:
        for k in range(episodes):
            env.reset(seed=seed + k)
            ret, done = 0.0, False
            while not done:
                _, r, term, trunc, _ = env.step(env.action_space.sample())
                ret += float(r)
                done = term or trunc
            total.append(ret)
    finally:
        env.close()
    return statistics.fmean(total)
