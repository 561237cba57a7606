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
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from bnpo_trl.data.registry import DatasetSpec, LoadOptions, register_dataset

#: share of all (a, b) pairs held out for each split; the rest are training pairs.
HELDOUT_SHARES = {"dev": 0.1, "test": 0.1}


def _split_of(a: int, b: int, operation: str = "+") -> str:
    bucket = int(hashlib.sha256(f"{a}{operation}{b}".encode()).hexdigest(), 16) % 100 / 100
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
    if not 0 <= low <= high:
        raise ValueError(f"Need 0 <= low <= high, got low={low}, high={high}.")
    source = ArithmeticSource("arithmetic", "+", (low, high), (low, high))
    rng = random.Random(f"arithmetic-{split}-{seed}")
    return Dataset.from_list([source.row(a, b, system_prompt) for a, b in source.sample(split, size, rng)])


@dataclass(frozen=True)
class ArithmeticSource:
    """One kind of problem: "What is a <operation> b?" with a, b in the given closed ranges."""

    name: str
    operation: str  # "+" or "*"
    a: tuple[int, int]
    b: tuple[int, int]

    def __str__(self) -> str:
        """``a op b`` with the ranges: ``50-99 + 50-99``."""
        return f"{self.a[0]}-{self.a[1]} {self.operation} {self.b[0]}-{self.b[1]}"

    def pool(self, split: str) -> list[tuple[int, int]]:
        if split not in ("train", "dev", "test"):
            raise ValueError(f"split must be 'train', 'dev' or 'test', got {split!r}.")
        pairs = [(x, y) for x in range(self.a[0], self.a[1] + 1) for y in range(self.b[0], self.b[1] + 1)]
        pool = [(x, y) for x, y in pairs if _split_of(x, y, self.operation) == split]
        if not pool:
            raise ValueError(f"No {split!r} pairs for {self.name}: widen its ranges.")
        return pool

    def sample(self, split: str, size: int, rng: random.Random) -> list[tuple[int, int]]:
        """Train: ``size`` pairs with replacement; dev/test: without, up to the whole pool."""
        pool = self.pool(split)
        if split == "train":
            return [rng.choice(pool) for _ in range(size)]
        pairs = rng.sample(pool, min(size, len(pool)))
        return pairs + [rng.choice(pool) for _ in range(size - len(pairs))]

    def row(self, a: int, b: int, system_prompt: str | None) -> dict:
        value = a + b if self.operation == "+" else a * b
        messages = [{"role": "user", "content": f"What is {a} {self.operation} {b}?"}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        units = (a % 10) + (b % 10) if self.operation == "+" else (a % 10) * (b % 10)
        return {
            "prompt": messages,
            "completion": [{"role": "assistant", "content": f"\\boxed{{{value}}}"}],
            "answer": str(value),
            "data_source": self.name,
            "difficulty": float(units >= 10),  # the units digits carry
        }


#: The sources of ``arithmetic_mix``, easiest first for the tiny model: the quickstart's two-digit addition,
#: a three-digit plus a two-digit number, and two-digit by one-digit multiplication. Sized by measurement:
#: with 100-499 + 100-499 and 12-99 x 2-9 a 725-step warm-up left both at 0-2% held-out accuracy and RL
#: moved neither (docs/benchmarks.md#which-normalizer-for-which-data gives the chosen ones' accuracies).
MIX_SOURCES = {
    "add2": ArithmeticSource("add2", "+", (50, 99), (50, 99)),
    "add3": ArithmeticSource("add3", "+", (100, 199), (10, 99)),
    "mul": ArithmeticSource("mul", "*", (10, 39), (2, 9)),
}
MIX_WEIGHTS = {"add2": 0.5, "add3": 0.25, "mul": 0.25}


def arithmetic_mix_dataset(
    split: str = "train",
    size: int = 4000,
    seed: int = 0,
    weights: dict[str, float] | None = None,
    system_prompt: str | None = None,
) -> Dataset:
    """A mixture of :data:`MIX_SOURCES`, each row tagged with its ``data_source``.

    Train draws each row's source with ``weights`` (default :data:`MIX_WEIGHTS`); dev and test hold the
    same number of problems from every source (per-source held-out accuracy with equal precision), in
    source order. Every pair belongs to one split by the same hash as ``arithmetic``.

    >>> ds = arithmetic_mix_dataset("test", 6)
    >>> list(ds["data_source"]), ds[4]["prompt"][0]["content"].count("*")
    (['add2', 'add2', 'add3', 'add3', 'mul', 'mul'], 1)
    """
    weights = dict(MIX_WEIGHTS if weights is None else weights)
    unknown = sorted(set(weights) - set(MIX_SOURCES))
    if unknown or not weights or any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
        raise ValueError(
            f"weights must map some of {sorted(MIX_SOURCES)} to non-negative numbers (not all 0), got {weights}."
        )
    rng = random.Random(f"arithmetic_mix-{split}-{seed}")
    names = [n for n in MIX_SOURCES if weights.get(n, 0) > 0]
    if split == "train":
        picks = rng.choices(names, weights=[weights[n] for n in names], k=size)
        counts = {n: picks.count(n) for n in names}
    else:
        counts = {n: size // len(names) + (i < size % len(names)) for i, n in enumerate(names)}
    rows = []
    for name in names:
        source = MIX_SOURCES[name]
        rows += [source.row(a, b, system_prompt) for a, b in source.sample(split, counts[name], rng)]
    if split == "train":
        rng.shuffle(rows)
    return Dataset.from_list(rows)


def generator_loader(generate: Any, default_size: int) -> Any:
    """A spec's ``load`` for a generated task: ``limit`` is the size (default ``default_size``) and ``split``
    one of train/dev/test; the options for files and the Hub do not apply to a generator."""

    def load(spec: DatasetSpec, options: LoadOptions) -> Dataset:
        split = options.split or spec.default_split
        return generate(split, size=options.limit or default_size, system_prompt=options.system_prompt)

    return load


load_arithmetic = generator_loader(arithmetic_dataset, 2000)
load_arithmetic_mix = generator_loader(arithmetic_mix_dataset, 4000)

ARITHMETIC = register_dataset(
    DatasetSpec(
        name="arithmetic",
        load=load_arithmetic,
        has_difficulty=True,
        description="Synthetic 'What is a + b?' (a, b in 50-99), generated offline; splits train/dev/test (quickstart)",
    )
)
ARITHMETIC_MIX = register_dataset(
    DatasetSpec(
        name="arithmetic_mix",
        load=load_arithmetic_mix,
        has_difficulty=True,
        description="Synthetic mixture of add2 (50-99 + 50-99), add3 (100-199 + 10-99) and mul (10-39 x 2-9), tagged by "
        "data_source, generated offline; splits train/dev/test",
    )
)
