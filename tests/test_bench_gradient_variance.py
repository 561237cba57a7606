"""scripts/bench_gradient_variance.py --quick end to end: warm-up, RL with checkpoints, K rollout batches
per measured step, the table and its docs block (the measurement itself: tests/test_gradient_variance.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_run_writes_a_row_per_normalizer_and_a_verdict_per_step(tmp_path):
    docs = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_gradient_variance.py"),
            "--quick",
            "--docs",
            str(docs),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = docs.read_text()
    assert text.count("<!-- bench_gradient_variance -->") == 1
    for label in ("`bnpo`", "`bnpo(alpha=1.0,beta=1.0)`", "`bnpo(alpha=1.5,beta=1.5)`", "`group`", "`ebpo`"):
        assert f"| {label} |" in text
    assert "| normalizer | trace, step 0 | trace, step 2 | SNR, step 0 | SNR, step 2 |" in text
    assert text.count("- step ") == 2
