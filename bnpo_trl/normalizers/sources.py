"""Data sources of the groups of a batch: one source per prompt, shared by its G completions."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["group_sources", "require_sources", "source_masks"]


def require_sources(data_sources: Sequence[str] | None, who: str) -> list[str]:
    """``data_sources`` as strings; ``None`` is an error naming the config field that fills it."""
    if data_sources is None:
        raise ValueError(
            f"{who} needs a data source per row: set data_source_column to the dataset column naming each "
            "row's source (pass data_sources=[...] when calling the normalizer directly)."
        )
    return [str(s) for s in data_sources]


def group_sources(data_sources: Sequence[str], group_size: int) -> list[str]:
    """(N,) row sources -> (P,) group sources; a group whose rows disagree is an error."""
    sources = [str(s) for s in data_sources]
    per_group = sources[::group_size]
    if any(sources[i] != per_group[i // group_size] for i in range(len(sources))):
        raise ValueError("Every completion of a prompt must have the same data source.")
    return per_group


def source_masks(per_group: Sequence[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """{source: (P,) bool mask of its groups}, in order of first appearance.

    >>> {k: v.tolist() for k, v in source_masks(["a", "b", "a"]).items()}
    {'a': [True, False, True], 'b': [False, True, False]}
    """
    codes = {s: i for i, s in enumerate(dict.fromkeys(per_group))}
    code = torch.tensor([codes[s] for s in per_group], device=device)
    return {s: code == i for s, i in codes.items()}
