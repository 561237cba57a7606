"""The gradient-variance measurement against a toy policy whose variance is known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from bnpo_trl.gradient_variance import GradientMoments, GradientVarianceMeter, RolloutBatch, gram_trace
from tests.reference_normalizers import inverse_beta_pdf

SUCCESS = [0.2, 0.5, 0.85]  # one Bernoulli policy per prompt, p_j = sigmoid(theta_j)
G = 8


def toy_batch(gen: torch.Generator) -> RolloutBatch:
    """G samples per prompt; the score of a sample of prompt j is d log pi / d theta = (r - p_j) e_j."""
    p = torch.tensor(SUCCESS).repeat_interleave(G)
    rewards = (torch.rand(p.shape, generator=gen) < p).float()
    scores = torch.zeros(len(p), len(SUCCESS))
    scores[torch.arange(len(p)), torch.arange(len(SUCCESS)).repeat_interleave(G)] = rewards - p
    return RolloutBatch(rewards, scores, num_tokens=float(len(p)), group_size=G)


def exact_trace_and_snr(weight) -> tuple[float, float]:
    """With A_i = w(k) (r_i - k/G) for a group with k successes, sum_i A_i (r_i - p) = w(k) k (1 - k/G)
    whatever p is; k ~ Binomial(G, p) gives each coordinate's mean and variance exactly."""
    n = len(SUCCESS) * G
    trace = mean_sq = 0.0
    for p in SUCCESS:
        pmf = [math.comb(G, k) * p**k * (1 - p) ** (G - k) for k in range(G + 1)]
        values = [weight(k) * k * (1 - k / G) / n for k in range(G + 1)]
        mean = sum(q * v for q, v in zip(pmf, values, strict=True))
        trace += sum(q * (v - mean) ** 2 for q, v in zip(pmf, values, strict=True))
        mean_sq += mean**2
    return trace, mean_sq / trace


def beta_weight(alpha: float, beta: float):
    return lambda k: 0.0 if k in (0, G) else inverse_beta_pdf(k / G, alpha, beta, 1e6)[0]


def group_weight(k: int) -> float:
    std = math.sqrt(k * (G - k) / (G * (G - 1)))
    return 1.0 / (std + 1e-4)


SPECS = {
    "bnpo(alpha=1.0,beta=1.0)": ({"name": "bnpo", "alpha": 1.0, "beta": 1.0}, beta_weight(1.0, 1.0)),
    "bnpo(alpha=1.5,beta=1.5)": ({"name": "bnpo", "alpha": 1.5, "beta": 1.5}, beta_weight(1.5, 1.5)),
    "group": ("group", group_weight),
}


def test_the_measured_trace_and_snr_match_the_exact_ones_on_a_toy_policy():
    meter = GradientVarianceMeter([spec for spec, _ in SPECS.values()])
    gen = torch.Generator().manual_seed(0)
    for _ in range(4000):
        meter.add(toy_batch(gen))
    measured = meter.summary()
    exact = {label: exact_trace_and_snr(weight) for label, (_, weight) in SPECS.items()}
    for label, (trace, snr) in exact.items():
        assert measured[label]["batches"] == 4000
        assert measured[label]["trace"] == pytest.approx(trace, rel=0.08), label
        assert measured[label]["snr"] == pytest.approx(snr, rel=0.08), label
    by_trace = sorted(exact, key=lambda k: exact[k][0])
    assert sorted(measured, key=lambda k: measured[k]["trace"]) == by_trace
    # GRPO is BNPO's alpha = beta = 3/2 case up to a constant factor (pi/8, and the sample std is sqrt(G/(G-1)) times the population one): the
    # same SNR, a different trace; REINFORCE with a group-mean baseline (alpha = beta = 1) has a lower SNR here
    three_halves, grpo = measured["bnpo(alpha=1.5,beta=1.5)"], measured["group"]
    assert grpo["snr"] == pytest.approx(three_halves["snr"], rel=1e-3)
    assert grpo["trace"] / three_halves["trace"] == pytest.approx((8 / math.pi) ** 2 * (G - 1) / G, rel=1e-3)
    assert measured["bnpo(alpha=1.0,beta=1.0)"]["snr"] < three_halves["snr"]


def test_gradient_moments_equal_the_sample_covariance():
    vectors = torch.randn(9, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    moments = GradientMoments()
    for v in vectors:
        moments.add(v)
    cov = torch.cov(vectors.T)
    assert moments.trace == pytest.approx(torch.trace(cov).item())
    assert moments.snr == pytest.approx(vectors.mean(0).square().sum().item() / torch.trace(cov).item())
    single = GradientMoments()
    single.add(vectors[0])
    assert math.isnan(single.trace) and math.isnan(single.snr)


def test_the_gram_matrix_gives_the_same_trace_and_mean_and_resamples_batches():
    meter = GradientVarianceMeter(["group"], keep=["group"])
    gen = torch.Generator().manual_seed(2)
    for _ in range(12):
        meter.add(toy_batch(gen))
    trace, mean_sq = gram_trace(meter.gram("group"))
    summary = meter.summary()["group"]
    assert trace == pytest.approx(summary["trace"], rel=1e-5)
    assert mean_sq == pytest.approx(summary["mean_sq_norm"], rel=1e-5)
    index = torch.tensor([0, 0, 3, 5, 5, 5, 7, 11, 2, 2, 9, 1])
    resampled = GradientMoments()
    for i in index.tolist():
        resampled.add(meter.kept["group"][i])
    assert gram_trace(meter.gram("group"), index)[0] == pytest.approx(resampled.trace, rel=1e-5)
