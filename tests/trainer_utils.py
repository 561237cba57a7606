"""Shared pieces for the trainer tests: a recording trainer, a deterministic reward, tiny configs."""

from __future__ import annotations

import torch
from datasets import Dataset

from bnpo_trl import NormalizedGRPOConfig, NormalizedGRPOTrainer


def parity_reward(completions, **kwargs) -> list[float]:
    """1.0 when the completion text has an even number of characters (deterministic, mixed outcomes)."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(len(t) % 2 == 0) for t in texts]


def digit_reward(completions, **kwargs) -> list[float]:
    """Fraction of characters that are digits: a second, continuous reward in [0, 1]."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def sometimes_none_reward(completions, **kwargs) -> list[float | None]:
    """Like parity_reward but returns None (unscored) for every third completion."""
    scores = parity_reward(completions)
    return [None if i % 3 == 0 else s for i, s in enumerate(scores)]


def tiny_dataset(n: int = 16, with_source: bool = True) -> Dataset:
    rows = []
    for i in range(n):
        row = {"prompt": [{"role": "user", "content": f"What is {i + 10} + {i + 3}?"}]}
        if with_source:
            row["data_source"] = "gsm8k" if i % 2 else "math"
        rows.append(row)
    return Dataset.from_list(rows)


def tiny_grpo_kwargs(output_dir, **overrides) -> dict:
    """GRPOConfig arguments for a 2-step CPU run on the tiny model (shared by every trainer test)."""
    kwargs = dict(
        output_dir=str(output_dir),
        bf16=False,
        use_cpu=True,
        report_to="none",
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=6,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return kwargs


def tiny_config(output_dir, **overrides) -> NormalizedGRPOConfig:
    defaults = dict(
        learning_rate=1e-2,
        lr_scheduler_type="constant",  # the same schedule whatever max_steps is (resume tests)
        temperature=1.0,
    )
    return NormalizedGRPOConfig(**tiny_grpo_kwargs(output_dir, **{**defaults, **overrides}))


class RecordingTrainer(NormalizedGRPOTrainer):
    """Records, per generation step, TRL's gathered rewards, the data sources and the advantages returned,
    plus the advantages seen by the loss (to check they are what training used)."""

    def __init__(self, *args, **kwargs):
        self.record: list[dict] = []
        self.loss_advantages: list[torch.Tensor] = []
        super().__init__(*args, **kwargs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.record.append(
            {"rewards": rewards.detach().clone(), "data_sources": self._captured["data_sources"]}
        )
        return rewards

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.record[-1]["advantages"] = out["advantages"].detach().clone()
        self.record[-1]["mode"] = "train" if self.model.training else "eval"
        return out

    def _compute_loss(self, model, inputs):
        self.loss_advantages.append(inputs["advantages"].detach().clone())
        return super()._compute_loss(model, inputs)
