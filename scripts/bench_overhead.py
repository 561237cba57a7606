"""Step-time overhead of ``NormalizedGRPOTrainer`` over TRL's ``GRPOTrainer`` on the tiny offline model (CPU).

    python scripts/bench_overhead.py                 # 16 rounds x 20 timed steps per trainer; writes the
                                                     # bench_overhead block of docs/benchmarks.md
    python scripts/bench_overhead.py --quick         # 1 round x 3 steps, prints only (test suite)
    python scripts/bench_overhead.py --rounds 8 --batch-size 64 --group-size 8 --completion-length 32 \
        --shadows group,ebpo,bnpo --section bench_overhead_shadows   # the shadows' share of a step

A = ``NormalizedGRPOTrainer`` with ``advantage_normalizer="group"``, B = ``trl.GRPOTrainer`` with
``scale_rewards="group"``: the same advantages, so with the same seed both runs generate the same
completions and take the same steps (checked: the logged rewards must match). The runs alternate
A B A B ... in one process; each run drops its first ``--warmup`` steps. A step is the time between
consecutive ``on_step_begin`` callbacks (generation, reward, advantages, loss, backward, optimizer,
logging), measured as wall time and as process CPU time (``time.process_time``, which a busy shared
machine disturbs less: time spent waiting for a core is not counted). TRL's own ``step_time`` metric
(wall time of ``training_step`` only) is reported too, and so is the ratio of the 10% quantiles (fast
steps, the least disturbed by other processes). In A, the three things it does that B does not - the
normalizer call, the extra logging (``_log_normalizer``) and the ``gather_object`` of the data sources -
are timed one by one to give their share of a step. With ``--shadows group,ebpo,bnpo`` A also runs those
shadow normalizers, timed the same way (goal: they add < 1% of a step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import AutoModelForCausalLM, TrainerCallback
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging
from trl import GRPOConfig, GRPOTrainer

import bnpo_trl.trainer as trainer_module
from bnpo_trl import NormalizedGRPOConfig, NormalizedGRPOTrainer
from bnpo_trl.models import load_plain_tokenizer
from bnpo_trl.tiny_model import tiny_model_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section

ROOT = Path(__file__).resolve().parent.parent
NOISE_LIMIT = 0.03  # an interval wider than +-3% cannot resolve the goal (ratio <= 1.03) on its own
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def parity_reward(completions: list, **kwargs: Any) -> list[float]:
    """1.0 when the completion has an even number of characters: cheap, deterministic, mixed outcomes."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(len(t) % 2 == 0) for t in texts]


def prompts(n: int) -> Dataset:
    rows = [{"prompt": [{"role": "user", "content": f"What is {i + 10} + {i + 3}?"}]} for i in range(n)]
    return Dataset.from_list(rows)


def now() -> dict[str, float]:
    return {name: clock() for name, clock in CLOCKS.items()}


def since(start: dict[str, float]) -> dict[str, float]:
    return {name: clock() - start[name] for name, clock in CLOCKS.items()}


class StepClock(TrainerCallback):
    """Reads both clocks at every ``on_step_begin``."""

    def __init__(self) -> None:
        self.stamps: list[dict[str, float]] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.stamps.append(now())


class Timed:
    """Wraps a callable (the trainer's normalizer or a bound method): same calls and attributes, plus the
    wall and CPU time of every call in ``self.seconds``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: list[dict[str, float]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = now()
        out = self.inner(*args, **kwargs)
        self.seconds.append(since(start))
        return out

    def __getattr__(self, name: str) -> Any:  # last_stats, state_dict, ...
        return getattr(self.inner, name)


@dataclass
class Run:
    kind: str  # "A" (NormalizedGRPOTrainer) or "B" (GRPOTrainer)
    steps: list[dict[str, float]]  # {"wall", "cpu"} seconds per timed step
    trl_step_s: list[float]  # TRL's step_time metric of the timed steps
    rewards: list[float]  # logged mean reward of every step
    normalizer: list[dict[str, float]] = field(default_factory=list)  # A only, timed steps
    log: list[dict[str, float]] = field(default_factory=list)  # A only: _log_normalizer, timed steps
    gather: list[dict[str, float]] = field(default_factory=list)  # A only: gather_object of the sources
    shadows: list[dict[str, float]] = field(default_factory=list)  # A only: the shadow normalizers

    def get(self, what: str, clock: str) -> list[float]:
        return [s[clock] for s in getattr(self, what)]


def run_once(kind: str, model_path: str, tokenizer: Any, args: argparse.Namespace, out_dir: str) -> Run:
    common = dict(
        output_dir=out_dir,
        bf16=False,
        use_cpu=True,
        report_to="none",
        num_generations=args.group_size,
        per_device_train_batch_size=args.batch_size,
        max_completion_length=args.completion_length,
        max_steps=args.warmup + args.steps + 1,  # +1: a step is timed up to the next step's start
        logging_steps=1,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        save_strategy="no",
        seed=args.seed,
        temperature=1.0,
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(model_path)
    clock = StepClock()
    if kind == "A":
        trainer_cls, config = (
            NormalizedGRPOTrainer,
            NormalizedGRPOConfig(advantage_normalizer="group", shadow_normalizers=args.shadows, **common),
        )
    else:
        trainer_cls, config = GRPOTrainer, GRPOConfig(scale_rewards="group", **common)
    trainer = trainer_cls(
        model,
        parity_reward,
        args=config,
        train_dataset=prompts(64),
        processing_class=tokenizer,
        callbacks=[clock],
    )
    trainer.remove_callback(PrinterCallback)  # no per-step log lines on stdout
    timers: dict[str, Timed] = {}
    if kind == "A":  # time the three things A does that B does not (TRL's own advantages still run in A)
        trainer.normalizer = timers["normalizer"] = Timed(trainer.normalizer)
        trainer._log_normalizer = timers["log"] = Timed(trainer._log_normalizer)
        trainer_module.gather_object = timers["gather"] = Timed(gather_object)
        if trainer.shadows:
            trainer.shadows.observe = timers["shadows"] = Timed(trainer.shadows.observe)
    try:
        trainer.train()
    finally:
        trainer_module.gather_object = gather_object

    w, n = args.warmup, args.steps
    stamps = clock.stamps
    steps = [{c: stamps[i + 1][c] - stamps[i][c] for c in CLOCKS} for i in range(w, w + n)]
    history = [e for e in trainer.state.log_history if "step_time" in e]
    run = Run(kind, steps, [e["step_time"] for e in history][w : w + n], [e["reward"] for e in history])
    for name, timer in timers.items():
        setattr(run, name, timer.seconds[w : w + n])
    return run


# ---------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------
def pooled(runs: list[Run], what: str, clock: str) -> list[float]:
    return [s for r in runs for s in r.get(what, clock)]


def quantile(values: list[float], q: float) -> float:
    return torch.tensor(values, dtype=torch.float64).quantile(q).item()


def ratio(a_runs: list[Run], b_runs: list[Run], clock: str, q: float) -> float:
    """q-quantile of A's step times / q-quantile of B's, pooled over the runs given."""
    return quantile(pooled(a_runs, "steps", clock), q) / quantile(pooled(b_runs, "steps", clock), q)


def bootstrap_rounds(a_runs: list[Run], b_runs: list[Run], clock: str, q: float, boots: int, seed: int):
    """95% interval of the pooled ratio, resampling whole A B rounds (the machine's load drifts)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(a_runs)
    ratios = []
    for _ in range(boots):
        idx = torch.randint(0, n, (n,), generator=gen).tolist()
        ratios.append(ratio([a_runs[i] for i in idx], [b_runs[i] for i in idx], clock, q))
    return quantile(ratios, 0.025), quantile(ratios, 0.975)


def verdict(lo: float, hi: float, rounds: int) -> str:
    """The goal ratio <= 1.03 against the 95% interval."""
    if rounds < 3:
        return "not judged (< 3 rounds)"
    if hi <= 1.03:
        return "met"
    return "not met" if lo > 1.03 else "undecided (interval contains 1.03)"


def report(runs: list[Run], args: argparse.Namespace, seconds: float, load: tuple[float, float]) -> str:
    a_runs, b_runs = [r for r in runs if r.kind == "A"], [r for r in runs if r.kind == "B"]
    same = all(x.rewards == y.rewards for x, y in zip(a_runs, b_runs, strict=True))
    ms = 1e3
    lines = [
        f"Setup: {len(a_runs)} round(s) A B, {args.steps} timed steps per run after {args.warmup} warm-up step(s); "
        f"{args.batch_size} completions per step ({args.batch_size // args.group_size} prompts x G = "
        f"{args.group_size}), up to {args.completion_length} tokens; seed {args.seed}; 1-min load average "
        f"{load[0]:.1f} at the start and {load[1]:.1f} at the "
        f"end; {seconds:.0f} s in all. Same rewards logged by A and B at every step: "
        f"{'yes' if same else 'NO'}.",
        "",
        "| trainer | steps | wall: median (p10 - p90) ms | CPU: median (p10 - p90) ms "
        "| TRL step_time median ms |",
        "|---|---:|---|---|---:|",
    ]
    for name, group in (("A: NormalizedGRPOTrainer (group)", a_runs), ("B: GRPOTrainer (group)", b_runs)):
        cells = []
        for clock in CLOCKS:
            steps = pooled(group, "steps", clock)
            q10, q50, q90 = (quantile(steps, q) * ms for q in (0.1, 0.5, 0.9))
            cells.append(f"{q50:.1f} ({q10:.1f} - {q90:.1f})")
        trl = statistics.median(s for r in group for s in r.trl_step_s) * ms
        lines.append(f"| {name} | {len(pooled(group, 'steps', 'wall'))} | {' | '.join(cells)} | {trl:.1f} |")
    lines += [
        "",
        "| step-time ratio A / B | estimate | 95% interval (bootstrap over rounds) | interval half-width "
        "| per round: min - max | goal <= 1.03 |",
        "|---|---:|---|---:|---|---|",
    ]
    intervals = {}
    for q, label in ((0.5, "median"), (0.1, "p10")):
        for clock in CLOCKS:
            est = ratio(a_runs, b_runs, clock, q)
            lo, hi = bootstrap_rounds(a_runs, b_runs, clock, q, 1000, args.seed)
            intervals[(q, clock)] = (est, (lo, hi))
            rounds = [ratio([x], [y], clock, q) for x, y in zip(a_runs, b_runs, strict=True)]
            lines.append(
                f"| {label}, {clock} | **{est:.3f}** | [{lo:.3f}, {hi:.3f}] | {(hi - lo) / 2:.1%} "
                f"| {min(rounds):.3f} - {max(rounds):.3f} | {verdict(lo, hi, len(a_runs))} |"
            )
    trl_a, trl_b = ([s for r in g for s in r.trl_step_s] for g in (a_runs, b_runs))
    trl_ratio = statistics.median(trl_a) / statistics.median(trl_b)
    lines += ["", f"TRL `step_time` (wall, `training_step` only), median ratio A / B: {trl_ratio:.3f}.", ""]
    lines += [
        "Work A adds to a step, timed inside A (median per step, and as a share of A's median step):",
        "",
        "| part | wall ms | share | CPU ms | share |",
        "|---|---:|---:|---:|---:|",
    ]
    total = dict.fromkeys(CLOCKS, 0.0)
    parts = [
        ("normalizer", "normalizer call (`group`)"),
        ("log", "`_log_normalizer` (extra metrics)"),
        ("gather", "`gather_object` of the data sources"),
    ]
    if args.shadows:
        parts.append(("shadows", f"shadow normalizers ({args.shadows.replace(',', ', ')})"))
    for what, label in parts:
        cells = []
        for clock in CLOCKS:
            value = statistics.median(pooled(a_runs, what, clock))
            total[clock] += value
            cells.append(
                f"{value * ms:.3f} | {value / statistics.median(pooled(a_runs, 'steps', clock)):.2%}"
            )
        lines.append(f"| {label} | {' | '.join(cells)} |")
    cells = [
        f"{total[c] * ms:.3f} | {total[c] / statistics.median(pooled(a_runs, 'steps', c)):.2%}"
        for c in CLOCKS
    ]
    lines.append(f"| **sum** | {' | '.join(cells)} |")
    share = total["cpu"] / statistics.median(pooled(a_runs, "steps", "cpu"))
    est, (lo, hi) = intervals[(0.5, "cpu")]
    noisy = sum((b - a) / 2 > NOISE_LIMIT for _, (a, b) in intervals.values())
    summary = f"Summary: the work A adds is {share:.2%} of its CPU time per step, timed directly. "
    if len(a_runs) < 3:
        summary += "Fewer than 3 rounds: no end-to-end interval."
    else:
        summary += (
            f"End to end, the median CPU-time ratio is {est:.3f} [{lo:.3f}, {hi:.3f}], "
            f"{'consistent' if lo <= 1 + share <= hi else 'NOT consistent'} with 1 + {share:.2%}. "
            f"{noisy} of the {len(intervals)} end-to-end intervals are wider than +-3% (the noise of this "
            "shared machine: see the load average and the per-round spread)."
        )
    lines += ["", summary]
    if args.shadows:
        shadow_share = statistics.median(pooled(a_runs, "shadows", "cpu")) / statistics.median(
            pooled(a_runs, "steps", "cpu")
        )
        lines += [
            "",
            f"Shadow normalizers ({args.shadows}): {shadow_share:.2%} of A's CPU time per step of "
            f"{args.batch_size} completions x up to {args.completion_length} tokens, timed directly (goal < 1%: "
            f"{'met' if shadow_share < 0.01 else 'not met'}; their cost is about constant per step, so the share "
            "falls as steps grow).",
        ]
    return "\n".join(lines)


DOC_TEXT = """`python scripts/bench_overhead.py` times `NormalizedGRPOTrainer` (`advantage_normalizer="group"`, A)
against TRL's `GRPOTrainer` (`scale_rewards="group"`, B) on the tiny offline model, alternating runs in one
process with the same seed (the script's docstring says what a step includes). The tiny model makes a
step as short as it gets, so the relative overhead here is an upper bound for real models. Wall time is
what a user waits; CPU time excludes the time the process waited for a core on a shared machine.
"""
SHADOW_TEXT = """With `--shadows`, A also runs shadow normalizers (each computes advantages every step from the same
rewards without training on them), so the ratio A / B includes them; their own share is the "shadow
normalizers" row.
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=16, help="A B pairs of runs")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps per run")
    parser.add_argument("--batch-size", type=int, default=8, help="completions per step")
    parser.add_argument("--group-size", type=int, default=4, help="num_generations")
    parser.add_argument("--completion-length", type=int, default=16, help="max_completion_length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shadows", default="", help="shadow normalizers of A, comma-separated (default: none)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    parser.add_argument(
        "--docs", type=Path, default=None, help="default: docs/benchmarks.md (full run); --quick: none"
    )
    parser.add_argument("--quick", action="store_true", help="1 round x 3 steps (test suite)")
    parser.add_argument(
        "--section",
        default="bench_overhead",
        help="the docs block to write (bench_overhead_shadows: larger steps)",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.warmup, args.completion_length = 1, 3, 1, 8
    elif args.docs is None:
        args.docs = ROOT / "docs" / "benchmarks.md"
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)

    model_path = tiny_model_path()
    tokenizer = load_plain_tokenizer(model_path)
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for kind in "AB":
                runs.append(run_once(kind, model_path, tokenizer, args, f"{tmp}/{kind}{i}"))
                median_ms = statistics.median(runs[-1].get("steps", "wall")) * 1e3
                print(
                    f"round {i + 1}/{args.rounds} {kind}: median step {median_ms:.1f} ms (wall)", flush=True
                )
    text = report(runs, args, time.perf_counter() - start, (load_start, os.getloadavg()[0]))
    print("\n" + text)
    if args.docs is not None:
        write_section(args.docs, args.section, DOC_TEXT + (SHADOW_TEXT if args.shadows else "") + "\n" + text)
        print(f"\nwrote the {args.section} block of {args.docs}")


if __name__ == "__main__":
    main()
