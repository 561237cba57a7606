"""The recipe's own settings, one dataclass per concern; TRL's ``ModelConfig`` and
:class:`~bnpo_trl.NormalizedGRPOConfig` hold the rest.

Every field is a recipe key (YAML) and a command-line flag (``--field value``): ``TrlParser`` takes the tuple
:data:`ARGUMENT_CLASSES` + ``NormalizedGRPOConfig`` + ``ModelConfig``, and :class:`ScriptArguments` keeps the
parsed groups together (``script_args.data.dataset_name``, ``script_args.warmup.sft_warmup`` ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bnpo_trl.data import DEFAULT_SYSTEM_PROMPT
from bnpo_trl.settings import mapping_setting

__all__ = [
    "ARGUMENT_CLASSES",
    "BudgetArguments",
    "DataArguments",
    "HeldoutArguments",
    "RewardArguments",
    "ScriptArguments",
    "WarmupArguments",
    "benchmark_eval_settings",
    "mapping_setting",
    "parse_list",
    "system_prompt_setting",
]


def parse_list(value: Any, name: str) -> list:
    """A recipe list from YAML (a list or one mapping) or from the command line (each value a name, a
    comma-separated list, or JSON).

    Examples:
        >>> parse_list(["accuracy,boxed_format"], "reward_funcs")
        ['accuracy', 'boxed_format']
        >>> parse_list(['[{"name": "math", "weight": 2}]'], "dataset_mixture")
        [{'name': 'math', 'weight': 2}]
    """
    items = value if isinstance(value, list | tuple) else [value]
    out: list = []
    for item in items:
        if isinstance(item, str):
            text = item.strip()
            if text.startswith(("[", "{")):
                parsed = json.loads(text)
                out.extend(parsed if isinstance(parsed, list) else [parsed])
            else:
                out.extend(part.strip() for part in text.split(",") if part.strip())
        else:
            out.append(item)
    if not out:
        raise ValueError(f"{name} must be a non-empty list, got {value!r}.")
    return out


def system_prompt_setting(value: str | None) -> str | None:
    """A recipe's ``system_prompt``: an empty string, ``none`` or ``null`` (as text) mean no system message.

    Examples:
        >>> system_prompt_setting("null"), system_prompt_setting("Be brief.")
        (None, 'Be brief.')
    """
    return None if value in ("", "none", "null", "None") else value


@dataclass
class DataArguments:
    """Training and held-out data (see docs/data.md)."""

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
    dataset_column_map: dict | str | None = field(
        default=None,
        metadata={
            "help": "For a local file (dataset_name: local): which columns hold the problem, answer, difficulty "
            "and data_source, e.g. {problem: question, answer: final} (YAML) or the same as JSON."
        },
    )
    dataset_mixture: list[str] | None = field(
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
    eval_dataset_column_map: dict | str | None = field(
        default=None, metadata={"help": "dataset_column_map for the held-out file."}
    )
    system_prompt: str | None = field(
        default=DEFAULT_SYSTEM_PROMPT,
        metadata={"help": "System message of every prompt; null/empty for none."},
    )
    curriculum: str = field(
        default="none",
        metadata={
            "help": "'none' or 'difficulty' (order easy -> hard by curriculum_column; turns shuffling off)."
        },
    )
    curriculum_column: str = field(default="difficulty", metadata={"help": "Column the curriculum sorts by."})
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Drop training prompts longer than this many tokens (chat template applied); the "
            "number dropped is logged and written to the run summary."
        },
    )

    def __post_init__(self) -> None:
        if self.dataset_mixture is not None:
            self.dataset_mixture = parse_list(self.dataset_mixture, "dataset_mixture")
        self.system_prompt = system_prompt_setting(self.system_prompt)
        self.dataset_column_map = mapping_setting(self.dataset_column_map, "dataset_column_map")
        self.eval_dataset_column_map = mapping_setting(
            self.eval_dataset_column_map, "eval_dataset_column_map"
        )
        if self.curriculum not in ("none", "difficulty"):
            raise ValueError(f"curriculum must be 'none' or 'difficulty', got {self.curriculum!r}.")


@dataclass
class RewardArguments:
    """The rewards (bnpo_trl.rewards)."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy"],
        metadata={
            "help": "Rewards from the registry (bnpo_trl.rewards): a list of names or {name: ..., <kwargs>} "
            "mappings (YAML), or names, a comma-separated list or JSON on the command line."
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
        self.reward_funcs = parse_list(self.reward_funcs, "reward_funcs")


@dataclass
class WarmupArguments:
    """The supervised warm-up before RL (TRL SFTTrainer), stopped on held-out accuracy."""

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
    sft_warmup_fine_eval_steps: int = field(
        default=0,
        metadata={
            "help": "Once a check reaches sft_warmup_fine_eval_from, check every N steps instead (0: never): "
            "accuracy can jump tens of points between two checks sft_warmup_eval_steps apart."
        },
    )
    sft_warmup_fine_eval_from: float = field(
        default=0.1,
        metadata={"help": "Accuracy from which the warm-up is checked every sft_warmup_fine_eval_steps."},
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

    def __post_init__(self) -> None:
        if self.sft_warmup_fine_eval_steps < 0:
            raise ValueError(
                f"sft_warmup_fine_eval_steps must be >= 0 (0 turns fine checks off), got {self.sft_warmup_fine_eval_steps}."
            )


@dataclass
class HeldoutArguments:
    """Greedy held-out accuracy before, during and after RL."""

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
        default=16, metadata={"help": "Generation length for held-out accuracy (and the warm-up's check)."}
    )
    benchmark_eval: dict | str | None = field(
        default=None,
        metadata={
            "help": "Evaluate on benchmarks during RL, logged as eval/<benchmark>/pass@k: a mapping "
            "{benchmarks: [math500, amc23, FILE.jsonl], every: N steps, n: samples per problem (4), limit: "
            "problems per benchmark (64; null: all), max_new_tokens (1024), temperature (0.6), top_p (0.95), "
            "batch_size (16), seed (0), samples (false; true: every completion in "
            "OUTPUT_DIR/benchmark_eval/step-N.jsonl)}. Under DDP, DeepSpeed and FSDP every rank generates its "
            "share."
        },
    )

    def __post_init__(self) -> None:
        self.benchmark_eval = benchmark_eval_settings(self.benchmark_eval)


#: ``benchmark_eval`` keys and their defaults (``benchmarks`` and ``every`` are required).
BENCHMARK_EVAL_DEFAULTS: dict[str, Any] = {
    "n": 4,
    "limit": 64,
    "max_new_tokens": 1024,
    "temperature": 0.6,
    "top_p": 0.95,
    "batch_size": 16,
    "seed": 0,
    "samples": False,
}


def benchmark_eval_settings(value: Any) -> dict[str, Any] | None:
    """The recipe's ``benchmark_eval`` checked and completed with defaults (None: no evaluation).

    >>> benchmark_eval_settings({"benchmarks": "math500,amc23", "every": 50})["benchmarks"]
    ['math500', 'amc23']
    """
    settings = mapping_setting(value, "benchmark_eval")
    if settings is None:
        return None
    allowed = {"benchmarks", "every", *BENCHMARK_EVAL_DEFAULTS}
    if unknown := sorted(set(settings) - allowed):
        raise ValueError(f"benchmark_eval: unknown key(s) {unknown}; the keys are {sorted(allowed)}.")
    if "benchmarks" not in settings or "every" not in settings:
        raise ValueError(
            "benchmark_eval needs `benchmarks` (names or files) and `every` (steps between evaluations)."
        )
    every = settings["every"]
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"benchmark_eval.every must be a whole number of steps >= 1, got {every!r}.")
    return {
        **BENCHMARK_EVAL_DEFAULTS,
        **settings,
        "benchmarks": parse_list(settings["benchmarks"], "benchmark_eval.benchmarks"),
    }


@dataclass
class BudgetArguments:
    """Compute: threads and the whole run's time budget."""

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

    def __post_init__(self) -> None:
        if self.time_budget_decay_seconds and not self.time_budget_seconds:
            raise ValueError(
                "time_budget_decay_seconds needs time_budget_seconds: set a budget, or the decay to 0."
            )
        if self.time_budget_decay_seconds < 0:
            raise ValueError(
                f"time_budget_decay_seconds must be >= 0 (0: no decay), got {self.time_budget_decay_seconds}."
            )


#: The recipe's own argument groups, in the order ``TrlParser`` returns them.
ARGUMENT_CLASSES = (DataArguments, RewardArguments, WarmupArguments, HeldoutArguments, BudgetArguments)


@dataclass
class ScriptArguments:
    """The parsed groups of one run, kept together (not a recipe section: the recipe is flat)."""

    data: DataArguments = field(default_factory=DataArguments)
    rewards: RewardArguments = field(default_factory=RewardArguments)
    warmup: WarmupArguments = field(default_factory=WarmupArguments)
    heldout: HeldoutArguments = field(default_factory=HeldoutArguments)
    budget: BudgetArguments = field(default_factory=BudgetArguments)
