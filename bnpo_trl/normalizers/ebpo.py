"""The EBPO normalizer (empirical-Bayes shrinkage of group baselines), with optional per-source priors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bnpo_trl.normalizers import functional as F
from bnpo_trl.normalizers.base import Normalizer, register_normalizer
from bnpo_trl.normalizers.sources import group_sources, require_sources, source_masks
from bnpo_trl.normalizers.state import Welford


class _Prior:
    """The two running accumulators of one prior: every reward, and every group mean."""

    def __init__(self, rewards: Welford | None = None, group_means: Welford | None = None) -> None:
        self.rewards = rewards or Welford()
        self.group_means = group_means or Welford()

    def merged(self, rewards: torch.Tensor, group_means: torch.Tensor) -> _Prior:
        return _Prior(self.rewards.merged(rewards), self.group_means.merged(group_means))

    def state_dict(self) -> dict[str, Any]:
        return {"rewards": self.rewards.state_dict(), "group_means": self.group_means.state_dict()}

    @classmethod
    def from_state(cls, state: dict[str, Any], where: str = "") -> _Prior:
        rewards, group_means = Welford(), Welford()
        rewards.load_state_dict(state["rewards"], field=f"{where}rewards")
        group_means.load_state_dict(state["group_means"], field=f"{where}group_means")
        if group_means.count > rewards.count:
            raise ValueError(
                f"{where}group_means.count ({group_means.count}) exceeds {where}rewards.count "
                f"({rewards.count}): every group mean comes from at least one reward."
            )
        return cls(rewards, group_means)


@register_normalizer("ebpo")
class EBPONormalizer(Normalizer):
    """EBPO (arXiv 2602.05165): group baselines shrunk toward a global prior tracked with Welford.

    Two Welford accumulators over the whole run, updated with the batch before use (``update=True``):
    every individual reward -> ``mu_glob``, ``s2``; every group mean -> ``t2`` (both n-1 variances).

        S_g = (s2/G) / (s2/G + t2)   (0 when both are 0; G = scored rewards in the group)
        V_g = (1 - S_g) mean_g + S_g mu_glob,   A_raw = r - V_g
        A = (A_raw - mean(A_raw)) / (std(A_raw) + eps) over the batch   (``standardize=True``)

    An all-zero group gets ``A_raw = -S_g mu_glob < 0`` once ``mu_glob > 0`` (the paper's non-vanishing
    failure signal); after standardization it stays negative whenever any reward in the batch is
    positive. (A batch in which every reward is equal has std(A_raw) = 0 and gets A = 0.)

    ``per_source`` (defined by this project): each ``data_source`` keeps its own two accumulators, and its
    groups shrink toward its own ``mu, s2, t2``; a source whose accumulators hold fewer than 2 group means
    (counted over the run, this batch included) uses the pooled prior, counted in
    ``ebpo/per_source_fallbacks``. The standardization stays over the whole batch. Logged as
    ``ebpo/source/<name>/global_mean|shrinkage``.
    """

    def __init__(self, standardize: bool = True, per_source: bool = False, eps: float = 1e-4) -> None:
        super().__init__(eps=eps)
        self.standardize = bool(standardize)
        self.per_source = bool(per_source)
        self.requires_data_sources = self.per_source
        self.prior = _Prior()
        self.source_priors: dict[str, _Prior] = {}

    @property
    def rewards_stats(self) -> Welford:
        return self.prior.rewards

    @property
    def group_mean_stats(self) -> Welford:
        return self.prior.group_means

    def priors(
        self, rewards: torch.Tensor, group_size: int, data_sources: Sequence[str] | None, update: bool
    ) -> tuple[Any, Any, Any]:
        """``(mu, s2, t2)`` for :func:`~bnpo_trl.normalizers.functional.ebpo_advantages`: floats (pooled) or
        (P,) tensors (per source), from the accumulators merged with this batch (kept when ``update``)."""
        means = F.group_mean(rewards, group_size)
        pooled = self.prior.merged(rewards, means)
        if update:
            self.prior = pooled
        self.last_stats.update(
            {
                "ebpo/global_mean": pooled.rewards.mean,
                "ebpo/reward_var": pooled.rewards.variance,
                "ebpo/group_mean_var": pooled.group_means.variance,
                "ebpo/num_rewards_seen": float(pooled.rewards.count),
            }
        )
        if not self.per_source:
            return pooled.rewards.mean, pooled.rewards.variance, pooled.group_means.variance
        per_group = group_sources(require_sources(data_sources, "ebpo with per_source"), group_size)
        mu, s2, t2 = (torch.empty_like(means) for _ in range(3))
        fallbacks = 0
        for source, mask in source_masks(per_group, rewards.device).items():
            rows = mask.repeat_interleave(group_size)
            prior = self.source_priors.get(source, _Prior()).merged(rewards[rows], means[mask])
            if update:
                self.source_priors[source] = prior
            used = prior if prior.group_means.count >= 2 else pooled
            fallbacks += used is pooled
            mu[mask], s2[mask], t2[mask] = used.rewards.mean, used.rewards.variance, used.group_means.variance
            self.last_stats[f"ebpo/source/{source}/global_mean"] = used.rewards.mean
        self.last_stats["ebpo/per_source_fallbacks"] = float(fallbacks)
        return mu, s2, t2

    def compute(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
    ) -> torch.Tensor:
        mu, s2, t2 = self.priors(rewards, group_size, data_sources, update)
        adv, shrink = F.ebpo_advantages(rewards, group_size, mu, s2, t2, self.standardize, self.eps)
        scored = F.group_count(rewards, group_size) > 0
        self.last_stats["ebpo/shrinkage"] = shrink[scored].mean().nan_to_num(0.0).item()
        if self.per_source:
            per_group = group_sources(data_sources, group_size)
            for source, mask in source_masks(per_group, rewards.device).items():
                kept = shrink[mask & scored]
                self.last_stats[f"ebpo/source/{source}/shrinkage"] = kept.mean().nan_to_num(0.0).item()
        return adv

    def state_dict(self) -> dict[str, Any]:
        state = self.prior.state_dict()
        if self.per_source:
            state["by_source"] = {s: p.state_dict() for s, p in self.source_priors.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prior = _Prior.from_state(state)
        by_source = state.get("by_source", {})
        if by_source and not self.per_source:
            raise ValueError(
                "The state has per-source priors (by_source) but this ebpo has per_source=False."
            )
        if not isinstance(by_source, dict):
            raise ValueError(f"by_source must be a mapping source -> prior, got {type(by_source).__name__}.")
        sources = {s: _Prior.from_state(p, where=f"by_source.{s}.") for s, p in by_source.items()}
        self.prior, self.source_priors = prior, sources
