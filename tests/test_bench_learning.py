"""scripts/bench_learning.py and scripts/learning_report.py: metrics, tables and verdicts on hand-made run
records, and the --quick form end to end (warm-up, two arms through the real entry point, resume)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.script_utils import (
    SOURCES,
    learning_args,
    learning_facts,
    learning_record,
    learning_warmups,
    load_script,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_learning.py"


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_learning")


@pytest.fixture(scope="module")
def report():
    return load_script("learning_report")


def made_up_runs(seeds=8):
    """`better` is group + 10 points on every seed (noise 1 point), `worse` group - 10, `same` group + noise of
    3 points around 0: the verdicts are known."""
    rng = random.Random(0)
    runs = []
    for g in (4, 8):
        for seed in range(seeds):
            base = 0.4 + 0.02 * seed
            runs.append(learning_record("group", seed, g, base))
            runs.append(learning_record("better", seed, g, base + 0.10 + rng.uniform(-0.01, 0.01)))
            runs.append(learning_record("worse", seed, g, base - 0.10 + rng.uniform(-0.01, 0.01)))
            runs.append(learning_record("same", seed, g, base + rng.uniform(-0.03, 0.03)))
    return runs


def args(seeds=8):
    return learning_args(["group", "better", "worse", "same"], seeds)


def warmups(seeds=8):
    return learning_warmups(seeds)


def facts():
    return learning_facts()


@pytest.mark.parametrize(
    "curve, area",
    [
        ([(0, 0.2), (10, 0.4), (20, 0.4)], 0.35),  # (10 * 0.3 + 10 * 0.4) / 20
        ([(0, 0.5), (30, 0.5)], 0.5),
        ([(0, 0.0), (5, 1.0), (10, 0.0)], 0.5),  # a triangle
        ([(0, 0.7)], 0.7),
    ],
)
def test_learning_curve_area_by_hand(bench, curve, area):
    assert bench.learning_curve_area(curve) == pytest.approx(area)


def test_run_metrics_reads_the_summary(bench):
    log = [{"grad_norm": 1.0, "normalizer/zero_signal_fraction": 0.5}, {"heldout/accuracy": 0.3}]
    log += [{"grad_norm": 3.0, "normalizer/zero_signal_fraction": 0.25}]
    summary = {
        "log_history": log,
        "steps": 20,
        "accuracy_before": 0.2,
        "accuracy_after": 0.6,
        "accuracy_before_by_source": {"a": 0.1},
        "accuracy_after_by_source": {"a": 0.5},
        "heldout_curve": [(0, 0.2), (10, 0.4), (20, 0.6)],
        "heldout_curve_by_source": [[0, {"a": 0.1}]],
    }
    unit = {"key": "seed1/G4/x", "arm": "x", "seed": 1, "group_size": 4}
    m = bench.run_metrics(unit, summary, 12.0, 10.0)
    assert (m["start"], m["final"], m["grad_norm"], m["zero_signal"]) == (0.2, 0.6, 2.0, 0.375)
    assert m["auc"] == pytest.approx(0.4) and m["final_by_source"] == {"a": 0.5}
    assert m["curve"] == [[0, 0.2], [10, 0.4], [20, 0.6]]


def test_results_file_skips_a_torn_line(bench, tmp_path):
    path = tmp_path / "results.jsonl"
    bench.append_result(path, {"key": "a", "x": 1})
    bench.append_result(path, {"key": "b", "x": 2})
    with open(path, "a") as f:
        f.write('{"key": "c", "x"')  # an interrupted write
    assert sorted(bench.read_results(path)) == ["a", "b"]
    assert bench.read_results(tmp_path / "missing.jsonl") == {}


def test_units_cover_every_seed_size_and_arm(bench, tmp_path):
    a, _ = bench.parse_args(["--arms", "group", "bnpo per_source", "--group-sizes", "4", "8"])
    units = bench.units_for(3, {"folder": "w"}, a, tmp_path)
    assert [u["key"] for u in units] == [
        "seed3/G4/group", "seed3/G4/bnpo per_source", "seed3/G8/group", "seed3/G8/bnpo per_source",
    ]  # fmt: skip
    assert units[1]["spec"] == {"name": "bnpo", "per_source": True} and units[3]["group_size"] == 8
    assert " " not in units[1]["run_dir"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arms", "bnpo"], "must include 'group'"),
        (["--arms", "group", "nonsense"], "unknown: ['nonsense']"),
        (["--seeds", "1", "1"], "must not repeat"),
        (["--max_steps", "5"], "cannot be passed through"),
        (["--num_generations", "8"], "cannot be passed through"),
    ],
)
def test_bad_arguments_are_refused(bench, argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_verdicts_find_the_known_differences(report):
    text = report.report(made_up_runs(), warmups(), facts(), args(), 600.0, None, None)
    # 3 arms x 2 group sizes per metric, one Holm family each
    assert "**Final accuracy** (6 comparisons with `group`, Holm-corrected together): 4 difference(s)" in text
    lines = text.splitlines()
    supported = [line for line in lines if "the data support" in line]
    assert sum("better − group" in line and "being better" in line for line in supported) == 4
    assert sum("worse − group" in line and "being worse" in line for line in supported) == 4
    assert not any(line.strip().startswith("- G = ") and "same − group" in line for line in lines)
    assert "Not shown for the other 2" in text
    assert "differences to `group` supported by the data (Holm, 5%): 8 of 12." in text


def test_tables_hold_the_means(report):
    text = report.report(made_up_runs(), warmups(), facts(), args(), 600.0, None, None)
    group_row = next(line for line in text.splitlines() if line.startswith("| group |"))
    # group's finals 0.40 .. 0.54 over seeds 0..7: mean 47.0, sample std 4.9; per source +10 / 0 / -10 points
    assert group_row.startswith("| group | 47.0 ± 4.9 | 57.0 ± 4.9 | 47.0 ± 4.9 | 37.0 ± 4.9 |")
    assert "| - | - |" in group_row  # no comparison of group with itself
    better_row = next(line for line in text.splitlines() if line.startswith("| better |"))
    runs = made_up_runs()
    finals = {
        a: [r["final"] for r in runs if r["arm"] == a and r["group_size"] == 4] for a in ("better", "group")
    }
    diff = sum(x - y for x, y in zip(finals["better"], finals["group"], strict=True)) / 8  # paired by seed
    assert "▲" in better_row and f"| {100 * diff:+.1f} [+" in better_row
    assert "| 0 | 600 | 90 | 30.0% | 30.0% | 30.0% | 30.0% |" in text
    assert "`add3` 100-199 + 100-199 (25%)" in text and "8 prompts at G = 8" in text


def test_one_seed_makes_no_claims(report):
    runs = [r for r in made_up_runs(seeds=1)]
    text = report.report(runs, warmups(1), facts(), args(1), 10.0, None, None)
    assert "One seed: no comparison between arms." in text
    assert not any(line.startswith("| ") and "▲" in line for line in text.splitlines())


def test_unpaired_seeds_are_an_error(report):
    runs = [r for r in made_up_runs() if not (r["arm"] == "same" and r["seed"] == 3)]
    with pytest.raises(ValueError, match="different seeds"):
        report.report(runs, warmups(), facts(), args(), 1.0, None, None)


def test_runs_of_one_seed_must_share_their_start(report):
    runs = made_up_runs()
    runs[1] = {**runs[1], "start": 0.9}
    with pytest.raises(ValueError, match="different accuracies"):
        report.report(runs, warmups(), facts(), args(), 1.0, None, None)


def test_figure(report, tmp_path):
    path = tmp_path / "f" / "curves.png"
    report.plot(made_up_runs(2), args(2), path)
    assert path.stat().st_size > 1000


@pytest.mark.slow
def test_quick_run_end_to_end_and_resumes(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# B\n\n<!-- bench_normalizers -->\nkept\n<!-- /bench_normalizers -->\n")
    out_dir = tmp_path / "runs"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--output-dir", str(out_dir), "--docs", str(docs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 of 2 runs already" in proc.stdout
    text = docs.read_text()
    assert text.startswith("# B\n\n<!-- bench_normalizers -->\nkept\n<!-- /bench_normalizers -->\n")
    assert text.count("<!-- bench_learning -->") == 1 and "Generated by `python " in text
    assert "| group |" in text and "| bnpo |" in text and "One seed: no comparison" in text
    lines = (out_dir / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["arm"] for r in records) == ["bnpo", "group"]
    assert len({r["start"] for r in records}) == 1  # one warm start
    for r in records:
        assert [s for s, _ in r["curve"]] == [0, 2, 3] and r["steps"] == 3
        assert set(r["final_by_source"]) == set(SOURCES)
        assert not math.isnan(r["grad_norm"])
    summary = json.loads((out_dir / "seed0" / "G4" / "bnpo" / "run_summary.json").read_text())
    assert summary["normalizer"] == "bnpo" and summary["steps"] == 3
    assert not (out_dir / "seed0" / "G4" / "bnpo" / "model.safetensors").exists()
    # An interruption: the second record was torn. The rerun keeps the warm start and the first run.
    (out_dir / "results.jsonl").write_text(lines[0] + "\n" + lines[1][:20])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 of 2 runs already" in proc.stdout and "seed 0: warm-up" not in proc.stdout
    again = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()[1:]]
    rerun = next(r for r in again if r["key"] != records[0]["key"])
    original = next(r for r in records if r["key"] == rerun["key"])
    assert rerun["curve"] == original["curve"]  # the same run, reproduced
