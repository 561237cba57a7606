"""Verifiable rewards for RL on math, with TRL's reward signature, and a registry for YAML recipes.

>>> from bnpo_trl.rewards import get_reward_funcs
>>> funcs = get_reward_funcs(["accuracy", {"name": "overlong", "max_length": 512}])
>>> [getattr(f, "__name__", None) or f.func.__name__ for f in funcs]
['accuracy', 'overlong']

Rewards (``docs/rewards.md`` has the table with every kwarg): ``accuracy`` (math-verify in worker
processes, hard timeouts, caches), ``cosine``, ``overlong``, ``repetition``, ``boxed_format``,
``think_format``, ``gsm8k`` and ``per_source``. Importing this package does not import torch or TRL.
"""

from .accuracy import MathVerifier, accuracy, get_verifier
from .format import boxed_format, think_format
from .per_source import gsm8k, per_source
from .pool import PoolSettings, VerifierPool, get_pool
from .registry import (
    RewardFunc,
    available_rewards,
    get_reward_funcs,
    register_reward,
    resolve_reward,
    reward_range_of,
)
from .shaping import cosine, overlong, repetition

__all__ = [
    "MathVerifier",
    "PoolSettings",
    "RewardFunc",
    "VerifierPool",
    "accuracy",
    "available_rewards",
    "boxed_format",
    "cosine",
    "get_pool",
    "get_reward_funcs",
    "get_verifier",
    "gsm8k",
    "overlong",
    "per_source",
    "register_reward",
    "repetition",
    "resolve_reward",
    "reward_range_of",
    "think_format",
]
