"""One trial budget shared by every worker of a study: none lost, none run twice.

Each worker (a process of ``--workers N``, or another ``python -m training search`` joining
the study by name) runs :func:`take_trials`: while the study holds fewer than ``trials``
finished (COMPLETE or PRUNED) trials, it starts one more if the finished, running and queued
trials leave room, and otherwise waits — another worker's trial may still die, and then its
re-queued variables (see :mod:`training.storage`) need a worker.  So every worker stays
until the budget is met, and the last trials are never left to a dead worker.

Looking and starting are not one atomic step, so two workers can start the last trial at
the same moment.  :func:`surplus` settles it by trial number, which the storage hands out
in creation order: a trial with ``trials`` live ones ahead of it is surplus, fails at once
without training (user attribute ``surplus``) and never counts; then at most ``trials``
trials ever finish, and any that die are replaced.
"""

from __future__ import annotations

import random
import time
import warnings
from collections import Counter
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)


class Surplus(Exception):
    """The budget was already taken by trials ahead of this one."""


def surplus(study: optuna.Study, trial: optuna.Trial, trials: int) -> bool:
    """Whether ``trials`` live trials were created before ``trial`` (so it must not run)."""
    ahead = [t for t in study.get_trials(deepcopy=False, states=LIVE)
             if t.number < trial.number]
    return len(ahead) >= trials


def counts(study: optuna.Study) -> Counter:
    """Trials per state, read afresh from the storage."""
    return Counter(t.state for t in study.get_trials(deepcopy=False))


def guarded(study: optuna.Study, objective: Callable[[optuna.Trial], float],
            trials: int) -> Callable[[optuna.Trial], float]:
    """``objective``, refusing (:class:`Surplus`) a trial beyond the budget of ``trials``;
    optimize with ``catch=(Surplus,)``."""

    def run(trial: optuna.Trial) -> float:
        if surplus(study, trial, trials):
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number}: the budget of {trials} is taken")
        return objective(trial)

    return run


def take_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], trials: int,
                poll_s: float, log: Callable[[str], None] = print) -> None:
    """Run trials of ``study`` until it holds ``trials`` finished ones (see the module)."""
    one = guarded(study, objective, trials)
    waiting_said = False
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: fail, re-queue
        n = counts(study)
        finished = sum(n[s] for s in FINISHED)
        if finished >= trials:
            return
        if finished + n[TrialState.RUNNING] < trials:
            # a queued (retried) trial is taken first; a new one is asked otherwise
            study.optimize(one, n_trials=1, catch=(Surplus,))
            waiting_said = False
            continue
        if not waiting_said:
            log(f"study {study.study_name}: {finished}/{trials} finished, "
                f"{n[TrialState.RUNNING]} running elsewhere; waiting for them")
            waiting_said = True
        time.sleep(poll_s * random.uniform(0.5, 1.5))  # jitter: workers do not wake together
