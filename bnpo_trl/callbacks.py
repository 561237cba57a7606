"""Trainer callbacks of a run: the warm-up's stop on held-out accuracy, the whole run's time budget with its
learning-rate decay, and a checkpoint-then-stop on SIGTERM (preemption). Evaluation during training (the
held-out accuracy of RL, benchmarks) is :class:`~bnpo_trl.evaluation.BenchmarkEvalCallback`, re-exported here.

Under several ranks, rank 0's clock and measurements decide and are broadcast every step: a rank that
stopped one step before the others would leave them waiting in DDP's gradient all-reduce forever.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from typing import Any

from transformers import TrainerCallback

from bnpo_trl.evaluation.callback import BenchmarkEvalCallback

logger = logging.getLogger(__name__)

__all__ = ["BenchmarkEvalCallback", "PreemptionCallback", "StopOnAccuracyCallback", "TimeBudgetCallback"]


def _from_rank_0(value: Any) -> Any:
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


class StopOnAccuracyCallback(TrainerCallback):
    """Every ``eval_steps`` steps: measure ``check`` (the greedy held-out check,
    :meth:`BenchmarkEvalCallback.greedy`); stop at the target or when time runs out.

    With ``fine_eval_steps`` > 0, once a check reaches ``fine_from`` the accuracy is checked every
    ``fine_eval_steps`` steps from then on: the tiny model's accuracy can jump by 25 points between two
    coarse checks, and where the warm-up stops decides how much RL can add.

    On a plateau (``PATIENCE`` coarse checks without a gain of ``MIN_GAIN`` over the best accuracy so far)
    the learning rate is halved, at most ``MAX_LR_CUTS`` times: some seeds stall at a learning rate that
    works for others. Fine checks never count towards a plateau, so they leave that schedule as it was.
    """

    PATIENCE, MAX_LR_CUTS, MIN_GAIN = 4, 3, 0.01

    def __init__(
        self,
        check: BenchmarkEvalCallback,
        target: float,
        max_seconds: float,
        eval_steps: int,
        fine_eval_steps: int = 0,
        fine_from: float = 1.0,
    ) -> None:
        self.check = check
        self.target, self.max_seconds, self.eval_steps = target, max_seconds, eval_steps
        self.fine_eval_steps, self.fine_from, self.fine = fine_eval_steps, fine_from, False
        self.started = time.perf_counter()
        self.accuracy, self.history = 0.0, []
        self.best, self.stale_checks, self.lr_cuts = 0.0, 0, 0

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        out_of_time = _from_rank_0(time.perf_counter() - self.started >= self.max_seconds)
        coarse = state.global_step % self.eval_steps == 0
        fine = self.fine and state.global_step % self.fine_eval_steps == 0
        if coarse or fine or out_of_time:
            self.accuracy = _from_rank_0(self.check.measure(model, state.global_step))
            self.history.append((state.global_step, self.accuracy))
            logger.info("warm-up step %d: held-out accuracy %.1f%%", state.global_step, 100 * self.accuracy)
            self.fine = self.fine or (self.fine_eval_steps > 0 and self.accuracy >= self.fine_from)
            if self.accuracy >= self.target or out_of_time:
                control.should_training_stop = True
            elif coarse:
                self._track_plateau(optimizer, lr_scheduler)
        return control

    def _track_plateau(self, optimizer: Any, lr_scheduler: Any) -> None:
        if self.accuracy >= self.best + self.MIN_GAIN:
            self.best, self.stale_checks = self.accuracy, 0
            return
        self.stale_checks += 1
        if self.stale_checks >= self.PATIENCE and self.lr_cuts < self.MAX_LR_CUTS and optimizer:
            self._halve_learning_rate(optimizer, lr_scheduler)

    def _halve_learning_rate(self, optimizer: Any, lr_scheduler: Any) -> None:
        for group in optimizer.param_groups:
            group["lr"] *= 0.5
        if lr_scheduler is not None:  # LambdaLR recomputes lr from base_lrs every step
            lr_scheduler.base_lrs = [lr * 0.5 for lr in lr_scheduler.base_lrs]
        self.lr_cuts, self.stale_checks = self.lr_cuts + 1, 0
        logger.info("warm-up plateau: learning rate halved to %.2e", optimizer.param_groups[0]["lr"])


class TimeBudgetCallback(TrainerCallback):
    """Stop training once ``budget_seconds`` have passed since ``started`` (a ``time.perf_counter()`` value),
    optionally decaying the learning rate over the budget's last ``decay_seconds``.

    The decay is a warmup-stable-decay schedule measured in seconds instead of steps (defined by this
    project): with ``t`` the elapsed time and ``D = decay_seconds``, the configured ``lr_scheduler``'s rate
    is multiplied by

        scale(t) = 1                                              for t <= budget - D
        scale(t) = (1 + cos(pi * (t - budget + D) / D)) / 2        for budget - D < t < budget

    so a run stopped by its time budget ends with a learning rate near zero whatever the number of steps
    the machine managed. A decay longer than the budget covers the whole budget. The scale is composed into
    the scheduler (each ``LambdaLR`` factor becomes ``factor(step) * scale``): it is measured after every
    optimizer step, before the scheduler steps, so step ``k + 1`` uses the scale measured after step ``k``
    and the Trainer's logged ``learning_rate`` is the rate used.

    Rank 0's clock decides and every rank follows, so all ranks stop at the same step with the same
    learning rate; ``stopped_at_step`` records where it stopped (None: the budget was not reached) and
    ``lr_scale`` the last scale.
    """

    def __init__(self, started: float, budget_seconds: float, decay_seconds: float = 0.0) -> None:
        if decay_seconds < 0:
            raise ValueError(f"time_budget_decay_seconds must be >= 0 (0: no decay), got {decay_seconds}.")
        self.started, self.budget_seconds = started, budget_seconds
        self.decay_seconds = min(decay_seconds, budget_seconds)  # longer than the budget: the whole budget
        self.stopped_at_step: int | None = None
        self.lr_scale = 1.0
        self.elapsed = 0.0

    def scale(self, elapsed: float) -> float:
        """The learning-rate factor after ``elapsed`` seconds (1.0 without decay)."""
        if not self.decay_seconds:
            return 1.0
        progress = (elapsed - (self.budget_seconds - self.decay_seconds)) / self.decay_seconds
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))

    def compose_into(self, lr_scheduler: Any) -> None:
        """Multiply every factor of a ``LambdaLR`` (all of transformers' schedules but
        ``reduce_lr_on_plateau``) by the current :attr:`lr_scale`."""
        from torch.optim.lr_scheduler import LambdaLR

        if not isinstance(lr_scheduler, LambdaLR):
            raise ValueError(
                f"time_budget_decay_seconds composes with a LambdaLR learning-rate schedule, got "
                f"{type(lr_scheduler).__name__}: use an lr_scheduler_type such as constant_with_warmup or "
                "cosine, or set time_budget_decay_seconds to 0."
            )
        lr_scheduler.lr_lambdas = [
            lambda step, factor=factor: factor(step) * self.lr_scale for factor in lr_scheduler.lr_lambdas
        ]

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        if self.decay_seconds and lr_scheduler is not None:
            self.compose_into(lr_scheduler)
        return control

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.elapsed = _from_rank_0(time.perf_counter() - self.started)
        self.lr_scale = self.scale(self.elapsed)  # the scheduler steps next and reads it
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.elapsed >= self.budget_seconds and state.global_step < state.max_steps:
            control.should_training_stop = True
            self.stopped_at_step = state.global_step
        return control


class PreemptionCallback(TrainerCallback):
    """On SIGTERM (what slurm sends before preempting or at the time limit): finish the current optimizer
    step, save a checkpoint and stop, so that the process exits 0 and a requeued job resumes from it.

    The handler only sets a flag; at every step end the ranks agree on it (an all-reduce of one number, so
    that every rank saves and stops at the same step even when the signal reached them at different times).
    """

    def __init__(self) -> None:
        self.requested = False
        self.stopped_at_step: int | None = None
        self._previous: Any = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.warning("SIGTERM received: saving a checkpoint at the end of this step, then stopping.")
        self.requested = True

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _anyone_requested(self) -> bool:
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.requested
        flag = torch.tensor([float(self.requested)])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._anyone_requested():
            self.requested = True
            self.stopped_at_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
