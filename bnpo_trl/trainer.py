"""``NormalizedGRPOTrainer``: TRL's ``GRPOTrainer`` with a pluggable advantage normalizer.

TRL 1.16 computes advantages inline in ``_generate_and_score_completions`` and has no hook for it
(trl#4525, trl#7291). The override below is the thinnest that works, written against trl 1.16:

1. ``_calculate_rewards`` returns the (N, F) rewards already gathered across processes in rank order;
   we keep them, and gather the rows' data sources in the same order.
2. After ``super()._generate_and_score_completions`` we recompute the advantages from the captured
   rewards with our normalizer and replace ``out["advantages"]`` with this process's slice
   (TRL slices ``process_index * n_local : (process_index + 1) * n_local``).

If a TRL upgrade stops calling ``_calculate_rewards`` from there, training fails loudly.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOConfig, GRPOTrainer

from bnpo_trl.config import NormalizedGRPOConfig
from bnpo_trl.normalizers import Normalizer, get_normalizer
from bnpo_trl.normalizers.functional import combine_rewards

logger = logging.getLogger(__name__)

NORMALIZER_STATE_FILE = "normalizer_state.json"


class NormalizedGRPOTrainer(GRPOTrainer):
    """Drop-in ``GRPOTrainer`` whose advantages come from ``args.advantage_normalizer``.

    Construct it exactly like ``trl.GRPOTrainer``; pass a :class:`NormalizedGRPOConfig` as ``args``.
    The normalizer's running state is identical on every rank (it only sees gathered rewards) and is
    saved as ``normalizer_state.json`` in each checkpoint and restored on resume.
    """

    _name = "GRPO (bnpo-trl)"

    def __init__(self, model: Any, reward_funcs: Any, args: GRPOConfig | None = None, **kwargs: Any) -> None:
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = NormalizedGRPOConfig(output_dir=f"{str(name).split('/')[-1]}-GRPO")
        elif not isinstance(args, NormalizedGRPOConfig):
            logger.warning("args is a plain GRPOConfig: using the default advantage normalizer 'bnpo'.")
        self.normalizer_name: str = getattr(args, "advantage_normalizer", "bnpo")
        self.normalizer_kwargs: dict[str, Any] = dict(getattr(args, "normalizer_kwargs", None) or {})
        self.data_source_column: str = getattr(args, "data_source_column", "data_source")
        self.normalizer: Normalizer = get_normalizer(self.normalizer_name, **self.normalizer_kwargs)
        self._tag_names = ["trl", "grpo", "bnpo-trl", self.normalizer_name]
        self._captured: dict[str, Any] | None = None
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        if self.multi_objective_aggregation != "sum_then_normalize":
            logger.warning(
                "multi_objective_aggregation=%r is ignored: advantages come from the %r normalizer.",
                self.multi_objective_aggregation,
                self.normalizer_name,
            )

    # -- the two overridden steps -------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        column = self.data_source_column
        local_sources = [str(x[column]) if x.get(column) is not None else None for x in inputs]
        sources = gather_object(local_sources)  # a collective: every rank calls it, in rank order
        self._captured = {"rewards": rewards, "data_sources": None if None in sources else sources}
        return rewards

    def _generate_and_score_completions(self, inputs):
        self._captured = None
        out = super()._generate_and_score_completions(inputs)
        if self._captured is None:
            raise RuntimeError(
                "TRL's _generate_and_score_completions did not call _calculate_rewards: NormalizedGRPOTrainer "
                "was written for trl>=1.16,<1.17 and cannot replace the advantages with this TRL version."
            )
        mode = "train" if self.model.training else "eval"
        rewards, data_sources = self._captured["rewards"], self._captured["data_sources"]
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        if data_sources is None and getattr(self.normalizer, "requires_data_sources", False):
            raise ValueError(
                f"The 'median' normalizer needs the dataset column {self.data_source_column!r} on every row; "
                "add it to the dataset or set data_source_column to the column that names each row's source."
            )
        advantages = self.normalizer(
            rewards,
            group_size=group_size,
            data_sources=data_sources,
            reward_weights=self.reward_weights,
            update=mode == "train",
        )
        n_local = out["advantages"].shape[0]
        if advantages.shape[0] != n_local * self.accelerator.num_processes:
            raise RuntimeError(f"Got {advantages.shape[0]} gathered rewards for {n_local} local completions.")
        start = self.accelerator.process_index * n_local
        out["advantages"] = advantages[start : start + n_local].to(out["advantages"].device)
        self._log_normalizer(mode, advantages, rewards, data_sources)
        self._captured = None
        return out

    def _log_normalizer(self, mode: str, advantages: torch.Tensor, rewards: torch.Tensor, sources) -> None:
        logged = self._logs["advantages"]  # TRL logged its own advantages for the completions table
        for _ in range(min(advantages.numel(), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())
        metrics = self._metrics[mode]
        for key, value in self.normalizer.last_stats.items():
            metrics[f"normalizer/{key}"].append(float(value))
        metrics["normalizer/advantage_abs_mean"].append(advantages.abs().mean().item())
        if sources is not None:
            combined = combine_rewards(rewards, self.reward_weights)
            by_source: dict[str, list[int]] = defaultdict(list)
            for i, source in enumerate(sources):
                by_source[source].append(i)
            for source, rows in by_source.items():
                metrics[f"rewards_by_source/{source}/mean"].append(torch.nanmean(combined[rows]).item())

    # -- normalizer state in checkpoints ----------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            payload = {
                "normalizer": self.normalizer_name,
                "normalizer_kwargs": self.normalizer_kwargs,
                "state": self.normalizer.state_dict(),
            }
            with open(os.path.join(folder, NORMALIZER_STATE_FILE), "w") as f:
                json.dump(payload, f, indent=1)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, NORMALIZER_STATE_FILE)
        if not os.path.exists(path):
            logger.warning(
                "%s has no %s: the normalizer starts from a fresh state.", checkpoint, NORMALIZER_STATE_FILE
            )
            return
        with open(path) as f:
            payload = json.load(f)
        if payload.get("normalizer") != self.normalizer_name:
            raise ValueError(
                f"Checkpoint {checkpoint} was trained with advantage_normalizer={payload.get('normalizer')!r}, "
                f"not {self.normalizer_name!r}; resume with the same normalizer or start a new run."
            )
        self.normalizer.load_state_dict(payload["state"])

    # -- model card -----------------------------------------------------------------------------------
    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        super().create_model_card(
            model_name=model_name, dataset_name=dataset_name, tags=[*tags, *self._tag_names]
        )
        if not self.is_world_process_zero():
            return
        path = os.path.join(self.args.output_dir, "README.md")
        if os.path.exists(path):
            with open(path, "a") as f:
                f.write(model_card_section(self.normalizer_name, self.normalizer_kwargs))


def model_card_section(normalizer: str, kwargs: dict[str, Any]) -> str:
    """The model-card paragraph that records how advantages were computed."""
    options = json.dumps(kwargs, sort_keys=True) if kwargs else "{} (defaults)"
    return (
        "\n## Advantage normalization\n\n"
        f"Trained with [bnpo-trl](https://github.com/bnpo-trl/bnpo-trl)'s `NormalizedGRPOTrainer`: advantages "
        f"from the `{normalizer}` normalizer, options `{options}`.\n"
    )
