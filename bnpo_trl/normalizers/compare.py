"""How advantage vectors of the same batch compare (shadow normalizers, ``bnpo-trl replay``)."""

from __future__ import annotations

import math

import torch

__all__ = ["compare_rows"]

STATS = ("pearson", "sign_agreement", "signal_fraction", "advantage_abs_mean")


def compare_rows(advs: torch.Tensor, reference: torch.Tensor) -> list[dict[str, float]]:
    """For each row of (S, N) ``advs``, against (N,) ``reference``: Pearson correlation (NaN when either side
    is constant), sign agreement (the fraction of positions whose signs, -1/0/+1, are equal), signal fraction
    (positions with a non-zero advantage) and mean |A|. One pass, one transfer to Python.

    >>> compare_rows(torch.tensor([[1.0, -1.0, 0.0, 2.0]]), torch.tensor([2.0, -2.0, 1.0, 4.0]))[0]["sign_agreement"]
    0.75
    """
    x, y = advs.double(), reference.double().unsqueeze(0)
    dx, dy = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    denom = (dx.square().sum(dim=1) * dy.square().sum(dim=1)).sqrt()
    pearson = torch.where(denom > 0, (dx * dy).sum(dim=1) / denom, torch.full_like(denom, math.nan))
    table = torch.stack(
        [
            pearson.clamp(-1.0, 1.0),
            (x.sign() == y.sign()).double().mean(dim=1),
            (x != 0).double().mean(dim=1),
            x.abs().mean(dim=1),
        ],
        dim=1,
    )
    return [dict(zip(STATS, row, strict=True)) for row in table.tolist()]
