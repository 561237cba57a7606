"""One training run, top to bottom: rewards, model, data, the optional supervised warm-up and held-out check,
:class:`~bnpo_trl.NormalizedGRPOTrainer` (resumed when a checkpoint is there), then the summary, model card
and Hub push. :func:`run` takes a parsed recipe (:func:`bnpo_trl.recipe.parse_args`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from bnpo_trl.arguments import DataArguments, ScriptArguments, WarmupArguments
from bnpo_trl.callbacks import BenchmarkEvalCallback, PreemptionCallback, TimeBudgetCallback
from bnpo_trl.checkpoints import checkpoint_to_resume
from bnpo_trl.engine import engine_in_use
from bnpo_trl.models import load_model_and_tokenizer

logger = logging.getLogger("bnpo_trl.pipeline")

__all__ = [
    "dataset_names",
    "drop_long_prompts",
    "load_datasets",
    "load_warmup_check_set",
    "require_eos",
    "run",
]


def require_eos(reward_func: Any, eos_token_id: int) -> Any:
    """Wrap a reward: 0.0 for completions whose token ids do not end with ``eos_token_id``.

    TRL passes ``completion_ids`` cut just after the first EOS, so an unterminated completion is one whose
    last id is not EOS. Unscored rows (``None``) stay ``None``. A declared ``reward_range`` is widened to
    include 0.
    """
    import functools

    from bnpo_trl.rewards import reward_range_of

    @functools.wraps(reward_func)
    def wrapped(prompts, completions, completion_ids, **kwargs):
        scores = reward_func(
            prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs
        )
        ended = [bool(ids) and ids[-1] == eos_token_id for ids in completion_ids]
        if "log_metric" in kwargs:
            kwargs["log_metric"]("rewards/unterminated", 1 - sum(ended) / max(len(ended), 1))
        return [s if s is None or e else 0.0 for s, e in zip(scores, ended, strict=True)]

    declared = reward_range_of(reward_func)
    wrapped.reward_range = None if declared is None else (min(declared[0], 0.0), max(declared[1], 0.0))
    return wrapped


def load_datasets(data_args: DataArguments, seed: int) -> tuple[Any, Any]:
    """-> (train, held-out or None), both in the column contract of bnpo_trl.data."""
    from bnpo_trl.data import apply_curriculum, load_dataset_by_name, load_mixture

    common = {"system_prompt": data_args.system_prompt}
    if data_args.dataset_mixture:
        train = load_mixture(data_args.dataset_mixture, seed=seed, **common)
    elif data_args.dataset_name:
        train = load_dataset_by_name(
            data_args.dataset_name,
            split=data_args.dataset_split,
            path=data_args.dataset_path,
            limit=data_args.dataset_limit,
            column_map=data_args.dataset_column_map,
            **common,
        )
    else:
        raise ValueError("Set dataset_name (or dataset_mixture) in the recipe.")
    if len(train) == 0:
        raise ValueError("The training set is empty after loading and filtering: check dataset_* settings.")
    train = apply_curriculum(train, data_args.curriculum, column=data_args.curriculum_column)
    heldout = None
    if data_args.eval_dataset_name:
        heldout = _load_eval_split(data_args, data_args.eval_dataset_split, data_args.eval_dataset_limit)
    return train, heldout


def _load_eval_split(data_args: DataArguments, split: str | None, limit: int | None) -> Any:
    from bnpo_trl.data import load_dataset_by_name

    return load_dataset_by_name(
        data_args.eval_dataset_name,
        split=split,
        path=data_args.eval_dataset_path,
        limit=limit,
        column_map=data_args.eval_dataset_column_map,
        system_prompt=data_args.system_prompt,
    )


def load_warmup_check_set(data_args: DataArguments, warmup_args: WarmupArguments, heldout: Any) -> Any:
    """The rows the warm-up's stop check measures: ``sft_warmup_eval_split`` of the held-out dataset when set
    (then the before/after accuracy is not measured on the rows the stop was chosen on), else ``heldout``;
    at most ``sft_warmup_eval_limit`` rows."""
    check = heldout
    if warmup_args.sft_warmup_eval_split:
        check = _load_eval_split(
            data_args, warmup_args.sft_warmup_eval_split, warmup_args.sft_warmup_eval_limit
        )
    return check.select(range(min(len(check), warmup_args.sft_warmup_eval_limit)))


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


def _warm_up_and_measure(
    script_args: ScriptArguments,
    model: Any,
    tokenizer: Any,
    train: Any,
    heldout: Any,
    training_args: Any,
    resuming: bool,
) -> tuple[dict[str, Any], BenchmarkEvalCallback | None]:
    """The optional supervised warm-up, then the held-out accuracy before RL: -> (summary part, callback).
    Both are skipped when ``resuming`` (the checkpoint's weights replace the model's)."""
    from bnpo_trl.rewards import get_reward_funcs
    from bnpo_trl.warmup import sft_warmup

    data, warmup, held = script_args.data, script_args.warmup, script_args.heldout
    if (held.heldout_accuracy or warmup.sft_warmup) and heldout is None:
        raise ValueError("heldout_accuracy and sft_warmup need eval_dataset_name (a held-out set).")
    accuracy = get_reward_funcs(["accuracy"])[0] if heldout is not None else None
    summary: dict[str, Any] = {}
    if resuming and (warmup.sft_warmup or held.heldout_accuracy):
        logger.info("Resuming from a checkpoint: no warm-up, no accuracy before RL.")
    if warmup.sft_warmup and not resuming:
        check_set = load_warmup_check_set(data, warmup, heldout)
        summary["warmup"] = sft_warmup(
            model, tokenizer, train, check_set, accuracy, warmup, training_args, held.heldout_max_new_tokens
        )
        summary["warmup"]["check_split"] = (
            warmup.sft_warmup_eval_split or data.eval_dataset_split or "held-out set"
        )
    heldout_cb = None
    if held.heldout_accuracy:
        heldout_cb = BenchmarkEvalCallback.greedy(
            tokenizer, heldout, accuracy, held.heldout_eval_steps, held.heldout_max_new_tokens
        )
        if not resuming:
            summary["accuracy_before"] = heldout_cb.measure(model, step=0)
            if heldout_cb.by_source:
                summary["accuracy_before_by_source"] = heldout_cb.by_source[-1][1]
    return summary, heldout_cb


def run(script_args: ScriptArguments, training_args: Any, model_args: Any) -> dict[str, Any]:
    """Load, warm up (optional), train with :class:`~bnpo_trl.NormalizedGRPOTrainer`, measure, save."""
    import transformers
    from trl import get_peft_config

    from bnpo_trl.rewards import get_reward_funcs
    from bnpo_trl.trainer import NormalizedGRPOTrainer

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    data, budget = script_args.data, script_args.budget
    transformers.set_seed(training_args.seed)
    if budget.torch_threads:
        import torch

        torch.set_num_threads(budget.torch_threads)
    started = time.perf_counter()
    if data.curriculum == "difficulty":
        training_args.shuffle_dataset = False  # keep the easy -> hard order
    reward_funcs = get_reward_funcs(script_args.rewards.reward_funcs)  # a bad recipe fails before loading
    # the trainer checks the normalizer state; here only: is there a checkpoint (then no warm-up)
    resume = checkpoint_to_resume(
        training_args.resume_from_checkpoint, training_args.output_dir, training_args.auto_resume, False
    )
    model, tokenizer = load_model_and_tokenizer(model_args, training_args)
    if script_args.rewards.reward_requires_eos:
        reward_funcs = [require_eos(f, tokenizer.eos_token_id) for f in reward_funcs]
    train, heldout = load_datasets(data, training_args.seed)
    summary: dict[str, Any] = {
        "normalizer": training_args.advantage_normalizer,
        "seed": training_args.seed,
        "world_size": training_args.world_size,
    }
    if data.max_prompt_length:
        train, summary["dropped_long_prompts"] = drop_long_prompts(train, tokenizer, data.max_prompt_length)
    before, heldout_cb = _warm_up_and_measure(
        script_args, model, tokenizer, train, heldout, training_args, resuming=resume is not None
    )
    summary.update(before, **({"resumed_from": resume} if resume else {}))

    preemption_cb = PreemptionCallback()
    callbacks: list[Any] = [preemption_cb]
    if heldout_cb is not None and heldout_cb.eval_steps:
        callbacks.append(heldout_cb)
    benchmark_cb = _benchmark_eval_callback(script_args, tokenizer, training_args.output_dir)
    if benchmark_cb is not None:
        callbacks.append(benchmark_cb)
    budget_cb = None
    if budget.time_budget_seconds:
        budget_cb = TimeBudgetCallback(started, budget.time_budget_seconds, budget.time_budget_decay_seconds)
        callbacks.append(budget_cb)
    trainer = NormalizedGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train.select_columns([c for c in train.column_names if c != "completion"]),
        eval_dataset=heldout if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=callbacks,
    )
    if heldout_cb is not None:
        heldout_cb.trainer = trainer  # also when it only measures after training: sharded on several ranks
    rl_started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    summary["rl_seconds"] = time.perf_counter() - rl_started
    return _finish(trainer, script_args, summary, started, preemption_cb, heldout_cb, budget_cb, benchmark_cb)


def _benchmark_eval_callback(
    script_args: ScriptArguments, tokenizer: Any, output_dir: str
) -> BenchmarkEvalCallback | None:
    """The recipe's ``benchmark_eval``; the trainer attaches itself, so every rank evaluates its share."""
    settings = dict(script_args.heldout.benchmark_eval or {})
    if not settings:
        return None
    benchmarks, every = settings.pop("benchmarks"), settings.pop("every")
    samples_dir = os.path.join(output_dir, "benchmark_eval") if settings.pop("samples") else None
    return BenchmarkEvalCallback(
        tokenizer,
        benchmarks,
        every,
        system_prompt=script_args.data.system_prompt,
        samples_dir=samples_dir,
        **settings,
    )


def _finish(
    trainer: Any,
    script_args: ScriptArguments,
    summary: dict[str, Any],
    started: float,
    preemption_cb: PreemptionCallback,
    heldout_cb: BenchmarkEvalCallback | None,
    budget_cb: TimeBudgetCallback | None,
    benchmark_cb: BenchmarkEvalCallback | None,
) -> dict[str, Any]:
    """After ``trainer.train``: stop for a requeue, or measure, summarize, save and push."""
    from bnpo_trl.distributed import shutdown_distributed

    training_args, budget = trainer.args, script_args.budget
    if preemption_cb.stopped_at_step is not None:  # the checkpoint is saved; a requeued job resumes from it
        logger.warning(
            "Stopped on SIGTERM at step %d after saving a checkpoint.", preemption_cb.stopped_at_step
        )
        shutdown_distributed(trainer)
        return {**summary, "preempted_at_step": preemption_cb.stopped_at_step}
    if heldout_cb is not None:
        summary["accuracy_after"] = heldout_cb.measure(trainer.model, step=trainer.state.global_step)
        summary["heldout_curve"] = heldout_cb.curve
        if heldout_cb.by_source:
            summary["accuracy_after_by_source"] = heldout_cb.by_source[-1][1]
            summary["heldout_curve_by_source"] = heldout_cb.by_source
    summary["steps"] = trainer.state.global_step
    engine = trainer.engine_callback.engine or engine_in_use(trainer.accelerator, trainer.model_wrapped)
    summary["engine"], summary["engine_detail"] = str(engine), engine.to_dict()
    if benchmark_cb is not None:
        summary["benchmark_eval"] = benchmark_cb.history
    if budget_cb is not None:
        summary["time_budget_seconds"] = budget.time_budget_seconds
        summary["stopped_by_time_budget"] = budget_cb.stopped_at_step is not None
    summary["total_seconds"] = time.perf_counter() - started
    summary["log_history"] = trainer.state.log_history
    _save(trainer, training_args, summary, dataset_names(script_args.data))
    shutdown_distributed(trainer)
    return summary


def dataset_names(data_args: DataArguments) -> list[str]:
    """The training datasets' names, for the model card."""
    if data_args.dataset_mixture:
        return [str(e["name"] if isinstance(e, dict) else e.name) for e in data_args.dataset_mixture]
    return [data_args.dataset_name] if data_args.dataset_name else []


def _save(trainer: Any, training_args: Any, summary: dict[str, Any], datasets: list[str]) -> None:
    trainer.save_model(training_args.output_dir)
    if training_args.process_index == 0:
        trainer.create_model_card(
            model_name=os.path.basename(os.path.normpath(training_args.output_dir)),
            dataset_name=", ".join(datasets) or None,
        )
        _write_summary(training_args.output_dir, summary)
        _print_summary(summary)
    if training_args.push_to_hub:
        trainer.push_to_hub()


def _write_summary(output_dir: str, summary: dict[str, Any]) -> None:
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "run_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    from bnpo_trl.plotting import plot_run  # matplotlib is a dependency

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
    if "accuracy_after" in summary:
        why = ", time budget reached" if summary.get("stopped_by_time_budget") else ""
        why += f", resumed from {summary['resumed_from']}" if summary.get("resumed_from") else ""
        lines.append(
            f"| after RL ({summary['steps']} steps{why}) | {summary['accuracy_after']:.1%} "
            f"| {summary['rl_seconds']:.0f} s |"
        )
    if "accuracy_before" in summary:
        gain = summary["accuracy_after"] - summary["accuracy_before"]
        lines += [
            "",
            f"Held-out accuracy: {summary['accuracy_before']:.1%} -> {summary['accuracy_after']:.1%} "
            f"({gain * 100:+.1f} points) in {summary['total_seconds']:.0f} s total.",
        ]
    before, after = summary.get("accuracy_before_by_source", {}), summary.get("accuracy_after_by_source", {})
    if after:
        lines.append(
            "Per data source: "
            + ", ".join(
                f"{s} {before[s]:.1%} -> {a:.1%}" if s in before else f"{s} {a:.1%}" for s, a in after.items()
            )
            + "."
        )
    if warm and not warm["reached_target"]:
        lines.append(
            f"WARNING: the warm-up stopped at {warm['accuracy']:.1%}, below its target "
            f"{warm['target']:.0%}; RL may not have enough successes to learn from."
        )
    print("\n".join(lines), flush=True)
