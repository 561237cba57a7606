"""Monte Carlo checks of the theory behind two normalizers: BNPO's variance-optimal Beta and EBPO's baseline.

    python scripts/simulate_theory.py            # full run (~1 min on one CPU core): writes the
                                                 # simulate_theory block of docs/theory.md
                                                 # and docs/figures/theory_*.png
    python scripts/simulate_theory.py --quick    # small sizes, prints only (unless --docs-dir is given)

1. BNPO (arXiv 2506.02864, Theorem 1). p ~ Beta(a, b), R ~ Bernoulli(p), X = (R - p) / f(p; alpha, beta)
   with f the normalized Beta pdf (``beta_log_pdf``). Then

       E[X^2] = E[p(1-p) / f(p)^2] = B(alpha, beta)^2 B(a + 3 - 2 alpha, b + 3 - 2 beta) / B(a, b),

   finite iff alpha < (a+3)/2 and beta < (b+3)/2, minimised at alpha = 1 + a/3, beta = 1 + b/3. We estimate
   E[X^2] on an (alpha, beta) grid with common random numbers, locate the argmin (grid + local quadratic fit,
   bootstrap over independent chunks for its standard error) and compare REINFORCE (1, 1), GRPO (3/2, 3/2)
   and BNPO (1 + a/3, 1 + b/3). The sample mean of X^2 has finite variance only where E[X^4] < inf, i.e.
   alpha < 1 + (a+1)/4 and beta < 1 + (b+1)/4: the grid stays inside that region (so a, b < 3).
2. EBPO (arXiv 2602.05165). A stream of batches of P prompts with true p ~ Beta(a, b) and G binary rewards
   each goes through the ``ebpo`` normalizer; its baseline V_g = r - A_raw (``standardize=False``) and the
   group mean are compared with the true p (MSE), and we count the all-fail groups that get a non-zero
   advantage from ``ebpo`` (default options) and from ``group`` (GRPO).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import torch

from bnpo_trl.normalizers import get_normalizer
from bnpo_trl.normalizers.functional import beta_log_pdf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
BNPO_PRIORS = [(0.5, 0.5), (1.0, 1.0), (0.5, 1.5), (1.5, 1.5), (2.0, 1.0)]
EBPO_PRIORS = [(0.5, 2.0), (1.0, 1.0), (2.0, 2.0)]
GROUP_SIZES = [2, 4, 8, 16]
QUICK = {"samples": 40_000, "chunks": 8, "grid": 11, "window": 2, "batches": 10, "prompts": 32, "boots": 20}
Z_OK = 3.0  # "within Monte Carlo error" = |estimate - theory| <= 3 standard errors


# ---------------------------------------------------------------------------------------------------------
# 1. BNPO: E[X^2] on an (alpha, beta) grid
# ---------------------------------------------------------------------------------------------------------
def log_beta_fn(x: float, y: float) -> float:
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)


def closed_form(alpha: float, beta: float, a: float, b: float) -> float:
    """E[(R-p)^2 / f(p; alpha, beta)^2] for p ~ Beta(a, b); inf outside the finite region."""
    if not (alpha < (a + 3) / 2 and beta < (b + 3) / 2):
        return math.inf
    return math.exp(
        2 * log_beta_fn(alpha, beta) + log_beta_fn(a + 3 - 2 * alpha, b + 3 - 2 * beta) - log_beta_fn(a, b)
    )


def fourth_moment_finite(alpha: float, beta: float, a: float, b: float) -> bool:
    """E[X^4] < inf: E[(R-p)^4 | p] ~ p near 0, so we need a - 4(alpha - 1) > -1 (same for b, beta)."""
    return alpha < 1 + (a + 1) / 4 and beta < 1 + (b + 1) / 4


def sample_beta_bernoulli(a: float, b: float, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """p ~ Beta(a, b) via two Gammas (so that log p and log(1-p) are both accurate), R ~ Bernoulli(p).

    Returns float64 ``(stack([p, R, (R-p)^2]) (3, n), log p (n,), log(1-p) (n,))``.
    """
    x = torch.distributions.Gamma(torch.tensor(a, dtype=torch.float64), 1.0).sample((n,))
    y = torch.distributions.Gamma(torch.tensor(b, dtype=torch.float64), 1.0).sample((n,))
    p, q = x / (x + y), y / (x + y)
    r = torch.rand(n, dtype=torch.float64) < p
    sq_residual = torch.where(r, q * q, p * p)  # (R - p)^2, exact near p = 1 as well
    log_p, log_q = x.log() - (x + y).log(), y.log() - (x + y).log()
    return torch.stack([p, r.double(), sq_residual]), log_p, log_q


@dataclass
class BnpoResult:
    a: float
    b: float
    alphas: torch.Tensor  # (K,)
    betas: torch.Tensor  # (K,)
    chunk_surfaces: torch.Tensor  # (C, K, K): mean of X^2 over each chunk of samples
    exact: torch.Tensor  # (K, K) closed form
    direct: dict[str, torch.Tensor]  # name -> (C,) chunk means of X^2 computed with beta_log_pdf
    n: int

    @property
    def surface(self) -> torch.Tensor:
        return self.chunk_surfaces.mean(0)

    @property
    def surface_se(self) -> torch.Tensor:
        return self.chunk_surfaces.std(0) / math.sqrt(self.chunk_surfaces.shape[0])


def reference_points(a: float, b: float) -> dict[str, tuple[float, float]]:
    return {"REINFORCE": (1.0, 1.0), "GRPO": (1.5, 1.5), "BNPO": (1 + a / 3, 1 + b / 3)}


def bnpo_grid(a: float, b: float, n: int, chunks: int, grid: int, half_width: float, seed: int) -> BnpoResult:
    """Mean of X^2 = (R-p)^2 B(alpha,beta)^2 p^(-2(alpha-1)) (1-p)^(-2(beta-1)) on a K x K grid, per chunk.

    The grid factorises: chunk mean = B^2 * (U * w)^T V / m with U[i, k] = p_i^(-2(alpha_k - 1)),
    V[i, l] = (1-p_i)^(-2(beta_l - 1)), w = (R-p)^2 - one matmul per chunk, the same samples for every
    grid point (common random numbers). The four reference points are recomputed per sample with the
    project's ``beta_log_pdf`` and the grid centre is checked against it.
    """
    torch.manual_seed(seed)
    a_star, b_star = 1 + a / 3, 1 + b / 3
    # Keep the grid inside E[X^4] < inf (the Monte Carlo error is finite there), with a 25% margin.
    h_a = min(half_width, 0.75 * (1 + (a + 1) / 4 - a_star))
    h_b = min(half_width, 0.75 * (1 + (b + 1) / 4 - b_star))
    alphas = torch.linspace(a_star - h_a, a_star + h_a, grid, dtype=torch.float64)
    betas = torch.linspace(b_star - h_b, b_star + h_b, grid, dtype=torch.float64)
    m = n // chunks
    surfaces, direct = [], {name: [] for name in reference_points(a, b)}
    for _ in range(chunks):
        (p, r, w), log_p, log_q = sample_beta_bernoulli(a, b, m)
        u = torch.exp(-2 * (alphas[:, None] - 1) * log_p[None, :]) * w[None, :]  # (K, m)
        v = torch.exp(-2 * (betas[None, :] - 1) * log_q[:, None])  # (m, K)
        surfaces.append(u @ v / m)
        for name, (alpha, beta) in reference_points(a, b).items():  # the project's math, sample by sample
            x = (r - p) * torch.exp(-beta_log_pdf(p, alpha, beta))
            direct[name].append((x * x).mean())
    log_b2 = torch.tensor([[2 * log_beta_fn(x, y) for y in betas.tolist()] for x in alphas.tolist()])
    chunk_surfaces = torch.stack(surfaces) * log_b2.double().exp()
    exact = torch.tensor([[closed_form(x, y, a, b) for y in betas.tolist()] for x in alphas.tolist()])
    result = BnpoResult(
        a, b, alphas, betas, chunk_surfaces, exact.double(), {k: torch.stack(v) for k, v in direct.items()}, n
    )
    centre = chunk_surfaces[:, grid // 2, grid // 2]
    if not torch.allclose(centre, result.direct["BNPO"], rtol=1e-6):
        raise SystemExit("grid (factorised) and beta_log_pdf (per sample) disagree at the grid centre")
    return result


def quadratic_vertex(surface: torch.Tensor, alphas: torch.Tensor, betas: torch.Tensor, window: int):
    """Minimiser of a 2-D quadratic fitted to the (2w+1)^2 grid points around the grid argmin."""
    k = surface.shape[0]
    flat = int(surface.argmin())
    i = min(max(flat // k, window), k - 1 - window)
    j = min(max(flat % k, window), k - 1 - window)
    rows, cols = slice(i - window, i + window + 1), slice(j - window, j + window + 1)
    x, y = torch.meshgrid(alphas[rows] - alphas[i], betas[cols] - betas[j], indexing="ij")
    design = torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], -1).reshape(-1, 6)
    c = torch.linalg.lstsq(design, surface[rows, cols].reshape(-1, 1)).solution.squeeze(1)
    hessian = torch.stack([torch.stack([2 * c[3], c[4]]), torch.stack([c[4], 2 * c[5]])])
    offset = torch.linalg.solve(hessian, -c[1:3])
    return (alphas[i] + offset[0]).item(), (betas[j] + offset[1]).item()


def argmin_summary(res: BnpoResult, window: int, boots: int, seed: int) -> dict[str, float]:
    k = res.alphas.numel()
    flat = int(res.surface.argmin())
    fit = quadratic_vertex(res.surface, res.alphas, res.betas, window)
    gen = torch.Generator().manual_seed(seed)
    c = res.chunk_surfaces.shape[0]
    resampled = [
        quadratic_vertex(
            res.chunk_surfaces[torch.randint(0, c, (c,), generator=gen)].mean(0),
            res.alphas,
            res.betas,
            window,
        )
        for _ in range(boots)
    ]
    se = torch.tensor(resampled).std(0)
    exact_fit = quadratic_vertex(res.exact, res.alphas, res.betas, window)
    z = ((res.surface - res.exact) / res.surface_se).abs()
    return {
        "grid_alpha": res.alphas[flat // k].item(),
        "grid_beta": res.betas[flat % k].item(),
        "fit_alpha": fit[0],
        "fit_beta": fit[1],
        "se_alpha": se[0].item(),
        "se_beta": se[1].item(),
        "exact_fit_alpha": exact_fit[0],
        "exact_fit_beta": exact_fit[1],
        "z_alpha": (fit[0] - (1 + res.a / 3)) / se[0].item(),
        "z_beta": (fit[1] - (1 + res.b / 3)) / se[1].item(),
        "max_abs_z_surface": z.max().item(),
        "step_alpha": (res.alphas[1] - res.alphas[0]).item(),
        "step_beta": (res.betas[1] - res.betas[0]).item(),
    }


# ---------------------------------------------------------------------------------------------------------
# 2. EBPO: baseline MSE over a stream of batches
# ---------------------------------------------------------------------------------------------------------
@dataclass
class EbpoResult:
    a: float
    b: float
    group_size: int
    sse_group_mean: torch.Tensor  # (batches,) sum over the batch's prompts of (baseline - p)^2
    sse_ebpo: torch.Tensor
    sse_oracle: torch.Tensor  # posterior mean (a + successes) / (a + b + G), the true prior known
    prompts: int
    shrinkage: float  # mean S_g over the stream
    all_fail: int  # groups whose G rewards are all 0
    all_fail_nonzero: dict[str, int]  # normalizer -> all-fail groups with a non-zero advantage
    all_fail_negative: dict[str, int]


def ebpo_stream(a: float, b: float, group_size: int, batches: int, prompts: int, seed: int) -> EbpoResult:
    torch.manual_seed(seed)
    raw = get_normalizer("ebpo", standardize=False)  # A_raw = r - V_g: gives the baseline V_g
    normalizers = {"ebpo": get_normalizer("ebpo"), "group": get_normalizer("group")}
    prior = torch.distributions.Beta(torch.tensor(a), torch.tensor(b))
    sse_gm, sse_eb, sse_or, shrink = [], [], [], []
    all_fail, nonzero, negative = 0, dict.fromkeys(normalizers, 0), dict.fromkeys(normalizers, 0)
    for _ in range(batches):
        p = prior.sample((prompts,)).double()
        rewards = torch.bernoulli(p.repeat_interleave(group_size)).float()
        a_raw = raw(rewards, group_size)
        shrink.append(raw.last_stats["ebpo/shrinkage"])
        baseline = (rewards.double() - a_raw.double()).view(prompts, group_size)
        if (baseline - baseline[:, :1]).abs().max() > 1e-5:
            raise SystemExit("r - A_raw differs within a group: it is not EBPO's per-group baseline V_g")
        v_g = baseline[:, 0]
        mean_g = rewards.double().view(prompts, group_size).mean(1)
        sse_gm.append(((mean_g - p) ** 2).sum())
        sse_eb.append(((v_g - p) ** 2).sum())
        sse_or.append((((a + mean_g * group_size) / (a + b + group_size) - p) ** 2).sum())
        fail = rewards.view(prompts, group_size).sum(1) == 0
        all_fail += int(fail.sum())
        for name, norm in normalizers.items():
            adv = norm(rewards, group_size).view(prompts, group_size)[fail, 0]
            nonzero[name] += int((adv != 0).sum())
            negative[name] += int((adv < 0).sum())
    return EbpoResult(
        a,
        b,
        group_size,
        torch.stack(sse_gm),
        torch.stack(sse_eb),
        torch.stack(sse_or),
        prompts,
        sum(shrink) / len(shrink),
        all_fail,
        nonzero,
        negative,
    )


def ratio_ci(res: EbpoResult, boots: int, seed: int) -> tuple[float, float, float]:
    """MSE(group mean) / MSE(EBPO) and a 95% bootstrap interval over batches."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, res.sse_ebpo.numel(), (boots, res.sse_ebpo.numel()), generator=gen)
    ratios = res.sse_group_mean[idx].sum(1) / res.sse_ebpo[idx].sum(1)
    lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=ratios.dtype)).tolist()
    return (res.sse_group_mean.sum() / res.sse_ebpo.sum()).item(), lo, hi


def expected_p1mp(a: float, b: float) -> float:
    return a * b / ((a + b) * (a + b + 1))


# ---------------------------------------------------------------------------------------------------------
# Tables, figures, docs
# ---------------------------------------------------------------------------------------------------------
def bnpo_tables(results: list[BnpoResult], summaries: list[dict[str, float]], window: int) -> str:
    lines = [
        "**Table 1a - grid** (K x K points, common random numbers; E[X^4] < inf needs alpha < 1 + (a+1)/4, "
        "beta < 1 + (b+1)/4)",
        "",
        "| a | b | samples | alpha grid | beta grid | step (alpha, beta) "
        "| alpha bound E[X^4] | beta bound E[X^4] |",
        "|---:|---:|---:|---|---|---|---:|---:|",
    ]
    for r, s in zip(results, summaries, strict=True):
        lines.append(
            f"| {r.a:g} | {r.b:g} | {r.n:,} | [{r.alphas[0]:.4f}, {r.alphas[-1]:.4f}] "
            f"| [{r.betas[0]:.4f}, {r.betas[-1]:.4f}] | ({s['step_alpha']:.4f}, {s['step_beta']:.4f}) "
            f"| {1 + (r.a + 1) / 4:.4f} | {1 + (r.b + 1) / 4:.4f} |"
        )
    lines += [
        "",
        f"**Table 1b - argmin of the estimated E[X^2]** (fit: quadratic over the {2 * window + 1}^2 points "
        "around the grid "
        "argmin; SE: bootstrap over the independent sample chunks; z = (fit - theory) / SE)",
        "",
        "| a | b | 1+a/3 | 1+b/3 | grid argmin | fitted argmin | SE | closed form, same fit "
        "| z_alpha | z_beta "
        "| max abs z, MC vs closed form (all grid points) |",
        "|---:|---:|---:|---:|---|---|---|---|---:|---:|---:|",
    ]
    for r, s in zip(results, summaries, strict=True):
        lines.append(
            f"| {r.a:g} | {r.b:g} | {1 + r.a / 3:.4f} | {1 + r.b / 3:.4f} "
            f"| ({s['grid_alpha']:.4f}, {s['grid_beta']:.4f}) | ({s['fit_alpha']:.4f}, {s['fit_beta']:.4f}) "
            f"| ({s['se_alpha']:.4f}, {s['se_beta']:.4f}) "
            f"| ({s['exact_fit_alpha']:.4f}, {s['exact_fit_beta']:.4f}) "
            f"| {s['z_alpha']:+.2f} | {s['z_beta']:+.2f} | {s['max_abs_z_surface']:.2f} |"
        )
    lines += [
        "",
        "**Table 1c - E[X^2] at the same (a, b)** (MC: per-sample `beta_log_pdf`, mean +- SE over chunks; "
        "ratio = closed form / closed form at BNPO's (1+a/3, 1+b/3); * = E[X^4] infinite there, so the MC SE "
        "is not meaningful)",
        "",
        "| a | b | REINFORCE (1, 1) MC | closed | GRPO (3/2, 3/2) MC | closed "
        "| BNPO (1+a/3, 1+b/3) MC | closed "
        "| REINFORCE / BNPO | GRPO / BNPO |",
        "|---:|---:|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in results:
        cells, closed = [], {}
        for name, (alpha, beta) in reference_points(r.a, r.b).items():
            d = r.direct[name]
            flag = "" if fourth_moment_finite(alpha, beta, r.a, r.b) else " *"
            closed[name] = closed_form(alpha, beta, r.a, r.b)
            cells.append(f"{d.mean():.5f} +- {d.std() / math.sqrt(d.numel()):.5f}{flag} | {closed[name]:.5f}")
        lines.append(
            f"| {r.a:g} | {r.b:g} | {' | '.join(cells)} | {closed['REINFORCE'] / closed['BNPO']:.4f} "
            f"| {closed['GRPO'] / closed['BNPO']:.4f} |"
        )
    return "\n".join(lines)


def bnpo_verdict(results: list[BnpoResult], summaries: list[dict[str, float]]) -> str:
    worst = max(max(abs(s["z_alpha"]), abs(s["z_beta"])) for s in summaries)
    ok = [
        r for r, s in zip(results, summaries, strict=True) if max(abs(s["z_alpha"]), abs(s["z_beta"])) <= Z_OK
    ]
    text = (
        f"Measured argmin within {Z_OK:g} standard errors of (1 + a/3, 1 + b/3): {len(ok)} of {len(results)} "
        f"priors (largest |z| = {worst:.2f})."
    )
    for r, s in zip(results, summaries, strict=True):
        if max(abs(s["z_alpha"]), abs(s["z_beta"])) > Z_OK:
            text += (
                f" Not within error for (a, b) = ({r.a:g}, {r.b:g}): fitted ({s['fit_alpha']:.4f}, "
                f"{s['fit_beta']:.4f}) vs ({1 + r.a / 3:.4f}, {1 + r.b / 3:.4f}); the same quadratic fit on "
                "the "
                f"closed form gives ({s['exact_fit_alpha']:.4f}, {s['exact_fit_beta']:.4f}) (fit bias)."
            )
    return text


def ebpo_table(results: list[EbpoResult], boots: int, seed: int) -> str:
    lines = [
        "| prior (a, b) | G | prompts | MSE group mean | E[p(1-p)]/G | MSE EBPO | MSE Bayes oracle "
        "| MSE ratio group/EBPO [95% CI] | mean S_g | all-fail groups "
        "| non-zero A: EBPO | non-zero A: GRPO |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        n = r.sse_ebpo.numel() * r.prompts
        ratio, lo, hi = ratio_ci(r, boots, seed)
        share = r.all_fail / n
        ebpo = r.all_fail_nonzero["ebpo"] / max(r.all_fail, 1)
        grpo = r.all_fail_nonzero["group"] / max(r.all_fail, 1)
        lines.append(
            f"| ({r.a:g}, {r.b:g}) | {r.group_size} | {n:,} | {r.sse_group_mean.sum() / n:.5f} "
            f"| {expected_p1mp(r.a, r.b) / r.group_size:.5f} | {r.sse_ebpo.sum() / n:.5f} "
            f"| {r.sse_oracle.sum() / n:.5f} | {ratio:.3f} [{lo:.3f}, {hi:.3f}] "
            f"| {r.shrinkage:.3f} | {share:.1%} | {ebpo:.1%} | {grpo:.1%} |"
        )
    return "\n".join(lines)


def ebpo_verdict(results: list[EbpoResult]) -> str:
    fail = sum(r.all_fail for r in results)
    nonzero = sum(r.all_fail_nonzero["ebpo"] for r in results)
    negative = sum(r.all_fail_negative["ebpo"] for r in results)
    grpo = sum(r.all_fail_nonzero["group"] for r in results)
    ratios = [(r.sse_group_mean.sum() / r.sse_ebpo.sum()).item() for r in results]
    return (
        f"Over all priors and G: {fail:,} all-fail groups; EBPO gave {nonzero:,} of them a non-zero "
        "advantage "
        f"({negative:,} negative), GRPO gave {grpo:,}. MSE ratio group mean / EBPO ranges from "
        f"{min(ratios):.3f} to {max(ratios):.3f}."
    )


def plot_bnpo(results: list[BnpoResult], summaries: list[dict[str, float]], path: Path) -> None:
    """E[X^2] along alpha and along beta through the grid centre (1 + a/3, 1 + b/3), relative to its value
    there: MC with each chunk divided by its own centre value (common random numbers), vs closed form."""
    fig, axes = plt.subplots(len(results), 2, figsize=(9, 2.3 * len(results)), dpi=100, squeeze=False)
    for row, r, s in zip(axes, results, summaries, strict=True):
        mid = r.alphas.numel() // 2
        chunks = r.chunk_surfaces / r.chunk_surfaces[:, mid : mid + 1, mid : mid + 1] - 1
        mc, se = chunks.mean(0), chunks.std(0) / math.sqrt(chunks.shape[0])
        exact = r.exact / r.exact[mid, mid] - 1
        for ax, sel, values, star, fit, label in (
            (row[0], (slice(None), mid), r.alphas, 1 + r.a / 3, s["fit_alpha"], "alpha"),
            (row[1], (mid, slice(None)), r.betas, 1 + r.b / 3, s["fit_beta"], "beta"),
        ):
            band = (100 * (mc[sel] - 2 * se[sel]), 100 * (mc[sel] + 2 * se[sel]))
            ax.fill_between(values, *band, alpha=0.3, label="MC +- 2 SE")
            ax.plot(values, 100 * mc[sel], ".", ms=3)
            ax.plot(values, 100 * exact[sel], "k-", lw=1, label="closed form")
            ax.axvline(star, color="tab:red", ls="--", lw=1, label="1 + a/3 (1 + b/3)")
            ax.axvline(fit, color="tab:green", ls=":", lw=1.5, label="fitted MC argmin")
            ax.set_title(f"(a, b) = ({r.a:g}, {r.b:g}): slice along {label}", fontsize=9)
            ax.set_ylabel("E[X^2] / E[X^2](centre) - 1, %", fontsize=7)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_ebpo(results: list[EbpoResult], path: Path) -> None:
    priors = list(dict.fromkeys((r.a, r.b) for r in results))
    fig, axes = plt.subplots(1, len(priors), figsize=(4 * len(priors), 3.4), dpi=100, squeeze=False)
    for ax, (a, b) in zip(axes[0], priors, strict=True):
        rs = [r for r in results if (r.a, r.b) == (a, b)]
        gs = [r.group_size for r in rs]
        n = [r.sse_ebpo.numel() * r.prompts for r in rs]
        ax.plot(
            gs, [r.sse_group_mean.sum() / k for r, k in zip(rs, n, strict=True)], "o", label="group mean (MC)"
        )
        ax.plot(gs, [expected_p1mp(a, b) / g for g in gs], "C0-", lw=1, label="E[p(1-p)]/G")
        ax.plot(gs, [r.sse_ebpo.sum() / k for r, k in zip(rs, n, strict=True)], "s", label="EBPO (MC)")
        ax.plot(
            gs, [expected_p1mp(a, b) / (a + b + g) for g in gs], "k--", lw=1, label="Bayes oracle (theory)"
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("G")
        ax.set_title(f"p ~ Beta({a:g}, {b:g}): baseline MSE vs true p", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


DOC_INTRO = """# Theory checks: BNPO's optimal Beta and EBPO's shrunk baseline

Monte Carlo checks of the two results the `bnpo` and `ebpo` normalizers rest on. Everything in the
`simulate_theory` block below (between its two HTML-comment markers) is written by
`python scripts/simulate_theory.py`, which also draws `docs/figures/theory_*.png` - no number in this file
is typed by hand. The step-time overhead of `NormalizedGRPOTrainer` is measured in
[benchmarks.md](benchmarks.md).
"""

BNPO_TEXT = """## 1. BNPO: the variance-minimising Beta normalization

Setting (arXiv 2506.02864, Theorem 1): a prompt's success rate is p ~ Beta(a, b), its reward R ~
Bernoulli(p), and the advantage is X = (R - p) / f(p; alpha, beta), f the normalized Beta pdf. Then

    E[X^2] = E[p(1-p) / f(p)^2] = B(alpha, beta)^2 B(a + 3 - 2 alpha, b + 3 - 2 beta) / B(a, b),

finite iff alpha < (a+3)/2 and beta < (b+3)/2. Its gradient vanishes exactly at alpha = 1 + a/3, beta =
1 + b/3 (there a + 3 - 2 alpha = alpha and b + 3 - 2 beta = beta). REINFORCE with a mean baseline is
(alpha, beta) = (1, 1); (3/2, 3/2) is GRPO with the population std (times pi/8), whose E[X^2] = (pi/8)^2
whatever (a, b). This is the oracle setting (true p); in training the normalizer uses the group mean.

How it is measured: X is computed from the true p with the project's `beta_log_pdf` (not the
`bnpo` normalizer, which clamps alpha, beta >= 1 and fits (a, b) per batch). The (alpha, beta) grid uses
the same formula factorised into one matrix product per chunk of samples (checked against
`beta_log_pdf` at the grid centre), with the same samples at every grid point (common random numbers), so
differences between grid points - which locate the minimum - are far less noisy than the values.
**Heavy tails.** The sample mean of X^2 has a finite variance only where E[X^4] < inf, i.e. alpha < 1 +
(a+1)/4 and beta < 1 + (b+1)/4 (E[(R-p)^4 | p] ~ p near 0). At alpha = 1 + a/3 that holds iff a < 3,
so the priors here have a, b < 3 and each grid stays inside that region with at least a 25% margin (Table 1a);
past it, in the region where E[X^2] is finite but E[X^4] is not, Monte Carlo estimates are unreliable
(rare huge values), and for a >= 3 no grid around the optimum avoids this. For the same reason the GRPO
column of Table 1c is marked * when a <= 1 or b <= 1: its E[X^2] is finite but the estimate's SE is not.
"""

EBPO_TEXT = """## 2. EBPO: shrinking the group baseline toward the global mean

Setting (arXiv 2602.05165): each batch has P prompts with true success rates p ~ Beta(a, b) and G binary
rewards per prompt. GRPO's baseline is the group mean (unbiased, MSE E[p(1-p)]/G). EBPO's is
V_g = (1 - S_g) mean_g + S_g mu_glob with S_g = (s2/G) / (s2/G + t2), where mu_glob and s2 are the running
mean and variance of all rewards seen so far and t2 the running variance of the group means (Welford over
the whole stream, the batch included). The `ebpo` normalizer runs over the stream exactly as in training
(`update=True` every batch); V_g is read back as r - A_raw from a second instance with
`standardize=False` fed the same batches. "Bayes oracle" is the posterior mean with the true prior known,
(a + successes)/(a + b + G), on the same samples: a lower bound no baseline can beat in expectation (its
MSE is E[p(1-p)]/(a + b + G), the dashed line of the figure). All-fail groups (every reward 0) get
A = 0 from GRPO by construction; EBPO's raw advantage there is -S_g mu_glob. The "non-zero A" columns
count all-fail groups whose advantage from the default `ebpo` normalizer (standardized) and from `group`
is non-zero.
"""


def write_docs(docs_dir: Path, body: str) -> Path:
    """Write the ``simulate_theory`` block of ``docs_dir/theory.md`` (a new file starts with DOC_INTRO)."""
    path = docs_dir / "theory.md"
    if not path.exists():
        docs_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(DOC_INTRO)
    write_section(path, "simulate_theory", body)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=4_000_000, help="BNPO: samples per (a, b)")
    parser.add_argument("--chunks", type=int, default=32, help="BNPO: independent chunks (for the SEs)")
    parser.add_argument("--grid", type=int, default=31, help="BNPO: grid points per axis (odd)")
    parser.add_argument("--half-width", type=float, default=0.1, help="BNPO: grid half-width around 1 + a/3")
    parser.add_argument("--window", type=int, default=5, help="BNPO: quadratic fit over (2w+1)^2 points")
    parser.add_argument("--batches", type=int, default=200, help="EBPO: batches in the stream")
    parser.add_argument("--prompts", type=int, default=64, help="EBPO: prompts per batch")
    parser.add_argument("--boots", type=int, default=200, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    parser.add_argument(
        "--docs-dir", type=Path, default=None, help="default: docs/ (full run), none (--quick)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for the test suite")
    args = parser.parse_args()
    bnpo_priors, ebpo_priors = BNPO_PRIORS, EBPO_PRIORS
    if args.quick:
        vars(args).update(QUICK)
        bnpo_priors, ebpo_priors = BNPO_PRIORS[:2], EBPO_PRIORS[:1]
    elif args.docs_dir is None:
        args.docs_dir = ROOT / "docs"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.grid % 2 == 0 or args.grid < 2 * args.window + 1:
        parser.error("--grid must be odd and >= 2 * window + 1")
    start = time.perf_counter()

    bnpo = [
        bnpo_grid(a, b, args.samples, args.chunks, args.grid, args.half_width, args.seed + i)
        for i, (a, b) in enumerate(bnpo_priors)
    ]
    summaries = [argmin_summary(r, args.window, args.boots, args.seed) for r in bnpo]
    bnpo_seconds = time.perf_counter() - start
    ebpo = [
        ebpo_stream(a, b, g, args.batches, args.prompts, args.seed + 100 * i + g)
        for i, (a, b) in enumerate(ebpo_priors)
        for g in GROUP_SIZES
    ]
    seconds = time.perf_counter() - start

    header = f"Seed {args.seed}; {seconds:.0f} s in all, of which BNPO {bnpo_seconds:.0f} s."
    bnpo_md = bnpo_tables(bnpo, summaries, args.window) + "\n\n" + bnpo_verdict(bnpo, summaries)
    ebpo_md = (
        f"**Table 2 - baseline MSE against the true p** ({args.batches} batches of {args.prompts} prompts "
        "per "
        f"row; CI: bootstrap over batches)\n\n"
        + ebpo_table(ebpo, args.boots * 5, args.seed)
        + "\n\n"
        + ebpo_verdict(ebpo)
    )
    print(header, "", "# 1. BNPO", "", bnpo_md, "", "# 2. EBPO", "", ebpo_md, sep="\n")

    if args.docs_dir is not None:
        figures = args.docs_dir / "figures"
        figures.mkdir(parents=True, exist_ok=True)
        plot_bnpo(bnpo, summaries, figures / "theory_bnpo_variance.png")
        plot_ebpo(ebpo, figures / "theory_ebpo_mse.png")
        body = "\n\n".join(
            [
                header,
                BNPO_TEXT,
                bnpo_md,
                "![E[X^2] along alpha and beta through (1 + a/3, 1 + b/3), relative to its value there; "
                "the band is the Monte Carlo +- 2 SE of that ratio]"
                "(figures/theory_bnpo_variance.png)",
                EBPO_TEXT,
                ebpo_md,
                "![Baseline MSE against the true p](figures/theory_ebpo_mse.png)",
            ]
        )
        path = write_docs(args.docs_dir, body)
        print(f"\nwrote {path} and {figures}/theory_*.png")


if __name__ == "__main__":
    main()
