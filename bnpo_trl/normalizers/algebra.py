"""A normalizer algebra: advantages = post-steps(scale(r - centre)). Defined by this project.

Every built-in normalizer is a baseline (centre), a scale and optional post-steps; :data:`PRESETS` gives
each one's triple, and :class:`ComposedNormalizer` computes any triple with the same arithmetic, so a preset
gives bit-identical advantages to the named normalizer (tests compare them on random inputs).

>>> import torch
>>> norm = ComposedNormalizer(center="loo", scale="batch_std", post=["standardize"])
>>> norm(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]), group_size=4).round(decimals=3)
tensor([ 1.6200, -0.5400, -0.5400, -0.5400,  0.5400,  0.5400, -1.6200,  0.5400])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bnpo_trl.normalizers import functional as F
from bnpo_trl.normalizers.base import Normalizer
from bnpo_trl.normalizers.bnpo import BNPONormalizer, combined_range
from bnpo_trl.normalizers.components import CENTERS, POSTS, SCALES, Batch, BNPOScale, Component, OPOCenter
from bnpo_trl.normalizers.sources import group_sources, require_sources
from bnpo_trl.normalizers.specs import spec_label

__all__ = ["CENTERS", "POSTS", "PRESETS", "SCALES", "ComposedNormalizer"]

#: The named normalizers as triples (``post`` empty when absent).
PRESETS: dict[str, dict[str, Any]] = {
    "group": {"center": "group_mean", "scale": "group_std"},
    "batch": {"center": "group_mean", "scale": "batch_std"},
    "none": {"center": "group_mean", "scale": "none"},
    "rloo": {"center": "loo", "scale": "none"},
    "reinforce_pp": {"center": "group_mean", "scale": "none", "post": ["standardize"]},
    "bnpo": {"center": "group_mean", "scale": "bnpo"},
    "ebpo": {"center": "ebpo", "scale": "none", "post": ["standardize"]},
    "median": {"center": "group_mean", "scale": "source_std"},
    "opo": {"center": "opo", "scale": "none"},
}


def _split(spec: Any, kind: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``{"name": ..., **options}`` -> (name, options)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    raise ValueError(f"A {kind} is a name or {{name: ..., option: value}}, got {spec!r}.")


def _build(table: dict[str, type[Component]], spec: Any, kind: str, per_source: bool) -> Component:
    name, options = _split(spec, kind)
    if name not in table:
        raise ValueError(f"Unknown {kind} {name!r}. Valid {kind}s: {', '.join(table)}.")
    cls = table[name]
    if per_source and cls.per_source_capable:
        options.setdefault("per_source", True)
    try:
        return cls(**options)
    except TypeError as err:
        raise ValueError(f"{kind} {name!r}: {err}.") from err


@dataclass
class _Pipeline:
    center: Component
    scale: Component
    posts: list[Component]

    def state_dict(self) -> dict[str, Any]:
        state = {"center": self.center.state_dict(), "scale": self.scale.state_dict()}
        state["post"] = [p.state_dict() for p in self.posts]
        return {k: v for k, v in state.items() if v and v != [{}] * len(self.posts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"center", "scale", "post"}
        if unknown:
            raise ValueError(f"Unknown keys {sorted(unknown)} in a composed normalizer's state.")
        self.center.load_state_dict(state.get("center", {}))
        self.scale.load_state_dict(state.get("scale", {}))
        for post, post_state in zip(self.posts, state.get("post", [{}] * len(self.posts)), strict=True):
            post.load_state_dict(post_state)


class ComposedNormalizer(Normalizer):
    """``A = post(scale(r - centre(r)))``, each part named from :data:`CENTERS`, :data:`SCALES`, :data:`POSTS`.

    Defined by this project. Parts are names or ``{name: ..., option: value}`` (e.g.
    ``{name: clip, max_abs: 3}``, ``{name: bnpo, ema: 0.9}``). ``per_source`` is passed to every part that
    keeps per-source state (centres ``ebpo``, ``running_mean``; scale ``bnpo``); ``source_median`` and
    ``source_std`` need data sources. With ``scale: bnpo`` the rewards are first mapped onto [0, 1] from
    ``reward_range`` (as in ``bnpo``, which the trainer fills), and ``decompose`` (default: on when F > 1)
    runs the composition on each reward column with its own state and combines ``sum_k w_k A_k / sum_k w_k``
    over the scored columns (BNPO's Eq. 17); other scales see the weighted sum of the columns.
    ``post: [filter_zero_signal]`` must come last: the trainer then masks zero-signal groups out of the loss.
    """

    name = "composed"

    def __init__(
        self,
        center: Any = "group_mean",
        scale: Any = "group_std",
        post: Sequence[Any] = (),
        per_source: bool = False,
        decompose: bool | None = None,
        reward_range: Any = (0.0, 1.0),
        eps: float = 1e-4,
    ) -> None:
        super().__init__(eps=eps)
        if isinstance(post, str | Mapping):
            post = [post]
        self.spec: dict[str, Any] = {
            "center": center,
            "scale": scale,
            **({"post": list(post)} if post else {}),
        }
        names = [_split(p, "post-step")[0] for p in post]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"post-steps {repeated} appear more than once; give each at most once.")
        if "filter_zero_signal" in names[:-1]:
            raise ValueError(
                "filter_zero_signal must be the last post-step (it acts on the final advantages)."
            )
        self.per_source = bool(per_source)
        probe = self._new_pipeline()  # unknown names and options fail here, before training
        parts = [probe.center, probe.scale, *probe.posts]
        if self.per_source and not any(p.per_source_capable for p in parts):
            raise ValueError(
                "per_source: true needs a part that keeps statistics per source: centre ebpo or running_mean, "
                f"or scale bnpo (got center={center!r}, scale={scale!r})."
            )
        self.requires_data_sources = self.per_source or any(p.needs_sources for p in parts)
        self.uses_reward_range = isinstance(probe.scale, BNPOScale)
        self.ranges = BNPONormalizer._parse_ranges(reward_range)
        self.decompose = decompose
        self.decomposes = bool(decompose) or (decompose is None and self.uses_reward_range)
        self.filters_zero_signal = "filter_zero_signal" in names
        self.uses_lengths = isinstance(probe.center, OPOCenter)
        self._pipelines: dict[str, _Pipeline] = {}

    def _new_pipeline(self) -> _Pipeline:
        posts = [_build(POSTS, p, "post-step", self.per_source) for p in self.spec.get("post", [])]
        center = _build(CENTERS, self.spec["center"], "center", self.per_source)
        return _Pipeline(center, _build(SCALES, self.spec["scale"], "scale", self.per_source), posts)

    def _run(
        self, key: str, rewards: torch.Tensor, declared: Any, batch: Batch, update: bool
    ) -> torch.Tensor:
        pipeline = self._pipelines.get(key) or self._new_pipeline()
        if update:
            self._pipelines[key] = pipeline
        if isinstance(pipeline.scale, BNPOScale):
            rewards = pipeline.scale.prepared(rewards, declared, key, update)
        adv = pipeline.scale.scaled(pipeline.center.centred(rewards, batch, update), rewards, batch, update)
        for post in pipeline.posts:
            adv = post.applied(adv, batch)
        return adv

    def compute(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.requires_data_sources:
            data_sources = require_sources(data_sources, f"The composed normalizer {spec_label(self.spec)!r}")
        sources = None if data_sources is None else group_sources(data_sources, group_size)
        if rewards.dim() == 2 and rewards.shape[1] == 1 and self.decompose is None:
            rewards = F.combine_rewards(rewards, reward_weights)
        if rewards.dim() == 1:
            declared = combined_range(self.ranges, reward_weights) if len(self.ranges) > 1 else self.ranges[0]
            return self._run(
                "combined",
                rewards,
                declared,
                Batch(group_size, sources, self.eps, self.last_stats, lengths),
                update,
            )
        num_funcs = rewards.shape[1]
        if len(self.ranges) not in (1, num_funcs):
            raise ValueError(f"reward_range has {len(self.ranges)} ranges for {num_funcs} reward functions.")
        columns = []
        for k in range(num_funcs):
            stats: dict[str, float] = {}
            declared = self.ranges[k if len(self.ranges) > 1 else 0]
            batch = Batch(group_size, sources, self.eps, stats, lengths)
            columns.append(self._run(f"col{k}", rewards[:, k], declared, batch, update))
            self.last_stats.update({f"{name}/{k}": v for name, v in stats.items()})
        adv = torch.stack(columns, dim=1)
        weights = torch.ones(num_funcs, dtype=rewards.dtype) if reward_weights is None else reward_weights
        w = weights.to(rewards).unsqueeze(0).expand_as(adv) * ~torch.isnan(adv)
        denom = w.sum(dim=1)
        return torch.where(denom != 0, (adv.nan_to_num(0.0) * w).sum(dim=1) / denom, torch.zeros_like(denom))

    def state_dict(self) -> dict[str, Any]:
        state = {key: p.state_dict() for key, p in self._pipelines.items()}
        return {key: s for key, s in state.items() if s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pipelines = {}
        for key, values in state.items():
            if key != "combined" and not (key.startswith("col") and key[3:].isdigit()):
                raise ValueError(
                    f"Unknown key {key!r} in a composed normalizer's state (combined, col0, ...)."
                )
            pipelines[key] = self._new_pipeline()
            pipelines[key].load_state_dict(values)
        self._pipelines = pipelines

    def __repr__(self) -> str:
        return f"ComposedNormalizer({spec_label(self.spec)!r})"
