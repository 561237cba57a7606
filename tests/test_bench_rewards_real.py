"""scripts/bench_rewards_real.py on a made-up folder in the real-math layout: every checker's row counts,
and ``--docs`` writes what it printed into the block."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def test_bench_rewards_real_counts_right_answers_and_false_positives(tmp_path: Path) -> None:
    box = "The final answer is $\\boxed{%s}$."
    _write(
        tmp_path / "gold_echo.jsonl.gz",
        [
            {"uid": "a", "group": "core", "gold": "12", "completion": box % "12", "expected": 1},
            {"uid": "b", "group": "core", "gold": "12", "completion": box % "13", "expected": 0},
            {"uid": "c", "group": "variant", "gold": "284", "completion": box % "284.", "expected": 1},
        ],
    )
    _write(
        tmp_path / "real_completions.jsonl.gz",
        [
            {"uid": "d", "set": "real", "gold": 27.0, "completion": box % "27", "expected": 1},
            {"uid": "e", "set": "refsol", "gold": "\\frac{1}{2}", "completion": box % "0.5", "expected": 1},
        ],
    )
    docs = tmp_path / "b.md"
    docs.write_text("# B\n\n<!-- bench_rewards_real -->\nNot generated yet.\n<!-- /bench_rewards_real -->\n")
    cmd = [sys.executable, "scripts/bench_rewards_real.py", "--real-data", str(tmp_path), "--docs", str(docs)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in proc.stdout.splitlines() if line.startswith("| ")
    }
    assert rows["golds echoed + wrong answers"].startswith(
        "| golds echoed + wrong answers | 2 | 2/2 (1.000), 0 FP"
    )
    assert "| rewrites of the golds | 1 | 1/1 (1.000), 0 FP" in rows["rewrites of the golds"]
    assert rows["real completions"].count("1/1 (1.000)") >= 1
    assert "Not generated yet" not in docs.read_text() and rows["reference solutions"] in docs.read_text()
