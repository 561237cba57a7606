"""Run the quickstart for several seeds, one after another, and report held-out accuracy before -> after.

    python scripts/quickstart_seeds.py --docs docs/benchmarks.md   # seeds 0 1 2 (about 15 minutes); writes
                                                                   # the `quickstart_seeds` block
    python scripts/quickstart_seeds.py --quick                     # 1 seed, seconds (test suite)

Each seed is exactly the README's first command (``bnpo-trl quickstart --seed K``) in a fresh process, so
the wall time includes Python start-up, imports, model and data building, the warm-up, RL and saving. The
target of the quickstart is a gain of >= 40 held-out points within 5 minutes of wall time per seed; the
table says for each seed whether it was met.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section

ROOT = Path(__file__).resolve().parent.parent
TARGET_GAIN, TARGET_SECONDS = 0.40, 300.0
# --quick: a seconds-long version (tiny data, 2-s warm-up budget, 2 RL steps).
QUICK_OVERRIDES = [
    "--max_steps", "2", "--dataset_limit", "64", "--eval_dataset_limit", "16", "--per_device_train_batch_size", "16",
    "--sft_warmup_max_seconds", "2", "--sft_warmup_eval_steps", "1", "--sft_warmup_eval_limit", "8",
]  # fmt: skip


def run_seed(seed: int, output_dir: Path, extra: list[str]) -> dict:
    """One quickstart in a fresh process; -> its run summary plus the process's wall time."""
    cmd = [sys.executable, "-m", "bnpo_trl.cli", "quickstart", "--seed", str(seed)]
    cmd += ["--output_dir", str(output_dir), "--disable_tqdm", "true", *extra]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (output_dir / "quickstart.log").parent.mkdir(parents=True, exist_ok=True)
    (output_dir / "quickstart.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((output_dir / "run_summary.json").read_text())
    summary["process_wall_seconds"] = wall
    return summary


def table(summaries: list[dict]) -> str:
    lines = [
        "| seed | warm-up: steps, its check's acc. (split), s | before RL | after RL | gain (points) | RL steps | "
        "wall time (whole process) | >= 40 points within 300 s |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    met = 0
    for s in summaries:
        warm = s.get("warmup") or {}
        gain = s["accuracy_after"] - s["accuracy_before"]
        ok = gain >= TARGET_GAIN and s["process_wall_seconds"] <= TARGET_SECONDS
        met += ok
        stop = ", time budget" if s.get("stopped_by_time_budget") else ""
        warm_cell = (
            f"{warm['steps']}, {warm['accuracy']:.1%} ({warm.get('check_split')}), {warm['seconds']:.0f} s"
            + ("" if warm.get("reached_target", True) else " (target not reached)")
            if warm
            else "-"
        )
        lines.append(
            f"| {s['seed']} | {warm_cell} | {s['accuracy_before']:.1%} | {s['accuracy_after']:.1%} | "
            f"{gain * 100:+.1f} | {s['steps']}{stop} | {s['process_wall_seconds']:.0f} s | {'yes' if ok else 'no'} |"
        )
    gains = [100 * (s["accuracy_after"] - s["accuracy_before"]) for s in summaries]
    lines += [
        "",
        f"Target met on {met} of {len(summaries)} seeds; gains {', '.join(f'{g:+.1f}' for g in gains)} points "
        f"(mean {sum(gains) / len(gains):+.1f}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--docs", help="write the table into this markdown file (e.g. docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny data, 2 RL steps")
    args, extra = parser.parse_known_args(argv)
    if args.quick:
        args.seeds, extra = args.seeds[:1], QUICK_OVERRIDES + extra
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bnpo_quickstart_") as tmp:
        out = Path(args.output_dir or tmp)
        summaries = []
        for seed in args.seeds:
            summaries.append(run_seed(seed, out / f"seed{seed}", extra))
            print(f"seed {seed} done in {summaries[-1]['process_wall_seconds']:.0f} s", file=sys.stderr)
    body = (
        f"`bnpo-trl quickstart --seed K` (configs/quickstart.yaml{', ' + ' '.join(extra) if extra else ''}), "
        f"each seed in a fresh process, one after another; 1-min load average {load:.2f} at the start.\n\n"
        + table(summaries)
    )
    print(body)
    if args.docs:
        write_section(args.docs, "quickstart_seeds", body)
    return body


if __name__ == "__main__":
    main()
