"""Shadow normalizers: advantages from other normalizers on the same gathered rewards, logged, never trained on.

Each shadow keeps its own running state, updated as if it were training, saved in the checkpoint's
``normalizer_state.json`` (``shadow_states``) and restored on resume. Metrics per shadow ``<label>``:
``shadow/<label>/pearson`` and ``/sign_agreement`` with the training advantages, ``/signal_fraction``,
``/advantage_abs_mean``, and its own ``last_stats``; ``shadow/seconds`` is the time the shadows took.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from bnpo_trl.normalizers import Normalizer
from bnpo_trl.normalizers.base import call_normalizer
from bnpo_trl.normalizers.compare import compare_rows
from bnpo_trl.normalizers.specs import spec_label

__all__ = ["ShadowNormalizers"]

logger = logging.getLogger(__name__)


class ShadowNormalizers:
    """The shadows of a run, by label (their name, or ``center+scale+post``)."""

    def __init__(self, specs: Sequence[str | Mapping[str, Any]], build: Callable[[Any], Normalizer]) -> None:
        self.normalizers: dict[str, Normalizer] = {}
        for spec in specs:
            label = spec_label(spec)
            if label in self.normalizers:
                raise ValueError(f"shadow_normalizers lists {label!r} twice; give each shadow once.")
            self.normalizers[label] = build(spec)
        self.seconds = 0.0  # total time spent in the shadows (bench_overhead reads it)

    def __bool__(self) -> bool:
        return bool(self.normalizers)

    @property
    def uses_lengths(self) -> bool:
        return any(getattr(n, "uses_lengths", False) for n in self.normalizers.values())

    @property
    def requires_data_sources(self) -> bool:
        return any(getattr(n, "requires_data_sources", False) for n in self.normalizers.values())

    def observe(
        self,
        rewards: torch.Tensor,
        advantages: torch.Tensor,
        *,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        lengths: torch.Tensor | None,
        update: bool,
    ) -> dict[str, float]:
        """Run every shadow on the gathered ``rewards``; -> its metrics against the training ``advantages``."""
        start = time.perf_counter()
        advs, stats = [], []
        for norm in self.normalizers.values():
            advs.append(
                call_normalizer(
                    norm,
                    rewards,
                    group_size=group_size,
                    data_sources=data_sources,
                    reward_weights=reward_weights,
                    update=update,
                    lengths=lengths,
                )
            )
            stats.append(norm.last_stats)
        metrics: dict[str, float] = {}
        rows = compare_rows(torch.stack(advs), advantages) if advs else []
        for label, row, own in zip(self.normalizers, rows, stats, strict=True):
            metrics.update({f"shadow/{label}/{key}": float(v) for key, v in {**row, **own}.items()})
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        metrics["shadow/seconds"] = elapsed
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {label: norm.state_dict() for label, norm in self.normalizers.items()}

    def load_state_dict(self, states: Mapping[str, Any], where: str) -> None:
        """Restore each shadow's state; a shadow missing from ``states`` (added since) starts fresh, with a
        warning (shadows never change training, so this is not an error)."""
        for label, norm in self.normalizers.items():
            if label not in states:
                if norm.stateful:
                    logger.warning("%s has no state for shadow %r: it starts fresh.", where, label)
                continue
            try:
                norm.load_state_dict(states[label])
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(
                    f"{where}: invalid state of shadow {label!r} ({type(err).__name__}: {err}); resume from an "
                    "earlier checkpoint or remove the shadow."
                ) from err
