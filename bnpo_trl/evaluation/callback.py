""":class:`BenchmarkEvalCallback`: the benchmark evaluation during training, every ``eval_steps`` steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from bnpo_trl.data import DEFAULT_SYSTEM_PROMPT
from bnpo_trl.evaluation.benchmarks import load_benchmarks
from bnpo_trl.evaluation.core import evaluate

__all__ = ["BenchmarkEvalCallback"]


class BenchmarkEvalCallback(TrainerCallback):
    """Run :func:`~bnpo_trl.evaluation.evaluate` on a small benchmark subset every ``eval_steps`` steps.

    Logs ``eval/<benchmark>/pass@1`` (and ``pass@k`` for the other k, ``mean_length``,
    ``no_answer_rate``) through the trainer's loggers when ``trainer`` is given (TRL's own callbacks
    take the trainer the same way), else into ``state.log_history``; the points are kept in
    ``history``. Runs on the main process only, with the transformers backend, on the model as the
    trainer holds it: fine for single-GPU, DDP and ZeRO-1/2, not for ZeRO-3 or FSDP (sharded weights).

    Example::

        cb = BenchmarkEvalCallback(tokenizer, "math500", eval_steps=50, limit=64, max_new_tokens=1024)
        trainer = NormalizedGRPOTrainer(..., callbacks=[cb])
        cb.trainer = trainer   # optional: log to wandb/tensorboard too
    """

    def __init__(
        self,
        tokenizer: Any,
        benchmarks: str | Sequence[str] | Mapping[str, Any],
        eval_steps: int,
        *,
        limit: int | None = 64,
        n: int = 4,
        temperature: float = 0.6,
        top_p: float = 0.95,
        max_new_tokens: int = 1024,
        batch_size: int = 16,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
        reward: Any = "accuracy",
        ks: Sequence[int] | None = None,
        trainer: Any = None,
    ) -> None:
        if eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1, got {eval_steps}.")
        self.tokenizer = tokenizer
        self.benchmarks = (
            benchmarks
            if isinstance(benchmarks, Mapping)
            else load_benchmarks(benchmarks, system_prompt=system_prompt, limit=limit)
        )
        self.eval_steps, self.limit, self.trainer = eval_steps, limit, trainer
        self.options = {
            "n": n,
            "temperature": temperature,
            "top_p": top_p,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "system_prompt": system_prompt,
            "chat_template_kwargs": chat_template_kwargs,
            "seed": seed,
            "reward": reward,
            "ks": ks,
        }
        self.history: list[dict[str, Any]] = []

    def run(self, model: Any, step: int) -> dict[str, float]:
        """Evaluate now; returns (and records) the logged metrics."""
        report = evaluate(
            model,
            self.tokenizer,
            self.benchmarks,
            backend="transformers",
            limit=self.limit,
            progress=False,
            n_bootstrap=0,
            model_name=f"step {step}",
            **self.options,
        )
        logs: dict[str, float] = {}
        for name, r in report["results"].items():
            for key, value in r["pass@k"].items():
                logs[f"eval/{name}/{key}"] = value
            logs[f"eval/{name}/mean_length"] = r["mean_length"]
            logs[f"eval/{name}/no_answer_rate"] = r["no_answer_rate"]
        self.history.append({"step": step, **logs})
        return logs

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if state.global_step % self.eval_steps or not state.is_world_process_zero:
            return control
        if model is None:
            raise ValueError("BenchmarkEvalCallback needs the model; the trainer passes it as `model`.")
        logs = self.run(model, state.global_step)
        from transformers import Trainer

        if self.trainer is not None and isinstance(self.trainer, Trainer):
            # The base Trainer.log: loggers + log_history, without flushing GRPOTrainer's train metrics.
            # Its on_log event clears control.should_log, which would drop this step's training log.
            should_log = control.should_log
            Trainer.log(self.trainer, dict(logs))
            control.should_log = should_log
        else:
            state.log_history.append({**logs, "step": state.global_step})
        return control
