"""Callbacks (bnpo_trl.callbacks): the warm-up's stopping rule (coarse and fine checks) and plateau schedule, driven by a scripted accuracy sequence; the RL time
budget and its learning-rate decay, driven by a scripted clock."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerControl

from bnpo_trl import callbacks


class ScriptedCheck:
    """Stands in for the greedy held-out check: returns the scripted accuracies in turn."""

    def __init__(self, accuracies):
        self.scripted = iter(accuracies)

    def measure(self, model, step):
        return next(self.scripted)


def run_checks(monkeypatch, accuracies, target=0.2, max_seconds=1e9):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # what "constant" builds
    stopper = callbacks.StopOnAccuracyCallback(ScriptedCheck(accuracies), target, max_seconds, eval_steps=10)
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
    P = callbacks.StopOnAccuracyCallback.PATIENCE
    stopper, lrs, control = run_checks(monkeypatch, [0.05] + [0.05] * (P * 5))
    assert not control.should_training_stop
    assert stopper.lr_cuts == callbacks.StopOnAccuracyCallback.MAX_LR_CUTS == 3
    assert lrs[P - 1] == pytest.approx(1e-3) and lrs[P] == pytest.approx(5e-4)  # cut after P stale checks
    assert lrs[-1] == pytest.approx(1e-3 / 8)


def test_progress_resets_patience(monkeypatch):
    stopper, lrs, _ = run_checks(monkeypatch, [0.01, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13])
    assert stopper.lr_cuts == 0 and all(lr == pytest.approx(1e-3) for lr in lrs)


def test_out_of_time_stops_and_reports(monkeypatch):
    stopper, _, control = run_checks(monkeypatch, [0.01, 0.02], max_seconds=0.0)
    assert control.should_training_stop and stopper.accuracy == 0.01


def drive_every_step(accuracies, steps, target=0.5, **fine):
    """Calls the stopper after every step 1..steps (as the Trainer does); returns it, the steps it measured,
    the step it stopped at (None if it did not) and the learning rate after each step."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    stopper = callbacks.StopOnAccuracyCallback(ScriptedCheck(accuracies), target, 1e9, eval_steps=10, **fine)
    lrs = []
    for step in range(1, steps + 1):
        control = stopper.on_step_end(
            None, SimpleNamespace(global_step=step), TrainerControl(), optimizer=optimizer
        )
        lrs.append(optimizer.param_groups[0]["lr"])
        if control.should_training_stop:
            return stopper, [s for s, _ in stopper.history], step, lrs
    return stopper, [s for s, _ in stopper.history], None, lrs


def test_fine_checks_start_once_a_check_reaches_fine_from_and_stop_at_the_target():
    accuracies = [0.02, 0.05, 0.12, 0.2, 0.3, 0.45, 0.55]
    stopper, measured, stopped_at, _ = drive_every_step(accuracies, 60, fine_eval_steps=2, fine_from=0.1)
    # coarse every 10 until step 30 measured 12%; then every 2 steps (the coarse step 40 would overshoot)
    assert measured == [10, 20, 30, 32, 34, 36, 38] and stopped_at == 38 and stopper.accuracy == 0.55
    assert stopper.fine


def test_without_fine_checks_only_coarse_steps_are_measured():
    stopper, measured, stopped_at, _ = drive_every_step([0.02, 0.12, 0.3, 0.6], 60)
    assert measured == [10, 20, 30, 40] and stopped_at == 40 and not stopper.fine


def test_fine_checks_do_not_count_towards_a_plateau():
    # every check reads 15%: only the coarse ones (steps 10, 20, ...) may count; PATIENCE coarse checks
    # after the first one set the best, the learning rate is halved once, exactly as without fine checks
    P = callbacks.StopOnAccuracyCallback.PATIENCE
    steps = 10 * (P + 1)
    _, _, _, coarse_lrs = drive_every_step([0.15] * 100, steps)
    fine_stopper, measured, _, fine_lrs = drive_every_step(
        [0.15] * 100, steps, fine_eval_steps=1, fine_from=0.1
    )
    assert len(measured) == steps - 9 and fine_stopper.lr_cuts == 1
    assert (
        fine_lrs == coarse_lrs
        and coarse_lrs[-1] == pytest.approx(5e-4)
        and coarse_lrs[-2] == pytest.approx(1e-3)
    )


@pytest.mark.parametrize(
    ("elapsed", "step", "max_steps", "stops"),
    [(10.0, 5, 100, False), (31.0, 5, 100, True), (31.0, 100, 100, False)],
)
def test_time_budget_stops_training_once_the_budget_is_spent(monkeypatch, elapsed, step, max_steps, stops):
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: 1000.0 + elapsed)
    callback = callbacks.TimeBudgetCallback(started=1000.0, budget_seconds=30.0)
    state = SimpleNamespace(global_step=step, max_steps=max_steps)
    callback.on_optimizer_step(None, state, TrainerControl())
    control = callback.on_step_end(None, state, TrainerControl())
    assert control.should_training_stop is stops
    # at max_steps the run ends anyway: that is not a stop by the budget
    assert callback.stopped_at_step == (step if stops else None)


def test_time_budget_decay_scales_the_scheduler_rate_by_a_cosine_in_seconds(monkeypatch):
    budget, decay, base_lr = 100.0, 40.0, 1e-3
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=base_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))  # any LambdaLR
    callback = callbacks.TimeBudgetCallback(started=1000.0, budget_seconds=budget, decay_seconds=decay)
    callback.on_train_begin(None, None, TrainerControl(), lr_scheduler=scheduler)
    # the same scale worked out by hand: 1 before the decay window, cos^2(pi/2 * fraction of it) inside it
    expected_scale = {
        10.0: 1.0,
        60.0: 1.0,
        70.0: math.cos(math.pi / 8) ** 2,
        80.0: 0.5,
        90.0: 0.5 - 0.5**0.5 / 2,
    }
    for step, elapsed in enumerate([10.0, 60.0, 70.0, 70.0, 80.0, 90.0], start=1):
        monkeypatch.setattr(callbacks.time, "perf_counter", lambda elapsed=elapsed: 1000.0 + elapsed)
        state = SimpleNamespace(global_step=step, max_steps=1000)
        # the Trainer's order: optimizer step, on_optimizer_step, scheduler step, on_step_end
        optimizer.step()
        callback.on_optimizer_step(None, state, TrainerControl())
        scheduler.step()
        control = callback.on_step_end(None, state, TrainerControl())
        # the next step's rate: the scheduler's own factor times the scale measured now (no compounding)
        want = base_lr / (1 + step) * expected_scale[elapsed]
        assert optimizer.param_groups[0]["lr"] == pytest.approx(want, rel=1e-12)
        assert scheduler.get_last_lr() == [pytest.approx(want, rel=1e-12)]  # what the Trainer logs
        assert callback.lr_scale == pytest.approx(expected_scale[elapsed])
        assert not control.should_training_stop
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: 1000.0 + budget)
    state = SimpleNamespace(global_step=7, max_steps=1000)
    callback.on_optimizer_step(None, state, TrainerControl())
    scheduler.step()
    control = callback.on_step_end(None, state, TrainerControl())
    assert control.should_training_stop and callback.lr_scale == 0.0
    assert optimizer.param_groups[0]["lr"] == 0.0


def test_time_budget_decay_rejects_a_scheduler_it_cannot_compose_with():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    callback = callbacks.TimeBudgetCallback(started=0.0, budget_seconds=30.0, decay_seconds=10.0)
    with pytest.raises(ValueError, match="LambdaLR"):
        callback.on_train_begin(None, None, TrainerControl(), lr_scheduler=plateau)


def test_time_budget_without_decay_leaves_the_rate_alone(monkeypatch):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: 1000.0 + 29.0)
    callback = callbacks.TimeBudgetCallback(started=1000.0, budget_seconds=30.0)
    callback.on_train_begin(None, None, TrainerControl(), lr_scheduler=scheduler)
    callback.on_optimizer_step(None, SimpleNamespace(global_step=1, max_steps=10), TrainerControl())
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 1e-3 and callback.lr_scale == 1.0


def test_time_budget_decay_longer_than_the_budget_covers_the_whole_budget():
    callback = callbacks.TimeBudgetCallback(started=0.0, budget_seconds=30.0, decay_seconds=60.0)
    assert callback.decay_seconds == 30.0
    assert (
        callback.scale(0.0) == 1.0
        and callback.scale(15.0) == pytest.approx(0.5)
        and callback.scale(30.0) == 0.0
    )
    with pytest.raises(ValueError, match="must be >= 0"):
        callbacks.TimeBudgetCallback(started=0.0, budget_seconds=30.0, decay_seconds=-1.0)


def test_warmup_stop_follows_rank_0(monkeypatch):
    # this rank's own clock is out of time and its own accuracy passes the target, but rank 0 (the
    # broadcast, simulated) says neither: the rank must keep training with the others
    import accelerate.utils

    rank0 = {bool: False, float: 0.05}
    monkeypatch.setattr(
        accelerate.utils, "broadcast_object_list", lambda objs, from_process=0: [rank0[type(objs[0])]]
    )
    stopper = callbacks.StopOnAccuracyCallback(ScriptedCheck([0.3] * 2), 0.2, max_seconds=0.0, eval_steps=10)
    for step in (5, 10):
        control = stopper.on_step_end(None, SimpleNamespace(global_step=step), TrainerControl())
        assert not control.should_training_stop
    assert stopper.history == [(10, 0.05)] and stopper.accuracy == 0.05


def test_greedy_check_matches_a_one_prompt_at_a_time_reference(tiny_path, tokenizer):
    from transformers import AutoModelForCausalLM

    from bnpo_trl.data import load_dataset_by_name
    from bnpo_trl.evaluation import BenchmarkEvalCallback
    from bnpo_trl.tiny_model import EOS_TOKEN

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    with torch.no_grad():  # EOS competes with the other tokens, so that some completions end and some do not
        model.get_output_embeddings().weight[eos] *= 40
    rows = load_dataset_by_name("arithmetic", split="test", limit=24)

    def even_problem(prompts, completions, **kwargs):  # depends on the prompt only, not on decoding
        return [float(int(p[-1]["content"].split()[2]) % 2 == 0) for p in prompts]

    check = BenchmarkEvalCallback.greedy(tokenizer, rows, even_problem, eval_steps=0, max_new_tokens=16)
    expected = []
    for prompt in rows["prompt"]:
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
        out = model.generate(
            ids,
            do_sample=False,
            max_new_tokens=16,
            eos_token_id=eos,
            pad_token_id=eos,
            repetition_penalty=1.0,
        )
        ended = eos in out[0, ids.shape[1] :].tolist()
        expected.append(ended and even_problem([prompt], None)[0] == 1.0)
    assert 0 < sum(expected) < len(expected)  # the reference has both outcomes
    assert check.measure(model, step=0) == pytest.approx(sum(expected) / len(expected))
    assert check.curve == [(0, pytest.approx(sum(expected) / len(expected)))]


def test_greedy_check_of_a_multi_source_set_reports_each_source_and_the_pooled_accuracy(tiny_path, tokenizer):
    from transformers import AutoModelForCausalLM

    from bnpo_trl.data import load_dataset_by_name
    from bnpo_trl.evaluation import BenchmarkEvalCallback

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    rows = load_dataset_by_name("arithmetic_mix", split="test", limit=9)
    rows = rows.select([0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 2])  # unequal sizes: add2 5, add3 3, mul 3

    def first_operand_even(prompts, completions, **kwargs):  # the prompt decides, and ending is not required
        return [float(int(p[-1]["content"].split()[2]) % 2 == 0) for p in prompts]

    check = BenchmarkEvalCallback.greedy(tokenizer, rows, first_operand_even, eval_steps=0, max_new_tokens=4)
    check.options["require_eos"] = False
    overall = check.measure(model, step=0)
    truth = first_operand_even(rows["prompt"], None)
    expected = {}
    for source, score in zip(rows["data_source"], truth, strict=True):
        expected.setdefault(source, []).append(score)
    assert check.by_source == [(0, {s: pytest.approx(sum(v) / len(v)) for s, v in expected.items()})]
    assert overall == pytest.approx(sum(truth) / len(truth))  # over problems, not the mean of the sources
    assert sum(truth) / len(truth) != pytest.approx(sum(sum(v) / len(v) for v in expected.values()) / 3)
    single = BenchmarkEvalCallback.greedy(
        tokenizer, load_dataset_by_name("arithmetic", split="test", limit=4), first_operand_even, 0, 4
    )
    assert list(single.benchmarks) == ["heldout"] and not single.pooled


@pytest.mark.parametrize("value", [-1, -5])
def test_warmup_arguments_reject_a_negative_fine_eval_steps(value):
    from bnpo_trl.arguments import WarmupArguments

    with pytest.raises(ValueError, match=rf"0 turns fine checks off\), got {value}\."):
        WarmupArguments(sft_warmup_fine_eval_steps=value)
    WarmupArguments(sft_warmup_fine_eval_steps=5)  # a valid one passes
