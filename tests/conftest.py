"""Shared test setup: no Hub access, and the offline tiny model built once per session."""

from __future__ import annotations

import os

# Nothing may download: loaders fall back to local files, and a Hub call fails at once instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def tiny_path() -> str:
    """The default tiny model (bnpo_trl.tiny_model), built once into its cache and reused across sessions."""
    from bnpo_trl.tiny_model import tiny_model_path

    return tiny_model_path()


@pytest.fixture(scope="session")
def tokenizer(tiny_path: str):
    """The tiny model's tokenizer, loaded as its tokenizer.json (left padding)."""
    from bnpo_trl.models import load_plain_tokenizer

    return load_plain_tokenizer(tiny_path)
