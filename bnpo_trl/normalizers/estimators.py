"""Three more stateless estimators: OPO (length-weighted baseline), GDPO (per-reward normalisation) and the
analytic Pass@k advantage. The formulas are the pure functions of :mod:`bnpo_trl.normalizers.functional`;
the classes here register them and count their fallbacks in ``last_stats``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from bnpo_trl.normalizers import functional as F
from bnpo_trl.normalizers.base import Normalizer, register_normalizer

__all__ = ["GDPONormalizer", "OPONormalizer", "PassAtKNormalizer"]


@register_normalizer("opo")
class OPONormalizer(Normalizer):
    """OPO, "On-Policy RL with Optimal reward baseline" (Hao et al. 2025, arXiv 2505.23585, the optimal
    reward baseline).

    The variance-minimising baseline ``b* = E[|grad log pi(y)|^2 r(y)] / E[|grad log pi(y)|^2]`` becomes,
    with the paper's assumption that the squared gradient norm grows in proportion to the length ``l`` of
    the response, a length-weighted mean over the group:

        b_g = sum_i l_i r_i / sum_i l_i,     A_i = r_i - b_g      (no std division)

    Choices: the sums run over the group's scored completions (unscored ones are in neither sum) and
    include the response's own reward, as in the paper. A group with one scored completion gets A = 0
    (b_g = r; verl's ``compute_opo_outcome_advantage`` instead uses b = 0 for a one-response group).
    Fallbacks, counted in ``last_stats``: called without ``lengths`` (a direct call; the trainer passes
    them) -> equal lengths, i.e. the group-mean baseline of ``none`` (``opo/no_lengths`` = 1.0); a scored
    group whose lengths sum to 0 -> its unweighted mean (``opo/zero_length_groups``, a count).
    """

    uses_lengths = True

    def __init__(self) -> None:
        super().__init__()

    def compute(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        adv, zero_length = F.opo_advantages(rewards, group_size, lengths)
        self.last_stats["opo/no_lengths"] = float(lengths is None)
        self.last_stats["opo/zero_length_groups"] = float(zero_length)
        return adv


@register_normalizer("gdpo")
class GDPONormalizer(Normalizer):
    """GDPO, Group reward-Decoupled normalization Policy Optimization (arXiv 2601.05242), with exactly the
    numbers of TRL 1.16's ``multi_objective_aggregation="normalize_then_sum"``.

        A_k = (r_k - mean_gk) / (std_gk + eps)       each reward function k within each group g
        s   = nansum_k w_k A_k                        (NaN for rows whose rewards are all NaN)
        A   = (s - nanmean(s)) / (nanstd(s) + eps)    over the batch

    std is Bessel-corrected (n-1) and NaN-aware as TRL's ``nanstd``; as in TRL, ``std_gk = 0`` when
    ``group_size == 1``, a cell whose group has one scored value of that column (std NaN) drops out of
    the sum, and a single-row batch has std 0. Consumes the (N, F) matrix (``decomposes``); an (N,) input
    is one column. ``eps`` (default 1e-4, TRL's) is used in both places. ``gdpo/flat_group_columns``
    counts the (group, reward function) pairs with >= 2 scored values and std 0 (no signal from that
    function in that group).
    """

    decomposes = True

    def __call__(self, rewards: Any, group_size: int, *args: Any, **kwargs: Any) -> torch.Tensor:
        rewards = torch.as_tensor(rewards)
        if rewards.dim() == 1:  # one reward function: its weight applies after normalisation, as in TRL
            rewards = rewards.unsqueeze(1)
        return super().__call__(rewards, group_size, *args, **kwargs)

    def compute(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
    ) -> torch.Tensor:
        adv, flat = F.gdpo_advantages(rewards, group_size, reward_weights, self.eps)
        self.last_stats["gdpo/flat_group_columns"] = float(flat)
        return adv


@register_normalizer("passk")
class PassAtKNormalizer(Normalizer):
    """Analytic Pass@k advantage (Chen et al. 2025, "Pass@k Training for Adaptively Balancing Exploration
    and Exploitation of Large Reasoning Models", arXiv 2508.10751, "analytical derivation").

    Per group with N scored responses, N_neg failures (success: reward >= ``threshold``):

        R = 1 - C(N_neg, k) / C(N, k),   sigma = sqrt(R (1 - R))
        A_pos = (1 - R) / sigma,          A_neg = (1 - R - C(N_neg - 1, k - 1) / C(N - 1, k - 1)) / sigma

    R is the mean over the group's k-subsets of their max reward, and A the mean standardised reward of
    the subsets that hold the response. sigma = 0 (all succeed, all fail, or N_neg < k) -> A = 0 (the
    paper's code divides by sigma + 1e-6 instead; the same up to a factor sigma / (sigma + 1e-6)). k = 1
    is GRPO with the population std. Combinations are ratios of ``lgamma`` in float64.

    Options: ``k`` (int >= 1). Default 2, this project's choice: the advantage vanishes for k >= N (the
    only k-subset is the whole group, so R is 0 or 1), so k must stay below the group size, and k = 2
    gives a signal from G = 3 on. ``threshold`` (default 0.5).
    Fallbacks, counted in ``last_stats``: a group with fewer than k scored responses uses k = N, which
    gives it A = 0, no signal (``passk/small_groups``); rewards that are not exactly 0 or 1 (partial
    credit, weighted sums) are thresholded (``passk/non_binary_rewards``, the number of such rewards).
    ``passk/pass_at_k`` logs the mean R of the scored groups.
    """

    def __init__(self, k: int = 2, threshold: float = 0.5) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1 (the pass@k of k samples), got {k!r}.")
        if not math.isfinite(threshold):
            raise ValueError(
                f"threshold must be a finite reward value (success: reward >= threshold), got {threshold}."
            )
        self.k, self.threshold = k, float(threshold)

    def compute(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
    ) -> torch.Tensor:
        scored = ~torch.isnan(rewards)
        non_binary = scored & (rewards != 0) & (rewards != 1)
        success = torch.where(scored, (rewards >= self.threshold).to(rewards.dtype), rewards)
        adv, pass_at_k, small = F.passk_advantages(success, group_size, self.k)
        self.last_stats["passk/non_binary_rewards"] = float(non_binary.sum())
        self.last_stats["passk/small_groups"] = float(small.sum())
        self.last_stats["passk/pass_at_k"] = torch.nanmean(pass_at_k).nan_to_num(0.0).item()
        return adv
