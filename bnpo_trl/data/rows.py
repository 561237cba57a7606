"""Row parsers of the built-in sources and the value helpers they share with local files and curricula.

A parser maps one source row to ``{"problem", "answer", "difficulty"}``; a row whose problem or answer
comes out empty is dropped later (``bnpo_trl.data.loading._finalize``), so parsers never raise on a
row that merely lacks its answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bnpo_trl.answers import extract_gsm8k_answer, last_boxed, normalize_answer

__all__ = [
    "as_float",
    "extract_dapo_problem",
    "last_user_content",
    "math_level",
    "parse_amc",
    "parse_dapo",
    "parse_gsm8k",
    "parse_math",
    "parse_math500",
    "parse_problem_answer",
]

_DAPO_RE = re.compile(
    r"^\s*Solve the following math problem step by step\..*?\n\n(?P<problem>.*)\n\n"
    r"Remember to put your answer on its own line after \"Answer:\"\.?\s*$",
    re.DOTALL,
)


def extract_dapo_problem(content: str) -> str:
    """The problem text inside a DAPO-Math-17k user message (which wraps it in answer-format instructions).

    DAPO prompts read ``"Solve the following math problem step by step. The last line of your response
    should be of the form Answer: $Answer ...\\n\\n{problem}\\n\\nRemember to put your answer on its own
    line after \\"Answer:\\"."``. Content that does not follow this template is returned stripped.

    Examples:
        >>> extract_dapo_problem("  A plain problem.  ")
        'A plain problem.'
    """
    match = _DAPO_RE.match(content)
    return match.group("problem").strip() if match else content.strip()


def math_level(level: Any) -> float | None:
    """A MATH-style level as a number: ``"Level 3"`` -> 3.0, ``4`` -> 4.0, ``"Level ?"`` / missing -> ``None``.

    Examples:
        >>> math_level("Level 3"), math_level(4), math_level("Level ?")
        (3.0, 4.0, None)
    """
    if level is None:
        return None
    if isinstance(level, int | float | np.integer | np.floating) and not isinstance(level, bool):
        return None if isinstance(level, float) and math.isnan(level) else float(level)
    match = re.search(r"-?\d+(?:\.\d+)?", str(level))
    return float(match.group()) if match else None


def as_float(value: Any) -> float | None:
    """A difficulty-like value as a float (numbers, numeric strings, ``"Level 3"``); ``None`` for
    ``None``, booleans, NaN and text without a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math_level(value)
    return None if math.isnan(number) else number


def last_user_content(messages: Sequence[Mapping[str, Any]]) -> str:
    """The content of the last user message of a chat message list."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    raise ValueError("A prompt message list has no user message.")


def parse_math(row: Mapping[str, Any]) -> dict[str, Any]:
    """MATH: gold = last ``\\boxed{}`` of the solution, difficulty = level."""
    return {
        "problem": row["problem"],
        "answer": last_boxed(row["solution"]),
        "difficulty": math_level(row.get("level")),
    }


def parse_math500(row: Mapping[str, Any]) -> dict[str, Any]:
    """MATH-500: the ``answer`` column, else the last box of the solution; difficulty = level."""
    answer = normalize_answer(row.get("answer")) or last_boxed(row.get("solution"))
    return {"problem": row["problem"], "answer": answer, "difficulty": math_level(row.get("level"))}


def parse_gsm8k(row: Mapping[str, Any]) -> dict[str, Any]:
    """GSM8K: gold after the last ``####``."""
    return {"problem": row["question"], "answer": extract_gsm8k_answer(row["answer"]), "difficulty": None}


def parse_problem_answer(row: Mapping[str, Any]) -> dict[str, Any]:
    """Plain ``problem``/``answer`` columns (AIME)."""
    return {"problem": row["problem"], "answer": normalize_answer(row["answer"]), "difficulty": None}


def parse_amc(row: Mapping[str, Any]) -> dict[str, Any]:
    """AMC 2023: the text is ``question`` or ``problem`` depending on the copy; float answers."""
    problem = row.get("question") or row.get("problem")
    return {"problem": problem, "answer": normalize_answer(row["answer"]), "difficulty": None}


def parse_dapo(row: Mapping[str, Any]) -> dict[str, Any]:
    """DAPO-Math-17k (verl format): the problem unwrapped from the user message, gold from ``reward_model``."""
    reward_model = row.get("reward_model") or {}
    return {
        "problem": extract_dapo_problem(last_user_content(row["prompt"])),
        "answer": normalize_answer(reward_model.get("ground_truth")),
        "difficulty": None,
    }
