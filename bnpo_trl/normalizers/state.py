"""Running statistics kept across training steps (JSON-serialisable, identical on every rank)."""

from __future__ import annotations

import math
from typing import Any

import torch


class Welford:
    """Welford's online mean/variance (Welford 1962), fed whole batches with Chan et al.'s merge.

    Merging a batch of ``m`` values with mean ``x_bar`` and sum of squared deviations ``M2_b`` into
    ``(n, mean, M2)`` gives exactly the result of feeding the values one by one, in float64.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    @property
    def variance(self) -> float:
        """Unbiased (n-1) variance; 0.0 while fewer than two values were seen."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    def merged(self, values: torch.Tensor) -> Welford:
        """A copy with ``values`` (NaN ignored) added; ``self`` is unchanged."""
        out = Welford()
        out.count, out.mean, out.m2 = self.count, self.mean, self.m2
        x = values[~torch.isnan(values)].double()
        m = x.numel()
        if m == 0:
            return out
        batch_mean = x.mean().item()
        batch_m2 = ((x - batch_mean) ** 2).sum().item()
        n = self.count + m
        delta = batch_mean - self.mean
        out.mean = self.mean + delta * m / n
        out.m2 = self.m2 + batch_m2 + delta * delta * self.count * m / n
        out.count = n
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        count, mean, m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
        if count < 0 or not (math.isfinite(mean) and math.isfinite(m2)) or m2 < 0:
            raise ValueError(
                f"Invalid Welford state {state!r}: expected count >= 0 and finite mean, m2 >= 0."
            )
        self.count, self.mean, self.m2 = count, mean, m2
