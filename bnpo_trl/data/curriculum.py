"""Difficulty curricula: order a dataset easy -> hard by a numeric column."""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset

from bnpo_trl.data.rows import as_float

logger = logging.getLogger(__name__)

__all__ = ["CURRICULA", "apply_curriculum"]

#: Curricula accepted by :func:`apply_curriculum`.
CURRICULA = ("none", "difficulty")

#: Columns where a higher value means an easier problem (used when ``higher_is_easier`` is not given).
_EASY_WHEN_HIGH = ("pass_rate", "pass@1", "pass_at_1", "solve_rate", "accuracy", "acc")


def _column(dataset: Dataset, name: str) -> list[Any]:
    """One column as a plain Python list (respects an indices mapping)."""
    return dataset.select_columns([name]).to_dict()[name]


def apply_curriculum(
    dataset: Dataset,
    curriculum: str,
    column: str = "difficulty",
    higher_is_easier: bool | None = None,
) -> Dataset:
    """Order a dataset for a curriculum.

    Args:
        dataset: Any dataset.
        curriculum: ``"none"`` returns ``dataset`` unchanged; ``"difficulty"`` sorts it easy -> hard,
            stably (rows of equal difficulty keep their order); rows whose value is ``None``/NaN go last.
        column: The column to sort by (``"difficulty"``, or e.g. a pass-rate column).
        higher_is_easier: Direction. ``None`` picks ``True`` for pass-rate-like names (``pass_rate``,
            ``pass@1``, ``solve_rate``, ``accuracy``, ...) and ``False`` otherwise (higher = harder, as for
            MATH levels).

    Returns:
        The ordered dataset. ``GRPOTrainer`` shuffles its training data by default: set
        ``shuffle_dataset=False`` in the GRPO config to keep this order.
    """
    key = str(curriculum).strip().lower()
    if key not in CURRICULA:
        raise ValueError(f"Unknown curriculum {curriculum!r}; choose one of {', '.join(CURRICULA)}.")
    if key == "none":
        return dataset
    if column not in dataset.column_names:
        raise ValueError(
            f"Curriculum 'difficulty' sorts by column {column!r}, which the dataset does not have (columns: "
            f"{dataset.column_names}). Pass column='<name>' (e.g. a pass-rate column) or use curriculum='none'."
        )
    if higher_is_easier is None:
        higher_is_easier = column.lower() in _EASY_WHEN_HIGH
    numbers = [as_float(value) for value in _column(dataset, column)]
    if all(v is None for v in numbers):
        raise ValueError(
            f"Column {column!r} has no numeric values (all None/NaN), so there is nothing to sort by; "
            "this source has no difficulty. Use curriculum='none' or another column."
        )
    n_missing = sum(v is None for v in numbers)
    if n_missing:
        logger.warning("apply_curriculum: %d rows without a %r value are placed last.", n_missing, column)
    sign = -1.0 if higher_is_easier else 1.0
    order = sorted(range(len(numbers)), key=lambda i: (numbers[i] is None, sign * (numbers[i] or 0.0)))
    return dataset.select(order).flatten_indices()
