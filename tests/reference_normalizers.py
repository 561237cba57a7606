"""Slow pure-Python references for the advantage normalizers, written from the specification.

Everything here works on plain Python floats with explicit loops over groups and rows (``math``,
``statistics``; no torch). ``NaN`` marks an unscored reward. Functions return the *raw* advantages
(``NaN`` for unscored rows and wherever a formula is undefined); :func:`finalize` applies the
interface contract (unscored rows and non-finite values become 0) and is what tests compare to.

Spec conventions: ``N = P * G``, group ``p`` is rows ``p*G ... p*G+G-1``; std/var are Bessel (n-1);
``eps = 1e-4``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

NAN = math.nan
EPS = 1e-4


def isnan(x: float) -> bool:
    return x != x


def scored(values: Sequence[float]) -> list[float]:
    return [x for x in values if not isnan(x)]


def groups(values: Sequence[float], group_size: int) -> list[list[float]]:
    if len(values) % group_size:
        raise ValueError("N is not a multiple of G")
    return [list(values[p * group_size : (p + 1) * group_size]) for p in range(len(values) // group_size)]


def mean_or_nan(values: Sequence[float]) -> float:
    vals = scored(values)
    return math.fsum(vals) / len(vals) if vals else NAN


def stdev_or_nan(values: Sequence[float]) -> float:
    vals = scored(values)
    return statistics.stdev(vals) if len(vals) >= 2 else NAN


def div(num: float, den: float) -> float:
    """num / den, NaN when den == 0 (the formula is undefined; finalize turns it into 0)."""
    return num / den if den != 0 else NAN


def finalize(adv: Sequence[float]) -> list[float]:
    """The interface contract: NaN / +-inf -> 0."""
    return [x if math.isfinite(x) else 0.0 for x in adv]


def combine(rows: Sequence, weights: Sequence[float] | None = None) -> list[float]:
    """TRL ``sum_then_normalize``: per row, sum of w_k * r_k over non-NaN r_k; NaN if all are NaN."""
    out = []
    for row in rows:
        cells = list(row) if isinstance(row, (list, tuple)) else [row]
        w = list(weights) if weights is not None else [1.0] * len(cells)
        terms = [wk * rk for wk, rk in zip(w, cells, strict=True) if not isnan(rk)]
        out.append(math.fsum(terms) if terms else NAN)
    return out


# ------------------------------------------------------------------------------------ group / batch / none


def group_ref(rewards: Sequence[float], group_size: int, eps: float = EPS) -> list[float]:
    """A = (r - mean_g) / (std_g + eps); G = 1 -> std 0."""
    out = []
    for g in groups(rewards, group_size):
        m = mean_or_nan(g)
        s = 0.0 if group_size == 1 else stdev_or_nan(g)
        out += [div(r - m, s + eps) for r in g]
    return out


def batch_ref(rewards: Sequence[float], group_size: int, eps: float = EPS) -> list[float]:
    """A = (r - mean_g) / (std_all + eps), std_all over all scored rewards of the batch."""
    s_all = stdev_or_nan(rewards)
    out = []
    for g in groups(rewards, group_size):
        m = mean_or_nan(g)
        out += [div(r - m, s_all + eps) for r in g]
    return out


def none_ref(rewards: Sequence[float], group_size: int) -> list[float]:
    """A = r - mean_g."""
    out = []
    for g in groups(rewards, group_size):
        m = mean_or_nan(g)
        out += [r - m for r in g]
    return out


def rloo_ref(rewards: Sequence[float], group_size: int) -> list[float]:
    """A = r - mean of the *other* scored rewards of the group; 0 when the group has one scored value."""
    out = []
    for g in groups(rewards, group_size):
        for i, r in enumerate(g):
            if isnan(r):
                out.append(NAN)
                continue
            others = [x for j, x in enumerate(g) if j != i and not isnan(x)]
            out.append(r - math.fsum(others) / len(others) if others else 0.0)
    return out


# ------------------------------------------------------------------------------------------------- BNPO


def _xlogy(c: float, x: float) -> float:
    """c * log(x) with 0 * log(0) = 0."""
    if c == 0.0:
        return 0.0
    if x == 0.0:
        return -math.inf if c > 0 else math.inf
    return c * math.log(x)


def beta_log_pdf(p: float, alpha: float, beta: float) -> float:
    """log of the normalized Beta(alpha, beta) density at p in [0, 1]."""
    log_b = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    return _xlogy(alpha - 1.0, p) + _xlogy(beta - 1.0, 1.0 - p) - log_b


def inverse_beta_pdf(p: float, alpha: float, beta: float, max_weight: float) -> tuple[float, bool]:
    """(min(1/f(p), max_weight), whether it was clamped)."""
    neg_log_f = -beta_log_pdf(p, alpha, beta)
    if neg_log_f > math.log(max_weight):
        return max_weight, True
    return math.exp(neg_log_f), False


class BNPORef:
    """BNPO from the spec, including the per-column fit of ``decompose`` and the (mu, v) EMA."""

    def __init__(
        self,
        reward_range=(0.0, 1.0),
        alpha: float | None = None,
        beta: float | None = None,
        decompose: bool | None = None,
        ema: float = 0.0,
        max_weight: float = 1e6,
    ) -> None:
        self.ranges = (
            [tuple(reward_range)] if not isinstance(reward_range[0], (list, tuple)) else reward_range
        )
        self.alpha, self.beta = alpha, beta
        self.decompose = decompose
        self.ema = ema
        self.max_weight = max_weight
        self.moments: dict[str, list[float]] = {}
        self.last_stats: dict[str, float] = {}

    def _range(self, column: int) -> tuple[float, float]:
        return self.ranges[column] if len(self.ranges) > 1 else self.ranges[0]

    def column(self, values: Sequence[float], group_size: int, column: int, key: str, update: bool):
        lo, hi = self._range(column)
        for r in scored(values):
            if r < lo or r > hi:
                raise ValueError(f"reward {r} outside reward_range {(lo, hi)}")
        x = [NAN if isnan(r) else (r - lo) / (hi - lo) for r in values]
        gs = groups(x, group_size)
        p_hat = [mean_or_nan(g) for g in gs]
        fitted = scored(p_hat)
        a = b = NAN
        if self.alpha is not None:
            alpha, beta, fell_back = self.alpha, self.beta, False
        elif len(fitted) < 2:
            alpha, beta, fell_back = 1.0, 1.0, True
        else:
            mu = statistics.fmean(fitted)
            v = statistics.variance(fitted)
            if self.ema > 0:
                if key in self.moments:
                    old_mu, old_v = self.moments[key]
                    mu = self.ema * old_mu + (1 - self.ema) * mu
                    v = self.ema * old_v + (1 - self.ema) * v
                if update:
                    self.moments[key] = [mu, v]
            if v <= 0:
                alpha, beta, fell_back = 1.0, 1.0, True
            else:
                k = mu * (1 - mu) / v - 1
                a, b = k * mu, k * (1 - mu)
                alpha, beta, fell_back = max(1.0, 1.0 + a / 3), max(1.0, 1.0 + b / 3), False
        adv, clamped = [], 0
        for g, p in zip(gs, p_hat, strict=True):
            if isnan(p):
                adv += [NAN] * len(g)
                continue
            w, was_clamped = inverse_beta_pdf(p, alpha, beta, self.max_weight)
            clamped += int(was_clamped and 0 < p < 1)
            adv += [NAN if isnan(r) else (r - p) * w for r in g]
        stats = {"a": a, "b": b, "alpha": alpha, "beta": beta, "fallbacks": float(fell_back)}
        stats["clamped_weights"] = float(clamped)
        return adv, stats

    def __call__(self, rows: Sequence, group_size: int, weights=None, update: bool = True) -> list[float]:
        two_d = isinstance(rows[0], (list, tuple))
        num_funcs = len(rows[0]) if two_d else 1
        decompose = self.decompose if self.decompose is not None else num_funcs > 1
        if not two_d or not decompose:
            adv, stats = self.column(combine(rows, weights), group_size, 0, "combined", update)
            self.last_stats = {f"bnpo/{k}": v for k, v in stats.items()}
            return finalize(adv)
        w = list(weights) if weights is not None else [1.0] * num_funcs
        per_col = [
            self.column([row[k] for row in rows], group_size, k, f"col{k}", update)[0]
            for k in range(num_funcs)
        ]
        out = []
        for i in range(len(rows)):
            num = den = 0.0
            for k in range(num_funcs):
                if not isnan(per_col[k][i]):
                    num += w[k] * per_col[k][i]
                    den += w[k]
            out.append(num / den if den != 0 else 0.0)
        return finalize(out)


# ------------------------------------------------------------------------------------------------- EBPO


class SequentialWelford:
    """Welford's algorithm fed one value at a time."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def copy(self) -> SequentialWelford:
        out = SequentialWelford()
        out.count, out.mean, out.m2 = self.count, self.mean, self.m2
        return out

    @property
    def variance(self) -> float:
        return self.m2 / (self.count - 1) if self.count >= 2 else 0.0


class EBPORef:
    def __init__(self, standardize: bool = True, eps: float = EPS) -> None:
        self.standardize, self.eps = standardize, eps
        self.rewards = SequentialWelford()
        self.group_means = SequentialWelford()
        self.last_stats: dict[str, float] = {}

    def __call__(self, rewards: Sequence[float], group_size: int, update: bool = True) -> list[float]:
        rw, gw = self.rewards.copy(), self.group_means.copy()
        gs = groups(rewards, group_size)
        for g in gs:
            for r in scored(g):
                rw.add(r)
        for g in gs:
            if scored(g):
                gw.add(mean_or_nan(g))
        if update:
            self.rewards, self.group_means = rw, gw
        mu, s2, t2 = rw.mean, rw.variance, gw.variance
        raw, shrinkages = [], []
        for g in gs:
            n_g = len(scored(g))
            if n_g == 0:
                raw += [NAN] * len(g)
                continue
            noise = s2 / n_g
            shrink = noise / (noise + t2) if noise + t2 != 0 else 0.0
            shrinkages.append(shrink)
            baseline = (1 - shrink) * mean_or_nan(g) + shrink * mu
            raw += [r - baseline for r in g]
        adv = raw
        if self.standardize:
            m = mean_or_nan(raw)
            s = stdev_or_nan(raw)
            s = 0.0 if isnan(s) else s
            adv = [div(x - m, s + self.eps) for x in raw]
        self.last_stats = {
            "ebpo/shrinkage": statistics.fmean(shrinkages) if shrinkages else NAN,
            "ebpo/global_mean": mu,
            "ebpo/reward_var": s2,
            "ebpo/group_mean_var": t2,
        }
        return finalize(adv)


# ----------------------------------------------------------------------------------------------- median


class MedianRef:
    def __init__(self, window: int = 8, center: str = "group_mean", eps: float = EPS) -> None:
        self.window, self.center, self.eps = window, center, eps
        self.std_history: list[dict[str, list[float]]] = []
        self.reward_history: list[dict[str, list[float]]] = []
        self.last_stats: dict[str, float] = {}

    def _past(self, history: list[dict[str, list[float]]], source: str) -> list[float]:
        if self.window == 0:
            return []
        return [x for past in history[-self.window :] for x in past.get(source, [])]

    def __call__(
        self, rewards: Sequence[float], group_size: int, sources: Sequence[str], update: bool = True
    ) -> list[float]:
        gs = groups(rewards, group_size)
        group_source = []
        for p in range(len(gs)):
            src = {str(s) for s in sources[p * group_size : (p + 1) * group_size]}
            if len(src) != 1:
                raise ValueError("rows of one group have different sources")
            group_source.append(src.pop())
        current_stds: dict[str, list[float]] = {}
        current_rewards: dict[str, list[float]] = {}
        for g, src in zip(gs, group_source, strict=True):
            current_stds.setdefault(src, [])
            current_rewards.setdefault(src, [])
            s = stdev_or_nan(g)
            if not isnan(s) and s > 0:
                current_stds[src].append(s)
            current_rewards[src] += scored(g)
        scale, centre_src = {}, {}
        fb_std = fb_unit = 0
        for src in current_stds:
            pool = self._past(self.std_history, src) + current_stds[src]
            if pool:
                scale[src] = statistics.median(pool)
            else:
                s = stdev_or_nan(current_rewards[src])
                if not isnan(s) and s > 0:
                    scale[src] = s
                    fb_std += 1
                else:
                    scale[src] = 1.0
                    fb_unit += 1
            reward_pool = self._past(self.reward_history, src) + current_rewards[src]
            centre_src[src] = statistics.median(reward_pool) if reward_pool else 0.0
        out = []
        for g, src in zip(gs, group_source, strict=True):
            centre = mean_or_nan(g) if self.center == "group_mean" else centre_src[src]
            out += [div(r - centre, scale[src] + self.eps) for r in g]
        if update and self.window:
            self.std_history = [*self.std_history, current_stds][-self.window :]
            self.reward_history = [*self.reward_history, current_rewards][-self.window :]
        self.last_stats = {f"median/scale/{s}": v for s, v in scale.items()}
        self.last_stats["median/fallback_source_std"] = float(fb_std)
        self.last_stats["median/fallback_unit"] = float(fb_unit)
        return finalize(out)


def reinforce_pp_ref(rewards: Sequence[float], group_size: int, eps: float = 1e-4) -> list[float]:
    """REINFORCE++-baseline: r - group mean, then standardized over the batch's scored values (n-1 std)."""
    centred = []
    for g in groups(rewards, group_size):
        values = scored(g)
        mean = math.fsum(values) / len(values) if values else NAN
        centred += [NAN if isnan(r) else r - mean for r in g]
    values = scored(centred)
    if len(values) < 2:
        return [NAN] * len(centred)
    mean, std = statistics.fmean(values), statistics.stdev(values)
    return [NAN if isnan(a) else (a - mean) / (std + eps) for a in centred]
