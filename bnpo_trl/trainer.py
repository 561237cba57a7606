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

import functools
import hashlib
import json
import logging
import os
from collections import defaultdict
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers.trainer import TRAINER_STATE_NAME, TrainerState
from transformers.trainer_utils import TrainOutput
from trl import GRPOConfig, GRPOTrainer

from bnpo_trl.checkpoints import (
    NORMALIZER_STATE_FILE,
    checkpoint_step,
    checkpoint_to_resume,
    read_normalizer_state,
    write_normalizer_state,
)
from bnpo_trl.config import NormalizedGRPOConfig
from bnpo_trl.engine import EngineCallback, check_engine
from bnpo_trl.normalizers import Normalizer, get_normalizer, resolve_normalizer
from bnpo_trl.normalizers.base import MAX_ABS_REWARD, call_normalizer
from bnpo_trl.normalizers.functional import combine_rewards
from bnpo_trl.normalizers.specs import build_normalizer, spec_label
from bnpo_trl.reward_log import REWARD_LOG_FILE, RewardLog
from bnpo_trl.rewards import reward_range_of
from bnpo_trl.shadows import ShadowNormalizers

logger = logging.getLogger(__name__)

__all__ = ["NORMALIZER_STATE_FILE", "NormalizedGRPOTrainer", "model_card_section"]

#: What each TRL option ignored under a normalizer maps to.
_REPLACED_OPTIONS = {
    "scale_rewards": ("group", "advantage_normalizer: group | batch | none (Dr. GRPO)"),
    "multi_objective_aggregation": (
        "sum_then_normalize",
        "advantage_normalizer: bnpo, which decomposes several rewards (normalizer_kwargs: {decompose: true})",
    ),
}


class NormalizedGRPOTrainer(GRPOTrainer):
    """Drop-in ``GRPOTrainer`` whose advantages come from ``args.advantage_normalizer``.

    Construct it exactly like ``trl.GRPOTrainer`` (same parameters); pass a :class:`NormalizedGRPOConfig`
    as ``args``. The normalizer's running state is identical on every rank (it only sees gathered rewards),
    is written into each checkpoint before transformers marks it complete, and is restored on resume.
    A range-based normalizer (``bnpo``) gets the reward functions' declared ranges (``reward_range_of``);
    undeclared ones (reward models, user functions) are rescaled by their running min and max.
    """

    _name = "GRPO (bnpo-trl)"

    def __init__(
        self,
        model: Any,
        reward_funcs: Any = None,
        args: GRPOConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        reward_processing_classes: Any = None,
        callbacks: Any = None,
        optimizers: Any = (None, None),
        quantization_config: Any = None,
        peft_config: Any = None,
        tools: Any = None,
        rollout_func: Any = None,
        environment_factory: Any = None,
    ) -> None:
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = NormalizedGRPOConfig(output_dir=f"{str(name).split('/')[-1]}-GRPO")
        elif not isinstance(args, NormalizedGRPOConfig):
            logger.warning("args is a plain GRPOConfig: using the default advantage normalizer 'bnpo'.")
        self.normalizer_name: str | dict = getattr(args, "advantage_normalizer", "bnpo")  # a spec
        self.normalizer_kwargs: dict[str, Any] = dict(getattr(args, "normalizer_kwargs", None) or {})
        self.data_source_column: str = getattr(args, "data_source_column", "data_source")
        self.normalizer: Normalizer = get_normalizer(self.normalizer_name, **self.normalizer_kwargs)
        self._tag_names = ["trl", "grpo", "bnpo-trl", spec_label(self.normalizer_name)]
        self.reward_log: RewardLog | None = None
        self._captured: dict[str, Any] | None = None
        self._resume_state: dict[str, Any] | None = None  # the state a resume at this step starts from
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
            tools=tools,
            rollout_func=rollout_func,
            environment_factory=environment_factory,
        )
        check_engine(self.accelerator, self.args)  # a DeepSpeed/FSDP launch that fell back to DDP: an error
        self.engine_callback = EngineCallback(self)
        self.add_callback(self.engine_callback)
        from bnpo_trl.evaluation.callback import BenchmarkEvalCallback

        for callback in self.callback_handler.callbacks:  # so that they evaluate with the sharded model
            if isinstance(callback, BenchmarkEvalCallback) and callback.trainer is None:
                callback.trainer = self
        self.normalizer = self._build_normalizer(self.normalizer_name, self.normalizer_kwargs, warn=True)
        self.shadows = ShadowNormalizers(
            getattr(args, "shadow_normalizers", None) or [], lambda spec: self._build_normalizer(spec, {})
        )
        self.filter_zero_signal = bool(getattr(args, "filter_zero_signal", False)) or getattr(
            self.normalizer, "filters_zero_signal", False
        )
        if getattr(args, "save_rewards", False) and args.steps_per_generation * self.num_iterations < (
            args.gradient_accumulation_steps
        ):
            raise ValueError(
                "save_rewards: true writes one record per optimizer step that generates; with steps_per_generation "
                "x num_iterations < gradient_accumulation_steps two generations share a step. Raise "
                "steps_per_generation to at least gradient_accumulation_steps."
            )
        for option, (default, instead) in _REPLACED_OPTIONS.items():
            if option == "multi_objective_aggregation" and getattr(self.normalizer, "name", "") == "gdpo":
                continue  # gdpo computes TRL's normalize_then_sum itself
            if getattr(args, option, default) != default:
                logger.warning(
                    "%s=%r is ignored: advantages come from advantage_normalizer=%r. For the same effect use %s.",
                    option,
                    getattr(args, option),
                    self.normalizer_name,
                    instead,
                )

    @functools.cached_property
    def _reward_ranges(self) -> list[list[float] | None] | None:
        """The reward functions' declared ranges (``None`` for an undeclared one), or ``None`` without any."""
        if not self.reward_funcs:
            return None
        return [list(r) if r else None for r in (reward_range_of(f) for f in self.reward_funcs)]

    def _build_normalizer(self, spec: str | dict, kwargs: dict[str, Any], warn: bool = False) -> Normalizer:
        """The normalizer of ``spec``, given the reward functions' declared ranges when it takes them."""
        ranges = self._reward_ranges
        norm = build_normalizer(spec, reward_ranges=ranges, **kwargs)
        undeclared = [n for n, r in zip(self.reward_func_names, ranges or [], strict=False) if r is None]
        if warn and undeclared and getattr(norm, "uses_reward_range", False) and "reward_range" not in kwargs:
            logger.warning(
                "Rewards %s declare no reward_range: %r assumes [0, 1] for them and widens it to the running "
                "min and max of their values (metric normalizer/%s/auto_range_columns). Set normalizer_kwargs "
                "reward_range, or the function's reward_range attribute, to fix their range.",
                undeclared,
                spec_label(spec),
                norm.name,
            )
        return norm

    # -- the two overridden steps -------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        column = self.data_source_column
        local_sources = [str(x[column]) if x.get(column) is not None else None for x in inputs]
        sources = gather_object(local_sources)  # a collective: every rank calls it, in rank order
        self._captured = {"rewards": rewards, "data_sources": None if None in sources else sources}
        # TRL's own logged reward statistics: a non-finite reward counts as unscored there too (ours are
        # counted by the normalizer as normalizer/nonfinite_rewards)
        return rewards.masked_fill(torch.isinf(rewards) | (rewards.abs() > MAX_ABS_REWARD), float("nan"))

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
        needs_sources = (
            getattr(self.normalizer, "requires_data_sources", False) or self.shadows.requires_data_sources
        )
        if data_sources is None and needs_sources:
            raise ValueError(
                f"The {spec_label(self.normalizer_name)!r} normalizer (or a shadow) needs the dataset column "
                f"{self.data_source_column!r} on every row; add it to the dataset or set data_source_column to the "
                "column that names each row's source."
            )
        lengths = None  # completion token counts of every rank (TRL's loss mask), for opo, shadows, the log
        if (
            getattr(self.normalizer, "uses_lengths", False)
            or self.shadows.uses_lengths
            or self.args.save_rewards
        ):
            lengths = self.accelerator.gather(out["completion_mask"].sum(dim=1)).float().cpu()
        if (
            mode == "train"
        ):  # a resume inside this generation's steps regenerates them: keep the state before it
            self._resume_state = json.loads(json.dumps(self._states()))
        common = {
            "group_size": group_size,
            "data_sources": data_sources,
            "reward_weights": self.reward_weights,
        }
        advantages = call_normalizer(
            self.normalizer, rewards, **common, update=mode == "train", lengths=lengths
        )
        n_local = out["advantages"].shape[0]
        if advantages.shape[0] != n_local * self.accelerator.num_processes:
            raise RuntimeError(f"Got {advantages.shape[0]} gathered rewards for {n_local} local completions.")
        start = self.accelerator.process_index * n_local
        out["advantages"] = advantages[start : start + n_local].to(out["advantages"].device)
        if self.filter_zero_signal and mode == "train":
            self._filter_zero_signal(out, advantages, group_size, start)
        self._log_normalizer(mode, advantages, rewards, data_sources, group_size)
        if self.shadows:
            shadow_metrics = self.shadows.observe(
                rewards, advantages, **common, lengths=lengths, update=mode == "train"
            )
            for key, value in shadow_metrics.items():
                self._metrics[mode][key].append(value)
        if mode == "train" and self.args.save_rewards:
            self._save_rewards(rewards, group_size, data_sources, lengths)
        self._captured = None
        return out

    def _filter_zero_signal(
        self, out: dict[str, Any], advantages: torch.Tensor, group_size: int, start: int
    ) -> None:
        """Mask the completions of groups whose advantages are all 0 out of the loss, and recount TRL's
        ``num_items_in_batch`` (the token-level losses divide by it) over the kept completions only."""
        keep = (advantages.view(-1, group_size).abs().amax(dim=1) != 0).repeat_interleave(group_size)
        mask = out["completion_mask"]
        out["completion_mask"] = mask * keep[start : start + mask.shape[0]].to(
            mask.device, mask.dtype
        ).unsqueeze(1)
        loss_mask = (
            out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
        )
        out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        self._metrics["train"]["normalizer/filtered_fraction"].append(1.0 - keep.float().mean().item())

    def _save_rewards(self, rewards: torch.Tensor, group_size: int, sources, lengths) -> None:
        """Append this generation's gathered rewards to ``output_dir/rewards.jsonl`` (rank 0)."""
        if not self.is_world_process_zero():
            return
        if self.reward_log is None:
            self.reward_log = RewardLog(os.path.join(self.args.output_dir, REWARD_LOG_FILE))
        self.reward_log.append(
            step=self.state.global_step,
            group_size=group_size,
            rewards=rewards,
            reward_names=self.reward_func_names,
            reward_weights=self.reward_weights.tolist(),
            reward_ranges=self._reward_ranges,
            data_sources=sources,
            lengths=None if lengths is None else [int(x) for x in lengths.tolist()],
        )

    def _log_normalizer(
        self, mode: str, advantages: torch.Tensor, rewards: torch.Tensor, sources, group_size: int
    ) -> None:
        logged = self._logs["advantages"]  # TRL logged its own advantages for the completions table
        for _ in range(min(advantages.numel(), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())
        metrics = self._metrics[mode]
        for key, value in self.normalizer.last_stats.items():
            metrics[f"normalizer/{key}"].append(float(value))
        metrics["normalizer/advantage_abs_mean"].append(advantages.abs().mean().item())
        # replaces TRL's frac_reward_zero_std, which measures TRL's own std (EBPO gives all-fail groups a signal)
        zero_signal = advantages.view(-1, group_size).abs().amax(dim=1) == 0
        metrics["normalizer/zero_signal_fraction"].append(zero_signal.float().mean().item())
        if sources is not None:
            combined = combine_rewards(rewards, self.reward_weights)
            by_source: dict[str, list[int]] = defaultdict(list)
            for i, source in enumerate(sources):
                by_source[source].append(i)
            for source, rows in by_source.items():
                metrics[f"rewards_by_source/{source}/mean"].append(torch.nanmean(combined[rows]).item())

    # -- normalizer state in checkpoints ----------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``, with ``resume_from_checkpoint`` true/``"true"``/``"last"``/path resolved to a
        complete checkpoint (an incomplete newest one is skipped with a warning) and ``auto_resume``."""
        needs_state = self.normalizer.stateful and not getattr(
            self.args, "allow_fresh_normalizer_state", False
        )
        auto_resume = getattr(self.args, "auto_resume", False)
        checkpoint = checkpoint_to_resume(
            resume_from_checkpoint, self.args.output_dir, auto_resume, needs_state
        )
        if checkpoint is not None and 0 < self.args.max_steps <= checkpoint_step(checkpoint):
            return self._load_finished_run(checkpoint)
        try:
            return super().train(checkpoint, *args, **kwargs)
        finally:
            if self.reward_log is not None:
                self.reward_log.close()
                self.reward_log = None

    def _load_finished_run(self, checkpoint: str) -> TrainOutput:
        """A checkpoint already at ``max_steps`` (a job preempted at its last step, then requeued): load it
        and train nothing. Transformers 5.x would run one more step (its stop check follows each step)."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                f"{checkpoint} is already at max_steps={self.args.max_steps}: nothing is left to train. Raise "
                "max_steps to train on, or use the model saved in that checkpoint."
            )
        logger.warning(
            "%s is already at max_steps=%d: nothing left to train; loading it.",
            checkpoint,
            self.args.max_steps,
        )
        self._load_from_checkpoint(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
        self._load_normalizer_state(checkpoint)
        losses = [entry["loss"] for entry in self.state.log_history if "loss" in entry]
        return TrainOutput(self.state.global_step, losses[-1] if losses else float("nan"), {})

    def _states(self) -> dict[str, Any]:
        """The running state of the normalizer and of every shadow."""
        return {"state": self.normalizer.state_dict(), "shadow_states": self.shadows.state_dict()}

    def _normalizer_payload(self) -> dict[str, Any]:
        generate_every = self.args.steps_per_generation * self.num_iterations
        mid_generation = self._step % generate_every != 0 and self._resume_state is not None
        states = self._resume_state if mid_generation else self._states()
        return {
            "normalizer": self.normalizer_name,
            "normalizer_kwargs": self.normalizer_kwargs,
            "global_step": self.state.global_step,
            **states,
            "before_last_generation": mid_generation,
        }

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model, then ``normalizer_state.json`` next to it: inside a checkpoint this happens before
        transformers writes ``trainer_state.json``, pushes the folder or rotates older checkpoints."""
        super().save_model(output_dir, _internal_call)
        payload = self._normalizer_payload()
        payload["identical_on_ranks"] = self._check_state_on_every_rank(
            [payload["state"], payload["shadow_states"]]
        )
        if self.args.should_save:
            write_normalizer_state(output_dir or self.args.output_dir, payload)

    def _check_state_on_every_rank(self, state: Any) -> int:
        """The number of ranks whose normalizer state equals this one's; a differing rank is an error (the
        state is built from gathered rewards, so it can only differ through a bug or a diverged rank).
        Every rank calls ``save_model`` (transformers does, for DeepSpeed/FSDP), so the gather is safe."""
        digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
        digests = gather_object([digest]) if self.accelerator.num_processes > 1 else [digest]
        if len(set(digests)) > 1:
            raise RuntimeError(
                f"The {spec_label(self.normalizer_name)!r} normalizer state differs across ranks (its own or a shadow's; sha256 prefixes "
                f"{[d[:12] for d in digests]}): refusing to save a checkpoint that would resume differently "
                "on each rank. Please report this with the launch command."
            )
        return len(digests)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        # TRL counts micro-steps from 0 after a resume; count from the checkpoint's step so that generations
        # fall on the same steps as in an uninterrupted run.
        self._step = self.state.global_step * self.args.gradient_accumulation_steps
        self._load_normalizer_state(checkpoint)

    def _load_normalizer_state(self, checkpoint: str) -> None:
        if not os.path.exists(os.path.join(checkpoint, NORMALIZER_STATE_FILE)):
            if self.normalizer.stateful and not getattr(self.args, "allow_fresh_normalizer_state", False):
                raise ValueError(
                    f"{checkpoint} has no {NORMALIZER_STATE_FILE}: the {self.normalizer_name!r} normalizer's "
                    "running state would restart from zero. Resume from a checkpoint that has it, or set "
                    "allow_fresh_normalizer_state: true to start the state fresh."
                )
            logger.warning("%s has no %s: the normalizer starts fresh.", checkpoint, NORMALIZER_STATE_FILE)
            return
        payload = read_normalizer_state(checkpoint)
        if payload.get("normalizer") != self.normalizer_name:
            raise ValueError(
                f"Checkpoint {checkpoint} was trained with advantage_normalizer={payload.get('normalizer')!r}, "
                f"not {self.normalizer_name!r}; resume with the same normalizer or start a new run."
            )
        saved_kwargs = payload.get("normalizer_kwargs") or {}
        problem = None
        if json.dumps(saved_kwargs, sort_keys=True) != json.dumps(self.normalizer_kwargs, sort_keys=True):
            problem = (
                f"normalizer_kwargs {saved_kwargs} differ from this run's {self.normalizer_kwargs} (the state was "
                "built with the former); resume with the same normalizer_kwargs"
            )
        else:
            try:
                self.normalizer.load_state_dict(payload["state"])
            except (KeyError, TypeError, ValueError) as err:
                problem = f"invalid state ({type(err).__name__}: {err}); resume from an earlier checkpoint"
        where = f"{checkpoint}/{NORMALIZER_STATE_FILE}"
        self.shadows.load_state_dict(payload.get("shadow_states") or {}, where)
        if problem is None:
            return
        if getattr(self.args, "allow_fresh_normalizer_state", False):
            logger.warning(
                "%s: %s. allow_fresh_normalizer_state: the normalizer starts fresh.", where, problem
            )
            return
        raise ValueError(f"{where}: {problem}, or set allow_fresh_normalizer_state: true to start it fresh.")

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


_CITATIONS = {
    "bnpo": """@article{xiao2025bnpo,
  title   = {{BNPO}: Beta Normalization Policy Optimization},
  author  = {Xiao, Changyi and Zhang, Mengdi and Cao, Yixin},
  journal = {arXiv preprint arXiv:2506.02864},
  year    = {2025}
}""",
    "ebpo": """@article{ebpo2026,
  title   = {{EBPO}: Empirical Bayes Policy Optimization},
  journal = {arXiv preprint arXiv:2602.05165},
  year    = {2026}
}""",
}


def model_card_section(normalizer: str | dict, kwargs: dict[str, Any]) -> str:
    """The model-card paragraph that records how advantages were computed, with the method's citation."""
    options = json.dumps(kwargs, sort_keys=True) if kwargs else "{} (defaults)"
    canonical = resolve_normalizer(normalizer).name if isinstance(normalizer, str) else None
    if isinstance(normalizer, dict):
        normalizer = json.dumps(normalizer, sort_keys=True)
    text = (
        "\n## Advantage normalization\n\n"
        f"Trained with bnpo-trl's `NormalizedGRPOTrainer` (a TRL plugin): advantages from the `{normalizer}` "
        f"normalizer, options `{options}`.\n"
    )
    if canonical in _CITATIONS:
        text += f"\nCite the `{canonical}` method as:\n\n```bibtex\n{_CITATIONS[canonical]}\n```\n"
    return text
