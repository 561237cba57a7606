"""Advantage normalizers: rewards (N,) or (N, F) -> advantages (N,), selected by name.

>>> import torch
>>> from bnpo_trl.normalizers import get_normalizer
>>> rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # 2 prompts x 4 completions
>>> get_normalizer("none")(rewards, group_size=4)
tensor([ 0.7500, -0.2500, -0.2500, -0.2500,  0.2500,  0.2500, -0.7500,  0.2500])
"""

from bnpo_trl.normalizers import functional
from bnpo_trl.normalizers.base import (
    Normalizer,
    available_normalizers,
    get_normalizer,
    register_normalizer,
    resolve_normalizer,
)
from bnpo_trl.normalizers.builtin import (
    BatchNormalizer,
    BNPONormalizer,
    EBPONormalizer,
    GroupNormalizer,
    MeanOnlyNormalizer,
    ReinforcePPNormalizer,
    RLOONormalizer,
    SourceMedianNormalizer,
)
from bnpo_trl.normalizers.estimators import GDPONormalizer, OPONormalizer, PassAtKNormalizer
from bnpo_trl.normalizers.state import Welford

__all__ = [
    "BNPONormalizer",
    "BatchNormalizer",
    "EBPONormalizer",
    "GDPONormalizer",
    "GroupNormalizer",
    "MeanOnlyNormalizer",
    "Normalizer",
    "OPONormalizer",
    "PassAtKNormalizer",
    "RLOONormalizer",
    "ReinforcePPNormalizer",
    "SourceMedianNormalizer",
    "Welford",
    "available_normalizers",
    "functional",
    "get_normalizer",
    "register_normalizer",
    "resolve_normalizer",
]
