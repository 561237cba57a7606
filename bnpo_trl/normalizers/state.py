"""Running statistics kept across training steps (JSON-serialisable, identical on every rank)."""

from __future__ import annotations

import math
from typing import Any

import torch

#: The largest magnitude a saved statistic may have. Rewards are bounded by MAX_ABS_REWARD (2**50) before
#: they are weighted and summed; anything near 1e30 comes from a corrupt or hand-edited file.
MAX_ABS_STATISTIC = 1e30


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
        """A copy with ``values`` (NaN and ±inf ignored) added; ``self`` is unchanged."""
        out = Welford()
        out.count, out.mean, out.m2 = self.count, self.mean, self.m2
        x = values[torch.isfinite(values)].double()
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

    def load_state_dict(self, state: dict[str, Any], field: str = "welford") -> None:
        """Restore a :meth:`state_dict`; a value no run of in-range rewards can produce is a ``ValueError``
        naming ``field``."""
        count = state["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{field}.count must be an integer >= 0, got {count!r}.")
        mean = checked_float(state["mean"], f"{field}.mean")
        spread = 2 * MAX_ABS_STATISTIC
        m2 = checked_float(state["m2"], f"{field}.m2", low=0.0, bound=spread * spread * max(count, 1))
        if count == 0 and (mean, m2) != (0.0, 0.0):
            raise ValueError(f"{field}: count is 0 but mean={mean}, m2={m2} (a state nothing was added to).")
        self.count, self.mean, self.m2 = count, mean, m2


def checked_float(
    value: Any, field: str, low: float | None = None, bound: float = MAX_ABS_STATISTIC
) -> float:
    """``value`` as a float that is finite, within ``[-bound, bound]`` and ``>= low``; else a ``ValueError``
    naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field} must be a number, got {value!r}.")
    out = float(value)
    if not math.isfinite(out) or abs(out) > bound or (low is not None and out < low):
        allowed = f"[{low}, {bound:g}]" if low is not None else f"[-{bound:g}, {bound:g}]"
        raise ValueError(f"{field} = {value!r} is outside {allowed} (finite values only).")
    return out
