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
from bnpo_trl.normalizers.state import Welford, checked_float


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

    def _column(
        self,
        rewards: torch.Tensor,
        group_size: int,
        declared: tuple[float, float] | None,
        key: str,
        update: bool,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        scaled = self._rescale(rewards, declared, key, update)
        p_g = F.group_mean(scaled, group_size)
        a, b, alpha, beta, fell_back = self._fit(p_g, key, update)
        adv, clamped = F.bnpo_advantages(scaled, group_size, alpha, beta, self.max_weight)
        stats = {"a": a, "b": b, "alpha": alpha, "beta": beta, "fallbacks": float(fell_back)}
        stats["clamped_weights"] = float(clamped)
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
        if rewards.dim() == 2 and rewards.shape[1] == 1 and self.decompose is None:
            rewards = F.combine_rewards(rewards, reward_weights)  # decompose defaults to on only when F > 1
        if rewards.dim() == 1:
            declared = self._combined_range(reward_weights) if len(self.ranges) > 1 else self.ranges[0]
            adv, stats = self._column(rewards, group_size, declared, "combined", update)
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
            adv_k, stats = self._column(rewards[:, k], group_size, declared, f"col{k}", update)
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
        return combined

    def _combined_range(self, reward_weights: torch.Tensor | None) -> tuple[float, float] | None:
        """The range of ``sum_k w_k r_k`` (0 included), or ``None`` when a column's range is undeclared."""
        weights = [1.0] * len(self.ranges) if reward_weights is None else reward_weights.tolist()
        if len(weights) != len(self.ranges):
            raise ValueError(
                f"reward_range has {len(self.ranges)} ranges for {len(weights)} reward functions."
            )
        if any(r is None for r in self.ranges):
            return None
        lo = sum(min(w * a, w * b, 0.0) for w, (a, b) in zip(weights, self.ranges, strict=True))
        hi = sum(max(w * a, w * b, 0.0) for w, (a, b) in zip(weights, self.ranges, strict=True))
        return (lo, hi) if hi > lo else None

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
    """

    def __init__(self, standardize: bool = True, eps: float = 1e-4) -> None:
        super().__init__(eps=eps)
        self.standardize = bool(standardize)
        self.rewards_stats = Welford()
        self.group_mean_stats = Welford()

    def compute(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
    ) -> torch.Tensor:
        reward_stats = self.rewards_stats.merged(rewards)
        group_stats = self.group_mean_stats.merged(F.group_mean(rewards, group_size))
        if update:
            self.rewards_stats, self.group_mean_stats = reward_stats, group_stats
        adv, shrink = F.ebpo_advantages(
            rewards,
            group_size,
            reward_stats.mean,
            reward_stats.variance,
            group_stats.variance,
            self.standardize,
            self.eps,
        )
        self.last_stats = {
            "ebpo/shrinkage": shrink[F.group_count(rewards, group_size) > 0].mean().nan_to_num(0.0).item(),
            "ebpo/global_mean": reward_stats.mean,
            "ebpo/reward_var": reward_stats.variance,
            "ebpo/group_mean_var": group_stats.variance,
            "ebpo/num_rewards_seen": float(reward_stats.count),
        }
        return adv

    def state_dict(self) -> dict[str, Any]:
        return {"rewards": self.rewards_stats.state_dict(), "group_means": self.group_mean_stats.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rewards, group_means = Welford(), Welford()
        rewards.load_state_dict(state["rewards"], field="rewards")
        group_means.load_state_dict(state["group_means"], field="group_means")
        if group_means.count > rewards.count:
            raise ValueError(
                f"group_means.count ({group_means.count}) exceeds rewards.count ({rewards.count}): every group "
                "mean comes from at least one reward."
            )
        self.rewards_stats, self.group_mean_stats = rewards, group_means


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

    def compute(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
    ) -> torch.Tensor:
        if data_sources is None:
            raise ValueError(
                "The 'median' normalizer needs a data source per row: set data_source_column to the dataset "
                "column naming each row's source (pass data_sources=[...] when calling it directly)."
            )
        num_groups = rewards.shape[0] // group_size
        sources = [str(s) for s in data_sources]
        group_sources = sources[::group_size]
        if any(sources[i] != group_sources[i // group_size] for i in range(len(sources))):
            raise ValueError("Every completion of a prompt must have the same data source.")
        std_g = F.group_std(rewards, group_size) if group_size > 1 else torch.full((num_groups,), math.nan)
        mean_g = F.group_mean(rewards, group_size)
        codes = {s: i for i, s in enumerate(dict.fromkeys(group_sources))}
        group_code = torch.tensor([codes[s] for s in group_sources], device=rewards.device)
        row_code = group_code.repeat_interleave(group_size)
        current_stds: dict[str, list[float]] = {}
        current_rewards: dict[str, list[float]] = {}
        scale = torch.empty(len(codes), dtype=rewards.dtype, device=rewards.device)
        centre_by_source = torch.empty_like(scale)
        fallback_std = fallback_unit = 0
        for source, code in codes.items():  # one iteration per data source, not per sample
            in_source = group_code == code
            stds = std_g[in_source]
            current_stds[source] = stds[stds > 0].tolist()
            pool = self._pooled(self._std_history, source) + current_stds[source]
            source_rewards = rewards[row_code == code]
            source_rewards = source_rewards[~torch.isnan(source_rewards)]
            if pool:
                scale[code] = torch.tensor(pool, dtype=torch.float64).quantile(0.5).item()
            else:
                source_std = (
                    F.nanstd(source_rewards) if source_rewards.numel() > 1 else torch.tensor(math.nan)
                )
                if source_std > 0:
                    scale[code], fallback_std = source_std.item(), fallback_std + 1
                else:
                    scale[code], fallback_unit = 1.0, fallback_unit + 1
            self.last_stats[f"median/scale/{source}"] = scale[code].item()
            if self.center == "source_median":
                current_rewards[source] = source_rewards.tolist()
                pooled = self._pooled(self._reward_history, source) + current_rewards[source]
                centre_by_source[code] = (
                    torch.tensor(pooled or [0.0], dtype=torch.float64).quantile(0.5).item()
                )
        centre = mean_g if self.center == "group_mean" else centre_by_source[group_code]
        adv = (rewards - centre.repeat_interleave(group_size)) / (scale[row_code] + self.eps)
        if update and self.window:
            self._std_history = [*self._std_history, current_stds][-self.window :]
            if self.center == "source_median":
                self._reward_history = [*self._reward_history, current_rewards][-self.window :]
        self.last_stats["median/fallback_source_std"] = float(fallback_std)
        self.last_stats["median/fallback_unit"] = float(fallback_unit)
        return adv

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
