"""bnpo-trl: pluggable advantage normalizers for RL with verifiable rewards, on top of TRL."""

__version__ = "0.1.0"
