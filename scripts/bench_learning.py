"""Learning curves of the quickstart task with each normalizer: same warm start, same RL budget, >= 3 seeds.

    python scripts/bench_learning.py            # 7 normalizers x seeds 0 1 2, 100 RL steps each; writes the
                                                # bench_learning block of docs/benchmarks.md and
                                                # docs/figures/learning_curves.png
    python scripts/bench_learning.py --quick    # 1 seed, 2 normalizers, 3 steps, tiny data (test suite)

The recipe is read from ``--config`` (default ``configs/quickstart.yaml``) at run time. For each seed:

1. one supervised warm-up, exactly as the recipe specifies it (``bnpo_trl.warmup.sft_warmup``: it stops
   at the recipe's held-out accuracy target or time budget), saved to ``<output-dir>/seed<k>/warm_start``;
2. every normalizer then trains from that same folder through the real entry point
   (``bnpo_trl.train.parse_args`` + ``run``) with the same seed and the same budget (``--max-steps``),
   the warm-up switched off, held-out greedy accuracy measured every ``--eval-every`` steps and
   ``logging_steps=1`` (so ``grad_norm`` is logged at every step).

Same warm start and same seed isolate the normalizer: at step 0 every run has the same weights, the same
data order and the same sampling seed. Nothing is tuned per normalizer (each uses its defaults and the
recipe's settings). Extra ``--<recipe_field> VALUE`` arguments are passed to both stages (e.g.
``--eval_dataset_limit 100``); the fields this script sets itself cannot be overridden that way.

Per normalizer (mean +- sample std over seeds): held-out accuracy at every evaluation step, the final
accuracy, the first evaluated step with accuracy >= ``--threshold`` (per seed; "-" = not reached), the
mean and std over steps of the pre-clipping gradient norm, and the wall and CPU time of a run
(evaluations included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import machine_line, write_section

ROOT = Path(__file__).resolve().parent.parent
# median: with one data source (arithmetic) it is one robust scale for the whole batch (the median of the
# positive group stds over the last `window` steps), not a per-source scale.
NORMALIZERS = ["bnpo", "ebpo", "group", "batch", "none", "rloo", "median"]
# Fields this script sets for every run; a pass-through override of one of them is an error.
CONTROLLED = {
    "model_name_or_path",
    "sft_warmup",
    "advantage_normalizer",
    "seed",
    "max_steps",
    "heldout_accuracy",
    "heldout_eval_steps",
    "logging_steps",
    "output_dir",
    "disable_tqdm",
    "time_budget_seconds",
    "time_budget_decay_seconds",
}
# --quick: a seconds-long version of the recipe (tiny data and eval sets, 2-s warm-up budget).
QUICK_OVERRIDES = [
    "--dataset_limit", "64", "--eval_dataset_limit", "16", "--per_device_train_batch_size", "16",
    "--sft_warmup_max_seconds", "2", "--sft_warmup_eval_steps", "1", "--sft_warmup_eval_limit", "8",
]  # fmt: skip


@dataclass
class Warmup:
    seed: int
    folder: str
    steps: int
    seconds: float
    accuracy: float  # the warm-up's own check (train.load_warmup_check_set)
    reached_target: bool
    target: float


# ---------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------
def parse_recipe(config: str, args: list[str]):
    from bnpo_trl import train

    return train.parse_args(["--config", config, *args])


def warm_start(config: str, seed: int, folder: Path, extra: list[str]) -> Warmup:
    """The recipe's supervised warm-up for one seed, saved to ``folder`` (model + tokenizer)."""
    import transformers

    from bnpo_trl import train
    from bnpo_trl.rewards import get_reward_funcs
    from bnpo_trl.warmup import sft_warmup

    script_args, training_args, model_args = parse_recipe(
        config, ["--seed", str(seed), "--output_dir", str(folder), "--disable_tqdm", "true", *extra]
    )
    transformers.set_seed(seed)
    model, tokenizer = train.load_model_and_tokenizer(model_args, training_args)
    train_set, heldout = train.load_datasets(script_args.data, seed)
    if script_args.warmup.sft_warmup:
        accuracy = get_reward_funcs(["accuracy"])[0]
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / "warm_start.log", "w") as log, contextlib.redirect_stdout(log):
            check_set = train.load_warmup_check_set(script_args.data, script_args.warmup, heldout)
            info = sft_warmup(
                model,
                tokenizer,
                train_set,
                check_set,
                accuracy,
                script_args.warmup,
                training_args,
                script_args.heldout.heldout_max_new_tokens,
            )
    else:  # the recipe has no warm-up: every normalizer starts from the recipe's model as it is
        info = {"steps": 0, "seconds": 0.0, "accuracy": math.nan, "reached_target": True, "target": math.nan}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Warmup(
        seed,
        str(folder),
        info["steps"],
        info["seconds"],
        info["accuracy"],
        info["reached_target"],
        info["target"],
    )


def rl_run(
    config: str, warm: Warmup, normalizer: str, args: argparse.Namespace, run_dir: Path, extra: list[str]
) -> dict[str, Any]:
    """One RL run through the real entry point; returns its run summary (also in run_dir/run_summary.json)."""
    from bnpo_trl import train

    argv = [
        "--model_name_or_path", warm.folder, "--sft_warmup", "false", "--advantage_normalizer", normalizer,
        "--seed", str(warm.seed), "--max_steps", str(args.max_steps), "--heldout_accuracy", "true",
        "--heldout_eval_steps", str(args.eval_every), "--logging_steps", "1", "--disable_tqdm", "true",
        "--output_dir", str(run_dir), *extra,
    ]  # fmt: skip
    script_args, training_args, model_args = parse_recipe(config, argv)
    script_args.budget.time_budget_seconds = (
        None  # same number of steps for every run, however long they take
    )
    script_args.budget.time_budget_decay_seconds = 0.0  # and the same learning-rate schedule
    if args.threads:
        script_args.budget.torch_threads = args.threads
    run_dir.mkdir(parents=True, exist_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()
    with open(run_dir / "stdout.log", "w") as log, contextlib.redirect_stdout(log):
        summary = train.run(script_args, training_args, model_args)
    summary["bench_wall_seconds"] = time.perf_counter() - wall  # the whole call: setup, RL, evaluations
    summary["bench_cpu_seconds"] = time.process_time() - cpu
    for name in ("model.safetensors", "pytorch_model.bin"):  # the weights are not needed afterwards
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    return summary


def recipe_facts(config: str, extra: list[str]) -> dict[str, Any]:
    """The recipe settings the docs quote, read from the recipe itself (after pass-through overrides)."""
    script_args, training_args, model_args = parse_recipe(config, ["--output_dir", "unused", *extra])
    return {
        "model": model_args.model_name_or_path,
        "dataset_limit": script_args.data.dataset_limit,
        "eval_limit": script_args.data.eval_dataset_limit,
        "eval_split": script_args.data.eval_dataset_split,
        "warmup": script_args.warmup.sft_warmup,
        "warmup_target": script_args.warmup.sft_warmup_target_accuracy,
        "warmup_seconds": script_args.warmup.sft_warmup_max_seconds,
        "batch": training_args.per_device_train_batch_size,
        "group": training_args.num_generations,
        "lr": training_args.learning_rate,
        "max_grad_norm": training_args.max_grad_norm,
        "max_completion_length": training_args.max_completion_length,
        "rewards": script_args.rewards.reward_funcs,
        "requires_eos": script_args.rewards.reward_requires_eos,
        "normalizer_kwargs": training_args.normalizer_kwargs or {},
    }


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaNs are dropped."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def steps_to_threshold(curve: list[tuple[int, float]], threshold: float) -> int | None:
    """First evaluated step whose held-out accuracy is >= threshold (None: not reached)."""
    return next((int(step) for step, acc in curve if acc >= threshold), None)


def run_metrics(summary: dict[str, Any], threshold: float) -> dict[str, Any]:
    grads = [e["grad_norm"] for e in summary["log_history"] if "grad_norm" in e]
    curve = [(int(s), float(a)) for s, a in summary["heldout_curve"]]
    grad_mean, grad_std = mean_std(grads)
    return {
        "curve": curve,
        "start": summary["accuracy_before"],
        "final": summary["accuracy_after"],
        "reached": steps_to_threshold(curve, threshold),
        "grad_mean": grad_mean,
        "grad_std": grad_std,
        "grad_steps": len(grads),
        "grad_curve": grads,
        "rl_seconds": summary["rl_seconds"],
        "wall_seconds": summary["bench_wall_seconds"],
        "cpu_seconds": summary["bench_cpu_seconds"],
        "steps": summary["steps"],
    }


def fmt(values: list[float], digits: int = 1, percent: bool = True) -> str:
    m, s = mean_std(values)
    if math.isnan(m):
        return "-"
    if percent:
        return f"{100 * m:.{digits}f} ± {100 * s:.{digits}f}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def report(
    results: dict[str, list[dict[str, Any]]],
    warmups: list[Warmup],
    facts: dict[str, Any],
    args: argparse.Namespace,
    seconds: float,
    figure: Path | None,
    docs: Path | None,
) -> str:
    seeds = [w.seed for w in warmups]
    n = len(seeds)
    base = "group" if "group" in results else next(iter(results))  # GRPO's advantages: the reference
    t = args.threshold
    lines = [
        f"Task: `{args.config_label}` (model `{facts['model']}`), {facts['dataset_limit']} training prompts, "
        f"held-out accuracy = greedy decoding on {facts['eval_limit']} `{facts['eval_split']}` problems scored "
        f"by the `accuracy` reward. Seeds {', '.join(map(str, seeds))}; per seed one supervised warm-up "
        + (
            f"(the recipe's: stops at {facts['warmup_target']:.0%} held-out accuracy or after "
            f"{facts['warmup_seconds']:g} s), "
            if facts["warmup"]
            else "(none: the recipe has no warm-up), "
        )
        + f"then each normalizer trains from that same warm start for {args.max_steps} RL steps with the same "
        f"seed: {facts['batch']} completions per step ({facts['batch'] // facts['group']} prompts x G = "
        f"{facts['group']}), up to {facts['max_completion_length']} tokens, lr {facts['lr']:g}, rewards "
        f"{facts['rewards']}{' (0 without EOS)' if facts['requires_eos'] else ''}, gradients clipped at "
        f"{facts['max_grad_norm']:g}. Held-out accuracy every {args.eval_every} steps. Every normalizer uses "
        + (
            f"the recipe's normalizer_kwargs {facts['normalizer_kwargs']}"
            if facts.get("normalizer_kwargs")
            else "its default options"
        )
        + f"; none was tuned. {seconds / 60:.1f} min in all.",
        "",
        "| seed | warm-up steps | warm-up s | warm-up check (its own eval rows) | held-out accuracy at RL step 0 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i, w in enumerate(warmups):
        starts = {round(runs[i]["start"], 6) for runs in results.values()}
        start = ", ".join(f"{100 * s:.1f}%" for s in sorted(starts))  # one value: same warm start everywhere
        check = "-" if math.isnan(w.accuracy) else f"{100 * w.accuracy:.1f}%"
        if facts["warmup"] and not w.reached_target:
            check += f" (target {w.target:.0%} not reached)"
        lines.append(f"| {w.seed} | {w.steps} | {w.seconds:.0f} | {check} | {start} |")
    lines += [
        "",
        f"**Summary** (mean ± std over {n} seed{'s' if n > 1 else ''}; accuracy in %; "
        f'steps to ≥ {t:.0%}: the first evaluated step per seed, "-" = not reached in {args.max_steps} '
        "steps; grad norm: mean and std over the steps of a run, before clipping; wall and CPU time of a "
        "whole run, evaluations included)",
        "",
        f"| normalizer | final accuracy | gain over step 0 | final − {base} (paired) "
        f"| steps to ≥ {t:.0%} (per seed) | reached "
        "| grad norm mean | grad norm std | wall s / run | CPU s / run |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        reached = [r["reached"] for r in runs]
        lines.append(
            f"| {name} | {fmt([r['final'] for r in runs])} | {fmt([r['final'] - r['start'] for r in runs])} "
            f"| {'-' if name == base else paired_difference(runs, results[base])} "
            f"| {' / '.join('-' if s is None else str(s) for s in reached)} "
            f"| {sum(s is not None for s in reached)}/{n} "
            f"| {fmt([r['grad_mean'] for r in runs], 3, False)} | {fmt([r['grad_std'] for r in runs], 3, False)} "
            f"| {fmt([r['wall_seconds'] for r in runs], 0, False)} "
            f"| {fmt([r['cpu_seconds'] for r in runs], 0, False)} |"
        )
    steps = [s for s, _ in first_curve(results)]
    lines += [
        "",
        f"**Held-out accuracy per evaluated step** (%, mean ± std over {n} seed{'s' if n > 1 else ''})",
        "",
        "| step | " + " | ".join(results) + " |",
        "|---:|" + "---:|" * len(results),
    ]
    for k, step in enumerate(steps):
        cells = [fmt([r["curve"][k][1] for r in runs]) for runs in results.values()]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"final − {base}: the per-seed difference of final accuracies in points, mean ± std over seeds; * "
        f'marks a paired t-test rejecting "no difference" at 5% (two-sided, t = {t_critical(n - 1):.2f} '
        f"with {n - 1} degree(s) of freedom, not corrected for the {len(results) - 1} comparisons)."
        if n > 1
        else "One seed: no spread over seeds, no comparison.",
    ]
    if figure is not None:
        rel = os.path.relpath(figure, docs.parent) if docs is not None else str(figure)
        lines += [
            "",
            f"![Held-out accuracy per RL step, mean ± std over seeds, and gradient norm]({rel})",
        ]
    return "\n".join(lines)


def first_curve(results: dict[str, list[dict[str, Any]]]) -> list[tuple[int, float]]:
    curves = [r["curve"] for runs in results.values() for r in runs]
    steps = [[s for s, _ in c] for c in curves]
    if any(s != steps[0] for s in steps):
        raise RuntimeError(f"Runs evaluated at different steps: {steps}")
    return curves[0]


# Two-sided 5% critical values of Student's t by degrees of freedom (a df between two keys uses the
# smaller key: conservative).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}  # fmt: skip


def t_critical(df: int) -> float:
    return T_975[max(k for k in T_975 if k <= df)]


def paired_difference(runs: list[dict[str, Any]], base: list[dict[str, Any]]) -> str:
    """Final accuracy minus the baseline's, paired by seed: mean ± std in points, ``*`` when a paired t-test
    rejects "no difference" at the 5% level (two-sided, uncorrected for the number of normalizers)."""
    diffs = [x["final"] - y["final"] for x, y in zip(runs, base, strict=True)]
    if len(diffs) < 2:
        return "-"
    m, sd = mean_std(diffs)
    bound = t_critical(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return f"{100 * m:+.1f} ± {100 * sd:.1f}{' *' if abs(m) > bound else ''}"


def plot(results: dict[str, list[dict[str, Any]]], threshold: float, path: Path) -> None:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), dpi=100)
    length = min(len(r["grad_curve"]) for runs in results.values() for r in runs)
    window = max(1, min(10, length // 5))
    for k, (name, runs) in enumerate(results.items()):
        color = f"C{k}"
        steps = [s for s, _ in runs[0]["curve"]]
        acc = torch.tensor([[a for _, a in r["curve"]] for r in runs], dtype=torch.float64) * 100
        mean = acc.mean(0)
        std = acc.std(0) if len(runs) > 1 else torch.zeros_like(mean)
        ax.plot(steps, mean, "o-", ms=3, color=color, label=name)
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.15)
        grads = torch.tensor([r["grad_curve"][:length] for r in runs], dtype=torch.float64).mean(0)
        smooth = grads.unfold(0, window, 1).mean(1)
        ax2.plot(range(window, window + len(smooth)), smooth, color=color, label=name)
    ax.axhline(100 * threshold, color="gray", ls="--", lw=1, label=f"threshold {threshold:.0%}")
    ax.set_xlabel("RL step")
    ax.set_ylabel("held-out accuracy, % (greedy)")
    ax.set_title(f"mean ± std over {len(next(iter(results.values())))} seed(s)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax2.set_xlabel("RL step")
    ax2.set_ylabel("grad norm (before clipping)")
    ax2.set_yscale("log")
    ax2.set_title(f"gradient norm: mean over seeds, running mean of {window} steps", fontsize=10)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


DOC_TEXT = """`python scripts/bench_learning.py` trains the quickstart task (`configs/quickstart.yaml`: a 0.8M-parameter
model learns "What is a + b?") with each normalizer from the same supervised warm start and with the same
seed and RL budget, for several seeds (the script's docstring gives the protocol). This is a small model
on an easy task with a short budget on CPU: it shows how each normalizer behaves here, not which one is
better on real models. `median` needs a data source per row; the arithmetic task has one source, so here
it is a single robust scale for the batch (the median of the positive group stds over its window), not
a per-source scale. The normalizers scale advantages differently, so at the recipe's one learning rate
their update sizes differ (the grad-norm columns show by how much); the learning rate is not re-tuned per
normalizer.
"""


# ---------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--config", default="configs/quickstart.yaml", help="recipe YAML")
    parser.add_argument("--normalizers", nargs="+", default=NORMALIZERS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=100, help="RL steps per run")
    parser.add_argument("--eval-every", type=int, default=10, help="held-out accuracy every N RL steps")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.6,
        help="held-out accuracy for 'steps to threshold' (default 0.6: about halfway between the recipe's warm "
        "starts, 35-47%, and the 76-79% that bnpo and ebpo reached from seed 0's in this budget)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="default: outputs/bench_learning[_quick]"
    )
    parser.add_argument(
        "--docs", type=Path, default=None, help="default: docs/benchmarks.md (full run); --quick: none"
    )
    parser.add_argument(
        "--figure", type=Path, default=None, help="default: docs/figures/learning_curves.png with the docs, "
        "else <output-dir>/learning_curves.png"
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: the recipe's torch_threads)"
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, bnpo and group, 3 steps, tiny data")
    args, extra = parser.parse_known_args()
    keys = {a[2:].split("=")[0].replace("-", "_") for a in extra if a.startswith("--")}
    if keys & CONTROLLED:
        parser.error(f"set by this script, cannot be passed through: {sorted(keys & CONTROLLED)}")
    if args.quick:
        args.seeds, args.normalizers = args.seeds[:1], ["bnpo", "group"]
        args.max_steps, args.eval_every = 3, 2
        extra = QUICK_OVERRIDES + extra
        if args.output_dir is None:
            args.output_dir = ROOT / "outputs" / "bench_learning_quick"
    elif args.docs is None:
        args.docs = ROOT / "docs" / "benchmarks.md"
    if args.output_dir is None:
        args.output_dir = ROOT / "outputs" / "bench_learning"
    if args.figure is None:
        args.figure = (
            ROOT / "docs" / "figures" / "learning_curves.png"
            if args.docs is not None and not args.quick
            else args.output_dir / "learning_curves.png"
        )
    config = Path(args.config)
    if not config.is_absolute() and not config.exists():
        config = ROOT / config
    args.config_label = (
        os.path.relpath(config.resolve(), ROOT) if config.resolve().is_relative_to(ROOT) else str(config)
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    if len(set(args.normalizers)) != len(args.normalizers) or len(set(args.seeds)) != len(args.seeds):
        parser.error("--normalizers and --seeds must not repeat")

    # Quiet libraries: progress goes to this script's own lines; each run's stdout goes to its stdout.log.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    warnings.filterwarnings("ignore")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    facts = recipe_facts(str(config), extra)
    out = args.output_dir
    if out.exists() and any(out.iterdir()):
        if not (out / ".bench_learning").exists():
            parser.error(
                f"--output-dir {out} is not empty and was not written by this script: choose another"
            )
        shutil.rmtree(out)  # a previous run's folder: start afresh
    out.mkdir(parents=True, exist_ok=True)
    (out / ".bench_learning").touch()
    start = time.perf_counter()
    total_runs = len(args.seeds) * len(args.normalizers)
    print(
        f"bench_learning: {len(args.normalizers)} normalizers x {len(args.seeds)} seeds, {args.max_steps} RL steps "
        f"each, eval every {args.eval_every}; {machine_line()}",
        flush=True,
    )
    warmups: list[Warmup] = []
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in args.normalizers}
    done = 0
    warm_walls: list[float] = []
    run_walls: list[float] = []
    for k, seed in enumerate(args.seeds):
        t0 = time.perf_counter()
        warm = warm_start(str(config), seed, out / f"seed{seed}" / "warm_start", extra)
        warmups.append(warm)
        warm_walls.append(time.perf_counter() - t0)
        print(
            f"seed {seed}: warm-up {warm.steps} steps, {warm.accuracy:.1%} on its check, {warm_walls[-1]:.0f} s",
            flush=True,
        )
        for name in args.normalizers:
            summary = rl_run(str(config), warm, name, args, out / f"seed{seed}" / name, extra)
            m = run_metrics(summary, args.threshold)
            results[name].append(m)
            done += 1
            run_walls.append(m["wall_seconds"])
            elapsed = time.perf_counter() - start
            left = statistics.fmean(run_walls) * (total_runs - done)
            left += statistics.fmean(warm_walls) * (len(args.seeds) - k - 1)
            print(
                f"  [{done}/{total_runs}] {name:6s} seed {seed}: accuracy {m['start']:.1%} -> {m['final']:.1%}, "
                f"grad norm {m['grad_mean']:.3f} ± {m['grad_std']:.3f}, {m['wall_seconds']:.0f} s wall "
                f"({m['cpu_seconds']:.0f} s CPU); {elapsed / 60:.1f} min so far, about {left / 60:.0f} min left",
                flush=True,
            )
    seconds = time.perf_counter() - start

    plot(results, args.threshold, args.figure)
    text = report(results, warmups, facts, args, seconds, args.figure, args.docs)
    raw = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "extra": extra,
        "facts": facts,
        "seconds": seconds,
        "warmups": [vars(w) for w in warmups],
        "results": results,
    }
    (out / "bench_learning.json").write_text(json.dumps(raw, indent=1, default=str))
    print("\n" + text)
    print(f"\nfigure: {args.figure}; per-run summaries and logs under {out}; total {seconds / 60:.1f} min")
    if args.docs is not None:
        write_section(args.docs, "bench_learning", DOC_TEXT + "\n" + text)
        print(f"wrote the bench_learning block of {args.docs}")


if __name__ == "__main__":
    main()
