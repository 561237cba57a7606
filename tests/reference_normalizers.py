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
from fractions import Fraction

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


# ------------------------------------------------------------------------------------ opo / gdpo / passk


def opo_ref(rewards: Sequence[float], group_size: int, lengths: Sequence[float] | None = None) -> list[float]:
    """OPO: A = r - sum(l r) / sum(l) over the group's scored rows; all lengths 1 when none are given, the
    plain mean when the scored lengths sum to 0."""
    lengths = [1.0] * len(rewards) if lengths is None else [float(x) for x in lengths]
    out = []
    for g, lg in zip(groups(rewards, group_size), groups(lengths, group_size), strict=True):
        pairs = [(r, length) for r, length in zip(g, lg, strict=True) if not isnan(r)]
        total = math.fsum(length for _, length in pairs)
        weighted = math.fsum(r * length for r, length in pairs)
        baseline = weighted / total if total > 0 else mean_or_nan(g)
        out += [r - baseline for r in g]
    return out


def gdpo_ref(rows: Sequence, group_size: int, weights: Sequence[float] | None = None, eps: float = EPS):
    """TRL 1.16 ``normalize_then_sum``, one group and one reward column at a time.

    Per group and column: (r - mean) / (stdev + eps), stdev 0 for G = 1 and NaN below 2 scored values;
    per row: sum of w_k * those over the non-NaN ones (0 if none; NaN if every reward of the row is NaN);
    then (s - mean(s)) / (stdev(s) + eps) over the batch (stdev 0 for a single row).
    """
    cells = [list(r) if isinstance(r, (list, tuple)) else [r] for r in rows]
    num_funcs = len(cells[0])
    w = list(weights) if weights is not None else [1.0] * num_funcs
    normalized = [[NAN] * num_funcs for _ in cells]
    for start in range(0, len(cells), group_size):
        members = range(start, start + group_size)
        for k in range(num_funcs):
            column = [cells[i][k] for i in members]
            m = mean_or_nan(column)
            s = 0.0 if group_size == 1 else stdev_or_nan(column)
            for i in members:
                normalized[i][k] = div(cells[i][k] - m, s + eps)
    summed = []
    for row, norm_row in zip(cells, normalized, strict=True):
        if all(isnan(x) for x in row):
            summed.append(NAN)
            continue
        summed.append(math.fsum(w[k] * a for k, a in enumerate(norm_row) if not isnan(a)))
    s_all = 0.0 if len(summed) == 1 else stdev_or_nan(summed)
    m_all = mean_or_nan(summed)
    return [div(x - m_all, s_all + eps) for x in summed]


def passk_ref(rewards: Sequence[float], group_size: int, k: int = 2, threshold: float = 0.5) -> list[float]:
    """Analytic Pass@k advantage with exact fractions and ``math.comb``; success = reward >= threshold.

    Per group with N scored responses, N_neg failures, k' = min(k, N): R = 1 - C(N_neg, k')/C(N, k'),
    sigma = sqrt(R (1 - R)); A_pos = (1 - R)/sigma, A_neg = (1 - R - C(N_neg-1, k'-1)/C(N-1, k'-1))/sigma;
    0 where sigma = 0.
    """
    out = []
    for g in groups(rewards, group_size):
        wins = [None if isnan(r) else r >= threshold for r in g]
        n = sum(w is not None for w in wins)
        n_neg = sum(w is False for w in wins)
        if n == 0:
            out += [NAN] * len(g)
            continue
        kk = min(k, n)
        r_bar = 1 - Fraction(math.comb(n_neg, kk), math.comb(n, kk))
        if r_bar in (0, 1):
            out += [NAN if w is None else 0.0 for w in wins]
            continue
        sigma = math.sqrt(r_bar * (1 - r_bar))
        a_pos = float(1 - r_bar) / sigma
        a_neg = float(1 - r_bar - Fraction(math.comb(n_neg - 1, kk - 1), math.comb(n - 1, kk - 1))) / sigma
        out += [NAN if w is None else (a_pos if w else a_neg) for w in wins]
    return out


def beta_fit_ref(ps: Sequence[float]) -> tuple[float, float] | None:
    """BNPO's (alpha, beta) from scored success rates by moments; None with < 2 of them or no spread."""
    vals = scored(ps)
    if len(vals) < 2:
        return None
    mu, v = math.fsum(vals) / len(vals), statistics.variance(vals)
    if not v > 0:
        return None
    common = mu * (1 - mu) / v - 1
    return max(1.0, 1 + common * mu / 3), max(1.0, 1 + common * (1 - mu) / 3)


def bnpo_per_source_ref(
    rewards: Sequence[float], group_size: int, sources: Sequence[str], max_weight: float = 1e6
) -> tuple[list[float], int]:
    """BNPO (rewards in [0, 1]) with one Beta fit per data source; a source without a fit of its own takes
    the pooled one (alpha = beta = 1 when that fails too). -> (advantages, number of pooled sources)."""
    gs = groups(rewards, group_size)
    p = [mean_or_nan(g) for g in gs]
    group_source = list(sources[::group_size])
    pooled = beta_fit_ref(p) or (1.0, 1.0)
    fits, fallbacks = {}, 0
    for source in dict.fromkeys(group_source):
        own = beta_fit_ref([p[i] for i, s in enumerate(group_source) if s == source])
        fallbacks += own is None
        fits[source] = own or pooled
    adv = []
    for g, p_g, source in zip(gs, p, group_source, strict=True):
        weight = inverse_beta_pdf(p_g, *fits[source], max_weight)[0] if not isnan(p_g) else NAN
        adv += [(r - p_g) * weight for r in g]
    return adv, fallbacks


class EBPOPerSourceRef:
    """EBPO with a prior per data source (one pair of sequential Welfords each); a source with fewer than 2
    group means seen so far uses the pooled prior; standardization over the whole batch."""

    def __init__(self, eps: float = EPS) -> None:
        self.eps = eps
        self.pooled = (SequentialWelford(), SequentialWelford())
        self.by_source: dict[str, tuple[SequentialWelford, SequentialWelford]] = {}
        self.fallbacks = 0

    @staticmethod
    def _fed(prior, gs):
        rw, gw = prior[0].copy(), prior[1].copy()
        for g in gs:
            for r in scored(g):
                rw.add(r)
            if scored(g):
                gw.add(mean_or_nan(g))
        return rw, gw

    def __call__(self, rewards: Sequence[float], group_size: int, sources: Sequence[str]) -> list[float]:
        gs = groups(rewards, group_size)
        group_source = list(sources[::group_size])
        self.pooled = self._fed(self.pooled, gs)
        used, self.fallbacks = {}, 0
        for source in dict.fromkeys(group_source):
            mine = [g for g, s in zip(gs, group_source, strict=True) if s == source]
            empty = (SequentialWelford(), SequentialWelford())
            self.by_source[source] = self._fed(self.by_source.get(source, empty), mine)
            enough = self.by_source[source][1].count >= 2
            self.fallbacks += not enough
            used[source] = self.by_source[source] if enough else self.pooled
        raw = []
        for g, source in zip(gs, group_source, strict=True):
            rw, gw = used[source]
            n_g = len(scored(g))
            if n_g == 0:
                raw += [NAN] * len(g)
                continue
            noise = rw.variance / n_g
            shrink = noise / (noise + gw.variance) if noise + gw.variance != 0 else 0.0
            baseline = (1 - shrink) * mean_or_nan(g) + shrink * rw.mean
            raw += [r - baseline for r in g]
        m, s = mean_or_nan(raw), stdev_or_nan(raw)
        return [div(x - m, (0.0 if isnan(s) else s) + self.eps) for x in raw]
