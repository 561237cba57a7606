"""Training entry point: ``bnpo-trl train --config recipe.yaml [--field value ...]``.

Also ``python -m bnpo_trl.train ...``, which is what ``accelerate launch`` runs::

    accelerate launch --config_file configs/accelerate/zero2.yaml -m bnpo_trl.train \\
        --config configs/recipes/qwen2.5-math-1.5b/bnpo.yaml

The recipe's keys are the fields of :class:`ScriptArguments` (data, rewards, warm-up), TRL's
``ModelConfig`` (model, LoRA) and :class:`~bnpo_trl.NormalizedGRPOConfig` (everything GRPO); an unknown
key is an error that names it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bnpo_trl.data import DEFAULT_SYSTEM_PROMPT

logger = logging.getLogger("bnpo_trl.train")

TINY_PREFIX = "tiny:"


@dataclass
class ScriptArguments:
    """Data, reward and warm-up settings of a run (the rest is ``ModelConfig`` and ``NormalizedGRPOConfig``)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Training set: a registered name (math, gsm8k, dapo, arithmetic, ...; see docs/data.md)."
        },
    )
    dataset_split: str | None = field(
        default=None, metadata={"help": "Split of dataset_name (default: its usual one)."}
    )
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Read dataset_name from this local jsonl/json/parquet/csv file instead of the Hub."
        },
    )
    dataset_limit: int | None = field(
        default=None, metadata={"help": "Keep at most this many training rows."}
    )
    # Typed `str` for the command line (a JSON string); a YAML recipe gives the list itself.
    dataset_mixture: str | None = field(
        default=None,
        metadata={
            "help": "Instead of dataset_name: a list of {name, weight, split, path, limit, ...} entries (YAML) "
            "or the same as a JSON string; sampled by weight and shuffled."
        },
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Held-out set (registered name) for evaluation and the before/after accuracy."},
    )
    eval_dataset_split: str | None = field(default=None, metadata={"help": "Split of eval_dataset_name."})
    eval_dataset_path: str | None = field(
        default=None, metadata={"help": "Local file for eval_dataset_name."}
    )
    eval_dataset_limit: int | None = field(
        default=None, metadata={"help": "Keep at most this many held-out rows."}
    )
    system_prompt: str | None = field(
        default=DEFAULT_SYSTEM_PROMPT,
        metadata={"help": "System message of every prompt; null/empty for none."},
    )
    reward_funcs: str | None = field(
        default_factory=lambda: ["accuracy"],
        metadata={
            "help": "Rewards from the registry (bnpo_trl.rewards): a list of names or {name: ..., <kwargs>} "
            "mappings (YAML), or a comma-separated / JSON string on the command line."
        },
    )
    curriculum: str = field(
        default="none",
        metadata={
            "help": "'none' or 'difficulty' (order easy -> hard by curriculum_column; turns shuffling off)."
        },
    )
    curriculum_column: str = field(default="difficulty", metadata={"help": "Column the curriculum sorts by."})
    sft_warmup: bool = field(
        default=False,
        metadata={
            "help": "Before RL, fine-tune on the dataset's `completion` column (TRL SFTTrainer) until the "
            "held-out greedy accuracy reaches sft_warmup_target_accuracy or the time budget runs out."
        },
    )
    sft_warmup_target_accuracy: float = field(
        default=0.2, metadata={"help": "Stop the warm-up at this accuracy."}
    )
    sft_warmup_max_seconds: float = field(default=90.0, metadata={"help": "Time budget of the warm-up."})
    sft_warmup_max_steps: int = field(default=2000, metadata={"help": "Step budget of the warm-up."})
    sft_warmup_eval_steps: int = field(
        default=25, metadata={"help": "Check the warm-up accuracy every N steps."}
    )
    sft_warmup_eval_limit: int = field(
        default=200, metadata={"help": "Held-out rows used for the warm-up check."}
    )
    sft_warmup_eval_split: str | None = field(
        default=None,
        metadata={
            "help": "Split of eval_dataset_name for the warm-up check (e.g. 'dev'); default: the held-out set "
            "itself. A separate split keeps the before/after accuracy free of the stop rule's selection."
        },
    )
    sft_warmup_learning_rate: float = field(
        default=3e-3, metadata={"help": "Warm-up learning rate (constant)."}
    )
    sft_warmup_batch_size: int = field(default=64, metadata={"help": "Warm-up batch size."})
    sft_warmup_weight_decay: float = field(
        default=0.1, metadata={"help": "Warm-up AdamW weight decay (decoupled, as in TRL)."}
    )
    heldout_accuracy: bool = field(
        default=False,
        metadata={
            "help": "Measure greedy held-out accuracy (the `accuracy` reward) before and after RL and print it."
        },
    )
    heldout_eval_steps: int = field(
        default=0, metadata={"help": "Also measure it every N RL steps (0: only before and after); plotted."}
    )
    heldout_max_new_tokens: int = field(
        default=16, metadata={"help": "Generation length for held-out accuracy."}
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Drop training prompts longer than this many tokens (chat template applied); the "
            "number dropped is logged and written to the run summary."
        },
    )
    torch_threads: int | None = field(
        default=None,
        metadata={"help": "torch.set_num_threads for this process (default: torch's choice)."},
    )
    time_budget_seconds: float | None = field(
        default=None,
        metadata={
            "help": "Stop RL once the whole run (loading, warm-up and RL, counted from start) has taken this "
            "many seconds, or at max_steps, whichever comes first; the summary records which. Null: no limit."
        },
    )
    time_budget_decay_seconds: float = field(
        default=0.0,
        metadata={
            "help": "Decay the learning rate over the last this-many seconds of time_budget_seconds (a cosine "
            "from 1 to 0 multiplying lr_scheduler's rate), so a run stopped by its budget ends with a "
            "decayed learning rate however many steps the machine managed (longer than the budget: the "
            "whole budget). 0: no decay."
        },
    )
    reward_requires_eos: bool = field(
        default=False,
        metadata={
            "help": "A completion that does not end with EOS within max_completion_length scores 0 on every "
            "reward (blocks the 'never stop, pad the answer' hack; counted as rewards/unterminated)."
        },
    )

    def __post_init__(self) -> None:
        self.reward_funcs = _parse_list(self.reward_funcs, "reward_funcs")
        if isinstance(self.dataset_mixture, str):
            self.dataset_mixture = _parse_list(self.dataset_mixture, "dataset_mixture")
        if self.system_prompt in ("", "none", "null", "None"):
            self.system_prompt = None
        if self.curriculum not in ("none", "difficulty"):
            raise ValueError(f"curriculum must be 'none' or 'difficulty', got {self.curriculum!r}.")
        if self.time_budget_decay_seconds and not self.time_budget_seconds:
            raise ValueError(
                "time_budget_decay_seconds needs time_budget_seconds: set a budget, or the decay to 0."
            )
        if self.time_budget_decay_seconds < 0:
            raise ValueError(
                f"time_budget_decay_seconds must be >= 0 (0: no decay), got {self.time_budget_decay_seconds}."
            )


def _parse_list(value: Any, name: str) -> list:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "{")):
            value = json.loads(text)
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{name} must be a non-empty list, got {value!r}.")
    return value


def require_eos(reward_func: Any, eos_token_id: int) -> Any:
    """Wrap a reward: 0.0 for completions whose token ids do not end with ``eos_token_id``.

    TRL passes ``completion_ids`` cut just after the first EOS, so an unterminated completion is one whose
    last id is not EOS. Unscored rows (``None``) stay ``None``.
    """
    import functools

    @functools.wraps(reward_func)
    def wrapped(prompts, completions, completion_ids, **kwargs):
        scores = reward_func(
            prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs
        )
        ended = [bool(ids) and ids[-1] == eos_token_id for ids in completion_ids]
        if "log_metric" in kwargs:
            kwargs["log_metric"]("rewards/unterminated", 1 - sum(ended) / max(len(ended), 1))
        return [s if s is None or e else 0.0 for s, e in zip(scores, ended, strict=True)]

    return wrapped


def parse_args(argv: list[str] | None = None):
    """Recipe YAML + command line -> (ScriptArguments, NormalizedGRPOConfig, ModelConfig)."""
    from trl import ModelConfig, TrlParser

    from bnpo_trl.config import NormalizedGRPOConfig

    parser = TrlParser((ScriptArguments, NormalizedGRPOConfig, ModelConfig))
    try:
        return parser.parse_args_and_config(args=argv)
    except ValueError as err:  # name the recipe key when TRL says "Unknown arguments from config file"
        raise ValueError(f"Invalid recipe: {err}") from err


def load_model_and_tokenizer(model_args: Any, training_args: Any):
    """``tiny:<k=v,...>`` builds the offline tiny model (bnpo_trl.testing); anything else is a Hub id or folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bnpo_trl.testing import load_tokenizer, tiny_model_path

    name = model_args.model_name_or_path
    if name is None:
        raise ValueError(
            "Set model_name_or_path (a Hub id, a folder, or tiny:hidden_size=128,... for the offline model)."
        )
    if name.startswith(TINY_PREFIX):
        sizes = {k: int(v) for k, v in (kv.split("=") for kv in name[len(TINY_PREFIX) :].split(",") if kv)}
        path = tiny_model_path(**sizes)
        return AutoModelForCausalLM.from_pretrained(path), load_tokenizer(path)
    if os.path.isdir(name) and _saved_with_generic_tokenizer(name):
        # A folder written by bnpo-trl's tiny builder or a run on it: AutoTokenizer would swap in Qwen2's
        # pre-tokenizer (transformers 5.x), so load the saved tokenizer.json as it is.
        return AutoModelForCausalLM.from_pretrained(name), load_tokenizer(name)
    init = {
        "revision": model_args.model_revision,
        "trust_remote_code": model_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    model = AutoModelForCausalLM.from_pretrained(name, **{k: v for k, v in init.items() if v is not None})
    tokenizer = AutoTokenizer.from_pretrained(name, revision=model_args.model_revision)
    return model, tokenizer


def _saved_with_generic_tokenizer(folder: str) -> bool:
    path = os.path.join(folder, "tokenizer_config.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        tokenizer_class = json.load(f).get("tokenizer_class")
    return tokenizer_class in ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_datasets(script_args: ScriptArguments, seed: int):
    """-> (train, held-out or None), both in the column contract of bnpo_trl.data."""
    from bnpo_trl.data import apply_curriculum, load_dataset_by_name, load_mixture

    common = {"system_prompt": script_args.system_prompt}
    if script_args.dataset_mixture:
        train = load_mixture(script_args.dataset_mixture, seed=seed, **common)
    elif script_args.dataset_name:
        train = load_dataset_by_name(
            script_args.dataset_name,
            split=script_args.dataset_split,
            path=script_args.dataset_path,
            limit=script_args.dataset_limit,
            **common,
        )
    else:
        raise ValueError("Set dataset_name (or dataset_mixture) in the recipe.")
    if len(train) == 0:
        raise ValueError("The training set is empty after loading and filtering: check dataset_* settings.")
    train = apply_curriculum(train, script_args.curriculum, column=script_args.curriculum_column)
    heldout = None
    if script_args.eval_dataset_name:
        heldout = _load_eval_split(
            script_args, script_args.eval_dataset_split, script_args.eval_dataset_limit
        )
    return train, heldout


def _load_eval_split(script_args: ScriptArguments, split: str | None, limit: int | None) -> Any:
    from bnpo_trl.data import load_dataset_by_name

    return load_dataset_by_name(
        script_args.eval_dataset_name,
        split=split,
        path=script_args.eval_dataset_path,
        limit=limit,
        system_prompt=script_args.system_prompt,
    )


def load_warmup_check_set(script_args: ScriptArguments, heldout: Any) -> Any:
    """The rows the warm-up's stop check measures: ``sft_warmup_eval_split`` of the held-out dataset when set
    (then the before/after accuracy is not measured on the rows the stop was chosen on), else ``heldout``;
    at most ``sft_warmup_eval_limit`` rows."""
    check = heldout
    if script_args.sft_warmup_eval_split:
        check = _load_eval_split(
            script_args, script_args.sft_warmup_eval_split, script_args.sft_warmup_eval_limit
        )
    return check.select(range(min(len(check), script_args.sft_warmup_eval_limit)))


def drop_long_prompts(dataset: Any, tokenizer: Any, max_tokens: int) -> tuple[Any, int]:
    """Remove rows whose templated prompt exceeds ``max_tokens`` tokens; -> (dataset, number removed)."""

    def length(row: dict[str, Any]) -> dict[str, int]:
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) else ids
        return {"_n": len(ids)}

    kept = dataset.map(length).filter(lambda row: row["_n"] <= max_tokens).remove_columns("_n")
    dropped = len(dataset) - len(kept)
    if dropped:
        logger.warning(
            "Dropped %d of %d prompts longer than max_prompt_length=%d tokens.",
            dropped,
            len(dataset),
            max_tokens,
        )
    if len(kept) == 0:
        raise ValueError(f"Every prompt is longer than max_prompt_length={max_tokens}: raise it.")
    return kept, dropped


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run a recipe end to end; returns the run summary (also written to ``<output_dir>/run_summary.json``)."""
    script_args, training_args, model_args = parse_args(argv)
    return run(script_args, training_args, model_args)


def run(script_args: ScriptArguments, training_args: Any, model_args: Any) -> dict[str, Any]:
    import transformers
    from trl import get_peft_config

    from bnpo_trl.distributed import shutdown_distributed
    from bnpo_trl.rewards import get_reward_funcs
    from bnpo_trl.trainer import NormalizedGRPOTrainer
    from bnpo_trl.warmup import HeldoutAccuracyCallback, TimeBudgetCallback, sft_warmup

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.set_seed(training_args.seed)
    if script_args.torch_threads:
        import torch

        torch.set_num_threads(script_args.torch_threads)
    started = time.perf_counter()
    if script_args.curriculum == "difficulty":
        training_args.shuffle_dataset = False  # keep the easy -> hard order
    reward_funcs = get_reward_funcs(script_args.reward_funcs)  # a bad recipe fails before any loading
    model, tokenizer = load_model_and_tokenizer(model_args, training_args)
    if script_args.reward_requires_eos:
        reward_funcs = [require_eos(f, tokenizer.eos_token_id) for f in reward_funcs]
    train, heldout = load_datasets(script_args, training_args.seed)
    summary: dict[str, Any] = {
        "normalizer": training_args.advantage_normalizer,
        "seed": training_args.seed,
        "world_size": training_args.world_size,
    }
    if script_args.max_prompt_length:
        train, summary["dropped_long_prompts"] = drop_long_prompts(
            train, tokenizer, script_args.max_prompt_length
        )
    main_process = training_args.process_index == 0

    if (script_args.heldout_accuracy or script_args.sft_warmup) and heldout is None:
        raise ValueError("heldout_accuracy and sft_warmup need eval_dataset_name (a held-out set).")
    accuracy = get_reward_funcs(["accuracy"])[0] if heldout is not None else None
    if script_args.sft_warmup:
        check_set = load_warmup_check_set(script_args, heldout)
        summary["warmup"] = sft_warmup(
            model, tokenizer, train, check_set, accuracy, script_args, training_args
        )
        summary["warmup"]["check_split"] = (
            script_args.sft_warmup_eval_split or script_args.eval_dataset_split or "held-out set"
        )
    heldout_cb = None
    if script_args.heldout_accuracy:
        heldout_cb = HeldoutAccuracyCallback(tokenizer, heldout, accuracy, script_args)
        summary["accuracy_before"] = heldout_cb.measure(model, step=0)

    callbacks = []
    if heldout_cb is not None and script_args.heldout_eval_steps:
        callbacks.append(heldout_cb)
    budget_cb = None
    if script_args.time_budget_seconds:
        budget_cb = TimeBudgetCallback(
            started, script_args.time_budget_seconds, script_args.time_budget_decay_seconds
        )
        callbacks.append(budget_cb)
    train_columns = [c for c in train.column_names if c != "completion"]
    trainer = NormalizedGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train.select_columns(train_columns),
        eval_dataset=heldout if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=callbacks or None,
    )
    rl_started = time.perf_counter()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    summary["rl_seconds"] = time.perf_counter() - rl_started
    if heldout_cb is not None:
        summary["accuracy_after"] = heldout_cb.measure(trainer.model, step=trainer.state.global_step)
        summary["heldout_curve"] = heldout_cb.curve
    summary["steps"] = trainer.state.global_step
    if budget_cb is not None:
        summary["time_budget_seconds"] = script_args.time_budget_seconds
        summary["stopped_by_time_budget"] = budget_cb.stopped_at_step is not None
    summary["total_seconds"] = time.perf_counter() - started
    summary["log_history"] = trainer.state.log_history

    trainer.save_model(training_args.output_dir)
    if main_process:
        trainer.create_model_card(model_name=os.path.basename(os.path.normpath(training_args.output_dir)))
        _write_summary(training_args.output_dir, summary)
        _print_summary(summary)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    shutdown_distributed(trainer)
    return summary


def _write_summary(output_dir: str, summary: dict[str, Any]) -> None:
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "run_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    try:
        from bnpo_trl.plotting import plot_run
    except ImportError:  # matplotlib is optional
        logger.info("matplotlib is not installed: skipping the training-curve PNG.")
        return
    plot_run(summary, os.path.join(output_dir, "training_curve.png"))


def _print_summary(summary: dict[str, Any]) -> None:
    lines = ["", f"Run summary (normalizer: {summary['normalizer']}, seed {summary['seed']})", ""]
    lines += ["| stage | held-out accuracy | wall time |", "|---|---:|---:|"]
    warm = summary.get("warmup")
    if warm:
        lines.append(
            f"| supervised warm-up ({warm['steps']} steps; its check on `{warm.get('check_split')}`) "
            f"| {warm['accuracy']:.1%} | {warm['seconds']:.0f} s |"
        )
    if "accuracy_before" in summary:
        lines.append(f"| before RL | {summary['accuracy_before']:.1%} | |")
        why = ", time budget reached" if summary.get("stopped_by_time_budget") else ""
        lines.append(
            f"| after RL ({summary['steps']} steps{why}) | {summary['accuracy_after']:.1%} "
            f"| {summary['rl_seconds']:.0f} s |"
        )
        gain = summary["accuracy_after"] - summary["accuracy_before"]
        lines += [
            "",
            f"Held-out accuracy: {summary['accuracy_before']:.1%} -> {summary['accuracy_after']:.1%} "
            f"({gain * 100:+.1f} points) in {summary['total_seconds']:.0f} s total.",
        ]
    if warm and not warm["reached_target"]:
        lines.append(
            f"WARNING: the warm-up stopped at {warm['accuracy']:.1%}, below its target "
            f"{warm['target']:.0%}; RL may not have enough successes to learn from."
        )
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
