"""The data side of ``--smoke`` (:mod:`bnpo_trl.smoke`): when the Hub cannot be reached, a few generated rows in
each Hub dataset's own schema, written to a local file and read through the same loader with ``path=``;
either way at most :data:`TRAIN_ROWS` / :data:`EVAL_ROWS` rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
from pathlib import Path
from typing import Any

__all__ = [
    "EVAL_ROWS",
    "TRAIN_ROWS",
    "fixture_rows",
    "hub_reachable",
    "substitute_benchmarks",
    "substitute_data",
]

TRAIN_ROWS = 32
EVAL_ROWS = 8


def hub_reachable() -> tuple[bool, str]:
    """-> (whether to read Hub datasets, why). ``BNPO_TRL_SMOKE_DATA=fixtures|hub`` decides when set; else
    offline mode (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``) means no, else a 3 s connection to the Hub."""
    forced = os.environ.get("BNPO_TRL_SMOKE_DATA", "").strip().lower()
    if forced in ("fixtures", "hub"):
        return forced == "hub", f"BNPO_TRL_SMOKE_DATA={forced}"
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return False, f"{var}={os.environ[var]}"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        socket.create_connection((host, int(port or 443)), timeout=3).close()
    except OSError as err:
        return False, f"{host} unreachable ({err.__class__.__name__})"
    return True, f"{host} reachable"


def fixture_rows(name: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` generated rows in the schema of the Hub dataset registered as ``name`` (its columns and value
    formats: MATH's ``Level N`` and boxed solutions, GSM8K's ``#### answer``, DAPO's verl prompt and
    ``reward_model``, AMC's float answers ...), about small arithmetic; ``[]`` for a source that is not
    read from the Hub (``arithmetic``, ``local``)."""
    from bnpo_trl.data import resolve_dataset

    spec = resolve_dataset(name)
    rng = random.Random(f"{spec.name}-{seed}")
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        op, value = rng.choice([("+", a + b), ("-", a - b), ("\\times", a * b)])
        problem = f"What is ${a} {op} {b}$?"
        solution = f"We compute ${a} {op} {b} = {value}$, so the answer is $\\boxed{{{value}}}$."
        level = 1 + i % 5
        row = _schema_row(spec.name, i, problem, solution, value, level)
        if row is None:
            return []
        rows.append(row)
    return rows


def _schema_row(source: str, i: int, problem: str, solution: str, value: int, level: int) -> dict | None:
    if source == "math":
        return {"problem": problem, "level": f"Level {level}", "type": "Prealgebra", "solution": solution}
    if source == "math500":
        return {
            "problem": problem,
            "solution": solution,
            "answer": str(value),
            "subject": "Prealgebra",
            "level": level,
            "unique_id": f"test/prealgebra/{i}.json",
        }
    if source == "gsm8k":
        return {"question": problem.replace("$", ""), "answer": f"{solution.split(',')[0]}.\n#### {value}"}
    if source in ("aime24", "aime25"):
        return {"id": i, "problem": problem, "solution": solution, "answer": str(value), "year": "2024"}
    if source == "amc23":
        return {"id": i, "question": problem, "answer": float(value), "url": ""}
    if source == "dapo":
        content = (
            "Solve the following math problem step by step. The last line of your response should be of the "
            "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
            f'{problem}\n\nRemember to put your answer on its own line after "Answer:".'
        )
        return {
            "data_source": "math_dapo",
            "prompt": [{"content": content, "role": "user"}],
            "ability": "MATH",
            "reward_model": {"ground_truth": str(value), "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": f"smoke-{i}"},
        }
    if source in ("arithmetic", "local"):
        return None
    # a source registered by a plugin: the plain problem/answer columns most schemas have
    return {"problem": problem, "answer": str(value), "solution": solution}


def _fixture_file(name: str, folder: Path, n: int) -> Path | None:
    from bnpo_trl.data import resolve_dataset

    spec = resolve_dataset(name)
    rows = fixture_rows(spec.name, n)
    if not rows:
        return None
    path = folder / f"{spec.name}.jsonl"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _hub_source(name: str) -> bool:
    from bnpo_trl.data import resolve_dataset
    from bnpo_trl.data.loading import load_schema_source

    return resolve_dataset(name).load is load_schema_source


def _smaller(limit: int | None, cap: int) -> int:
    return cap if limit is None else min(limit, cap)


def substitute_data(data: Any, folder: Path, use_hub: bool, why: str) -> tuple[Any, list[str]]:
    lines: list[str] = []
    source = "the Hub (limited)" if use_hub else f"generated rows in its Hub schema ({why})"

    def one(label: str, name: str, path: Any, limit: int | None, cap: int) -> tuple[Any, int]:
        new_limit = _smaller(limit, cap)
        new_path = path
        if path is None and not use_hub and _hub_source(name):
            new_path = str(_fixture_file(name, folder, cap))
            lines.append(f"{label} {name!r}: Hub -> {source}: {new_path}")
        elif path is not None:
            lines.append(f"{label} {name!r}: kept its local file {path}")
        elif _hub_source(name):
            lines.append(f"{label} {name!r}: read from the Hub")
        if new_limit != limit:
            lines.append(f"{label} {name!r} limit: {limit} -> {new_limit} rows")
        return new_path, new_limit

    changes: dict[str, Any] = {}
    if data.dataset_mixture:
        mixture = []
        for entry in data.dataset_mixture:
            entry = dict(entry) if isinstance(entry, dict) else dataclasses.asdict(entry)
            entry["path"], entry["limit"] = one(
                "mixture source", entry["name"], entry.get("path"), entry.get("limit"), TRAIN_ROWS
            )
            mixture.append({k: v for k, v in entry.items() if v is not None})
        changes["dataset_mixture"] = mixture
    elif data.dataset_name:
        changes["dataset_path"], changes["dataset_limit"] = one(
            "train dataset", data.dataset_name, data.dataset_path, data.dataset_limit, TRAIN_ROWS
        )
    if data.eval_dataset_name:
        changes["eval_dataset_path"], changes["eval_dataset_limit"] = one(
            "eval dataset", data.eval_dataset_name, data.eval_dataset_path, data.eval_dataset_limit, EVAL_ROWS
        )
    return dataclasses.replace(data, **changes), lines


def substitute_benchmarks(
    settings: dict[str, Any], folder: Path, use_hub: bool, why: str, max_new_tokens: int
) -> tuple[dict[str, Any], list[str]]:
    """The recipe's ``benchmark_eval`` for a smoke run: each Hub benchmark read from generated rows in its
    schema (``key=file``) when the Hub is not used, evaluated every step on at most :data:`EVAL_ROWS`
    problems, 2 samples, ``max_new_tokens`` at most."""
    from bnpo_trl.evaluation.benchmarks import BENCHMARKS, parse_benchmark_specs

    lines, benchmarks = [], []
    for key, registered, path in parse_benchmark_specs(settings["benchmarks"]):
        fixture = None
        if registered is not None and path is None and not use_hub:
            fixture = _fixture_file(BENCHMARKS[registered][0], folder, EVAL_ROWS)
        if fixture is not None:
            lines.append(f"benchmark {key!r}: Hub -> generated rows in its Hub schema ({why}): {fixture}")
            benchmarks.append(f"{key}={fixture}")
        else:
            benchmarks.append(key if path is None else f"{key}={path}")
    small = {
        "every": 1,
        "limit": _smaller(settings["limit"], EVAL_ROWS),
        "n": min(settings["n"], 2),
        "max_new_tokens": min(settings["max_new_tokens"], max_new_tokens),
    }
    lines.append("benchmark_eval: " + ", ".join(f"{k} {settings[k]} -> {v}" for k, v in small.items()))
    return {**settings, **small, "benchmarks": benchmarks}, lines
