"""The MATH-500, AIME 2024/2025 and AMC 2023 loaders on the file layouts the public copies use (the sources
named in ``../shared/data/real-math/README.md``): their field names, AMC golds stored as floats (``27.0``),
integer ids, extra columns. First on a few rows written here in each layout; then, when the shared folder is
present, on every real gold of the four benchmarks (read in place, never copied here), each checked by
scoring the real echoed answers against the loaded answer column."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bnpo_trl.answers import normalize_answer
from bnpo_trl.evaluation import load_benchmarks
from bnpo_trl.rewards import accuracy

REAL_MATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-math"


def _math500_row(i: int, gold: str) -> dict:  # simpleRL-reason / prm800k math_splits/test.jsonl
    return {"problem": f"Problem {i}?", "solution": rf"So \boxed{{{gold}}}.", "answer": gold,
            "subject": "Algebra", "level": 1 + i % 5, "unique_id": f"test/algebra/{i}.json"}  # fmt: skip


def _aime24_row(i: int, gold: str) -> dict:  # Qwen2.5-Math evaluation/data/aime24/test.jsonl
    return {"id": 60 + i, "problem": f"Problem {i}?", "solution": "...", "answer": gold,
            "url": f"https://artofproblemsolving.com/wiki/{i}", "year": 2024}  # fmt: skip


def _aime25_row(i: int, gold: str) -> dict:  # math-evaluation-harness data/aime25/test.jsonl
    return {"answer": gold, "problem": f"Problem {i}?"}


def _amc23_row(i: int, gold: float) -> dict:  # Qwen2.5-Math evaluation/data/amc23/test.jsonl
    return {"id": i, "question": f"Problem {i}?", "answer": gold, "url": f"https://example.org/{i}"}


LAYOUTS = {"math500": _math500_row, "aime24": _aime24_row, "aime25": _aime25_row, "amc23": _amc23_row}


def _write(folder: Path, name: str, golds: list) -> Path:
    path = folder / name / "test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(LAYOUTS[name](i, g)) + "\n" for i, g in enumerate(golds)))
    return path


@pytest.mark.parametrize(
    ("name", "golds", "expected"),
    [
        ("math500", [r"\left( 3, \frac{\pi}{2} \right)", "10", r"\text{Evelyn}"],
         [r"\left( 3, \frac{\pi}{2} \right)", "10", r"\text{Evelyn}"]),
        ("aime24", ["204", "025", "113"], ["204", "025", "113"]),  # kept as stored; the verifier reads 025 as 25
        ("aime25", ["70", "588"], ["70", "588"]),
        ("amc23", [27.0, 36.0, -1.0, 0.5], ["27", "36", "-1", "0.5"]),
    ],
)  # fmt: skip
def test_each_benchmark_reads_its_public_file_layout(
    tmp_path: Path, name: str, golds: list, expected: list
) -> None:
    path = _write(tmp_path, name, golds)
    bench = load_benchmarks(f"{name}={path}", system_prompt=None)[name]
    assert bench.dataset["answer"] == expected and bench.dropped == 0
    assert bench.problems == [f"Problem {i}?" for i in range(len(golds))]
    if name == "math500":
        assert bench.dataset["difficulty"] == [1.0, 2.0, 3.0]  # MATH levels kept


@pytest.mark.skipif(not REAL_MATH.is_dir(), reason=f"{REAL_MATH} is not on this machine")
@pytest.mark.parametrize(("name", "size"), [("math500", 500), ("aime24", 30), ("aime25", 30), ("amc23", 40)])
def test_every_real_gold_loads_and_keeps_its_meaning(tmp_path: Path, name: str, size: int) -> None:
    with gzip.open(REAL_MATH / "gold_echo.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if r["source"] == name and r["group"] == "core"]
    golds = dict.fromkeys(r["problem_id"] for r in rows)
    for r in rows:
        golds[r["problem_id"]] = r["gold"]  # as the source stores it: a float for AMC 2023
    assert len(golds) == size
    assert all(isinstance(g, float) for g in golds.values()) == (name == "amc23")
    path = _write(tmp_path, name, list(golds.values()))
    bench = load_benchmarks(f"{name}={path}", system_prompt=None)[name]
    loaded = dict(zip(golds, bench.dataset["answer"], strict=True))
    assert bench.dropped == 0 and list(loaded.values()) == [normalize_answer(g) for g in golds.values()]
    # The echoed completions of each problem, scored against the loaded column: right answers accepted,
    # wrong ones rejected, exactly as against the stored gold.
    scores = accuracy(
        [r["completion"] for r in rows], answer=[loaded[r["problem_id"]] for r in rows], workers=2
    )
    assert [float(r["expected"]) for r in rows] == scores
