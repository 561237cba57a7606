"""Normalizer specs: a name, ``{name: ..., option: ...}`` or a composition ``{center, scale, post}``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bnpo_trl.normalizers.base import Normalizer, get_normalizer

__all__ = ["Spec", "build_normalizer", "spec_label"]

Spec = str | Mapping[str, Any]


def _compact(value: Any) -> str:
    if isinstance(value, Mapping):
        return spec_label(dict(value))
    if isinstance(value, list | tuple) and all(isinstance(v, str | Mapping) for v in value):
        return "+".join(_compact(v) for v in value)  # a pipeline of steps, e.g. post=standardize+clip
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def spec_label(spec: Spec) -> str:
    """A spec's name in tables and plots: the name; ``name(option=value,...)`` for a mapping with options;
    ``center=...,scale=...,post=...`` for a composed mapping.

    >>> spec_label("bnpo"), spec_label({"name": "bnpo"}), spec_label({"name": "bnpo", "ema": 0.9})
    ('bnpo', 'bnpo', 'bnpo(ema=0.9)')
    >>> spec_label({"center": "ebpo", "scale": "bnpo", "post": ["standardize"]})
    'center=ebpo,scale=bnpo,post=standardize'
    """
    if isinstance(spec, str):
        return spec
    options = ",".join(f"{k}={_compact(v)}" for k, v in spec.items() if k != "name")
    if "name" in spec:
        return f"{spec['name']}({options})" if options else str(spec["name"])
    return options


def build_normalizer(spec: Spec, reward_ranges: Any = None, **options: Any) -> Normalizer:
    """The normalizer of ``spec``; ``options`` are defaults that a mapping's own keys override. One that takes
    ``reward_range`` (bnpo, a composition with ``scale: bnpo``) gets ``reward_ranges`` (the reward functions'
    declared ranges) unless the spec or ``options`` set their own."""
    norm = get_normalizer(spec, **options) if isinstance(spec, str) else get_normalizer({**options, **spec})
    given = "reward_range" in options or (isinstance(spec, Mapping) and "reward_range" in spec)
    if reward_ranges is None or given or not getattr(norm, "uses_reward_range", False):
        return norm
    return build_normalizer(spec, **options, reward_range=reward_ranges)
