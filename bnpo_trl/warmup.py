"""Supervised warm-up before RL, stopped on held-out accuracy, and a held-out accuracy callback."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from typing import Any

from transformers import TrainerCallback

from bnpo_trl.generation import heldout_accuracy

logger = logging.getLogger(__name__)


class _StopOnAccuracy(TrainerCallback):
    """Every ``eval_steps`` steps: measure greedy accuracy; stop at the target or when time runs out.

    On a plateau (``PATIENCE`` checks without a gain of ``MIN_GAIN`` over the best accuracy so far) the
    learning rate is halved, at most ``MAX_LR_CUTS`` times. Under several ranks, rank 0's clock and
    accuracy decide (broadcast each step), so every rank stops at the same step.
    """

    PATIENCE, MAX_LR_CUTS, MIN_GAIN = 4, 3, 0.01

    def __init__(
        self, tokenizer, dev, reward, target: float, max_seconds: float, eval_steps: int, max_new_tokens: int
    ):
        self.tokenizer, self.dev, self.reward = tokenizer, dev, reward
        self.target, self.max_seconds, self.eval_steps = target, max_seconds, eval_steps
        self.max_new_tokens = max_new_tokens
        self.started = time.perf_counter()
        self.accuracy, self.history = 0.0, []
        self.best, self.stale_checks, self.lr_cuts = 0.0, 0, 0

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        from accelerate.utils import broadcast_object_list

        # Rank 0's clock and measurement decide for every rank: a rank that stopped one step before the
        # others would leave them waiting in DDP's gradient all-reduce forever.
        out_of_time = time.perf_counter() - self.started >= self.max_seconds
        out_of_time = broadcast_object_list([out_of_time], from_process=0)[0]
        if state.global_step % self.eval_steps == 0 or out_of_time:
            accuracy = heldout_accuracy(model, self.tokenizer, self.dev, self.reward, self.max_new_tokens)
            self.accuracy = broadcast_object_list([accuracy], from_process=0)[0]
            self.history.append((state.global_step, self.accuracy))
            logger.info("warm-up step %d: held-out accuracy %.1f%%", state.global_step, 100 * self.accuracy)
            if self.accuracy >= self.target or out_of_time:
                control.should_training_stop = True
            elif self.accuracy >= self.best + self.MIN_GAIN:
                self.best, self.stale_checks = self.accuracy, 0
            else:
                self.stale_checks += 1
                if (
                    self.stale_checks >= self.PATIENCE
                    and self.lr_cuts < self.MAX_LR_CUTS
                    and optimizer is not None
                ):
                    # A plateau well below the target: some seeds stall at a learning rate that works for
                    # others (seen here: 3e-3 stalled at 3% for 460 steps where 1e-3 reached 23%).
                    for group in optimizer.param_groups:
                        group["lr"] *= 0.5
                    if lr_scheduler is not None:  # LambdaLR recomputes lr from base_lrs every step
                        lr_scheduler.base_lrs = [lr * 0.5 for lr in lr_scheduler.base_lrs]
                    self.lr_cuts, self.stale_checks = self.lr_cuts + 1, 0
                    logger.info(
                        "warm-up plateau: learning rate halved to %.2e", optimizer.param_groups[0]["lr"]
                    )
        return control


def sft_warmup(model, tokenizer, train, check_set, reward, script_args, training_args) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``train``'s ``prompt``/``completion`` pairs (TRL SFTTrainer,
    completion-only loss) until greedy accuracy on ``check_set`` reaches the target or the budget ends.

    The accuracy check measures all of ``check_set``: ``bnpo_trl.train.load_warmup_check_set`` chooses those
    rows (at most ``sft_warmup_eval_limit``). Returns what happened: steps, seconds, accuracy, whether the
    target was reached, and the accuracy history.
    """
    from trl import SFTConfig, SFTTrainer

    if "completion" not in train.column_names:
        raise ValueError(
            "sft_warmup needs a `completion` column (the gold answer as an assistant message) in the training set."
        )
    stopper = _StopOnAccuracy(
        tokenizer,
        check_set,
        reward,
        script_args.sft_warmup_target_accuracy,
        script_args.sft_warmup_max_seconds,
        script_args.sft_warmup_eval_steps,
        script_args.heldout_max_new_tokens,
    )
    with tempfile.TemporaryDirectory(prefix="bnpo_warmup_") as tmp:
        config = SFTConfig(
            output_dir=os.path.join(tmp, "warmup"),
            per_device_train_batch_size=script_args.sft_warmup_batch_size,
            learning_rate=script_args.sft_warmup_learning_rate,
            lr_scheduler_type="constant",
            weight_decay=script_args.sft_warmup_weight_decay,
            adam_beta2=0.98,
            max_steps=script_args.sft_warmup_max_steps,  # usually stopped earlier, by accuracy or time
            logging_steps=script_args.sft_warmup_eval_steps,
            save_strategy="no",
            report_to="none",
            bf16=training_args.bf16,
            use_cpu=training_args.use_cpu,
            seed=training_args.seed,
            disable_tqdm=training_args.disable_tqdm,
            completion_only_loss=True,
            gradient_checkpointing=training_args.gradient_checkpointing,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=train.select_columns(["prompt", "completion"]),
            processing_class=tokenizer,
            callbacks=[stopper],
        )
        trainer.train()
    seconds = time.perf_counter() - stopper.started
    reached = stopper.accuracy >= script_args.sft_warmup_target_accuracy
    if not reached:
        logger.warning(
            "Warm-up stopped at %.1f%% held-out accuracy after %.0f s, below the %.0f%% target.",
            100 * stopper.accuracy,
            seconds,
            100 * script_args.sft_warmup_target_accuracy,
        )
    return {
        "steps": trainer.state.global_step,
        "seconds": seconds,
        "accuracy": stopper.accuracy,
        "target": script_args.sft_warmup_target_accuracy,
        "reached_target": reached,
        "learning_rate_cuts": stopper.lr_cuts,
        "history": stopper.history,
    }


class HeldoutAccuracyCallback(TrainerCallback):
    """Greedy held-out accuracy (with the ``accuracy`` reward) every ``heldout_eval_steps`` RL steps.

    Logged as ``heldout/accuracy``; the points are kept in ``curve`` for the run summary and its plot.
    """

    def __init__(self, tokenizer, heldout, reward, script_args) -> None:
        self.tokenizer, self.heldout, self.reward = tokenizer, heldout, reward
        self.every = script_args.heldout_eval_steps
        self.max_new_tokens = script_args.heldout_max_new_tokens
        self.curve: list[tuple[int, float]] = []

    def measure(self, model: Any, step: int) -> float:
        accuracy = heldout_accuracy(model, self.tokenizer, self.heldout, self.reward, self.max_new_tokens)
        self.curve.append((step, accuracy))
        return accuracy

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            accuracy = self.measure(model, state.global_step)
            state.log_history.append({"heldout/accuracy": accuracy, "step": state.global_step})
        return control


class TimeBudgetCallback(TrainerCallback):
    """Stop training once ``budget_seconds`` have passed since ``started`` (a ``time.perf_counter()`` value),
    optionally decaying the learning rate over the budget's last ``decay_seconds``.

    The decay is a warmup-stable-decay schedule measured in seconds instead of steps (defined by this
    project): with ``t`` the elapsed time and ``D = decay_seconds``, every step's learning rate (what the
    configured ``lr_scheduler`` set) is multiplied by

        scale(t) = 1                                              for t <= budget - D
        scale(t) = (1 + cos(pi * (t - budget + D) / D)) / 2        for budget - D < t < budget

    so a run stopped by its time budget ends with a learning rate near zero whatever the number of steps
    the machine managed. A decay longer than the budget covers the whole budget. The scale multiplies the
    scheduler's value each step (a ``LambdaLR`` recomputes from its base rates, so scales do not compound),
    and the scheduler's last rate is updated so the logged ``learning_rate`` is the one used.

    Rank 0's clock decides and every rank follows (a broadcast each step), so all ranks stop at the same
    step with the same learning rate; ``stopped_at_step`` records where it stopped (None: the budget was not
    reached) and ``lr_scale`` the last scale.
    """

    def __init__(self, started: float, budget_seconds: float, decay_seconds: float = 0.0) -> None:
        if decay_seconds < 0:
            raise ValueError(f"time_budget_decay_seconds must be >= 0 (0: no decay), got {decay_seconds}.")
        self.started, self.budget_seconds = started, budget_seconds
        self.decay_seconds = min(decay_seconds, budget_seconds)  # longer than the budget: the whole budget
        self.stopped_at_step: int | None = None
        self.lr_scale = 1.0

    def scale(self, elapsed: float) -> float:
        """The learning-rate factor after ``elapsed`` seconds (1.0 without decay)."""
        if not self.decay_seconds:
            return 1.0
        progress = (elapsed - (self.budget_seconds - self.decay_seconds)) / self.decay_seconds
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))

    def on_step_end(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        from accelerate.utils import broadcast_object_list

        elapsed = broadcast_object_list([time.perf_counter() - self.started], from_process=0)[0]
        if elapsed >= self.budget_seconds and state.global_step < state.max_steps:
            control.should_training_stop = True
            self.stopped_at_step = state.global_step
        self.lr_scale = self.scale(elapsed)
        if self.decay_seconds and optimizer is not None:
            for group in optimizer.param_groups:  # the lr_scheduler has already set this step's rates
                group["lr"] *= self.lr_scale
            if lr_scheduler is not None and hasattr(lr_scheduler, "_last_lr"):
                lr_scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what gets logged
        return control
