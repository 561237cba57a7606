"""scripts/quickstart_seeds.py: the per-seed table on hand-made summaries, its options, one seed's process
(a stand-in command, throttled), and its --quick form end to end."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.script_utils import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "quickstart_seeds.py"
qs = load_script("quickstart_seeds")


def summary(seed, before, after, wall, reached=True, by_budget=True):
    warm = {"steps": 250, "accuracy": before, "seconds": 40.0, "reached_target": reached}
    return {
        "seed": seed,
        "warmup": warm,
        "accuracy_before": before,
        "accuracy_after": after,
        "steps": 300,
        "stopped_by_time_budget": by_budget,
        "process_wall_seconds": wall,
    }


def test_table_judges_each_seed_on_gain_and_wall_time():
    table = qs.table(
        [summary(0, 0.22, 0.675, 290.0), summary(1, 0.21, 0.40, 290.0), summary(2, 0.20, 0.70, 301.0, False)]
    )
    rows = [
        line
        for line in table.splitlines()
        if line.startswith("| 0 ") or line.startswith("| 1 ") or line.startswith("| 2 ")
    ]
    assert rows[0].endswith("| +45.5 | 300 | time budget | 290 s | yes |")
    assert rows[1].endswith("| +19.0 | 300 | time budget | 290 s | no |")  # gain too small
    assert rows[2].endswith("| +50.0 | 300 | time budget | 301 s | no |")  # over 5 minutes
    assert "(target not reached)" in rows[2]
    assert "Target met on 1 of 3 seeds; gains +45.5, +19.0, +50.0 points (mean +38.2)." in table
    lines = table.splitlines()
    assert lines[0] == "Machine speed: this machine"
    header, rule = lines[2], lines[3]
    assert "| RL steps | ended by | wall time (whole process) |" in header
    assert header.count("|") == rule.count("|") == rows[0].count("|")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"stopped_by_time_budget": True}, "time budget"),
        ({"stopped_by_time_budget": False, "stopped_by_step_budget": True}, "step budget"),
        ({"stopped_by_time_budget": True, "stopped_by_step_budget": True}, "time budget"),
        ({"stopped_by_time_budget": False}, "max_steps"),
        ({"stopped_by_time_budget": False, "stopped_by_step_budget": False}, "max_steps"),
    ],
)
def test_ended_by_column(fields, expected):
    s = {**summary(0, 0.2, 0.7, 100.0), **fields}
    assert qs.ended_by(s) == expected
    row = next(line for line in qs.table([s]).splitlines() if line.startswith("| 0 "))
    assert f"| 300 | {expected} | 100 s |" in row


def test_heading_per_machine_speed():
    assert qs.heading(1.0) == "Machine speed: this machine"
    assert qs.heading(1.0, measured=1.02) == "Machine speed: this machine"
    assert qs.heading(1.4, measured=1.413) == (
        "Machine speed: 1.4x slower (simulated: SIGSTOP/SIGCONT duty cycle on the quickstart's processes, "
        "71% of each 50 ms; a CPU-bound probe measured 1.41x slower)"
    )
    assert qs.heading(2.0).endswith("50% of each 50 ms)")  # no probe clause when nothing was measured
    section = qs.table([summary(0, 0.2, 0.7, 350.0)], slowdown=1.4, measured=1.4).splitlines()
    assert section[0].startswith("Machine speed: 1.4x slower") and section[1] == ""
    assert section[-1] == "Target met on 0 of 1 seeds; gains +50.0 points (mean +50.0)."  # 350 s > 300 s


def test_slowdown_option():
    args, extra = qs.parse_args([])
    assert args.slowdown == [1.0] and args.seeds == [0, 1, 2] and extra == []
    args, extra = qs.parse_args(["--slowdown", "1.4", "1.0", "1.4", "--seeds", "3", "--max_steps", "5"])
    assert args.slowdown == [1.0, 1.4] and args.seeds == [3]  # speed by speed, this machine first
    assert extra == ["--max_steps", "5"]  # passed on to the quickstart
    args, extra = qs.parse_args(["--quick", "--slowdown", "2"])
    assert args.slowdown == [2.0] and args.seeds == [0] and extra == qs.QUICK_OVERRIDES


@pytest.mark.parametrize("value", ["0.5", "0", "-1", "nan", "inf", "fast"])
def test_slowdown_option_rejects_faster_or_odd_factors(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        qs.parse_args(["--slowdown", "1.0", value])
    assert exit_info.value.code == 2
    assert "--slowdown" in capsys.readouterr().err


def test_seed_dirs_per_machine_speed(tmp_path):
    assert qs.seed_dir(tmp_path, 0) == tmp_path / "seed0"  # this machine: where it always was
    assert qs.seed_dir(tmp_path, 2, 1.4) == tmp_path / "x1.4" / "seed2"
    assert qs.seed_dir(tmp_path, 1, 2.0) == tmp_path / "x2" / "seed1"


# Stands in for `bnpo-trl quickstart`: a process that writes a run summary, or fails.
FAKE_QUICKSTART = textwrap.dedent(
    """
    import json, sys
    seed, out, fail = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "fail"
    print("training seed", seed)
    print("a warning", file=sys.stderr)
    if fail:
        sys.exit("no data")
    summary = {"seed": seed, "accuracy_before": 0.2, "accuracy_after": 0.7, "steps": 3, "stopped_by_time_budget": False}
    open(out + "/run_summary.json", "w").write(json.dumps(summary))
    """
)


@pytest.fixture
def fake_quickstart(monkeypatch):
    def command(seed, output_dir, extra):
        return [sys.executable, "-c", FAKE_QUICKSTART, str(seed), str(output_dir), *extra]

    monkeypatch.setattr(qs, "quickstart_command", command)


@pytest.mark.parametrize("slowdown", [1.0, 2.0])
def test_run_seed_throttles_and_logs_its_process(tmp_path, fake_quickstart, slowdown):
    out = qs.seed_dir(tmp_path, 4, slowdown)
    s = qs.run_seed(4, out, ["ok"], slowdown)
    assert s["seed"] == 4 and s["process_wall_seconds"] > 0 and qs.ended_by(s) == "max_steps"
    assert (out / "quickstart.log").read_text() == "training seed 4\na warning\n"


def test_run_seed_reports_a_failure(tmp_path, fake_quickstart):
    with pytest.raises(SystemExit, match=r"seed 5 failed \(exit 1\):\na warning\nno data"):
        qs.run_seed(5, tmp_path / "seed5", ["fail"], 2.0)
    assert "no data" in (tmp_path / "seed5" / "quickstart.log").read_text()


def test_main_writes_every_speed_into_one_docs_block(tmp_path, monkeypatch):
    runs = []

    def run_seed(seed, output_dir, extra, slowdown):
        runs.append((slowdown, seed, output_dir))
        gain = 0.5 if slowdown == 1.0 else 0.3
        return {**summary(seed, 0.2, 0.2 + gain, 280.0 * slowdown), "stopped_by_time_budget": slowdown == 1.0}

    monkeypatch.setattr(qs, "run_seed", run_seed)
    monkeypatch.setattr(qs, "measure_slowdown", lambda factor, seconds: 1.41)
    docs = tmp_path / "b.md"
    docs.write_text("# x\n\n<!-- quickstart_seeds -->\nNot generated yet.\n<!-- /quickstart_seeds -->\n")
    argv = [
        "--seeds",
        "0",
        "1",
        "--slowdown",
        "1.4",
        "1.0",
        "--output-dir",
        str(tmp_path),
        "--docs",
        str(docs),
    ]
    body = qs.main(argv)
    assert [(f, seed) for f, seed, _ in runs] == [(1.0, 0), (1.0, 1), (1.4, 0), (1.4, 1)]  # speed by speed
    assert runs[0][2] == tmp_path / "seed0" and runs[3][2] == tmp_path / "x1.4" / "seed1"
    text = docs.read_text()
    assert body in text and text.count("<!-- quickstart_seeds -->") == 1
    assert text.index("Machine speed: this machine") < text.index("Machine speed: 1.4x slower") > 0
    assert "a CPU-bound probe measured 1.41x slower" in text
    assert "Target met on 2 of 2 seeds; gains +50.0, +50.0 points (mean +50.0)." in text
    assert "Target met on 0 of 2 seeds; gains +30.0, +30.0 points (mean +30.0)." in text
    # README's headline (scripts/readme_headlines.py) reads the first closing line: this machine's
    headline = load_script("readme_headlines").parse_quickstart_seeds(body)
    assert "**+50.0, +50.0**" in headline and "**2 of 2**" in headline


@pytest.mark.slow
def test_quick_run_writes_docs_block(tmp_path):
    docs = tmp_path / "b.md"
    docs.write_text("# x\n\n<!-- quickstart_seeds -->\nNot generated yet.\n<!-- /quickstart_seeds -->\n")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--docs", str(docs), "--output-dir", str(tmp_path / "runs")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = docs.read_text()
    assert "Not generated yet" not in text and "Generated by `python" in text
    assert "| 0 | " in text and "Target met on " in text
    assert (tmp_path / "runs" / "seed0" / "run_summary.json").exists()
