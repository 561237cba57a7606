""":class:`BenchmarkEvalCallback`: evaluation during training, every ``eval_steps`` steps — benchmark pass@k,
or (:meth:`BenchmarkEvalCallback.greedy`) the held-out accuracy check of the warm-up and of RL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from bnpo_trl.data import DEFAULT_SYSTEM_PROMPT
from bnpo_trl.evaluation.benchmarks import load_benchmarks
from bnpo_trl.evaluation.core import evaluate
from bnpo_trl.evaluation.sharded import TrainerBackend

__all__ = ["BenchmarkEvalCallback"]


class BenchmarkEvalCallback(TrainerCallback):
    """Run :func:`~bnpo_trl.evaluation.evaluate` on a small benchmark subset every ``eval_steps`` steps
    (0: only when :meth:`run` or :meth:`measure` is called).

    Logs ``eval/<benchmark>/pass@1`` (and ``pass@k`` for the other k, ``mean_length``,
    ``no_answer_rate``) through the trainer's loggers when ``trainer`` is given (TRL's own callbacks
    take the trainer the same way), else into ``state.log_history``; the points are kept in
    ``history``, and ``curve`` holds ``(step, mean pass@1)``. With a trainer on several ranks (DDP,
    DeepSpeed ZeRO-2/3, FSDP2) every rank generates its share of the problems through TRL's generation
    context (:class:`~bnpo_trl.evaluation.sharded.TrainerBackend`) and every rank scores all of them, so
    the metrics are the same everywhere; without one it runs on the main process (or on every rank with
    ``every_rank``) with the transformers backend. ``samples_dir``: keep every completion of each evaluation
    in ``samples_dir/step-<N>.jsonl`` (the format of ``bnpo-trl eval``'s ``samples.jsonl``). Recipes set it
    with ``benchmark_eval``.

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
        require_eos: bool = False,
        every_rank: bool = False,
        accuracy_key: str | None = None,
        trainer: Any = None,
        samples_dir: str | None = None,
    ) -> None:
        if eval_steps < 0:
            raise ValueError(f"eval_steps must be >= 0 (0: only when called), got {eval_steps}.")
        self.tokenizer = tokenizer
        self.benchmarks = (
            benchmarks
            if isinstance(benchmarks, Mapping)
            else load_benchmarks(benchmarks, system_prompt=system_prompt, limit=limit)
        )
        self.eval_steps, self.limit, self.trainer = eval_steps, limit, trainer
        self.every_rank, self.accuracy_key, self.samples_dir = every_rank, accuracy_key, samples_dir
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
            "require_eos": require_eos,
        }
        self.history: list[dict[str, Any]] = []
        self.curve: list[tuple[int, float]] = []
        self.by_source: list[tuple[int, dict[str, float]]] = []  # greedy check of a multi-source set
        self.pooled = False  # True: the benchmarks are one held-out set split by data source

    @classmethod
    def greedy(
        cls,
        tokenizer: Any,
        dataset: Any,
        reward: Any,
        eval_steps: int,
        max_new_tokens: int,
        name: str = "heldout",
    ) -> BenchmarkEvalCallback:
        """The held-out accuracy check (the warm-up's stop rule, accuracy before/during/after RL): greedy, one
        sample per problem of ``dataset`` (prompts as they are), a completion that does not end within
        ``max_new_tokens`` counts as wrong; on every rank; logged as ``<name>/accuracy``. Not at the run's
        last step, which the caller measures after training. A set with several ``data_source`` values is
        also measured per source (``<name>/accuracy/<source>``, :attr:`by_source`); the overall accuracy is
        then the mean over all its problems."""
        parts = _split_by_source(dataset, name)
        callback = cls(
            tokenizer,
            parts,
            eval_steps,
            limit=None,
            n=1,
            temperature=0.0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            batch_size=64,
            system_prompt=None,
            reward=reward,
            require_eos=True,
            every_rank=True,
            accuracy_key=f"{name}/accuracy",
        )
        callback.pooled = len(parts) > 1
        return callback

    def run(self, model: Any, step: int) -> dict[str, float]:
        """Evaluate now; returns (and records) the logged metrics."""
        report = evaluate(
            model,
            self.tokenizer,
            self.benchmarks,
            backend=self._backend(),
            samples_path=self._samples_path(step),
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
        pass_at_1 = {name: r["pass@k"]["pass@1"] for name, r in report["results"].items()}
        if self.pooled:
            sizes = {name: len(self.benchmarks[name]) for name in pass_at_1}
            overall = sum(sizes[b] * a for b, a in pass_at_1.items()) / sum(sizes.values())
            self.by_source.append((step, {b.split("/", 1)[1]: a for b, a in pass_at_1.items()}))
        else:
            overall = sum(pass_at_1.values()) / len(pass_at_1)
        self.curve.append((step, overall))
        self.history.append({"step": step, **logs})
        return logs

    def _samples_path(self, step: int) -> str | None:
        """``samples_dir/step-<N>.jsonl`` (one line per completion), written by the main process only."""
        if self.samples_dir is None or getattr(
            getattr(self.trainer, "accelerator", None), "process_index", 0
        ):
            return None
        import os

        os.makedirs(self.samples_dir, exist_ok=True)
        return os.path.join(self.samples_dir, f"step-{step}.jsonl")

    def _sharded(self) -> bool:
        accelerator = getattr(self.trainer, "accelerator", None)
        return accelerator is not None and accelerator.num_processes > 1

    def _backend(self) -> Any:
        if self._sharded():  # every rank generates its share with the model as the trainer holds it
            return TrainerBackend(self.trainer, self.tokenizer, batch_size=self.options["batch_size"])
        return "transformers"

    def measure(self, model: Any, step: int) -> float:
        """Evaluate now; returns the mean pass@1 over the benchmarks (the accuracy, for greedy n=1)."""
        self.run(model, step)
        return self.curve[-1][1]

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if not self.eval_steps or state.global_step % self.eval_steps:
            return control
        if self.accuracy_key and state.global_step >= state.max_steps:
            return control  # the last step: measured after training
        if not (self.every_rank or self._sharded() or state.is_world_process_zero):
            return control
        if model is None:
            raise ValueError("BenchmarkEvalCallback needs the model; the trainer passes it as `model`.")
        logs = self.run(model, state.global_step)
        if self.accuracy_key:
            logs = {self.accuracy_key: self.curve[-1][1]}
            if self.pooled:
                logs.update({f"{self.accuracy_key}/{s}": a for s, a in self.by_source[-1][1].items()})
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


def _split_by_source(dataset: Any, name: str) -> dict[str, Any]:
    """``{name: dataset}``, or ``{name/source: its rows}`` when the rows name several data sources."""
    columns = getattr(dataset, "column_names", None) or []
    column = list(dataset["data_source"]) if "data_source" in columns else []
    sources = list(dict.fromkeys(column))
    if len(sources) < 2:
        return {name: dataset}
    return {f"{name}/{s}": dataset.select([i for i, x in enumerate(column) if x == s]) for s in sources}
