"""Stateless, vectorized advantage estimators (in the style of verl's ``core_algos.py``).

Shapes: ``N = P * G`` rows, the ``G`` completions of prompt ``p`` in rows ``p*G ... p*G+G-1``
(TRL's gathered layout). ``NaN`` marks a reward that was not scored. Every function here is pure:
running state lives in the classes of :mod:`bnpo_trl.normalizers.builtin`, which registers the
stateless estimators here as normalizers directly.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "batch_advantages",
    "beta_from_moments",
    "beta_log_pdf",
    "bnpo_advantages",
    "bnpo_weights",
    "combine_rewards",
    "dr_grpo_advantages",
    "ebpo_advantages",
    "fit_beta_moments",
    "gdpo_advantages",
    "group_advantages",
    "group_count",
    "group_mean",
    "group_std",
    "log_comb_ratio",
    "nanstd",
    "opo_advantages",
    "passk_advantages",
    "reinforce_pp_advantages",
    "rloo_advantages",
]


def combine_rewards(rewards: torch.Tensor, reward_weights: torch.Tensor | None = None) -> torch.Tensor:
    """NaN-aware weighted sum over reward functions, as TRL's ``sum_then_normalize``.

    Args:
        rewards: (N,) or (N, F).
        reward_weights: (F,) or None (all ones).
    Returns:
        (N,): ``sum_k w_k r_k`` over the non-NaN ``r_k``; NaN where every ``r_k`` is NaN.
    """
    if rewards.dim() == 1:
        return rewards if reward_weights is None else rewards * reward_weights.to(rewards)[0]
    weights = torch.ones(rewards.shape[1], dtype=rewards.dtype, device=rewards.device)
    if reward_weights is not None:
        weights = reward_weights.to(rewards)
    combined = (rewards * weights.unsqueeze(0)).nansum(dim=1)
    combined[torch.isnan(rewards).all(dim=1)] = torch.nan
    return combined


def nanstd(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Bessel-corrected (n-1) std ignoring NaN; NaN where fewer than 2 values are present."""
    if dim is None:
        x, dim = x.reshape(-1), 0
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    sq = torch.nansum((x - mean) ** 2, dim=dim, keepdim=True)
    var = torch.where(count > 1, sq / (count - 1).clamp(min=1), torch.full_like(sq, torch.nan))
    std = var.sqrt()
    return std if keepdim else std.squeeze(dim)


def group_mean(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) -> (P,) NaN-aware mean of each group (NaN for an all-NaN group)."""
    return torch.nanmean(rewards.view(-1, group_size), dim=1)


def group_std(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) -> (P,) Bessel-corrected NaN-aware std of each group (NaN below 2 valid values)."""
    return nanstd(rewards.view(-1, group_size), dim=1)


def group_count(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) -> (P,) number of non-NaN rewards in each group."""
    return (~torch.isnan(rewards.view(-1, group_size))).sum(dim=1)


def _per_row(per_group: torch.Tensor, group_size: int) -> torch.Tensor:
    return per_group.repeat_interleave(group_size)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO (Shao et al. 2024, arXiv 2402.03300): ``A = (r - mean_g) / (std_g + eps)``.

    std_g is the Bessel-corrected std of the group; equals TRL 1.16 ``scale_rewards="group"``.
    (N,) -> (N,). NaN where ``r`` is NaN or its group has fewer than 2 scored rewards (TRL then gives 0).
    """
    if group_size == 1:  # TRL: std is 0 for singleton groups, so the advantage is 0
        return torch.where(torch.isnan(rewards), rewards, torch.zeros_like(rewards))
    mean = _per_row(group_mean(rewards, group_size), group_size)
    std = _per_row(group_std(rewards, group_size), group_size)
    return (rewards - mean) / (std + eps)


def batch_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """``A = (r - mean_g) / (std_all + eps)`` with one std over the whole batch.

    Source: Liu et al. 2025 ("Part I: Tricks or Traps?", arXiv 2508.08221); TRL ``scale_rewards="batch"``.
    (N,) -> (N,). NaN where ``r`` is NaN or the batch has fewer than 2 scored rewards.
    """
    mean = _per_row(group_mean(rewards, group_size), group_size)
    return (rewards - mean) / (nanstd(rewards) + eps)


def dr_grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025, arXiv 2503.20783): ``A = r - mean_g`` (TRL ``scale_rewards="none"``)."""
    return rewards - _per_row(group_mean(rewards, group_size), group_size)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024, arXiv 2402.14740): ``A = r - mean of the other scored rewards of the group``.

    Equals ``n/(n-1) * (r - mean_g)`` with n the group's scored count; 0 when ``n = 1``. (N,) -> (N,).
    """
    grouped = rewards.view(-1, group_size)
    count = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
    total = grouped.nansum(dim=1, keepdim=True)
    others = (total - grouped) / (count - 1).clamp(min=1)
    adv = torch.where(count > 1, grouped - others, torch.zeros_like(grouped))
    return torch.where(torch.isnan(grouped), grouped, adv).view(-1)


def reinforce_pp_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """REINFORCE++-baseline (Hu et al. 2025, arXiv 2501.03262): ``A' = r - mean_g``, then
    ``A = (A' - mean(A')) / (std(A') + eps)`` over the whole batch.

    The paper writes the batch statistics without saying which variance: the std here is Bessel-corrected
    (n-1), as in ``batch``; ``mean(A')`` is 0 up to rounding (each group's ``A'`` sums to 0) and is kept
    for fidelity. Differs from ``batch`` only in taking the std of ``A'`` rather than of ``r``.
    (N,) -> (N,). NaN where ``r`` is NaN or the batch has fewer than 2 scored rewards.
    """
    centred = rewards - _per_row(group_mean(rewards, group_size), group_size)
    return (centred - torch.nanmean(centred)) / (nanstd(centred) + eps)


def beta_from_moments(mean: float, var: float) -> tuple[float, float, bool]:
    """Method-of-moments Beta(a, b) with the given mean and variance (BNPO, arXiv 2506.02864, Sec. 3).

    ``a = (mu(1-mu)/v - 1) mu``, ``b = (mu(1-mu)/v - 1)(1-mu)``.
    Returns:
        ``(a, b, ok)``; ``ok`` is False (and a = b = nan) when ``v`` is not > 0 (no spread, no fit).

    >>> beta_from_moments(0.5, 0.05)
    (2.0, 2.0, True)
    """
    if not var > 0.0:
        return math.nan, math.nan, False
    common = mean * (1.0 - mean) / var - 1.0
    return common * mean, common * (1.0 - mean), True


def fit_beta_moments(p_hat: torch.Tensor) -> tuple[float, float, bool]:
    """:func:`beta_from_moments` of per-prompt success rates: ``mu = mean(p)``, ``v = var(p)`` (n-1).

    Args:
        p_hat: (P,) success rates in [0, 1]; NaN entries (unscored prompts) are ignored.
    Returns:
        ``(a, b, ok)``; ``ok`` is False (and a = b = nan) when fewer than 2 prompts or ``v == 0``.
    """
    p = p_hat[~torch.isnan(p_hat)].double()
    if p.numel() < 2:
        return math.nan, math.nan, False
    return beta_from_moments(p.mean().item(), p.var(unbiased=True).item())


def beta_log_pdf(p: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """log of the normalized Beta(alpha, beta) density at ``p`` in [0, 1] (``0 * log 0 = 0``)."""
    p = p.double()
    log_norm = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    return torch.special.xlogy(alpha - 1.0, p) + torch.special.xlog1py(beta - 1.0, -p) - log_norm


def bnpo_advantages(
    rewards: torch.Tensor, group_size: int, alpha: float, beta: float, max_weight: float = 1e6
) -> tuple[torch.Tensor, int]:
    """BNPO (arXiv 2506.02864, Eq. 10): ``A = (r - p_g) / f(p_g; alpha, beta)``, ``p_g`` the group mean.

    ``f`` is the normalized Beta pdf, evaluated in log space; ``1/f`` is clamped to ``max_weight``.
    Args:
        rewards: (N,) in [0, 1], NaN for unscored rows.
    Returns:
        ``(advantages (N,), number of groups with 0 < p_g < 1 whose weight was clamped)``.
    """
    p_g = group_mean(rewards, group_size)
    weight, clamped = bnpo_weights(p_g, alpha, beta, max_weight)
    return (rewards - _per_row(p_g, group_size)) * _per_row(weight, group_size), clamped


def bnpo_weights(
    p: torch.Tensor, alpha: float, beta: float, max_weight: float = 1e6
) -> tuple[torch.Tensor, int]:
    """BNPO's weight ``1/f(p; alpha, beta)`` of (P,) success rates, clamped to ``max_weight``, in ``p``'s dtype.

    Returns:
        ``(weights (P,), number of 0 < p < 1 whose weight was clamped)``.
    """
    log_weight = -beta_log_pdf(p, alpha, beta)
    # p in {0, 1} means every reward equals p, so its (infinite) weight multiplies 0: not counted.
    interior = (p > 0) & (p < 1)
    clamped = int(((log_weight > math.log(max_weight)) & interior).sum().item())
    return log_weight.clamp(max=math.log(max_weight)).exp().to(p.dtype), clamped


def ebpo_advantages(
    rewards: torch.Tensor,
    group_size: int,
    global_mean: float,
    reward_var: float,
    group_mean_var: float,
    standardize: bool = True,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EBPO (arXiv 2602.05165): shrink each group's mean toward the global mean.

    ``S_g = (s2/n_g) / (s2/n_g + t2)`` (``S_g = 0`` when both are 0), ``V_g = (1-S_g) mean_g + S_g mu``,
    ``A_raw = r - V_g``; with ``standardize``: ``A = (A_raw - mean(A_raw)) / (std(A_raw) + eps)`` over the
    batch. ``s2`` = variance of individual rewards, ``t2`` = variance of group means, ``n_g`` = scored
    rewards in group g (= G without NaN).
    Returns:
        ``(advantages (N,), shrinkage S_g (P,))``; ``ebpo/shrinkage`` logs the mean of S_g over scored groups.
    """
    mean_g = group_mean(rewards, group_size)
    n_g = group_count(rewards, group_size).to(rewards.dtype).clamp(min=1)
    noise = reward_var / n_g
    denom = noise + group_mean_var
    shrink = torch.where(denom > 0, noise / torch.where(denom > 0, denom, 1.0), torch.zeros_like(denom))
    baseline = (1 - shrink) * torch.nan_to_num(mean_g, nan=0.0) + shrink * global_mean
    adv = rewards - _per_row(baseline, group_size)
    if standardize:
        centred = adv - torch.nanmean(adv)
        std = nanstd(adv)
        adv = centred / (torch.nan_to_num(std, nan=0.0) + eps)
    return adv, shrink


def opo_advantages(
    rewards: torch.Tensor, group_size: int, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """OPO (Hao et al. 2025, arXiv 2505.23585, optimal reward baseline): ``A = r - sum l r / sum l`` per group.

    The sums run over the scored completions of the group; ``l`` = completion length in tokens.
    Args:
        rewards: (N,), NaN for unscored rows.
        lengths: (N,) >= 0, or None: equal lengths, so the baseline is the group mean.
    Returns:
        ``(advantages (N,), number of scored groups whose lengths sum to 0)``; those groups use the
        unweighted group mean. NaN where ``r`` is NaN.
    """
    grouped = rewards.view(-1, group_size)
    scored = ~torch.isnan(grouped)
    weights = scored.to(rewards.dtype)
    if lengths is not None:
        weights = lengths.to(rewards).view(-1, group_size) * weights
    total = weights.sum(dim=1, keepdim=True)
    weighted = (weights * torch.where(scored, grouped, torch.zeros_like(grouped))).sum(dim=1, keepdim=True)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    baseline = torch.where(total > 0, weighted / torch.where(total > 0, total, 1.0), mean)
    zero_length = int(((total == 0) & scored.any(dim=1, keepdim=True)).sum().item())
    return (grouped - baseline).view(-1), zero_length


def _nanstd_trl(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """``trl.trainer.utils.nanstd`` (TRL 1.16), same operations in the same order: bitwise its numbers.

    Bessel-corrected (n-1) NaN-ignoring std, NaN below 2 values; differs from :func:`nanstd` in rounding only.
    """
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    variance = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)
    correction = count / (count - 1)
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    std = torch.sqrt(variance * correction)
    if keepdim:
        return std
    return std.squeeze() if dim is None else std.squeeze(dim)


def gdpo_advantages(
    rewards: torch.Tensor,
    group_size: int,
    reward_weights: torch.Tensor | None = None,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, int]:
    """GDPO (arXiv 2601.05242): normalise each reward function within the group, sum, standardise the batch.

    ``A_k = (r_k - mean_gk) / (std_gk + eps)`` per group g and reward column k (NaN-aware, n-1 std;
    ``std_gk = 0`` when ``group_size == 1``), ``s = nansum_k w_k A_k`` (NaN for rows whose rewards are all
    NaN), ``A = (s - nanmean(s)) / (nanstd(s) + eps)`` over the batch (std 0 for a single row). The
    operations of TRL 1.16's ``multi_objective_aggregation="normalize_then_sum"``, in its order.
    Args:
        rewards: (N, F) rewards per function, NaN for unscored cells.
        reward_weights: (F,) or None (all ones).
    Returns:
        ``(advantages (N,), number of (group, column) pairs with >= 2 scored values and std 0)``.
    """
    num_funcs = rewards.shape[1]
    grouped = rewards.view(-1, group_size, num_funcs)
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = _nanstd_trl(grouped, dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean_k)
    reward_k = ((grouped - mean_k) / (std_k + eps)).view(-1, num_funcs)
    weights = torch.ones(num_funcs, dtype=rewards.dtype, device=rewards.device)
    if reward_weights is not None:
        weights = reward_weights.to(rewards)
    summed = (reward_k * weights.unsqueeze(0)).nansum(dim=1)
    summed = summed.masked_fill(torch.isnan(rewards).all(dim=1), float("nan"))
    std = _nanstd_trl(summed) if summed.numel() > 1 else torch.zeros_like(summed)
    flat = int((((~torch.isnan(grouped)).sum(dim=1, keepdim=True) > 1) & (std_k == 0)).sum().item())
    return (summed - torch.nanmean(summed)) / (std + eps), flat


def log_comb_ratio(a: torch.Tensor, b: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``log(C(a, k) / C(b, k))`` elementwise with ``torch.lgamma`` (float64), for ``0 <= k <= b``.

    ``-inf`` where ``a < k`` (``C(a, k) = 0``, also for ``a < 0``). The ``k!`` terms cancel:
    ``lgamma(a+1) - lgamma(a-k+1) - lgamma(b+1) + lgamma(b-k+1)``.
    """
    a, b, k = a.double(), b.double(), k.double()
    valid = a >= k
    a = torch.where(valid, a, k)  # keep lgamma's arguments positive where the result is masked
    # grouped so that a == b gives exactly 0
    log_ratio = (torch.lgamma(a + 1) - torch.lgamma(b + 1)) + (
        torch.lgamma(b - k + 1) - torch.lgamma(a - k + 1)
    )
    return torch.where(valid, log_ratio, torch.full_like(log_ratio, -math.inf))


def passk_advantages(
    success: torch.Tensor, group_size: int, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Analytic Pass@k advantage (Chen et al. 2025, arXiv 2508.10751, "analytical derivation", Eqs. 14-15:
    ``A_pos = P_fail / sigma``, ``A_neg = (P_fail - P_cond) / sigma``, ``P_fail = 1 - R``).

    Per group with ``N`` scored responses, ``N_neg`` of them failures, and ``k' = min(k, N)``:
    ``R = 1 - C(N_neg, k')/C(N, k')`` (the group's pass@k'), ``sigma = sqrt(R (1 - R))``,
    ``A_pos = (1 - R) / sigma``, ``A_neg = (1 - R - C(N_neg-1, k'-1)/C(N-1, k'-1)) / sigma``;
    ``A = 0`` where ``sigma = 0`` (all succeed, all fail, or ``N_neg < k'``; always when ``k' = N``).
    ``k = 1`` is GRPO with the population std: ``(r - p) / sqrt(p (1 - p))``.
    Args:
        success: (N,) 1.0 success, 0.0 failure, NaN unscored.
    Returns:
        ``(advantages (N,) float64, R (P,) (NaN for unscored groups), k' < k (P,) bool for scored groups)``.
    """
    grouped = success.view(-1, group_size)
    scored = ~torch.isnan(grouped)
    n = scored.sum(dim=1)
    n_pos = (scored & (grouped > 0)).sum(dim=1)
    n_neg = n - n_pos
    k_eff = n.clamp(max=k)
    ratio_fail = log_comb_ratio(n_neg, n, k_eff).exp()  # 1 - R: every one of k' draws fails
    ratio_neg = log_comb_ratio(n_neg - 1, n - 1, k_eff - 1).exp()  # P(the other k'-1 all fail)
    pass_at_k = 1.0 - ratio_fail
    informative = (n_pos > 0) & (n_neg >= k_eff) & (n > 0)
    sigma = torch.where(informative, (pass_at_k * ratio_fail).sqrt(), torch.ones_like(pass_at_k))
    a_pos = torch.where(informative, ratio_fail / sigma, torch.zeros_like(sigma))
    a_neg = torch.where(informative, (ratio_fail - ratio_neg) / sigma, torch.zeros_like(sigma))
    adv = torch.where(grouped > 0, a_pos.unsqueeze(1), a_neg.unsqueeze(1))
    adv = torch.where(scored, adv, torch.full_like(adv, math.nan)).view(-1)
    pass_at_k = torch.where(n > 0, pass_at_k, torch.full_like(pass_at_k, math.nan))
    return adv, pass_at_k, (n > 0) & (n < k)
