"""scripts/bench_learning.py: its metrics on hand-made run summaries, and its --quick form end to end
(warm-up, two normalizers through the real entry point, table, figure, docs block)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.script_utils import bench_learning_facts

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_learning.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_learning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_learning"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fake_summary(curve, grads, rl_seconds=10.0):
    log = [{"grad_norm": g, "step": i + 1} for i, g in enumerate(grads)]
    log.insert(1, {"heldout/accuracy": curve[1][1], "step": curve[1][0]})  # entries without grad_norm
    return {
        "heldout_curve": curve,
        "accuracy_before": curve[0][1],
        "accuracy_after": curve[-1][1],
        "log_history": log,
        "rl_seconds": rl_seconds,
        "bench_wall_seconds": rl_seconds + 2,
        "bench_cpu_seconds": rl_seconds,
        "steps": curve[-1][0],
    }


def test_steps_to_threshold(bench):
    curve = [(0, 0.2), (10, 0.45), (20, 0.5), (30, 0.7)]
    assert bench.steps_to_threshold(curve, 0.5) == 20  # >= counts
    assert bench.steps_to_threshold(curve, 0.2) == 0
    assert bench.steps_to_threshold(curve, 0.9) is None


def test_paired_difference_uses_student_t(bench):
    def runs(finals):
        return [{"final": f} for f in finals]

    base = runs([0.5, 0.5, 0.5])
    assert bench.paired_difference(runs([0.6, 0.6, 0.6]), base) == "+10.0 ± 0.0 *"
    # mean 10 points, std 5: t = 10 / (5 / sqrt 3) = 3.46 < 4.30 -> not marked
    assert bench.paired_difference(runs([0.55, 0.6, 0.65]), base) == "+10.0 ± 5.0"
    assert bench.paired_difference(runs([0.6]), base[:1]) == "-"
    assert bench.t_critical(2) == 4.303 and bench.t_critical(12) == 2.228


def test_mean_std(bench):
    assert bench.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std
    assert bench.mean_std([0.4]) == (0.4, 0.0)
    assert bench.mean_std([1.0, math.nan, 3.0]) == (2.0, math.sqrt(2))
    assert all(math.isnan(x) for x in bench.mean_std([]))


def test_run_metrics_reads_grad_norm_of_every_step(bench):
    m = bench.run_metrics(fake_summary([(0, 0.2), (2, 0.4), (4, 0.6)], [1.0, 3.0, 1.0, 3.0]), 0.5)
    assert m["reached"] == 4 and m["start"] == 0.2 and m["final"] == 0.6
    assert m["grad_steps"] == 4 and m["grad_mean"] == 2.0
    assert m["grad_std"] == pytest.approx(math.sqrt(4 / 3))


def test_report_table_and_paired_comparison(bench, tmp_path):
    import argparse

    curves = {
        "a": [
            [(0, 0.2), (5, 0.5), (10, 0.8)],
            [(0, 0.3), (5, 0.6), (10, 0.9)],
            [(0, 0.1), (5, 0.3), (10, 0.7)],
        ],
        "b": [
            [(0, 0.2), (5, 0.2), (10, 0.3)],
            [(0, 0.3), (5, 0.3), (10, 0.4)],
            [(0, 0.1), (5, 0.1), (10, 0.2)],
        ],
    }
    results = {
        name: [bench.run_metrics(fake_summary(c, [0.5] * 10), 0.5) for c in runs]
        for name, runs in curves.items()
    }
    warmups = [bench.Warmup(s, "x", 100, 50.0, acc, True, 0.2) for s, acc in enumerate([0.2, 0.3, 0.1])]
    facts = bench_learning_facts()
    args = argparse.Namespace(
        threshold=0.5, max_steps=10, eval_every=5, config_label="configs/quickstart.yaml"
    )
    figure = tmp_path / "figures" / "curves.png"
    text = bench.report(results, warmups, facts, args, 120.0, figure, tmp_path / "bench.md")
    # no `group` among them: the first normalizer is the reference of the paired column
    assert "| a | 80.0 ± 10.0 | 60.0 ± 0.0 | - | 5 / 5 / 10 | 3/3 |" in text
    assert "| b | 30.0 ± 10.0 | 10.0 ± 0.0 | -50.0 ± 0.0 * | - / - / - | 0/3 |" in text
    assert "| 5 | 46.7 ± 15.3 | 20.0 ± 10.0 |" in text
    assert "t = 4.30 with 2 degree(s) of freedom" in text
    assert "](figures/curves.png)" in text  # relative to the docs file
    bench.plot(results, 0.5, figure)
    assert figure.stat().st_size > 1000


def test_recipe_fields_it_sets_cannot_be_passed_through():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--max_steps", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "max_steps" in proc.stderr


def test_refuses_to_clear_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "not written by this script" in proc.stderr
    assert (tmp_path / "keep.txt").exists()


@pytest.mark.slow
def test_bench_learning_quick_end_to_end(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# B\n\n<!-- bench_normalizers -->\nkept\n<!-- /bench_normalizers -->\n")
    out_dir = tmp_path / "runs"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--output-dir", str(out_dir), "--docs", str(docs)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| normalizer | final accuracy |" in proc.stdout and "| bnpo |" in proc.stdout
    text = docs.read_text()
    assert text.startswith("# B\n\n<!-- bench_normalizers -->\nkept\n<!-- /bench_normalizers -->\n")
    assert text.count("<!-- bench_learning -->") == 1 and "Generated by `python " in text
    assert "| group |" in text and "](runs/learning_curves.png)" in text
    raw = json.loads((out_dir / "bench_learning.json").read_text())
    assert list(raw["results"]) == ["bnpo", "group"] and len(raw["warmups"]) == 1
    for name in ("bnpo", "group"):
        summary = json.loads((out_dir / "seed0" / name / "run_summary.json").read_text())
        assert summary["normalizer"] == name and summary["steps"] == 3
        assert [s for s, _ in summary["heldout_curve"]] == [0, 2, 3]
        assert sum("grad_norm" in e for e in summary["log_history"]) == 3  # logging_steps=1
    # Both normalizers started from the same warm start: same accuracy at step 0.
    starts = {r[0]["start"] for r in raw["results"].values()}
    assert len(starts) == 1
    assert (out_dir / "learning_curves.png").stat().st_size > 1000
