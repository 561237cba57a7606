"""Policy-gradient variance across independent rollout batches of one policy, per advantage normalizer.

BNPO's Theorem 1 (arXiv 2506.02864) is about ``Var(g)``, the variance of the policy-gradient estimate
``g = (1/T) sum_i A_i h_i`` over rollout batches, where ``h_i = grad sum_t log pi(y_it)`` is the score of
completion i and ``T`` the batch's completion tokens (TRL's token-level loss at importance ratio 1). Given
K independent batches drawn from the same policy, :class:`GradientVarianceMeter` reports, per normalizer,
the trace of the covariance of the K gradients and the signal-to-noise ratio ``||mean||^2 / trace``; every
normalizer sees the same batches. The trace is not scale-free (a normalizer that doubles every advantage
quadruples it); the SNR is. Stateful normalizers (ebpo, median) start fresh and are not updated, so each
batch is normalized on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bnpo_trl.normalizers import Normalizer
from bnpo_trl.normalizers.specs import build_normalizer, spec_label

__all__ = ["GradientMoments", "GradientVarianceMeter", "RolloutBatch", "gram_trace", "rollout_batch"]


class GradientMoments:
    """Running per-coordinate mean and sum of squared deviations of gradient vectors (Welford, float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, gradient: torch.Tensor) -> None:
        g = gradient.detach().double().flatten()
        if self.mean is None:
            self.mean, self.m2 = torch.zeros_like(g), torch.zeros_like(g)
        self.count += 1
        delta = g - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (g - self.mean)

    @property
    def trace(self) -> float:
        """Trace of the (n-1) sample covariance: the sum of the per-coordinate variances."""
        return self.m2.sum().item() / (self.count - 1) if self.count > 1 else math.nan

    @property
    def snr(self) -> float:
        """``||mean||^2 / trace`` (NaN without variance)."""
        trace = self.trace
        return (self.mean.square().sum().item() / trace) if trace > 0 else math.nan

    def summary(self) -> dict[str, float]:
        mean_sq = self.mean.square().sum().item() if self.mean is not None else math.nan
        return {"batches": float(self.count), "trace": self.trace, "mean_sq_norm": mean_sq, "snr": self.snr}


@dataclass
class RolloutBatch:
    """One rollout batch: rewards (N,) or (N, F), the per-completion scores ``h`` (N, D), token count."""

    rewards: torch.Tensor
    scores: torch.Tensor
    num_tokens: float
    group_size: int
    data_sources: list[str] | None = None


class GradientVarianceMeter:
    """Feeds the same rollout batches to every normalizer and keeps the moments of each one's gradient."""

    def __init__(
        self, specs: Sequence[str | Mapping[str, Any]], reward_ranges: Any = None, keep: Sequence[str] = ()
    ) -> None:
        self.normalizers: dict[str, Normalizer] = {
            spec_label(s): build_normalizer(s, reward_ranges=reward_ranges) for s in specs
        }
        self.moments = {label: GradientMoments() for label in self.normalizers}
        self.kept: dict[str, list[torch.Tensor]] = {label: [] for label in keep}  # for :meth:`gram`
        self.stats: dict[str, dict[str, float]] = {label: {} for label in self.normalizers}  # mean last_stats

    def add(self, batch: RolloutBatch) -> None:
        for label, norm in self.normalizers.items():
            adv = norm(
                batch.rewards, group_size=batch.group_size, data_sources=batch.data_sources, update=False
            )
            gradient = adv.double() @ batch.scores.double() / max(batch.num_tokens, 1.0)
            self.moments[label].add(gradient)
            n = self.moments[label].count
            for key, value in norm.last_stats.items():
                mean = self.stats[label].get(key, 0.0)
                self.stats[label][key] = mean + (float(value) - mean) / n
            if label in self.kept:
                self.kept[label].append(gradient.float())

    def gram(self, label: str) -> torch.Tensor:
        """(K, K) inner products of the kept gradients of ``label`` (float64), for resampling the batches."""
        stacked = torch.stack(self.kept[label]).double()
        return stacked @ stacked.T

    def summary(self) -> dict[str, dict[str, float]]:
        return {label: m.summary() for label, m in self.moments.items()}


def _scores(model: Any, sequences: torch.Tensor, attention: torch.Tensor, start: int, mask: torch.Tensor):
    """(N, D): the gradient of each completion's summed token log-probabilities, one backward each."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(sequences.shape[0]):
        model.zero_grad(set_to_none=True)
        positions = (attention[i : i + 1].cumsum(dim=1) - 1).clamp(min=0)  # as generate() placed them
        logits = model(
            input_ids=sequences[i : i + 1], attention_mask=attention[i : i + 1], position_ids=positions
        ).logits
        logps = torch.log_softmax(logits[0, start - 1 : -1].float(), dim=-1)
        token_logps = logps.gather(1, sequences[i, start:].unsqueeze(1)).squeeze(1)
        (token_logps * mask[i]).sum().backward()
        rows.append(
            torch.cat(
                [p.grad.flatten() if p.grad is not None else torch.zeros_like(p).flatten() for p in params]
            )
        )
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


def rollout_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    reward: Callable[[list[str], list[bool]], list[float]],
    group_size: int,
    *,
    seed: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    data_sources: Sequence[str] | None = None,
) -> RolloutBatch:
    """Sample ``group_size`` completions per prompt (text, chat template applied) from ``model`` with
    ``seed``; ``reward(texts, terminated)`` scores them (one value per completion, prompt-major)."""
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = padding_side
    eos = {
        i
        for i in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None))
        if isinstance(i, int)
    }
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    torch.manual_seed(seed)
    model.eval()
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=group_size,
            pad_token_id=pad,
            eos_token_id=sorted(eos),
        )
    start = enc["input_ids"].shape[1]
    completions = out[:, start:]
    is_eos = torch.isin(completions, torch.tensor(sorted(eos)))
    first = torch.where(
        is_eos.any(dim=1),
        is_eos.float().argmax(dim=1),
        torch.full_like(is_eos[:, 0], completions.shape[1], dtype=torch.long),
    )
    mask = (torch.arange(completions.shape[1]).unsqueeze(0) <= first.unsqueeze(1)).float()
    texts = [
        tokenizer.decode(row[: int(n)], skip_special_tokens=True)
        for row, n in zip(completions, first, strict=True)
    ]
    terminated = is_eos.any(dim=1).tolist()
    attention = torch.cat([enc["attention_mask"].repeat_interleave(group_size, dim=0), mask.long()], dim=1)
    scores = _scores(model, out, attention, start, mask)
    rewards = torch.tensor(reward(texts, terminated), dtype=torch.float32)
    sources = None if data_sources is None else [s for s in data_sources for _ in range(group_size)]
    return RolloutBatch(rewards, scores, float(mask.sum()), group_size, sources)


def gram_trace(gram: torch.Tensor, index: torch.Tensor | None = None) -> tuple[float, float]:
    """(trace of the sample covariance, ||mean||^2) of the gradients whose Gram matrix is ``gram``, taking
    the batches ``index`` (with repeats: a bootstrap resample; default all of them).

    >>> g = torch.tensor([[1.0, 0.0], [3.0, 2.0]], dtype=torch.float64)
    >>> gram_trace(g @ g.T)  # mean (2, 1); deviations (-1, -1), (1, 1): variance 2 per coordinate
    (4.0, 5.0)
    """
    if index is not None:
        gram = gram[index][:, index]
    k = gram.shape[0]
    mean_sq = gram.sum().item() / (k * k)
    return (gram.diagonal().sum().item() / k - mean_sq) * k / (k - 1), mean_sq
