"""Which normalizer for which data: RL from shared warm starts on a three-source task, many seeds, G = 4 and 8.

    python scripts/bench_learning.py            # the full run (about 60 min on 2 cores): every normalizer x
                                                # 8 seeds x G = 4, 8; writes the bench_learning block of
                                                # docs/benchmarks.md and docs/figures/learning_curves.png
    python scripts/bench_learning.py --quick    # 1 seed, 2 normalizers, 3 steps, tiny data (test suite)

The recipe is ``configs/bench/arithmetic_mix.yaml`` (``--config``): the quickstart's tiny model on
``arithmetic_mix``, whose rows come from three data sources of different difficulty (``bnpo_trl.tasks``).
For each seed:

1. one supervised warm-up as the recipe specifies it (a fixed number of steps), saved to
   ``<output-dir>/seed<k>/warm_start``;
2. every arm (a normalizer spec, ``ARMS``) then trains from that same folder at every group size
   (``--group-sizes``; the completions per step stay the recipe's, so G = 8 sees half the prompts of
   G = 4) through the real entry point (``bnpo_trl.train.parse_args`` + ``run``) with the same seed and the
   same number of steps, held-out greedy accuracy measured per data source every ``--eval-every`` steps.

Same warm start and same seed isolate the normalizer. Nothing is tuned per arm. Runs go to a pool of
``--workers`` processes with one torch thread each (on 2 cores two one-thread runs do more work per second
than one two-thread run). Each finished run appends one line to ``<output-dir>/results.jsonl``: run the
same command again after an interruption and it skips what is there (warm starts included); ``--fresh``
starts over. The report (``scripts/learning_report.py``) is written from that file alone.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import machine_line, write_section
from learning_report import DOC_TEXT, plot, report

from bnpo_trl.reward_log import repair_tail

ROOT = Path(__file__).resolve().parent.parent
#: (label, spec) of every arm; ``group`` (GRPO) is the baseline of the paired comparisons.
ARMS: list[tuple[str, Any]] = [
    ("group", "group"),
    ("bnpo", "bnpo"),
    ("bnpo per_source", {"name": "bnpo", "per_source": True}),
    ("ebpo", "ebpo"),
    ("ebpo per_source", {"name": "ebpo", "per_source": True}),
    ("batch", "batch"),
    ("none", "none"),
    ("rloo", "rloo"),
    ("median", "median"),
    ("reinforce_pp", "reinforce_pp"),
    ("opo", "opo"),
    ("gdpo", "gdpo"),
    ("passk", "passk"),
]
BASELINE = "group"
#: Fields this script sets for every run; a pass-through override of one of them is an error.
CONTROLLED = {
    "model_name_or_path", "sft_warmup", "advantage_normalizer", "seed", "max_steps", "num_generations",
    "heldout_accuracy", "heldout_eval_steps", "logging_steps", "output_dir", "disable_tqdm",
    "time_budget_seconds", "time_budget_decay_seconds", "torch_threads",
}  # fmt: skip
#: --quick: a seconds-long version of the recipe (tiny data and eval sets, a few warm-up steps).
QUICK_OVERRIDES = [
    "--dataset_limit", "64", "--eval_dataset_limit", "12", "--per_device_train_batch_size", "16",
    "--sft_warmup_max_steps", "4", "--sft_warmup_eval_steps", "2", "--sft_warmup_eval_limit", "6",
]  # fmt: skip


def parse_recipe(config: str, args: list[str]):
    from bnpo_trl import train

    return train.parse_args(["--config", config, *args])


def quiet(threads: int) -> None:
    """A worker's start: one torch thread (or ``threads``), library logging and progress bars off."""
    import datasets
    import torch
    import transformers

    torch.set_num_threads(threads)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def warm_start(config: str, seed: int, folder: str, extra: list[str]) -> dict[str, Any]:
    """The recipe's supervised warm-up for one seed, saved to ``folder``; -> what happened."""
    import transformers

    from bnpo_trl import train
    from bnpo_trl.rewards import get_reward_funcs
    from bnpo_trl.warmup import sft_warmup

    folder_path = Path(folder)
    script_args, training_args, model_args = parse_recipe(
        config, ["--seed", str(seed), "--output_dir", folder, "--disable_tqdm", "true", *extra]
    )
    wall, cpu = time.perf_counter(), time.process_time()
    transformers.set_seed(seed)
    model, tokenizer = train.load_model_and_tokenizer(model_args, training_args)
    train_set, heldout = train.load_datasets(script_args.data, seed)
    folder_path.mkdir(parents=True, exist_ok=True)
    with open(folder_path.parent / "warm_start.log", "w") as log, contextlib.redirect_stdout(log):
        check_set = train.load_warmup_check_set(script_args.data, script_args.warmup, heldout)
        info = sft_warmup(
            model,
            tokenizer,
            train_set,
            check_set,
            get_reward_funcs(["accuracy"])[0],
            script_args.warmup,
            training_args,
            script_args.heldout.heldout_max_new_tokens,
        )
    model.save_pretrained(folder_path)
    tokenizer.save_pretrained(folder_path)
    record = {
        "seed": seed,
        "folder": folder,
        "steps": info["steps"],
        "seconds": info["seconds"],
        "check_accuracy": info["accuracy"],
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
    }
    (folder_path / "warm_start.json").write_text(json.dumps(record))  # written last: marks it complete
    return record


def rl_run(config: str, unit: dict[str, Any], extra: list[str]) -> dict[str, Any]:
    """One RL run through the real entry point; -> the metrics the report needs (no weights are kept)."""
    from bnpo_trl import train

    run_dir = Path(unit["run_dir"])
    argv = [
        "--model_name_or_path", unit["warm_start"], "--sft_warmup", "false",
        "--advantage_normalizer", json.dumps(unit["spec"]) if isinstance(unit["spec"], dict) else unit["spec"],
        "--seed", str(unit["seed"]), "--max_steps", str(unit["max_steps"]),
        "--num_generations", str(unit["group_size"]), "--heldout_accuracy", "true",
        "--heldout_eval_steps", str(unit["eval_every"]), "--logging_steps", "1", "--disable_tqdm", "true",
        "--output_dir", str(run_dir), *extra,
    ]  # fmt: skip
    script_args, training_args, model_args = parse_recipe(config, argv)
    script_args.budget.time_budget_seconds = None  # the same number of steps for every run
    script_args.budget.time_budget_decay_seconds = 0.0  # and the same learning-rate schedule
    script_args.budget.torch_threads = 0  # the worker's own setting (quiet) stays
    run_dir.mkdir(parents=True, exist_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()
    with open(run_dir / "stdout.log", "w") as log, contextlib.redirect_stdout(log):
        summary = train.run(script_args, training_args, model_args)
    for name in ("model.safetensors", "pytorch_model.bin"):  # the weights are not needed afterwards
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    return run_metrics(unit, summary, time.perf_counter() - wall, time.process_time() - cpu)


def run_metrics(unit: dict[str, Any], summary: dict[str, Any], wall: float, cpu: float) -> dict[str, Any]:
    """The line of results.jsonl for one run."""
    log = summary["log_history"]
    return {
        "key": unit["key"],
        "arm": unit["arm"],
        "seed": unit["seed"],
        "group_size": unit["group_size"],
        "steps": summary["steps"],
        "start": summary["accuracy_before"],
        "final": summary["accuracy_after"],
        "start_by_source": summary.get("accuracy_before_by_source", {}),
        "final_by_source": summary.get("accuracy_after_by_source", {}),
        "curve": [[int(s), float(a)] for s, a in summary["heldout_curve"]],
        "curve_by_source": summary.get("heldout_curve_by_source", []),
        "auc": learning_curve_area(summary["heldout_curve"]),
        "grad_norm": mean([e["grad_norm"] for e in log if "grad_norm" in e]),
        "zero_signal": mean(
            [e["normalizer/zero_signal_fraction"] for e in log if "normalizer/zero_signal_fraction" in e]
        ),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
    }


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def learning_curve_area(curve: list[tuple[int, float]]) -> float:
    """Area under held-out accuracy over RL steps (trapezoids), divided by the steps: the run's mean accuracy.

    >>> learning_curve_area([(0, 0.2), (10, 0.4), (20, 0.4)])
    0.35
    """
    if len(curve) < 2:
        return float(curve[0][1]) if curve else math.nan
    area = sum((s1 - s0) * (a0 + a1) / 2 for (s0, a0), (s1, a1) in itertools.pairwise(curve))
    return round(area / (curve[-1][0] - curve[0][0]), 12)


# ---------------------------------------------------------------------------------------------------------
def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """results.jsonl by key; a torn last line (an interrupted write) is skipped and rerun."""
    results = {}
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                results[record["key"]] = record
    return results


def append_result(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def units_for(seed: int, warm: dict[str, Any], args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    return [
        {
            "key": f"seed{seed}/G{g}/{label}",
            "arm": label,
            "spec": spec,
            "seed": seed,
            "group_size": g,
            "warm_start": warm["folder"],
            "max_steps": args.max_steps,
            "eval_every": args.eval_every,
            "run_dir": str(out / f"seed{seed}" / f"G{g}" / label.replace(" ", "_")),
        }
        for g in args.group_sizes
        for label, spec in ARMS
        if label in args.arms
    ]


def run_all(args: argparse.Namespace, config: str, extra: list[str], out: Path) -> tuple[dict, dict, float]:
    """Warm-ups, then every (seed, G, arm) run, on a process pool; resumes from what ``out`` holds."""
    results_path = out / "results.jsonl"
    repair_tail(results_path)  # a line torn by an interruption is cut off before appending after it
    results = read_results(results_path)
    warmups: dict[int, dict[str, Any]] = {}
    total = len(args.seeds) * len(args.group_sizes) * len(args.arms)
    todo = sum(
        1 for s in args.seeds for u in units_for(s, {"folder": ""}, args, out) if u["key"] not in results
    )
    print(f"{total - todo} of {total} runs already in {results_path}; {todo} to go", flush=True)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(
        args.workers, mp_context=context, initializer=quiet, initargs=(args.threads,)
    ) as pool:
        pending: dict[cf.Future, tuple[str, Any]] = {}
        for seed in args.seeds:
            marker = out / f"seed{seed}" / "warm_start" / "warm_start.json"
            if marker.exists():
                warmups[seed] = json.loads(marker.read_text())
            else:
                folder = str(out / f"seed{seed}" / "warm_start")
                pending[pool.submit(warm_start, config, seed, folder, extra)] = ("warm", seed)
        for seed, warm in warmups.items():
            for unit in units_for(seed, warm, args, out):
                if unit["key"] not in results:
                    pending[pool.submit(rl_run, config, unit, extra)] = ("run", unit["key"])
        done = total - todo
        while pending:
            finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                kind, what = pending.pop(future)
                record = future.result()  # a failed run stops the benchmark with its traceback
                if kind == "warm":
                    warmups[what] = record
                    print(f"seed {what}: warm-up {record['steps']} steps, {record['check_accuracy']:.1%} on its "
                          f"check, {record['wall_seconds']:.0f} s", flush=True)  # fmt: skip
                    for unit in units_for(what, record, args, out):
                        if unit["key"] not in results:
                            pending[pool.submit(rl_run, config, unit, extra)] = ("run", unit["key"])
                    continue
                results[what] = record
                append_result(results_path, record)
                done += 1
                minutes = (time.perf_counter() - started) / 60
                print(f"  [{done}/{total}] {what}: {record['start']:.1%} -> {record['final']:.1%}, "
                      f"{record['wall_seconds']:.0f} s; {minutes:.1f} min", flush=True)  # fmt: skip
    return warmups, results, time.perf_counter() - started


def recipe_facts(config: str, extra: list[str]) -> dict[str, Any]:
    """The recipe settings the report quotes, read from the recipe itself (after pass-through overrides)."""
    from bnpo_trl.tasks import MIX_SOURCES, MIX_WEIGHTS

    script_args, training_args, model_args = parse_recipe(config, ["--output_dir", "unused", *extra])
    return {
        "model": model_args.model_name_or_path,
        "dataset": script_args.data.dataset_name,
        "dataset_limit": script_args.data.dataset_limit,
        "eval_limit": script_args.data.eval_dataset_limit,
        "eval_split": script_args.data.eval_dataset_split,
        "sources": {name: str(source) for name, source in MIX_SOURCES.items()},
        "weights": dict(MIX_WEIGHTS),
        "warmup_steps": script_args.warmup.sft_warmup_max_steps,
        "warmup_lr": script_args.warmup.sft_warmup_learning_rate,
        "batch": training_args.per_device_train_batch_size,
        "lr": training_args.learning_rate,
        "max_grad_norm": training_args.max_grad_norm,
        "max_completion_length": training_args.max_completion_length,
        "rewards": script_args.rewards.reward_funcs,
    }


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--config", default="configs/bench/arithmetic_mix.yaml", help="recipe YAML")
    parser.add_argument("--arms", nargs="+", default=[label for label, _ in ARMS], help="labels from ARMS")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    parser.add_argument("--group-sizes", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--max-steps", type=int, default=60, help="RL steps per run")
    parser.add_argument("--eval-every", type=int, default=10, help="held-out accuracy every N RL steps")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="default: outputs/bench_learning[_quick]"
    )
    parser.add_argument("--docs", type=Path, default=None, help="default: docs/benchmarks.md (full run)")
    parser.add_argument("--figure", type=Path, default=None, help="default: docs/figures/learning_curves.png")
    parser.add_argument("--fresh", action="store_true", help="discard the results in --output-dir first")
    parser.add_argument("--quick", action="store_true", help="1 seed, group and bnpo, 3 steps, tiny data")
    args, extra = parser.parse_known_args(argv)
    keys = {a[2:].split("=")[0].replace("-", "_") for a in extra if a.startswith("--")}
    if keys & CONTROLLED:
        parser.error(f"set by this script, cannot be passed through: {sorted(keys & CONTROLLED)}")
    unknown = sorted(set(args.arms) - {label for label, _ in ARMS})
    if unknown or BASELINE not in args.arms:
        parser.error(f"--arms must include {BASELINE!r} and name arms of ARMS; unknown: {unknown}")
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.group_sizes)) != len(args.group_sizes):
        parser.error("--seeds and --group-sizes must not repeat")
    if args.quick:
        args.seeds, args.arms, args.group_sizes = args.seeds[:1], ["group", "bnpo"], [4]
        args.max_steps, args.eval_every = 3, 2
        extra = QUICK_OVERRIDES + extra
    name = "bench_learning_quick" if args.quick else "bench_learning"
    args.output_dir = args.output_dir or ROOT / "outputs" / name
    if args.docs is None and not args.quick:
        args.docs = ROOT / "docs" / "benchmarks.md"
    if args.figure is None:
        in_docs = args.docs is not None and not args.quick
        args.figure = (
            ROOT / "docs" / "figures" / "learning_curves.png" if in_docs else args.output_dir / "curves.png"
        )
    return args, extra


def main(argv: list[str] | None = None) -> str:
    args, extra = parse_args(argv)
    config = Path(args.config)
    if not config.is_absolute() and not config.exists():
        config = ROOT / config
    absolute = Path(os.path.abspath(config))  # not resolve(): configs/ is a link into the package
    args.config_label = os.path.relpath(absolute, ROOT) if absolute.is_relative_to(ROOT) else str(config)
    quiet(args.threads)
    out = args.output_dir
    if args.fresh and out.exists():
        if not (out / ".bench_learning").exists():
            raise SystemExit(f"--output-dir {out} was not written by this script: not deleting it")
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()) and not (out / ".bench_learning").exists():
        raise SystemExit(
            f"--output-dir {out} is not empty and was not written by this script: choose another"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / ".bench_learning").touch()
    facts = recipe_facts(str(config), extra)
    print(
        f"bench_learning: {len(args.arms)} arms x {len(args.seeds)} seeds x G {args.group_sizes}, "
        f"{args.max_steps} RL steps each, {args.workers} workers; {machine_line()}",
        flush=True,
    )
    warmups, results, seconds = run_all(args, str(config), extra, out)
    wanted = {u["key"] for s in args.seeds for u in units_for(s, warmups[s], args, out)}
    runs = [results[k] for k in sorted(wanted)]
    plot(runs, args, args.figure)
    text = report(runs, [warmups[s] for s in args.seeds], facts, args, seconds, args.figure, args.docs)
    (out / "bench_learning.json").write_text(
        json.dumps({"facts": facts, "extra": extra, "seconds": seconds, "warmups": warmups}, indent=1)
    )
    print("\n" + text)
    if args.docs is not None:
        write_section(args.docs, "bench_learning", DOC_TEXT + "\n" + text)
        print(f"wrote the bench_learning block of {args.docs}")
    return text


if __name__ == "__main__":
    main()
