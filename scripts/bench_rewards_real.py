"""Benchmark: answer checkers on real data, in one run — bnpo_trl's `accuracy`, TRL's
`trl.rewards.accuracy_reward` (gold in `solution`) and raw math-verify (`verify(parse(gold), parse(text))`,
its defaults) on the sets of `../shared/data/real-math/` (its README describes them): golds echoed back and
wrong answers, meaning-preserving rewrites of the golds, real model completions, human reference solutions.

    python scripts/bench_rewards_real.py --real-data ../shared/data/real-math [--docs docs/benchmarks.md]

Prints per set and checker: right / rows, accuracy, false positives (a wrong answer scored 1). With
``--docs`` the same text replaces the ``bench_rewards_real`` block of that file (scripts/docs_section.py).
A separate script, not a mode of bench_rewards.py, because that one is about speed on generated batches.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section

#: set -> (file, row filter)
SETS: dict[str, tuple[str, Callable[[dict], bool]]] = {
    "golds echoed + wrong answers": ("gold_echo.jsonl.gz", lambda r: r["group"] == "core"),
    "rewrites of the golds": ("gold_echo.jsonl.gz", lambda r: r["group"] == "variant"),
    "real completions": ("real_completions.jsonl.gz", lambda r: r["set"] == "real"),
    "reference solutions": ("real_completions.jsonl.gz", lambda r: r["set"] == "refsol"),
}


def load_sets(folder: Path) -> dict[str, list[dict]]:
    out = {}
    for name, (file, keep) in SETS.items():
        with gzip.open(folder / file, "rt", encoding="utf-8") as f:
            out[name] = [row for row in map(json.loads, f) if keep(row)]
    return out


def ours(rows: list[dict]) -> list[float]:
    from bnpo_trl.rewards import accuracy

    return [s or 0.0 for s in accuracy([r["completion"] for r in rows], answer=[r["gold"] for r in rows])]


def trl_reward(rows: list[dict]) -> list[float]:
    from trl.rewards import accuracy_reward

    solutions = [str(r["gold"]) for r in rows]
    completions = [[{"role": "assistant", "content": r["completion"]}] for r in rows]
    return [s or 0.0 for s in accuracy_reward(completions, solutions)]


def raw_math_verify(rows: list[dict]) -> list[float]:
    from math_verify import parse, verify

    return [float(verify(parse(str(r["gold"])), parse(r["completion"]))) for r in rows]


CHECKERS = {"bnpo_trl accuracy": ours, "TRL accuracy_reward": trl_reward, "raw math-verify": raw_math_verify}


def table(sets: dict[str, list[dict]], checkers: dict[str, Callable]) -> list[str]:
    """Markdown lines: one row per set, per checker `right/rows (accuracy), FP false positives`."""
    lines = ["| set | rows | " + " | ".join(checkers) + " |", "|---|---:|" + "---:|" * len(checkers)]
    for name, rows in sets.items():
        cells = []
        for check in checkers.values():
            scores = check(rows)
            right = sum(s == r["expected"] for s, r in zip(scores, rows, strict=True))
            wrong_accepted = sum(s == 1.0 and r["expected"] == 0 for s, r in zip(scores, rows, strict=True))
            cells.append(f"{right}/{len(rows)} ({right / len(rows):.3f}), {wrong_accepted} FP")
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-data", type=Path, required=True, help="the real-math folder")
    parser.add_argument("--docs", type=Path, help="write the bench_rewards_real block of this markdown file")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # math-verify logs every failed parse
    sets = load_sets(args.real_data)
    lines = [*table(sets, CHECKERS), ""]
    lines.append(
        "FP: false positives, wrong answers scored 1. Accuracy: right / rows, expected label as stored."
    )
    print("\n".join(lines), flush=True)
    if args.docs:
        write_section(args.docs, "bench_rewards_real", "\n".join(lines))
        print(f"wrote the bench_rewards_real block of {args.docs}", file=sys.stderr)


if __name__ == "__main__":
    main()
