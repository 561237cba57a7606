"""The normalizer benchmark's quick form runs, checks the loop reference against the vectorized code,
and writes its table into a docs file between markers (timings are printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_normalizers_quick_writes_docs_section(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nintro stays\n")
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_normalizers.py"), "--quick", "--docs", str(docs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    assert "BNPO loop / vectorized:" in out
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nintro stays\n")
    assert text.count("<!-- bench_normalizers -->") == 1 and "| bnpo |" in text
    subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=300
    )  # rewriting replaces the block
    assert docs.read_text().count("<!-- bench_normalizers -->") == 1
