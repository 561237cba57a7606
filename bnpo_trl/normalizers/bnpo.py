"""The BNPO normalizer (Beta normalization), with optional per-data-source Beta fits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from bnpo_trl.normalizers import functional as F
from bnpo_trl.normalizers.base import Normalizer, register_normalizer
from bnpo_trl.normalizers.sources import group_sources, require_sources, source_masks
from bnpo_trl.normalizers.state import checked_float


@register_normalizer("bnpo", aliases=("beta",))
class BNPONormalizer(Normalizer):
    """BNPO (Xiao et al. 2025, arXiv 2506.02864, Sec. 3 and its reference code).

    Rewards are rescaled from ``reward_range=(lo, hi)`` to [0, 1]. With ``p_g`` the group mean and, over
    the groups of the batch, ``mu = mean(p_g)``, ``v = var(p_g)`` (n-1):

        a = (mu(1-mu)/v - 1) mu,   b = (mu(1-mu)/v - 1)(1-mu)           (method of moments)
        alpha = max(1, 1 + a/3),   beta = max(1, 1 + b/3)                 (Theorem 1's minimiser)
        A = (r - p_g) / f(p_g; alpha, beta),  f = normalized Beta pdf,  1/f <= max_weight

    Special cases: alpha = beta = 1 is REINFORCE with a group-mean baseline; alpha = beta = 3/2 gives
    ``(pi/8) (r - p_g) / sqrt(p_g(1 - p_g))``, GRPO with the population std times pi/8.

    Fallback (counted in ``bnpo/fallbacks``): fewer than 2 scored groups or ``v = 0`` -> alpha = beta = 1.
    Ranges: ``reward_range`` is one ``(lo, hi)``, or one per reward function (decomposition), where ``None``
    means *undeclared*: that column's range starts as [0, 1] and widens to the running min and max of every
    reward it has produced (defined by this project; kept in the state, counted in
    ``bnpo/auto_range_columns``), so 0/1 rewards get the paper's normalization and unbounded ones train. Without
    decomposition, several ranges combine as ``sum_k w_k [lo_k, hi_k]`` (0 included: TRL sums unscored
    columns as 0). The trainer fills ``reward_range`` from the reward functions' declared ranges.
    Options: fixed ``alpha``/``beta`` (ablations); ``decompose`` (default: on when F > 1) normalizes each
    reward column with its own fit and combines ``sum_k w_k A_k / sum_k w_k`` over the scored columns
    (the paper's advantage decomposition, Eq. 17); ``ema`` in [0, 1) smooths (mu, v) across steps
    (``m_t = ema m_{t-1} + (1 - ema) m``; 0 = off, faithful to the paper).
    ``per_source`` (defined by this project): the moments are fitted separately over the groups of each
    ``data_source`` (mixtures of easy and hard datasets get their own alpha, beta); a source with fewer than
    2 scored groups in the batch, or no spread, uses the pooled fit (counted in
    ``bnpo/per_source_fallbacks``); logged as ``bnpo/source/<name>/alpha|beta``; with ``ema`` each source
    keeps its own smoothed moments.
    """

    uses_reward_range = True

    def __init__(
        self,
        reward_range: Sequence[float] | Sequence[Sequence[float] | None] | None = (0.0, 1.0),
        alpha: float | None = None,
        beta: float | None = None,
        decompose: bool | None = None,
        ema: float = 0.0,
        max_weight: float = 1e6,
        per_source: bool = False,
        eps: float = 1e-4,
    ) -> None:
        super().__init__(eps=eps)
        if (alpha is None) != (beta is None):
            raise ValueError(
                "Set both `alpha` and `beta` (fixed normalization) or neither (fitted per batch)."
            )
        if alpha is not None and not (alpha > 0 and beta > 0):
            raise ValueError(f"alpha and beta must be > 0, got {alpha}, {beta}.")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema}.")
        if not max_weight > 0:
            raise ValueError(f"max_weight must be > 0, got {max_weight}.")
        self.ranges = self._parse_ranges(reward_range)
        self.alpha, self.beta = alpha, beta
        self.decompose = decompose
        self.decomposes = decompose is not False
        self.ema = float(ema)
        self.max_weight = float(max_weight)
        self.per_source = bool(per_source)
        self.requires_data_sources = self.per_source
        self._moments: dict[str, list[float]] = {}  # column -> smoothed [mu, v]
        self._seen: dict[str, list[float]] = {}  # column -> running [min, max] (undeclared ranges)

    @staticmethod
    def _parse_ranges(reward_range: Any) -> list[tuple[float, float] | None]:
        if reward_range is None or reward_range == "auto":
            return [None]
        if isinstance(reward_range, str) or not isinstance(reward_range, Sequence) or not reward_range:
            raise ValueError(f"reward_range must be (lo, hi) or a list of them, got {reward_range!r}.")
        single = not any(r is None or isinstance(r, Sequence) for r in reward_range)
        ranges: list[tuple[float, float] | None] = []
        for pair in [reward_range] if single else list(reward_range):
            if pair is None or pair == "auto":
                ranges.append(None)
                continue
            lo, hi = (float(x) for x in pair)
            if not hi > lo:
                raise ValueError(f"reward_range must be (lo, hi) with hi > lo, got {(lo, hi)}.")
            ranges.append((lo, hi))
        return ranges

    def _range(
        self, rewards: torch.Tensor, declared: tuple[float, float] | None, key: str, update: bool
    ) -> tuple[float, float]:
        if declared is not None:
            return declared
        finite = rewards[torch.isfinite(rewards)]
        lo, hi = self._seen.get(key, [0.0, 1.0])
        if finite.numel():
            lo, hi = min(lo, finite.min().item()), max(hi, finite.max().item())
        if update:
            self._seen[key] = [lo, hi]
        return lo, hi

    def _rescale(
        self, rewards: torch.Tensor, declared: tuple[float, float] | None, key: str, update: bool
    ) -> torch.Tensor:
        lo, hi = self._range(rewards, declared, key, update)
        scaled = (rewards - lo) / (hi - lo)
        tol = 1e-6
        bad = (scaled < -tol) | (scaled > 1 + tol)
        if bad.any():
            values = rewards[bad][:5].tolist()
            raise ValueError(
                f"BNPO needs rewards in [{lo}, {hi}] (a Beta distribution lives on [0, 1]) but got values such "
                f"as {values}. Set normalizer_kwargs reward_range=(lo, hi) to the range your reward functions "
                "return (a list of ranges, one per function, when decomposing)."
            )
        return scaled.clamp(0.0, 1.0)

    def _fit(self, p_g: torch.Tensor, key: str, update: bool) -> tuple[float, float, float, float, bool]:
        """-> (a, b, alpha, beta, fell_back)."""
        if self.alpha is not None:
            return math.nan, math.nan, float(self.alpha), float(self.beta), False
        p = p_g[~torch.isnan(p_g)].double()
        if self.ema > 0 and p.numel() >= 2:
            mu, var = p.mean().item(), p.var(unbiased=True).item()
            if key in self._moments:
                old_mu, old_var = self._moments[key]
                mu = self.ema * old_mu + (1 - self.ema) * mu
                var = self.ema * old_var + (1 - self.ema) * var
            if update:
                self._moments[key] = [mu, var]
            a, b, ok = F.beta_from_moments(mu, var)
        else:
            a, b, ok = F.fit_beta_moments(p)
        if not ok:
            return a, b, 1.0, 1.0, True
        return a, b, max(1.0, 1.0 + a / 3.0), max(1.0, 1.0 + b / 3.0), False

    def group_weights(
        self,
        p_g: torch.Tensor,
        key: str,
        update: bool,
        sources: Sequence[str] | None = None,
        at: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(P,) success rates in [0, 1] -> ((P,) Beta weights 1/f, stats); per source when ``per_source``.
        The Beta is fitted to ``p_g`` and its density evaluated at ``at`` (default ``p_g``)."""
        at = p_g if at is None else at
        a, b, alpha, beta, fell_back = self._fit(p_g, key, update)
        stats = {"a": a, "b": b, "alpha": alpha, "beta": beta, "fallbacks": float(fell_back)}
        if not self.per_source:
            weight, clamped = F.bnpo_weights(at, alpha, beta, self.max_weight)
            stats["clamped_weights"] = float(clamped)
            return weight, stats
        weight, clamped, pooled = torch.empty_like(p_g), 0, 0
        for source, mask in source_masks(sources, p_g.device).items():
            sub = p_g[mask]
            fit = self._fit(sub, f"{key}@{source}", update) if (~torch.isnan(sub)).sum() >= 2 else None
            if fit is None or fit[4]:
                pooled += 1
                source_alpha, source_beta = alpha, beta
            else:
                source_alpha, source_beta = fit[2], fit[3]
            weight[mask], source_clamped = F.bnpo_weights(
                at[mask], source_alpha, source_beta, self.max_weight
            )
            clamped += source_clamped
            stats[f"source/{source}/alpha"], stats[f"source/{source}/beta"] = source_alpha, source_beta
        stats["clamped_weights"], stats["per_source_fallbacks"] = float(clamped), float(pooled)
        return weight, stats

    def rescaled(
        self, rewards: torch.Tensor, declared: tuple[float, float] | None, key: str, update: bool
    ) -> torch.Tensor:
        """Rewards mapped from their (declared or running) range onto [0, 1]."""
        return self._rescale(rewards, declared, key, update)

    def _column(
        self,
        rewards: torch.Tensor,
        group_size: int,
        declared: tuple[float, float] | None,
        key: str,
        update: bool,
        sources: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        scaled = self._rescale(rewards, declared, key, update)
        p_g = F.group_mean(scaled, group_size)
        weight, stats = self.group_weights(p_g, key, update, sources)
        adv = (scaled - p_g.repeat_interleave(group_size)) * weight.repeat_interleave(group_size)
        stats["auto_range_columns"] = float(declared is None)
        return adv, stats

    def compute(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
    ) -> torch.Tensor:
        sources = None
        if self.per_source:
            sources = group_sources(require_sources(data_sources, "bnpo with per_source"), group_size)
        if rewards.dim() == 2 and rewards.shape[1] == 1 and self.decompose is None:
            rewards = F.combine_rewards(rewards, reward_weights)  # decompose defaults to on only when F > 1
        if rewards.dim() == 1:
            declared = combined_range(self.ranges, reward_weights) if len(self.ranges) > 1 else self.ranges[0]
            adv, stats = self._column(rewards, group_size, declared, "combined", update, sources)
            self.last_stats = {f"bnpo/{k}": v for k, v in stats.items()}
            return adv
        num_funcs = rewards.shape[1]
        if len(self.ranges) not in (1, num_funcs):
            raise ValueError(f"reward_range has {len(self.ranges)} ranges for {num_funcs} reward functions.")
        weights = torch.ones(num_funcs, dtype=rewards.dtype) if reward_weights is None else reward_weights
        weights = weights.to(rewards)
        columns, per_column = [], []
        for k in range(num_funcs):
            declared = self.ranges[k if len(self.ranges) > 1 else 0]
            adv_k, stats = self._column(rewards[:, k], group_size, declared, f"col{k}", update, sources)
            columns.append(adv_k)
            per_column.append(stats)
            self.last_stats.update({f"bnpo/{name}/{k}": v for name, v in stats.items()})
        adv = torch.stack(columns, dim=1)
        scored = ~torch.isnan(adv)
        w = weights.unsqueeze(0).expand_as(adv) * scored
        denom = w.sum(dim=1)
        combined = torch.where(
            denom != 0, (adv.nan_to_num(0.0) * w).sum(dim=1) / denom, torch.zeros_like(denom)
        )
        for name in ("alpha", "beta", "a", "b"):
            self.last_stats[f"bnpo/{name}"] = sum(s[name] for s in per_column) / num_funcs
        self.last_stats["bnpo/fallbacks"] = sum(s["fallbacks"] for s in per_column)
        self.last_stats["bnpo/clamped_weights"] = sum(s["clamped_weights"] for s in per_column)
        self.last_stats["bnpo/auto_range_columns"] = sum(s["auto_range_columns"] for s in per_column)
        if self.per_source:
            self.last_stats["bnpo/per_source_fallbacks"] = sum(s["per_source_fallbacks"] for s in per_column)
        return combined

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.ema > 0:
            state["ema_moments"] = {k: list(v) for k, v in self._moments.items()}
        if None in self.ranges:
            state["seen_range"] = {k: list(v) for k, v in self._seen.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        moments = {}  # smoothed moments of success rates in [0, 1]
        for key, values in state.get("ema_moments", {}).items():
            if len(values) != 2:
                raise ValueError(f"ema_moments.{key} must be [mean, variance], got {values}.")
            moments[key] = [
                checked_float(x, f"ema_moments.{key}[{i}]", low=0.0, bound=1.0) for i, x in enumerate(values)
            ]
        seen = {
            k: [checked_float(x, f"seen_range.{k}[{i}]") for i, x in enumerate(v)]
            for k, v in state.get("seen_range", {}).items()
        }
        for key, values in seen.items():
            if len(values) != 2 or not values[0] < values[1]:
                raise ValueError(f"seen_range.{key} must be [lo, hi] with lo < hi, got {values}.")
        self._moments, self._seen = moments, seen


def combined_range(
    ranges: Sequence[tuple[float, float] | None], reward_weights: torch.Tensor | None
) -> tuple[float, float] | None:
    """The range of ``sum_k w_k r_k`` (0 included), or ``None`` when a column's range is undeclared."""
    weights = [1.0] * len(ranges) if reward_weights is None else reward_weights.tolist()
    if len(weights) != len(ranges):
        raise ValueError(f"reward_range has {len(ranges)} ranges for {len(weights)} reward functions.")
    if any(r is None for r in ranges):
        return None
    lo = sum(min(w * a, w * b, 0.0) for w, (a, b) in zip(weights, ranges, strict=True))
    hi = sum(max(w * a, w * b, 0.0) for w, (a, b) in zip(weights, ranges, strict=True))
    return (lo, hi) if hi > lo else None
