"""The ``accuracy`` reward on real data: benchmark golds echoed back (and wrong answers), meaning-preserving
rewrites of the golds, real model completions and human reference solutions, from
``../shared/data/real-math/`` (read in place when present, never copied here; skipped otherwise). Targets
of issue #20: 1.000 on the echoed golds, >= 0.95 on the rewrites, >= 0.99 on the real completions, no
false positive anywhere."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bnpo_trl.rewards import accuracy

REAL_MATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-math"
pytestmark = pytest.mark.skipif(not REAL_MATH.is_dir(), reason=f"{REAL_MATH} is not on this machine")
#: set -> (file, row filter, least accuracy)
SETS = {
    "gold echo": ("gold_echo.jsonl.gz", lambda r: r["group"] == "core", 1.0),
    "gold rewrites": ("gold_echo.jsonl.gz", lambda r: r["group"] == "variant", 0.95),
    "real completions": ("real_completions.jsonl.gz", lambda r: r["set"] == "real", 0.99),
    "reference solutions": ("real_completions.jsonl.gz", lambda r: r["set"] == "refsol", 0.99),
}


@pytest.mark.parametrize("name", SETS)
def test_accuracy_on_real_data(name: str) -> None:
    file, keep, least = SETS[name]
    with gzip.open(REAL_MATH / file, "rt", encoding="utf-8") as f:
        rows = [row for row in map(json.loads, f) if keep(row)]
    scores = accuracy([r["completion"] for r in rows], answer=[r["gold"] for r in rows], workers=2)
    right = sum((s or 0.0) == r["expected"] for s, r in zip(scores, rows, strict=True))
    false_positives = [r["uid"] for s, r in zip(scores, rows, strict=True) if s == 1.0 and r["expected"] == 0]
    print(f"{name}: {right}/{len(rows)} = {right / len(rows):.4f}, false positives {len(false_positives)}")
    assert not false_positives
    assert right / len(rows) >= least
