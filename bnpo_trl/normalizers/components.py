"""The parts of a composed normalizer: centres (r -> r - baseline), scales, post-steps.

Each part is a small class holding its own running state (``state_dict``/``load_state_dict``); the stateful
ones reuse the statistics of the named normalizers (``ebpo``, ``bnpo``, ``median``) so that a preset
computes the same numbers. :mod:`bnpo_trl.normalizers.algebra` composes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bnpo_trl.normalizers import functional as F
from bnpo_trl.normalizers.bnpo import BNPONormalizer
from bnpo_trl.normalizers.builtin import SourceMedianNormalizer
from bnpo_trl.normalizers.ebpo import EBPONormalizer
from bnpo_trl.normalizers.sources import require_sources, source_masks
from bnpo_trl.normalizers.state import Welford

__all__ = ["CENTERS", "POSTS", "SCALES", "BNPOScale", "Batch", "Component", "OPOCenter"]


@dataclass
class Batch:
    """What a component sees besides the rewards: group size, per-group sources, eps, the stats to fill, and
    the (N,) completion lengths when the caller gave them."""

    group_size: int
    sources: list[str] | None
    eps: float
    stats: dict[str, float]
    lengths: torch.Tensor | None = None


def _rows(per_group: torch.Tensor, batch: Batch) -> torch.Tensor:
    return per_group.repeat_interleave(batch.group_size)


class Component:
    """A centre, scale or post-step; ``options`` are its keyword arguments (``per_source`` where listed)."""

    per_source_capable = False
    needs_sources = False

    def __init__(self, per_source: bool = False) -> None:
        self.per_source = per_source

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state but got keys {sorted(state)}.")


# -- centres: rewards -> r - baseline ------------------------------------------------------------------
class GroupMeanCenter(Component):
    """``r - mean_g`` (GRPO's baseline)."""

    def centred(self, rewards: torch.Tensor, batch: Batch, update: bool) -> torch.Tensor:
        return rewards - _rows(F.group_mean(rewards, batch.group_size), batch)


class LeaveOneOutCenter(Component):
    """``r - mean of the other scored rewards of the group`` (RLOO); 0 for a group with one scored reward."""

    def centred(self, rewards: torch.Tensor, batch: Batch, update: bool) -> torch.Tensor:
        grouped = rewards.view(-1, batch.group_size)
        count = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
        others = (grouped.nansum(dim=1, keepdim=True) - grouped) / (count - 1).clamp(min=1)
        return (grouped - torch.where(count > 1, others, grouped)).view(-1)


class OPOCenter(Component):
    """``r - sum_i l_i r_i / sum_i l_i`` over the group (OPO's length-weighted baseline, ``opo``); without
    lengths the group mean, counted in ``opo/no_lengths``."""

    def centred(self, rewards: torch.Tensor, batch: Batch, update: bool) -> torch.Tensor:
        adv, zero_length = F.opo_advantages(rewards, batch.group_size, batch.lengths)
        batch.stats["opo/no_lengths"] = float(batch.lengths is None)
        batch.stats["opo/zero_length_groups"] = float(zero_length)
        return adv


class EBPOCenter(Component):
    """``r - V_g``, EBPO's shrunk group mean (see :class:`~bnpo_trl.normalizers.EBPONormalizer`)."""

    per_source_capable = True

    def __init__(self, per_source: bool = False) -> None:
        super().__init__(per_source)
        self.inner = EBPONormalizer(standardize=False, per_source=per_source)

    def centred(self, rewards: torch.Tensor, batch: Batch, update: bool) -> torch.Tensor:
        self.inner.last_stats = {}
        sources = _row_sources(batch)
        mu, s2, t2 = self.inner.priors(rewards, batch.group_size, sources, update)
        adv, shrink = F.ebpo_advantages(rewards, batch.group_size, mu, s2, t2, False, batch.eps)
        batch.stats.update(self.inner.last_stats)
        scored = F.group_count(rewards, batch.group_size) > 0
        batch.stats["ebpo/shrinkage"] = shrink[scored].mean().nan_to_num(0.0).item()
        return adv

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class RunningMeanCenter(Component):
    """``r - mu``, the mean of every reward seen so far (Welford, this batch included); per source with
    ``per_source`` (a source seen for the first time uses the pooled mean; counted)."""

    per_source_capable = True

    def __init__(self, per_source: bool = False) -> None:
        super().__init__(per_source)
        self.pooled = Welford()
        self.by_source: dict[str, Welford] = {}

    def centred(self, rewards: torch.Tensor, batch: Batch, update: bool) -> torch.Tensor:
        pooled = self.pooled.merged(rewards)
        baseline = torch.full_like(rewards, pooled.mean)
        if self.per_source:
            per_group = require_sources(batch.sources, "center running_mean with per_source")
            for source, mask in source_masks(per_group, rewards.device).items():
                rows = mask.repeat_interleave(batch.group_size)
                merged = self.by_source.get(source, Welford()).merged(rewards[rows])
                baseline[rows] = merged.mean
                if update:
                    self.by_source[source] = merged
        if update:
            self.pooled = pooled
        batch.stats["running_mean/mean"] = pooled.mean
        return rewards - baseline

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"pooled": self.pooled.state_dict()}
        if self.per_source:
            state["by_source"] = {s: w.state_dict() for s, w in self.by_source.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pooled = Welford()
        pooled.load_state_dict(state["pooled"], field="pooled")
        by_source = {}
        for source, values in state.get("by_source", {}).items():
            by_source[source] = Welford()
            by_source[source].load_state_dict(values, field=f"by_source.{source}")
        self.pooled, self.by_source = pooled, by_source


class _MedianBacked(Component):
    """A component computed by a :class:`SourceMedianNormalizer` (its window and history)."""

    needs_sources = True
    center = "group_mean"

    def __init__(self, window: int = 8) -> None:
        super().__init__()
        self.inner = SourceMedianNormalizer(window=window, center=self.center)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class SourceMedianCenter(_MedianBacked):
    """``r - median reward of the row's source`` over this batch and the last ``window`` calls."""

    center = "source_median"

    def centred(self, rewards: torch.Tensor, batch: Batch, update: bool) -> torch.Tensor:
        per_group = require_sources(batch.sources, "center source_median")
        return rewards - self.inner.centre_rows(rewards, batch.group_size, per_group, update)


# -- scales: (r - baseline) -> advantages ---------------------------------------------------------------
class NoScale(Component):
    """Leaves the centred rewards as they are (Dr. GRPO, RLOO)."""

    def scaled(
        self, centred: torch.Tensor, rewards: torch.Tensor, batch: Batch, update: bool
    ) -> torch.Tensor:
        return centred


class GroupStdScale(Component):
    """Divides by ``std_g + eps``, the group's Bessel-corrected reward std (GRPO)."""

    def scaled(
        self, centred: torch.Tensor, rewards: torch.Tensor, batch: Batch, update: bool
    ) -> torch.Tensor:
        return centred / (_rows(F.group_std(rewards, batch.group_size), batch) + batch.eps)


class BatchStdScale(Component):
    """Divides by ``std + eps``, the reward std over the whole batch."""

    def scaled(
        self, centred: torch.Tensor, rewards: torch.Tensor, batch: Batch, update: bool
    ) -> torch.Tensor:
        return centred / (F.nanstd(rewards) + batch.eps)


class BNPOScale(Component):
    """Multiplies by ``1/f(p_g; alpha, beta)``, BNPO's Beta weight; the rewards are first mapped onto [0, 1]
    from their range (so the centre sees success rates). Options: those of ``bnpo`` (``ema``,
    ``max_weight``, fixed ``alpha``/``beta``, ``per_source``); ``reward_range`` comes from the composition.

    A group whose rewards are all 0 or all 1 has ``f(p_g) = 0`` once alpha or beta > 1: under the group mean
    its centred rewards are 0 and the weight does not matter, but another centre (EBPO's shrunk mean) gives
    it a signal. Its density is then evaluated half a count inside, at ``1/(2n)`` or ``1 - 1/(2n)`` (n = its
    scored rewards; defined by this project), counted in ``bnpo/boundary_groups``.
    """

    per_source_capable = True

    def __init__(self, per_source: bool = False, **options: Any) -> None:
        super().__init__(per_source)
        self.inner = BNPONormalizer(per_source=per_source, decompose=False, **options)

    def prepared(self, rewards: torch.Tensor, declared: Any, key: str, update: bool) -> torch.Tensor:
        return self.inner.rescaled(rewards, declared, key, update)

    def scaled(
        self, centred: torch.Tensor, rewards: torch.Tensor, batch: Batch, update: bool
    ) -> torch.Tensor:
        p_g = F.group_mean(rewards, batch.group_size)
        half = 0.5 / F.group_count(rewards, batch.group_size).clamp(min=1).to(p_g.dtype)
        at = torch.where(p_g == 0, half, torch.where(p_g == 1, 1 - half, p_g))
        weight, stats = self.inner.group_weights(p_g, "combined", update, batch.sources, at=at)
        batch.stats.update({f"bnpo/{k}": v for k, v in stats.items()})
        batch.stats["bnpo/boundary_groups"] = float(((p_g == 0) | (p_g == 1)).sum())
        return centred * _rows(weight, batch)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.inner._moments:  # smoothed moments (ema) and running ranges (undeclared), as bnpo saves them
            state["ema_moments"] = {k: list(v) for k, v in self.inner._moments.items()}
        if self.inner._seen:
            state["seen_range"] = {k: list(v) for k, v in self.inner._seen.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class SourceStdScale(_MedianBacked):
    """Divides by ``scale_s + eps``, the median positive group std of the row's source (``median``)."""

    def scaled(
        self, centred: torch.Tensor, rewards: torch.Tensor, batch: Batch, update: bool
    ) -> torch.Tensor:
        per_group = require_sources(batch.sources, "scale source_std")
        self.inner.last_stats = {}
        scale = self.inner.scale_rows(rewards, batch.group_size, per_group, update)
        batch.stats.update(self.inner.last_stats)
        return centred / (scale + batch.eps)


# -- post-steps: advantages -> advantages ------------------------------------------------------------
class Standardize(Component):
    """``(A - mean(A)) / (std(A) + eps)`` over the batch (REINFORCE++, EBPO)."""

    def applied(self, adv: torch.Tensor, batch: Batch) -> torch.Tensor:
        return (adv - torch.nanmean(adv)) / (torch.nan_to_num(F.nanstd(adv), nan=0.0) + batch.eps)


class Clip(Component):
    """``A`` clamped to ``[-max_abs, max_abs]``; the clipped count is ``clip/clipped``."""

    def __init__(self, max_abs: float = 5.0) -> None:
        super().__init__()
        if not max_abs > 0:
            raise ValueError(f"clip: max_abs must be > 0, got {max_abs}.")
        self.max_abs = float(max_abs)

    def applied(self, adv: torch.Tensor, batch: Batch) -> torch.Tensor:
        batch.stats["clip/clipped"] = float((adv.abs() > self.max_abs).sum())
        return adv.clamp(-self.max_abs, self.max_abs)


class FilterZeroSignal(Component):
    """Marks groups whose advantages are all 0 for removal from the loss (the trainer masks them; their
    advantages are 0 already); ``filter_zero_signal/fraction`` is the fraction of groups marked."""

    def applied(self, adv: torch.Tensor, batch: Batch) -> torch.Tensor:
        zero = torch.nan_to_num(adv, nan=0.0).view(-1, batch.group_size).abs().amax(dim=1) == 0
        batch.stats["filter_zero_signal/fraction"] = zero.float().mean().item()
        return adv


CENTERS: dict[str, type[Component]] = {
    "group_mean": GroupMeanCenter,
    "loo": LeaveOneOutCenter,
    "ebpo": EBPOCenter,
    "running_mean": RunningMeanCenter,
    "source_median": SourceMedianCenter,
    "opo": OPOCenter,
}
SCALES: dict[str, type[Component]] = {
    "none": NoScale,
    "group_std": GroupStdScale,
    "batch_std": BatchStdScale,
    "bnpo": BNPOScale,
    "source_std": SourceStdScale,
}
POSTS: dict[str, type[Component]] = {
    "standardize": Standardize,
    "clip": Clip,
    "filter_zero_signal": FilterZeroSignal,
}


def _row_sources(batch: Batch) -> list[str] | None:
    return None if batch.sources is None else [s for s in batch.sources for _ in range(batch.group_size)]
