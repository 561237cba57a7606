"""bnpo-trl: pluggable advantage normalizers for RL with verifiable rewards, on top of TRL."""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from bnpo_trl.config import NormalizedGRPOConfig
    from bnpo_trl.trainer import NormalizedGRPOTrainer

__all__ = ["NormalizedGRPOConfig", "NormalizedGRPOTrainer", "__version__"]


def __getattr__(name: str):
    # Lazy: importing TRL costs seconds; `bnpo_trl.normalizers` alone should not pay it.
    if name == "NormalizedGRPOConfig":
        from bnpo_trl.config import NormalizedGRPOConfig

        return NormalizedGRPOConfig
    if name == "NormalizedGRPOTrainer":
        from bnpo_trl.trainer import NormalizedGRPOTrainer

        return NormalizedGRPOTrainer
    raise AttributeError(f"module 'bnpo_trl' has no attribute {name!r}")
