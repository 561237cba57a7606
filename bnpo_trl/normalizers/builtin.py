"""The built-in normalizers. Each docstring gives the formula and its source.

The stateless ones (group, batch, none, rloo, reinforce_pp) are the pure functions of
:mod:`bnpo_trl.normalizers.functional`, registered directly; the classes below keep running state or
per-call statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from bnpo_trl.normalizers import functional as F
from bnpo_trl.normalizers.base import Normalizer, register_normalizer, resolve_normalizer
from bnpo_trl.normalizers.bnpo import BNPONormalizer
from bnpo_trl.normalizers.ebpo import EBPONormalizer
from bnpo_trl.normalizers.sources import group_sources, require_sources, source_masks
from bnpo_trl.normalizers.state import checked_float

__all__ = [
    "BNPONormalizer",
    "BatchNormalizer",
    "EBPONormalizer",
    "GroupNormalizer",
    "MeanOnlyNormalizer",
    "RLOONormalizer",
    "ReinforcePPNormalizer",
    "SourceMedianNormalizer",
]


def _stateless(name: str, aliases: tuple[str, ...], func: Any, class_name: str) -> type[Normalizer]:
    """Register a pure function of :mod:`~bnpo_trl.normalizers.functional`; its docstring is the class's."""
    register_normalizer(name, aliases=aliases, class_name=class_name)(func)
    cls = resolve_normalizer(name)
    cls.__module__ = __name__  # importable (and picklable) from here under its public name
    return cls


GroupNormalizer = _stateless("group", ("grpo",), F.group_advantages, "GroupNormalizer")
BatchNormalizer = _stateless("batch", (), F.batch_advantages, "BatchNormalizer")
MeanOnlyNormalizer = _stateless("none", ("dr_grpo",), F.dr_grpo_advantages, "MeanOnlyNormalizer")
RLOONormalizer = _stateless("rloo", (), F.rloo_advantages, "RLOONormalizer")
ReinforcePPNormalizer = _stateless(
    "reinforce_pp", ("reinforce_plus_plus",), F.reinforce_pp_advantages, "ReinforcePPNormalizer"
)


@register_normalizer("median", aliases=("source_median",))
class SourceMedianNormalizer(Normalizer):
    """Per-data-source robust scale. Defined by this project (not from a paper).

    ``A = (r - c_g) / (scale_s + eps)`` with ``s`` the group's data source and
      - ``scale_s`` = median of the positive group stds (n-1) of source s, pooled over this batch and the
        last ``window`` calls; fallbacks, each counted in ``last_stats``: no positive std in the pool ->
        the std of source s's rewards in this batch (``median/fallback_source_std``) -> 1.0
        (``median/fallback_unit``);
      - ``c_g`` = mean_g (``center="group_mean"``), or the median reward of source s's pool
        (``center="source_median"``, meant for continuous rewards: with binary rewards the majority
        outcome then gets no signal).
    Medians interpolate (the mean of the two middle values for an even count).
    """

    requires_data_sources = True

    def __init__(self, window: int = 8, center: str = "group_mean", eps: float = 1e-4) -> None:
        super().__init__(eps=eps)
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}.")
        if center not in ("group_mean", "source_median"):
            raise ValueError(f"center must be 'group_mean' or 'source_median', got {center!r}.")
        self.window, self.center = int(window), center
        self._std_history: list[dict[str, list[float]]] = []  # one {source: positive stds} per past call
        self._reward_history: list[dict[str, list[float]]] = []  # only with center="source_median"

    def _pooled(self, history: list[dict[str, list[float]]], source: str) -> list[float]:
        """The values ``source`` contributed to the last ``window`` calls."""
        recent = history[-self.window :] if self.window else []
        return [x for past in recent for x in past.get(source, [])]

    def scale_rows(
        self, rewards: torch.Tensor, group_size: int, per_group: Sequence[str], update: bool
    ) -> torch.Tensor:
        """(N,) ``scale_s`` of each row's source (the fallbacks counted in ``last_stats``); with ``update`` the
        batch's positive group stds join the window."""
        num_groups = rewards.shape[0] // group_size
        std_g = F.group_std(rewards, group_size) if group_size > 1 else torch.full((num_groups,), math.nan)
        scale = torch.empty(num_groups, dtype=rewards.dtype, device=rewards.device)
        current: dict[str, list[float]] = {}
        fallback_std = fallback_unit = 0
        for source, mask in source_masks(per_group, rewards.device).items():  # per source, not per sample
            stds = std_g[mask]
            current[source] = stds[stds > 0].tolist()
            pool = self._pooled(self._std_history, source) + current[source]
            if pool:
                value = torch.tensor(pool, dtype=torch.float64).quantile(0.5).item()
            else:
                source_rewards = rewards[mask.repeat_interleave(group_size)]
                source_rewards = source_rewards[~torch.isnan(source_rewards)]
                source_std = (
                    F.nanstd(source_rewards) if source_rewards.numel() > 1 else torch.tensor(math.nan)
                )
                if source_std > 0:
                    value, fallback_std = source_std.item(), fallback_std + 1
                else:
                    value, fallback_unit = 1.0, fallback_unit + 1
            scale[mask] = value
            self.last_stats[f"median/scale/{source}"] = scale[mask][0].item()
        if update and self.window:
            self._std_history = [*self._std_history, current][-self.window :]
        self.last_stats["median/fallback_source_std"] = float(fallback_std)
        self.last_stats["median/fallback_unit"] = float(fallback_unit)
        return scale.repeat_interleave(group_size)

    def centre_rows(
        self, rewards: torch.Tensor, group_size: int, per_group: Sequence[str], update: bool
    ) -> torch.Tensor:
        """(N,) median reward of each row's source, pooled over this batch and the last ``window`` calls."""
        centre = torch.empty(len(per_group), dtype=rewards.dtype, device=rewards.device)
        current: dict[str, list[float]] = {}
        for source, mask in source_masks(per_group, rewards.device).items():
            source_rewards = rewards[mask.repeat_interleave(group_size)]
            current[source] = source_rewards[~torch.isnan(source_rewards)].tolist()
            pooled = self._pooled(self._reward_history, source) + current[source]
            centre[mask] = torch.tensor(pooled or [0.0], dtype=torch.float64).quantile(0.5).item()
        if update and self.window:
            self._reward_history = [*self._reward_history, current][-self.window :]
        return centre.repeat_interleave(group_size)

    def compute(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
    ) -> torch.Tensor:
        per_group = group_sources(require_sources(data_sources, "The 'median' normalizer"), group_size)
        scale = self.scale_rows(rewards, group_size, per_group, update)
        if self.center == "group_mean":
            centre = F.group_mean(rewards, group_size).repeat_interleave(group_size)
        else:
            centre = self.centre_rows(rewards, group_size, per_group, update)
        return (rewards - centre) / (scale + self.eps)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"std_history": self._std_history}
        if self.center == "source_median":
            state["reward_history"] = self._reward_history
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stds = _checked_history(state["std_history"], "std_history", positive=True)
        rewards = _checked_history(state.get("reward_history", []), "reward_history", positive=False)
        if self.window and max(len(stds), len(rewards)) > self.window:
            raise ValueError(
                f"std_history holds {len(stds)} steps, more than this run's window={self.window}: the checkpoint "
                "was saved with other options."
            )
        self._std_history, self._reward_history = stds, rewards


def _checked_history(history: Any, field: str, positive: bool) -> list[dict[str, list[float]]]:
    """A median history (one ``{source: [values]}`` per step) with every value finite (stds: > 0)."""
    if not isinstance(history, list):
        raise ValueError(f"{field} must be a list of {{source: [values]}}, got {type(history).__name__}.")
    out = []
    for step, entry in enumerate(history):
        if not isinstance(entry, dict):
            raise ValueError(f"{field}[{step}] must be a mapping source -> values, got {entry!r}.")
        checked = {}
        for source, values in entry.items():
            where = f"{field}[{step}].{source}"
            checked[source] = [checked_float(x, f"{where}[{i}]") for i, x in enumerate(values)]
            if positive and any(x <= 0 for x in checked[source]):
                raise ValueError(f"{where} holds a std <= 0: {checked[source]}.")
        out.append(checked)
    return out
