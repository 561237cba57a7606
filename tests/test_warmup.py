"""The warm-up's stopping rule and plateau schedule, driven by a scripted accuracy sequence."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerControl

from bnpo_trl import warmup


def run_checks(monkeypatch, accuracies, target=0.2, max_seconds=1e9):
    scripted = iter(accuracies)
    monkeypatch.setattr(warmup, "heldout_accuracy", lambda *args, **kwargs: next(scripted))
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # what "constant" builds
    stopper = warmup._StopOnAccuracy(None, None, None, target, max_seconds, eval_steps=10, max_new_tokens=8)
    lrs = []
    for i in range(len(accuracies)):
        control = TrainerControl()
        state = SimpleNamespace(global_step=10 * (i + 1))
        stopper.on_step_end(None, state, control, model=None, optimizer=optimizer, lr_scheduler=scheduler)
        scheduler.step()  # must not undo a cut
        lrs.append(optimizer.param_groups[0]["lr"])
        if control.should_training_stop:
            break
    return stopper, lrs, control


def test_stops_at_target(monkeypatch):
    stopper, lrs, control = run_checks(monkeypatch, [0.0, 0.05, 0.25, 0.3])
    assert control.should_training_stop and stopper.accuracy == 0.25 and len(lrs) == 3
    assert stopper.lr_cuts == 0 and lrs[-1] == pytest.approx(1e-3)


def test_plateau_halves_learning_rate_at_most_three_times(monkeypatch):
    P = warmup._StopOnAccuracy.PATIENCE
    stopper, lrs, control = run_checks(monkeypatch, [0.05] + [0.05] * (P * 5))
    assert not control.should_training_stop
    assert stopper.lr_cuts == warmup._StopOnAccuracy.MAX_LR_CUTS == 3
    assert lrs[P - 1] == pytest.approx(1e-3) and lrs[P] == pytest.approx(5e-4)  # cut after P stale checks
    assert lrs[-1] == pytest.approx(1e-3 / 8)


def test_progress_resets_patience(monkeypatch):
    stopper, lrs, _ = run_checks(monkeypatch, [0.01, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13])
    assert stopper.lr_cuts == 0 and all(lr == pytest.approx(1e-3) for lr in lrs)


def test_out_of_time_stops_and_reports(monkeypatch):
    stopper, _, control = run_checks(monkeypatch, [0.01, 0.02], max_seconds=0.0)
    assert control.should_training_stop and stopper.accuracy == 0.01


@pytest.mark.parametrize(
    ("elapsed", "step", "max_steps", "stops"),
    [(10.0, 5, 100, False), (31.0, 5, 100, True), (31.0, 100, 100, False)],
)
def test_time_budget_stops_training_once_the_budget_is_spent(monkeypatch, elapsed, step, max_steps, stops):
    monkeypatch.setattr(warmup.time, "perf_counter", lambda: 1000.0 + elapsed)
    callback = warmup.TimeBudgetCallback(started=1000.0, budget_seconds=30.0)
    control = callback.on_step_end(
        None, SimpleNamespace(global_step=step, max_steps=max_steps), TrainerControl()
    )
    assert control.should_training_stop is stops
    # at max_steps the run ends anyway: that is not a stop by the budget
    assert callback.stopped_at_step == (step if stops else None)
