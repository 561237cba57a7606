"""A synthetic task for the offline CPU quickstart: two-number addition with ``\\boxed{}`` answers.

Importing this module registers it as the dataset ``arithmetic`` (see :func:`bnpo_trl.data.register_dataset`),
so recipes and benchmarks load it by name like any other source.

>>> ds = arithmetic_dataset("test", 3, system_prompt=None)
>>> question = ds[0]["prompt"][0]["content"]
>>> question.startswith("What is ") and ds[0]["answer"] == str(eval(question[8:-1]))
True
"""

from __future__ import annotations

import hashlib
import random

from datasets import Dataset

from bnpo_trl.data.registry import DatasetSpec, LoadOptions, register_dataset

#: share of all (a, b) pairs held out for each split; the rest are training pairs.
HELDOUT_SHARES = {"dev": 0.1, "test": 0.1}


def _split_of(a: int, b: int) -> str:
    bucket = int(hashlib.sha256(f"{a}+{b}".encode()).hexdigest(), 16) % 100 / 100
    if bucket < HELDOUT_SHARES["test"]:
        return "test"
    if bucket < HELDOUT_SHARES["test"] + HELDOUT_SHARES["dev"]:
        return "dev"
    return "train"


def arithmetic_dataset(
    split: str = "train",
    size: int = 2000,
    seed: int = 0,
    low: int = 50,
    high: int = 99,
    system_prompt: str | None = None,
) -> Dataset:
    """``size`` problems "What is a + b?" with a, b in [low, high] and gold ``a + b``.

    The default range 50-99 makes every sum three digits long, so each answer digit sits at the same
    place in every completion. With 10-99 (two- and three-digit sums) the quickstart's warm-up learned the
    units digit at a seed-dependent step: its accuracy jumped after 250-400 steps on seeds 0 and 2 but
    crept up for 600-700 steps on seed 1, and RL then gained 1.5 points; with 50-99 it jumped after
    275-375 steps on each of seeds 0-3.

    Every (a, b) pair belongs to exactly one split (a fixed hash: 10% test, 10% dev, 80% train), so
    held-out accuracy is measured on pairs never trained on. Train samples its pool with replacement;
    dev/test without, up to the whole pool (then with replacement for the rows beyond it). Columns follow
    the data contract: ``prompt`` (chat messages), ``answer``, ``data_source`` (``"arithmetic"``),
    ``difficulty`` (1.0 when the units digits carry, else 0.0), and ``completion`` (``\\boxed{a+b}``, for
    the supervised warm-up).
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split must be 'train', 'dev' or 'test', got {split!r}.")
    if not 0 <= low <= high:
        raise ValueError(f"Need 0 <= low <= high, got low={low}, high={high}.")
    pool = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1) if _split_of(a, b) == split]
    if not pool:
        raise ValueError(f"No {split!r} pairs in [{low}, {high}]: widen the range.")
    rng = random.Random(f"arithmetic-{split}-{seed}")
    if split == "train":
        pairs = [rng.choice(pool) for _ in range(size)]
    else:
        pairs = rng.sample(pool, min(size, len(pool)))
        pairs += [rng.choice(pool) for _ in range(size - len(pairs))]
    rows = []
    for a, b in pairs:
        messages = [{"role": "user", "content": f"What is {a} + {b}?"}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        rows.append(
            {
                "prompt": messages,
                "completion": [{"role": "assistant", "content": f"\\boxed{{{a + b}}}"}],
                "answer": str(a + b),
                "data_source": "arithmetic",
                "difficulty": float((a % 10) + (b % 10) >= 10),
            }
        )
    return Dataset.from_list(rows)


def load_arithmetic(spec: DatasetSpec, options: LoadOptions) -> Dataset:
    """The ``load`` of the ``arithmetic`` spec: ``limit`` is the size (default 2000) and ``split`` one of
    train/dev/test; the options for files and the Hub do not apply to a generator."""
    return arithmetic_dataset(
        options.split or spec.default_split, size=options.limit or 2000, system_prompt=options.system_prompt
    )


ARITHMETIC = register_dataset(
    DatasetSpec(
        name="arithmetic",
        load=load_arithmetic,
        has_difficulty=True,
        description="Synthetic 'What is a + b?' (a, b in 50-99), generated offline; splits train/dev/test (quickstart)",
    )
)
