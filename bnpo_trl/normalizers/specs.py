"""Normalizer specs: a name, ``{name: ..., option: ...}`` or a composition ``{center, scale, post}``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bnpo_trl.normalizers.base import Normalizer, get_normalizer

__all__ = ["Spec", "build_normalizer", "parse_normalizer_specs", "spec_label"]

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


def parse_normalizer_specs(text: str) -> list[Spec]:
    """Comma-separated normalizer specs; an item starting with ``{`` is a JSON mapping (commas inside
    brackets and strings do not split).

    >>> parse_normalizer_specs('group, {"name": "bnpo", "ema": 0.5},ebpo')
    ['group', {'name': 'bnpo', 'ema': 0.5}, 'ebpo']
    """
    items, depth, start, quoted, escaped = [], 0, 0, False, False
    for i, char in enumerate(text):
        if quoted:
            escaped, quoted = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            quoted = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"Unbalanced {char!r} at position {i} of normalizers {text!r}.")
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth or quoted:
        raise ValueError(f"Unclosed bracket or string in normalizers {text!r}.")
    items.append(text[start:])
    specs: list[Spec] = []
    for item in (x.strip() for x in items):
        if not item:
            raise ValueError(f"Empty normalizer name in {text!r} (two commas in a row?).")
        if not item.startswith("{"):
            specs.append(item)
            continue
        try:
            spec = json.loads(item)
        except json.JSONDecodeError as err:
            raise ValueError(f"Normalizer spec {item!r} is not a JSON mapping: {err}.") from None
        if not isinstance(spec, dict):
            raise ValueError(f"Normalizer spec {item!r} must be a JSON mapping.")
        specs.append(spec)
    return specs
