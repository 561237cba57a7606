"""Weighted mixtures of registered sources (:func:`load_mixture`) and the sizing rule they follow
(:func:`mixture_sizes`).

The rule is ours, not TRL's: TRL 1.16's ``DatasetConfig.fraction`` (``trl/scripts/utils.py``) caps the
mixture the same way (``T = min_i n_i / w_i``) but inline in ``get_dataset``, keeping the *first*
``round(w_i * T)`` rows, with no ``total``, no upsampling and no seeded subset, so there is no TRL
function to reuse and its sizes differ (``[100, 43]`` where ours are ``[99, 43]`` for the example below).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import EllipsisType
from typing import Any

import numpy as np
from datasets import Dataset, concatenate_datasets

from bnpo_trl.data.loading import load_dataset_by_name
from bnpo_trl.data.registry import DEFAULT_SYSTEM_PROMPT

__all__ = ["MixtureEntry", "load_mixture", "mixture_sizes"]


@dataclass(frozen=True)
class MixtureEntry:
    """One source of a mixture: a registry ``name``, its ``weight`` and the keyword arguments of
    :func:`~bnpo_trl.data.load_dataset_by_name` (same meaning and defaults).

    ``system_prompt`` defaults to ``...``: the mixture-wide ``system_prompt`` of :func:`load_mixture`
    (``None`` omits the system message for this source only).
    """

    name: str
    weight: float = 1.0
    split: str | None = None
    path: str | os.PathLike[str] | None = None
    limit: int | None = None
    system_prompt: str | EllipsisType | None = ...
    column_map: Mapping[str, str] | None = None
    data_source: str | None = None
    user_template: str = "{problem}"
    keep_columns: Sequence[str] = ()
    dedupe: bool | None = None
    hub_id: str | None = None
    config: str | None = None
    revision: str | None = None

    @classmethod
    def from_mapping(cls, mapping: Any, position: int = 0) -> MixtureEntry:
        """An entry from a YAML mapping; an unknown key is an error naming it (``position`` is for it)."""
        if not isinstance(mapping, Mapping) or "name" not in mapping:
            raise ValueError(
                f"Mixture entry {position} must be a mapping with a 'name' key, got {mapping!r}."
            )
        allowed = sorted(f.name for f in fields(cls))
        unknown = set(mapping) - set(allowed)
        if unknown:
            raise ValueError(
                f"Mixture entry {position} ({mapping['name']!r}) has unknown keys {sorted(unknown)}; "
                f"allowed: {', '.join(allowed)}."
            )
        return cls(**mapping)

    def load(
        self, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, cache_dir: str | None = None
    ) -> Dataset:
        """The whole source (before sampling); ``system_prompt`` applies unless the entry sets its own."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "weight")}
        if kwargs["system_prompt"] is ...:
            kwargs["system_prompt"] = system_prompt
        return load_dataset_by_name(self.name, cache_dir=cache_dir, **kwargs)


def mixture_sizes(available: Sequence[int], weights: Sequence[float], total: int | None = None) -> list[int]:
    """Rows to draw from each source of a mixture (the rule :func:`load_mixture` uses).

    Weights are normalised to sum to 1. With ``total=None`` the mixture is the largest one that needs no
    repetition: ``T = min_i(available_i / w_i)`` (rounded down), so the scarcest source relative to its
    weight is used whole. With ``total`` given, ``T = total``. Sizes are ``w_i * T`` rounded by the
    largest-remainder method, so they sum exactly to ``T``; a size above ``available_i`` is drawn with
    repetition (see :func:`load_mixture`).

    Examples:
        >>> mixture_sizes([100, 100], [0.7, 0.3])
        [99, 43]
        >>> mixture_sizes([100, 100], [3, 1], total=10)
        [8, 2]
    """
    if len(available) != len(weights) or not weights:
        raise ValueError("mixture_sizes needs one weight per source and at least one source.")
    for w in weights:
        if not isinstance(w, int | float) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise ValueError(f"Mixture weights must be finite numbers >= 0, got {list(weights)}.")
    weight_sum = float(sum(weights))
    if weight_sum <= 0:
        raise ValueError(f"Mixture weights must not all be 0, got {list(weights)}.")
    shares = [w / weight_sum for w in weights]
    if total is None:
        target = min(n / s for n, s in zip(available, shares, strict=True) if s > 0)
        target_rows = math.floor(target + 1e-9)
    else:
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}.")
        target_rows = int(total)
    exact = [s * target_rows for s in shares]
    sizes = [math.floor(x + 1e-9) for x in exact]
    remainder = target_rows - sum(sizes)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[:remainder]:
        sizes[i] += 1
    if total is None:  # never exceed what is there (guards rounding up)
        sizes = [min(s, n) for s, n in zip(sizes, available, strict=True)]
    return sizes


def _draw(n_available: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices into ``range(n_available)``: without repetition while possible, else whole copies
    plus a random remainder (each row appears ``size // n`` or ``size // n + 1`` times)."""
    copies, rest = divmod(size, n_available)
    parts = [np.arange(n_available)] * copies
    if rest:
        parts.append(rng.choice(n_available, size=rest, replace=False))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def load_mixture(
    specs: Sequence[Mapping[str, Any] | MixtureEntry],
    seed: int = 0,
    total: int | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    cache_dir: str | None = None,
) -> Dataset:
    """Load several sources, sample them by weight, concatenate and shuffle (the column contract).

    Args:
        specs: One :class:`MixtureEntry` or one mapping of its fields per source, as read from YAML, e.g.
            ``[{"name": "math", "weight": 0.7}, {"name": "gsm8k", "weight": 0.3, "path": "gsm8k.jsonl"}]``.
            Keys: ``name`` (required), ``weight`` (default 1), and the keyword arguments of
            :func:`~bnpo_trl.data.load_dataset_by_name`: ``split``, ``path``, ``limit``, ``system_prompt``
            (overrides the mixture-wide one), ``column_map``, ``data_source``, ``user_template``,
            ``keep_columns``, ``dedupe``, ``hub_id``, ``config``, ``revision``. Every entry is checked
            before any source is loaded.
        seed: Seed for the per-source sampling and the final shuffle.
        total: Mixture size. ``None``: the largest mixture with the weights' proportions that repeats no
            row. Given: sizes ``weight * total`` (largest remainder), a source drawn more often than it
            has rows is repeated (whole copies, then a random remainder without replacement).
        system_prompt: Default system prompt for every source.
        cache_dir: ``datasets`` cache folder.

    Returns:
        One shuffled dataset; ``data_source`` tells the rows apart.
    """
    if isinstance(specs, Mapping | str) or not specs:
        raise ValueError(
            "load_mixture needs a non-empty list of dataset specs (mappings with at least 'name')."
        )
    entries = [
        spec if isinstance(spec, MixtureEntry) else MixtureEntry.from_mapping(spec, position)
        for position, spec in enumerate(specs)
    ]
    loaded = [entry.load(system_prompt=system_prompt, cache_dir=cache_dir) for entry in entries]
    sizes = mixture_sizes([len(d) for d in loaded], [entry.weight for entry in entries], total)
    rng = np.random.default_rng(seed)
    parts = []
    for dataset, size in zip(loaded, sizes, strict=True):
        indices = _draw(len(dataset), size, rng)
        if len(indices):
            parts.append(dataset.select(indices.tolist()))
    if not parts:
        raise ValueError(f"The mixture is empty (sizes {sizes}); raise total or the weights.")
    common = set.intersection(*(set(p.column_names) for p in parts))
    parts = [p.remove_columns([c for c in p.column_names if c not in common]) for p in parts]
    mixed = concatenate_datasets(parts)
    return mixed.shuffle(seed=seed).flatten_indices()
