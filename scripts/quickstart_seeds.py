"""Run the quickstart for several seeds, one after another, and report held-out accuracy before -> after.

    python scripts/quickstart_seeds.py --docs docs/benchmarks.md   # seeds 0 1 2 (about 15 minutes); writes
                                                                   # the `quickstart_seeds` block
    python scripts/quickstart_seeds.py --slowdown 1.0 1.4 --docs docs/benchmarks.md
                                       # every seed here, then on a simulated machine 40% slower (~30 min)
    python scripts/quickstart_seeds.py --quick                     # 1 seed, seconds (test suite)

Each seed is exactly the README's first command (``bnpo-trl quickstart --seed K``) in a fresh process, so
the wall time includes Python start-up, imports, model and data building, the warm-up, RL and saving. The
target of the quickstart is a gain of >= 40 held-out points within 5 minutes of wall time per seed; the
table says for each seed whether it was met, and which budget ended RL.

A slower machine (``--slowdown F``, F > 1) is simulated like ``cpulimit`` does (``scripts/cpu_throttle.py``):
the quickstart's processes are stopped and continued (SIGSTOP/SIGCONT) so they run 1/F of each 50 ms, and
its wall-clock budgets see a machine F times slower; a CPU-bound probe measures the slowdown actually got.
Factors run speed by speed, slowest last; factor F's runs go to ``<output-dir>/xF/seedK`` (1.0: ``seedK``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_throttle import PERIOD, Throttle, duty_cycle, measure_slowdown
from docs_section import write_section

ROOT = Path(__file__).resolve().parent.parent
TARGET_GAIN, TARGET_SECONDS = 0.40, 300.0
# --quick: a seconds-long version (tiny data, 2-s warm-up budget, 2 RL steps).
QUICK_OVERRIDES = [
    "--max_steps", "2", "--dataset_limit", "64", "--eval_dataset_limit", "16", "--per_device_train_batch_size", "16",
    "--sft_warmup_max_seconds", "2", "--sft_warmup_eval_steps", "1", "--sft_warmup_eval_limit", "8",
]  # fmt: skip


def quickstart_command(seed: int, output_dir: Path, extra: list[str]) -> list[str]:
    """The README's first command for ``seed``, writing into ``output_dir``."""
    cmd = [sys.executable, "-m", "bnpo_trl.cli", "quickstart", "--seed", str(seed)]
    return [*cmd, "--output_dir", str(output_dir), "--disable_tqdm", "true", *extra]


def seed_dir(out: Path, seed: int, slowdown: float = 1.0) -> Path:
    """``out/seedK`` on this machine, ``out/xF/seedK`` on the machine simulated ``F`` times slower."""
    return out / f"seed{seed}" if slowdown == 1.0 else out / f"x{slowdown:g}" / f"seed{seed}"


def run_seed(seed: int, output_dir: Path, extra: list[str], slowdown: float = 1.0) -> dict:
    """One quickstart in a fresh process (its own session, throttled ``slowdown`` times slower); -> its run
    summary plus the process's wall time."""
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        quickstart_command(seed, output_dir, extra),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, for the throttle (and not Ctrl-C: we stop it below)
    )
    try:
        with Throttle(proc.pid, slowdown):
            stdout, stderr = proc.communicate()
    except BaseException:  # Ctrl-C or a failed throttle: never leave the quickstart running on its own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    wall = time.perf_counter() - started
    (output_dir / "quickstart.log").write_text(stdout + stderr)
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    summary = json.loads((output_dir / "run_summary.json").read_text())
    summary["process_wall_seconds"] = wall
    return summary


def ended_by(summary: dict) -> str:
    """Which budget ended RL: the time budget, a step budget (if the quickstart reports one), else max_steps."""
    if summary.get("stopped_by_time_budget"):
        return "time budget"
    if summary.get("stopped_by_step_budget"):
        return "step budget"
    return "max_steps"


def heading(slowdown: float = 1.0, measured: float | None = None, period: float = PERIOD) -> str:
    """The line that says on which (simulated) machine a section's seeds ran."""
    if slowdown == 1.0:
        return "Machine speed: this machine"
    run, _ = duty_cycle(slowdown, period)
    probe = f"; a CPU-bound probe measured {measured:.2f}x slower" if measured is not None else ""
    return (
        f"Machine speed: {slowdown:g}x slower (simulated: SIGSTOP/SIGCONT duty cycle on the quickstart's processes, "
        f"{run / period:.0%} of each {period * 1000:.0f} ms{probe})"
    )


def table(summaries: list[dict], slowdown: float = 1.0, measured: float | None = None) -> str:
    """One factor's section: its heading, the per-seed table and the "Target met on k of n seeds" line."""
    lines = [
        heading(slowdown, measured),
        "",
        "| seed | warm-up: steps, its check's acc. (split), s | before RL | after RL | gain (points) | RL steps | "
        "ended by | wall time (whole process) | >= 40 points within 300 s |",
        "|---:|---|---:|---:|---:|---:|---|---:|---|",
    ]
    met = 0
    for s in summaries:
        warm = s.get("warmup") or {}
        gain = s["accuracy_after"] - s["accuracy_before"]
        ok = gain >= TARGET_GAIN and s["process_wall_seconds"] <= TARGET_SECONDS
        met += ok
        warm_cell = (
            f"{warm['steps']}, {warm['accuracy']:.1%} ({warm.get('check_split')}), {warm['seconds']:.0f} s"
            + ("" if warm.get("reached_target", True) else " (target not reached)")
            if warm
            else "-"
        )
        lines.append(
            f"| {s['seed']} | {warm_cell} | {s['accuracy_before']:.1%} | {s['accuracy_after']:.1%} | "
            f"{gain * 100:+.1f} | {s['steps']} | {ended_by(s)} | {s['process_wall_seconds']:.0f} s | "
            f"{'yes' if ok else 'no'} |"
        )
    gains = [100 * (s["accuracy_after"] - s["accuracy_before"]) for s in summaries]
    lines += [
        "",
        f"Target met on {met} of {len(summaries)} seeds; gains {', '.join(f'{g:+.1f}' for g in gains)} points "
        f"(mean {sum(gains) / len(gains):+.1f}).",
    ]
    return "\n".join(lines)


def slowdown_factor(text: str) -> float:
    """``--slowdown`` values: finite factors >= 1 (1.4: a machine 40% slower)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 1.0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text} is not a factor >= 1 (a slower machine; 1.0 is this one)")
    return value


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """-> (the script's options, the rest: passed on to every quickstart)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--slowdown",
        nargs="+",
        type=slowdown_factor,
        default=[1.0],
        metavar="F",
        help="machine speeds to run every seed at: 1.0 this machine, 1.4 one simulated 40%% slower "
        "(SIGSTOP/SIGCONT duty cycle, scripts/cpu_throttle.py); default 1.0",
    )
    parser.add_argument("--output-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--docs", help="write the tables into this markdown file (e.g. docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny data, 2 RL steps")
    args, extra = parser.parse_known_args(argv)
    args.slowdown = sorted(set(args.slowdown))  # speed by speed, this machine first
    if args.quick:
        args.seeds, extra = args.seeds[:1], QUICK_OVERRIDES + extra
    return args, extra


def main(argv: list[str] | None = None) -> str:
    args, extra = parse_args(argv)
    load = os.getloadavg()[0]
    sections = []
    with tempfile.TemporaryDirectory(prefix="bnpo_quickstart_") as tmp:
        out = Path(args.output_dir or tmp)
        for factor in args.slowdown:
            measured = None
            if factor != 1.0:
                measured = measure_slowdown(factor, seconds=0.5 if args.quick else 2.0)
                print(f"{factor:g}x: a CPU-bound probe ran {measured:.2f}x slower", file=sys.stderr)
            summaries = []
            for seed in args.seeds:
                summaries.append(run_seed(seed, seed_dir(out, seed, factor), extra, factor))
                wall = summaries[-1]["process_wall_seconds"]
                print(f"{factor:g}x: seed {seed} done in {wall:.0f} s", file=sys.stderr)
            sections.append(table(summaries, factor, measured))
    names = ["this machine" if f == 1.0 else f"{f:g}x slower" for f in args.slowdown]
    speeds = f" speed by speed ({', then '.join(names)})" if args.slowdown != [1.0] else ""
    body = (
        f"`bnpo-trl quickstart --seed K` (configs/quickstart.yaml{', ' + ' '.join(extra) if extra else ''}), "
        f"each seed in a fresh process, one after another{speeds}; 1-min load average {load:.2f} at the start.\n\n"
        + "\n\n".join(sections)
    )
    print(body)
    if args.docs:
        write_section(args.docs, "quickstart_seeds", body)
    return body


if __name__ == "__main__":
    main()
