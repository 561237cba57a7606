"""Tests of the advantage normalizers against independent references.

Expected values come from the slow pure-Python references in ``tests/reference_normalizers.py``
(written from the specification), from TRL 1.16's own advantage lines rebuilt below, or from closed
forms / special cases of the papers -- never from ``bnpo_trl.normalizers`` itself.
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
import textwrap

import pytest
import torch
from trl.trainer.utils import nanstd as trl_nanstd

from bnpo_trl.normalizers import (
    Normalizer,
    Welford,
    available_normalizers,
    get_normalizer,
    register_normalizer,
)
from bnpo_trl.normalizers import base as registry_module
from tests.reference_normalizers import (
    NAN,
    BNPORef,
    EBPORef,
    MedianRef,
    SequentialWelford,
    batch_ref,
    combine,
    finalize,
    gdpo_ref,
    group_ref,
    none_ref,
    opo_ref,
    passk_ref,
    reinforce_pp_ref,
    rloo_ref,
)

SEEDS = [0, 1, 2]
GROUP_SIZES = [1, 2, 4, 16]
SOURCES = ["math", "code", "logic"]
CANONICAL = [
    "group",
    "batch",
    "none",
    "rloo",
    "reinforce_pp",
    "bnpo",
    "ebpo",
    "median",
    "opo",
    "gdpo",
    "passk",
]
ALIASES = {
    "grpo": "group",
    "dr_grpo": "none",
    "beta": "bnpo",
    "source_median": "median",
    "reinforce_plus_plus": "reinforce_pp",
}
ALL_NAMES = CANONICAL + list(ALIASES)
WEIGHTS = {1: [0.5], 3: [1.0, 0.5, 2.0]}


# ------------------------------------------------------------------------------------------------ helpers


def _group_values(rng: random.Random, group_size: int, unit: bool) -> list[float]:
    """One group of rewards of a random kind. Grid values are dyadic, so float32 sums are exact."""
    lo, hi = (0.0, 1.0) if unit else (-2.0, 3.0)
    kind = rng.choice(["binary", "grid", "constant", "continuous", "continuous"])
    if kind == "binary":
        return [float(rng.random() < 0.5) * (hi - lo) + lo for _ in range(group_size)]
    if kind == "grid":
        return [lo + (hi - lo) * rng.randint(0, 8) / 8 for _ in range(group_size)]
    if kind == "constant":
        return [lo + (hi - lo) * rng.randint(0, 8) / 8] * group_size
    return [rng.uniform(lo, hi) for _ in range(group_size)]


def random_rewards(
    seed: int,
    group_size: int,
    *,
    num_funcs: int | None = None,
    unit: bool = False,
    nans: bool = True,
    num_groups: int | None = None,
) -> torch.Tensor:
    """(N,) or (N, F) float32 rewards: mixed group kinds, NaN cells, all-NaN rows and groups."""
    rng = random.Random(f"{seed}-{group_size}-{num_funcs}-{unit}-{nans}")
    num_groups = num_groups or rng.randint(3, 7)
    cols = []
    for _ in range(num_funcs or 1):
        col = []
        for _ in range(num_groups):
            col += _group_values(rng, group_size, unit)
        cols.append(col)
    rows = [list(r) for r in zip(*cols, strict=True)]
    n = len(rows)
    if nans:
        for row in rows:
            for k in range(len(row)):
                if rng.random() < 0.15:
                    row[k] = NAN
            if rng.random() < 0.08:
                row[:] = [NAN] * len(row)
        rows[rng.randrange(n)] = [NAN] * len(rows[0])  # at least one unscored row
        if num_groups > 3:  # and one fully unscored group
            p = rng.randrange(num_groups)
            for i in range(p * group_size, (p + 1) * group_size):
                rows[i] = [NAN] * len(rows[0])
    t = torch.tensor(rows, dtype=torch.float32)
    return t.squeeze(1) if num_funcs is None else t


def random_sources(seed: int, num_groups: int, group_size: int) -> list[str]:
    rng = random.Random(f"sources-{seed}-{num_groups}-{group_size}")
    out = []
    for _ in range(num_groups):
        out += [rng.choice(SOURCES)] * group_size
    return out


def as_rows(rewards: torch.Tensor) -> list:
    """The exact float32 values as Python floats (lists of lists for (N, F))."""
    return rewards.tolist()


def assert_matches(actual: torch.Tensor, expected: list[float], rtol: float = 1e-5, atol: float = 1e-5):
    assert actual.dtype == torch.float32
    assert actual.shape == (len(expected),)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), rtol=rtol, atol=atol)


def assert_unscored_zero(adv: torch.Tensor, rewards: torch.Tensor) -> None:
    unscored = torch.isnan(rewards) if rewards.dim() == 1 else torch.isnan(rewards).all(dim=1)
    assert (adv[unscored] == 0).all()


STATELESS_REFS = {
    "group": lambda r, g: group_ref(r, g),
    "batch": lambda r, g: batch_ref(r, g),
    "none": lambda r, g: none_ref(r, g),
    "rloo": lambda r, g: rloo_ref(r, g),
    "reinforce_pp": lambda r, g: reinforce_pp_ref(r, g),
    "opo": lambda r, g: opo_ref(r, g),  # no lengths given: equal lengths
    "passk": lambda r, g: passk_ref(r, g),  # k = 2, threshold 0.5: non-binary rewards are thresholded
}


def reference_call(name: str, rewards: torch.Tensor, group_size: int, weights=None, sources=None):
    """Fresh-state reference advantages for any normalizer name."""
    rows = as_rows(rewards)
    if name == "bnpo":
        return BNPORef()(rows, group_size, weights)
    if name == "gdpo":  # normalises each reward column, then sums
        return finalize(gdpo_ref(rows, group_size, weights))
    combined = combine(rows, weights)
    if name == "ebpo":
        return EBPORef()(combined, group_size)
    if name == "median":
        return MedianRef()(combined, group_size, sources)
    return finalize(STATELESS_REFS[name](combined, group_size))


# ----------------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", ALL_NAMES)
def test_get_normalizer_every_name_and_alias(name):
    norm = get_normalizer(name)
    assert isinstance(norm, Normalizer)
    assert name in available_normalizers()
    canonical = ALIASES.get(name, name)
    assert type(norm) is type(get_normalizer(canonical))
    json.dumps(norm.state_dict())  # JSON-serialisable


@pytest.mark.parametrize("alias,canonical", list(ALIASES.items()))
def test_alias_computes_the_same_as_its_name(alias, canonical):
    rewards = random_rewards(0, 4, unit=True)
    sources = random_sources(0, rewards.shape[0] // 4, 4)
    kwargs = {"data_sources": sources} if canonical == "median" else {}
    a = get_normalizer(alias)(rewards, group_size=4, **kwargs)
    b = get_normalizer(canonical)(rewards, group_size=4, **kwargs)
    assert torch.equal(a, b)


def test_unknown_name_lists_available_normalizers():
    with pytest.raises(ValueError) as info:
        get_normalizer("no_such_normalizer")
    message = str(info.value)
    assert "no_such_normalizer" in message
    for name in ALL_NAMES:
        assert name in message


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made by a test do not leak into the shared registry."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    monkeypatch.setattr(registry_module, "_ALIASES", dict(registry_module._ALIASES))


@pytest.mark.usefixtures("isolated_registry")
def test_register_normalizer_adds_name_and_aliases():
    @register_normalizer("test_negated", aliases=("test_negated_alias",))
    class Negated(Normalizer):
        def compute(self, rewards, group_size, data_sources, reward_weights, update):
            return -rewards

    assert {"test_negated", "test_negated_alias"} <= set(available_normalizers())
    rewards = torch.tensor([1.0, NAN, -2.0, 0.5])
    for key in ("test_negated", "test_negated_alias"):
        out = get_normalizer(key)(rewards, group_size=2)
        assert out.tolist() == [-1.0, 0.0, 2.0, -0.5]


@pytest.mark.usefixtures("isolated_registry")
@pytest.mark.parametrize("name,aliases", [("bnpo", ()), ("grpo", ()), ("fresh_name", ("beta",))])
def test_register_duplicate_name_raises(name, aliases):
    with pytest.raises(ValueError, match="already registered"):

        @register_normalizer(name, aliases=aliases)
        class Dup(Normalizer):
            pass

    assert "fresh_name" not in available_normalizers()


USER_MODULE = textwrap.dedent(
    """
    import torch
    from bnpo_trl.normalizers import Normalizer

    class Good(Normalizer):
        def compute(self, rewards, group_size, data_sources, reward_weights, update):
            return rewards * 2

    class NoStateDict:
        last_stats = {}
        def __call__(self, rewards, group_size, data_sources=None, reward_weights=None, update=True):
            return rewards
        def load_state_dict(self, state):
            pass

    class NoCall:
        def __init__(self):
            self.last_stats = {}
        def state_dict(self):
            return {}
        def load_state_dict(self, state):
            pass

    class NoLastStats:
        def __call__(self, rewards, group_size, data_sources=None, reward_weights=None, update=True):
            return rewards
        def state_dict(self):
            return {}
        def load_state_dict(self, state):
            pass

    not_a_class = 3
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "bnpo_test_user_normalizers"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_import_user_class(user_module):
    norm = get_normalizer(f"{user_module}:Good")
    out = norm(torch.tensor([1.0, 2.0]), group_size=2)
    assert out.tolist() == [2.0, 4.0]


@pytest.mark.parametrize(
    "attr,error,match",
    [
        ("NoStateDict", TypeError, "state_dict"),
        ("NoCall", TypeError, "__call__"),
        ("NoLastStats", TypeError, "last_stats"),
        ("not_a_class", TypeError, "class"),
        ("Missing", ValueError, "Missing"),
    ],
)
def test_import_user_class_without_interface_raises(user_module, attr, error, match):
    with pytest.raises(error, match=match):
        get_normalizer(f"{user_module}:{attr}")


def test_import_missing_module_raises():
    with pytest.raises(ValueError, match="bnpo_no_such_module"):
        get_normalizer("bnpo_no_such_module:Thing")


# ------------------------------------------------------------------------------ registered plain functions


def _centred_scaled(rewards, group_size, scale=1.0, eps=1e-4):
    grouped = rewards.view(-1, group_size)
    return (scale * (grouped - grouped.nanmean(dim=1, keepdim=True)) / (1.0 + eps)).view(-1)


def _centred_scaled_loop(rows: list[float], group_size: int, scale: float, eps: float) -> list[float]:
    """Closed form with Python loops: A = scale (r - mean of the group's scored rewards) / (1 + eps)."""
    out = []
    for start in range(0, len(rows), group_size):
        group = rows[start : start + group_size]
        scored = [r for r in group if not math.isnan(r)]
        mean = math.fsum(scored) / len(scored) if scored else NAN
        out += [0.0 if math.isnan(r) else scale * (r - mean) / (1.0 + eps) for r in group]
    return out


@pytest.mark.usefixtures("isolated_registry")
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", [2, 4])
def test_registered_function_matches_closed_form_loop(seed, group_size):
    returned = register_normalizer("test_centred", aliases=("test_centred_alias",))(_centred_scaled)
    assert returned is _centred_scaled  # the decorator leaves the function usable as it was
    rewards = random_rewards(seed, group_size)
    for kwargs in ({}, {"scale": 2.5}, {"scale": -1.0, "eps": 0.5}):
        norm = get_normalizer("test_centred_alias", **kwargs)
        adv = norm(rewards, group_size=group_size)
        expected = _centred_scaled_loop(
            as_rows(rewards), group_size, kwargs.get("scale", 1.0), kwargs.get("eps", 1e-4)
        )
        assert_matches(adv, expected)
        assert_unscored_zero(adv, rewards)
        assert norm.last_stats == {"nonfinite_rewards": 0.0} and norm.state_dict() == {}


@pytest.mark.usefixtures("isolated_registry")
def test_registered_function_is_a_stateless_normalizer_class():
    register_normalizer("test_centred")(_centred_scaled)
    cls = registry_module.resolve_normalizer("test_centred")
    norm = get_normalizer("test_centred", scale=3.0)
    assert issubclass(cls, Normalizer) and type(norm) is cls and cls.__name__ == "TestCentredNormalizer"
    assert norm.name == "test_centred" and repr(norm) == "TestCentredNormalizer(name='test_centred')"
    assert norm.options == {"scale": 3.0} and norm.eps == 1e-4
    norm.load_state_dict({})
    with pytest.raises(ValueError, match="stateless"):
        norm.load_state_dict({"history": []})
    with pytest.raises(ValueError, match=r"does not accept \['scael'\]; its options are \['eps', 'scale'\]"):
        get_normalizer("test_centred", scael=2.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        get_normalizer("test_centred", eps=-1.0)
    with pytest.raises(ValueError, match="multiple of group_size"):  # the base class's input checks
        norm(torch.tensor([0.0, 1.0, 1.0]), group_size=2)
    rewards = torch.tensor([[1.0, 0.0], [0.0, NAN], [NAN, NAN], [1.0, 1.0]])
    combined = norm(rewards, group_size=2, reward_weights=[1.0, 2.0])  # the function gets the weighted sum
    assert_matches(combined, _centred_scaled_loop([1.0, 0.0, NAN, 3.0], 2, 3.0, 1e-4))


@pytest.mark.usefixtures("isolated_registry")
def test_registered_function_options_are_checked():
    @register_normalizer("test_shifted", class_name="Shifted")
    def shifted(rewards, group_size, *, shift, **extra):
        return rewards + shift + sum(extra.values())

    assert registry_module.resolve_normalizer("test_shifted").__name__ == "Shifted"
    with pytest.raises(TypeError, match="shift"):
        get_normalizer("test_shifted")
    norm = get_normalizer("test_shifted", shift=1.0, bonus=0.5, eps=0.0)  # eps is not passed on: no `eps`
    assert norm.options == {"shift": 1.0, "bonus": 0.5} and norm.eps == 0.0
    assert norm(torch.tensor([0.0, 1.0]), group_size=2).tolist() == [1.5, 2.5]
    with pytest.raises(TypeError, match=r"\(rewards, group_size, \*\*options\)"):
        register_normalizer("test_bad_signature")(lambda rewards: rewards)
    assert "test_bad_signature" not in available_normalizers()


@pytest.mark.parametrize("name", ["group", "batch", "none", "rloo"])
def test_stateless_builtins_are_registered_functions(name):
    import bnpo_trl.normalizers as normalizers

    norm = get_normalizer(name)
    public = {"group": "GroupNormalizer", "batch": "BatchNormalizer", "none": "MeanOnlyNormalizer"}
    cls = getattr(normalizers, public.get(name, "RLOONormalizer"))
    assert type(norm) is cls and cls.__module__ == "bnpo_trl.normalizers.builtin"
    assert norm.state_dict() == {} and "arXiv" in cls.__doc__  # the formula's source stays in the docstring
    assert type(copy.deepcopy(norm)) is cls


# ------------------------------------------------------------------------------- lengths (the contract)


class _OldSignature(Normalizer):
    """A user subclass written before ``lengths`` existed: compute takes exactly five arguments."""

    def compute(self, rewards, group_size, data_sources, reward_weights, update):
        return rewards * 3


class _SeesLengths(Normalizer):
    uses_lengths = True

    def compute(self, rewards, group_size, data_sources, reward_weights, update, lengths):
        self.seen = lengths
        return rewards if lengths is None else rewards * lengths


def test_uses_lengths_flags():
    flags = {name: get_normalizer(name).uses_lengths for name in ALL_NAMES}
    assert flags == {name: ALIASES.get(name, name) == "opo" for name in ALL_NAMES}


@pytest.mark.parametrize("name", [n for n in CANONICAL if n != "opo"])
def test_lengths_are_ignored_by_normalizers_that_do_not_use_them(name):
    rewards = random_rewards(4, 4, num_funcs=2, unit=True)
    sources = random_sources(4, rewards.shape[0] // 4, 4)
    lengths = [float(7 * i % 13) for i in range(rewards.shape[0])]
    plain = get_normalizer(name)(rewards, group_size=4, data_sources=sources)
    given = get_normalizer(name)(rewards, group_size=4, data_sources=sources, lengths=lengths)
    assert torch.equal(plain, given)


def test_old_compute_signature_still_works_when_lengths_are_passed():
    rewards = torch.tensor([1.0, NAN, -2.0, 0.5])
    assert _OldSignature()(rewards, 2).tolist() == [3.0, 0.0, -6.0, 1.5]
    assert _OldSignature()(rewards, 2, lengths=[1, 2, 3, 4]).tolist() == [3.0, 0.0, -6.0, 1.5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lengths_reach_compute_as_a_float_tensor_or_none(dtype):
    norm = _SeesLengths()
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=dtype)
    assert norm(rewards, 2).tolist() == [1.0, 2.0, 3.0, 4.0] and norm.seen is None
    assert norm(rewards, 2, lengths=[0, 1, 2, 3]).tolist() == [0.0, 2.0, 6.0, 12.0]
    assert norm.seen.dtype == dtype and norm.seen.tolist() == [0.0, 1.0, 2.0, 3.0]
    norm(rewards, 2, lengths=torch.tensor([5, 6, 7, 8]))  # an int tensor (token counts) is converted
    assert norm.seen.dtype == dtype and norm.seen.tolist() == [5.0, 6.0, 7.0, 8.0]


@pytest.mark.parametrize(
    "lengths,match",
    [
        ([1, 2, 3], r"lengths has shape \(3,\) for 4 rewards"),
        ([[1, 2], [3, 4]], r"lengths has shape \(2, 2\)"),
        (5, r"lengths has shape \(\) for 4 rewards"),
        ([1, -1, 3, 4], r"finite and >= 0.*\[-1\.0\] at rows \[1\]"),
        ([1, 2, NAN, 4], r"finite and >= 0.*rows \[2\]"),
        ([1, 2, 3, math.inf], r"finite and >= 0.*rows \[3\]"),
        (["a", "b", "c", "d"], "completion token counts"),
    ],
)
@pytest.mark.parametrize("name", ["group", "opo", "gdpo"])
def test_bad_lengths_are_an_error_naming_the_fix(name, lengths, match):
    with pytest.raises(ValueError, match=match):
        get_normalizer(name)(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=2, lengths=lengths)


@pytest.mark.usefixtures("isolated_registry")
def test_registered_function_with_lengths_receives_them():
    seen = []

    @register_normalizer("test_length_scaled")
    def length_scaled(rewards, group_size, lengths=None, scale=1.0):
        seen.append(lengths)
        return scale * rewards if lengths is None else scale * rewards * lengths

    cls = registry_module.resolve_normalizer("test_length_scaled")
    assert cls.uses_lengths is True
    assert registry_module.resolve_normalizer("group").uses_lengths is False
    norm = get_normalizer("test_length_scaled", scale=2.0)
    assert norm.options == {"scale": 2.0}  # lengths is an argument of each call, not an option
    with pytest.raises(ValueError, match=r"does not accept \['lengths'\]"):
        get_normalizer("test_length_scaled", lengths=[1, 2])
    rewards = torch.tensor([1.0, 0.5, NAN, 2.0])
    assert norm(rewards, group_size=2).tolist() == [2.0, 1.0, 0.0, 4.0] and seen[-1] is None
    assert norm(rewards, group_size=2, lengths=[3, 2, 1, 0]).tolist() == [6.0, 2.0, 0.0, 0.0]
    assert seen[-1].dtype == torch.float32 and seen[-1].tolist() == [3.0, 2.0, 1.0, 0.0]


@pytest.mark.usefixtures("isolated_registry")
def test_registered_function_without_lengths_ignores_them():
    register_normalizer("test_centred")(_centred_scaled)
    norm = get_normalizer("test_centred")
    assert norm.uses_lengths is False
    rewards = random_rewards(1, 4)
    assert torch.equal(norm(rewards, 4), norm(rewards, 4, lengths=[1] * rewards.shape[0]))


# --------------------------------------------------------------------------------- requires_data_sources


class _NeedsSources(Normalizer):
    requires_data_sources = True

    def compute(self, rewards, group_size, data_sources, reward_weights, update):
        return rewards


class _NoSources(_NeedsSources):
    requires_data_sources = False


def test_requires_data_sources_flags():
    flags = {name: get_normalizer(name).requires_data_sources for name in ALL_NAMES}
    assert flags == {name: ALIASES.get(name, name) == "median" for name in ALL_NAMES}


def _bare_trainer(monkeypatch, normalizer):
    """A NormalizedGRPOTrainer without a model: TRL's scoring step is replaced by captured rewards."""
    from types import SimpleNamespace

    from trl import GRPOTrainer

    from bnpo_trl.shadows import ShadowNormalizers
    from bnpo_trl.trainer import NormalizedGRPOTrainer

    def scored_without_sources(self, inputs):
        self._captured = {"rewards": torch.tensor([[1.0], [0.0], [1.0], [1.0]]), "data_sources": None}
        return {"advantages": torch.zeros(4)}

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", scored_without_sources)
    monkeypatch.setattr(NormalizedGRPOTrainer, "_log_normalizer", lambda *args: None)
    trainer = NormalizedGRPOTrainer.__new__(NormalizedGRPOTrainer)
    trainer.normalizer, trainer.normalizer_name = normalizer, "custom"
    trainer.data_source_column, trainer.num_generations, trainer.reward_weights = "origin", 2, None
    trainer.model = torch.nn.Linear(1, 1)  # in training mode
    trainer.accelerator = SimpleNamespace(num_processes=1, process_index=0)
    trainer.shadows, trainer.filter_zero_signal = ShadowNormalizers([], get_normalizer), False
    trainer.args = SimpleNamespace(save_rewards=False)
    trainer._states = dict
    return trainer


def test_trainer_checks_data_sources_for_a_custom_normalizer_that_requires_them(monkeypatch):
    with pytest.raises(ValueError, match="needs the dataset column 'origin' on every row"):
        _bare_trainer(monkeypatch, _NeedsSources())._generate_and_score_completions([{}] * 4)
    out = _bare_trainer(monkeypatch, _NoSources())._generate_and_score_completions([{}] * 4)
    assert out["advantages"].tolist() == [1.0, 0.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("name", CANONICAL)
def test_rows_not_divisible_by_group_size_raises(name):
    rewards = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="group"):
        get_normalizer(name)(rewards, group_size=2, data_sources=["a"] * 5)


def test_median_without_data_sources_raises():
    with pytest.raises(ValueError, match="data_source_column"):
        get_normalizer("median")(torch.tensor([0.0, 1.0, 1.0, 1.0]), group_size=2)


def test_median_group_with_mixed_sources_raises():
    with pytest.raises(ValueError):
        get_normalizer("median")(torch.tensor([0.0, 1.0, 1.0, 1.0]), group_size=2, data_sources=list("aabc"))


@pytest.mark.parametrize(
    "kwargs,rewards",
    [
        ({}, [0.0, 1.5, 1.0, 0.0]),
        ({}, [0.0, 1.0, -0.25, 1.0]),
        ({"reward_range": (-1.0, 1.0)}, [-1.0, 1.0, 2.0, 1.0]),
        ({"alpha": 1.0, "beta": 1.0}, [0.0, 3.0, 1.0, 0.0]),
    ],
)
def test_bnpo_rewards_outside_range_raise(kwargs, rewards):
    with pytest.raises(ValueError, match="reward_range"):
        get_normalizer("bnpo", **kwargs)(torch.tensor(rewards), group_size=2)


def test_bnpo_decomposed_column_outside_its_range_raises():
    rewards = torch.tensor([[0.0, 5.0], [1.0, 2.0], [1.0, 11.0], [0.0, 0.0]])
    norm = get_normalizer("bnpo", reward_range=[(0.0, 1.0), (0.0, 10.0)])
    with pytest.raises(ValueError, match="reward_range"):
        norm(rewards, group_size=2)


# ------------------------------------------------------------------------- stateless references, (N,)


@pytest.mark.parametrize("nans", [True, False], ids=["nan", "no_nan"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize("name", CANONICAL)
def test_matches_reference_1d(name, group_size, seed, nans):
    rewards = random_rewards(seed, group_size, unit=name == "bnpo", nans=nans)
    sources = random_sources(seed, rewards.shape[0] // group_size, group_size)
    expected = reference_call(name, rewards, group_size, sources=sources)
    adv = get_normalizer(name)(rewards, group_size=group_size, data_sources=sources)
    assert_matches(adv, expected)
    assert_unscored_zero(adv, rewards)


@pytest.mark.parametrize("num_funcs", [1, 3])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize("name", CANONICAL)
def test_matches_reference_2d_weighted(name, group_size, seed, num_funcs):
    rewards = random_rewards(seed, group_size, num_funcs=num_funcs, unit=name == "bnpo")
    weights = WEIGHTS[num_funcs]
    sources = random_sources(seed, rewards.shape[0] // group_size, group_size)
    expected = reference_call(name, rewards, group_size, weights=weights, sources=sources)
    adv = get_normalizer(name)(
        rewards, group_size=group_size, data_sources=sources, reward_weights=torch.tensor(weights)
    )
    assert_matches(adv, expected)
    assert_unscored_zero(adv, rewards)


@pytest.mark.parametrize("name", CANONICAL)
def test_default_weights_are_ones(name):
    rewards = random_rewards(5, 4, num_funcs=3, unit=name == "bnpo")
    sources = random_sources(5, rewards.shape[0] // 4, 4)
    expected = reference_call(name, rewards, 4, weights=[1.0, 1.0, 1.0], sources=sources)
    assert_matches(get_normalizer(name)(rewards, group_size=4, data_sources=sources), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64])
@pytest.mark.parametrize("name", CANONICAL)
def test_output_is_float32_for_any_input_dtype(name, dtype):
    rewards = torch.tensor([1, 0, 0, 1, 1, 1, 0, 1]).to(dtype)
    out = get_normalizer(name)(rewards, group_size=4, data_sources=["a"] * 8)
    expected = reference_call(name, rewards.double(), 4, sources=["a"] * 8)
    assert_matches(out, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", CANONICAL)
def test_all_unscored_batch_gives_zeros(name):
    rewards = torch.full((8,), NAN)
    out = get_normalizer(name)(rewards, group_size=4, data_sources=["a"] * 8)
    assert out.dtype == torch.float32 and out.tolist() == [0.0] * 8


# ------------------------------------------------------------------------------------ TRL 1.16 formulas


def trl_advantages(rewards_per_func: torch.Tensor, weights: torch.Tensor, group_size: int, scale: str):
    """TRL 1.16 GRPOTrainer._generate_and_score_completions, multi_objective_aggregation="sum_then_normalize"."""
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, group_size), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(group_size, dim=0)
    if scale in ["group", "none"]:
        if group_size > 1:
            std_rewards = trl_nanstd(rewards.view(-1, group_size), dim=1)
            std_rewards = std_rewards.repeat_interleave(group_size, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
    elif rewards.numel() > 1:  # "batch"
        std_rewards = trl_nanstd(rewards).expand_as(rewards)
    else:
        std_rewards = torch.zeros_like(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


@pytest.mark.parametrize("num_funcs", [None, 1, 3])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_matches_trl_scale_rewards(scale, group_size, seed, num_funcs):
    rewards = random_rewards(seed + 10, group_size, num_funcs=num_funcs)
    per_func = rewards if num_funcs else rewards.unsqueeze(1)
    weights = torch.tensor(WEIGHTS[num_funcs]) if num_funcs else torch.ones(1)
    expected = trl_advantages(per_func, weights, group_size, scale)
    got = get_normalizer(scale)(rewards, group_size=group_size, reward_weights=weights if num_funcs else None)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_matches_trl_on_single_row(scale):
    rewards = torch.tensor([[0.7]])
    expected = trl_advantages(rewards, torch.ones(1), 1, scale)
    torch.testing.assert_close(get_normalizer(scale)(rewards, group_size=1), expected, rtol=0, atol=1e-6)


def test_reinforce_pp_by_hand():
    # groups [1, 0] and [1, 1]: A' = [0.5, -0.5, 0, 0], batch mean 0, std sqrt(0.5/3) (n-1)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    std = math.sqrt(0.5 / 3)
    expected = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.0, 0.0]
    assert_matches(get_normalizer("reinforce_pp")(rewards, group_size=2), expected, atol=1e-6)
    # = `batch` on a batch where std(A') == std(r) is false: here std(r) = 0.5, so they differ
    assert not torch.allclose(
        get_normalizer("batch")(rewards, group_size=2), get_normalizer("reinforce_pp")(rewards, group_size=2)
    )


def test_rloo_closed_form():
    # n = 4 scored: A = 4/3 (r - mean); n = 3 (one NaN): A = 3/2 (r - mean); n = 1: 0
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, NAN, 0.0, 0.0, NAN, 2.0, NAN, NAN])
    expected = [2 / 3, -2 / 3, -2 / 3, 2 / 3, 1.0, 0.0, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0]
    assert_matches(get_normalizer("rloo")(rewards, group_size=4), expected, atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 1e-2, 0.5])
@pytest.mark.parametrize("name", ["group", "batch"])
def test_eps_is_configurable(name, eps):
    rewards = random_rewards(3, 4)
    combined = as_rows(rewards)
    ref = group_ref if name == "group" else batch_ref
    assert_matches(get_normalizer(name, eps=eps)(rewards, group_size=4), finalize(ref(combined, 4, eps)))


# --------------------------------------------------------------------------------------------------- BNPO


def _bnpo_batch(seed: int, group_size: int = 8, num_groups: int = 6) -> torch.Tensor:
    rng = random.Random(seed)
    vals = [float(rng.random() < rng.random()) for _ in range(group_size * num_groups)]
    return torch.tensor(vals)


@pytest.mark.parametrize("seed", SEEDS)
def test_bnpo_alpha_beta_one_is_group_mean_baseline(seed):
    rewards = random_rewards(seed, 4, unit=True)
    expected = finalize(none_ref(as_rows(rewards), 4))  # REINFORCE with the group-mean baseline
    norm = get_normalizer("bnpo", alpha=1.0, beta=1.0)
    assert_matches(norm(rewards, group_size=4), expected, atol=1e-6)
    assert norm.last_stats["bnpo/alpha"] == 1.0 and norm.last_stats["bnpo/beta"] == 1.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", [2, 4, 16])
def test_bnpo_alpha_beta_three_halves_is_scaled_grpo(seed, group_size):
    rewards = random_rewards(seed, group_size, unit=True)
    rows = as_rows(rewards)
    expected = []
    for p in range(len(rows) // group_size):
        g = rows[p * group_size : (p + 1) * group_size]
        vals = [x for x in g if not math.isnan(x)]
        p_hat = sum(vals) / len(vals) if vals else NAN
        for r in g:
            if math.isnan(r) or p_hat in (0.0, 1.0):
                expected.append(0.0)  # unscored, or every reward equals p_hat
            else:
                expected.append(math.pi / 8 * (r - p_hat) / math.sqrt(p_hat * (1 - p_hat)))
    norm = get_normalizer("bnpo", alpha=1.5, beta=1.5)
    assert_matches(norm(rewards, group_size=group_size), expected)


def test_bnpo_fit_closed_form():
    # p_hat = (1/4, 3/4, 1/2, 1/2): mu = 1/2, v = 1/24, mu(1-mu)/v - 1 = 5, a = b = 5/2, alpha = beta = 11/6
    rewards = torch.tensor([1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1], dtype=torch.float32)
    norm = get_normalizer("bnpo")
    adv = norm(rewards, group_size=4)
    stats = norm.last_stats
    assert stats["bnpo/a"] == pytest.approx(2.5) and stats["bnpo/b"] == pytest.approx(2.5)
    assert stats["bnpo/alpha"] == pytest.approx(11 / 6) and stats["bnpo/beta"] == pytest.approx(11 / 6)
    assert stats["bnpo/fallbacks"] == 0
    a = 11 / 6
    inv_b = math.gamma(2 * a) / math.gamma(a) ** 2  # 1 / B(a, a)
    expected = []
    for p in range(4):
        g = rewards[4 * p : 4 * p + 4].tolist()
        p_hat = sum(g) / 4
        f = inv_b * (p_hat * (1 - p_hat)) ** (a - 1)
        expected += [(r - p_hat) / f for r in g]
    assert_matches(adv, expected)


@pytest.mark.parametrize(
    "rewards,group_size",
    [
        ([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0], 4),  # every p_hat = 1/2
        ([0.0] * 8, 4),  # all zero
        ([1.0] * 8, 2),  # all one
        ([0.25] * 6, 3),  # all equal
        ([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 6),  # a single group
        ([1.0, 0.0, 0.0, NAN, NAN, NAN], 3),  # a single scored group
    ],
)
def test_bnpo_fallback_to_uniform(rewards, group_size):
    rewards = torch.tensor(rewards)
    norm = get_normalizer("bnpo")
    adv = norm(rewards, group_size=group_size)
    assert norm.last_stats["bnpo/fallbacks"] == 1
    assert norm.last_stats["bnpo/alpha"] == 1.0 and norm.last_stats["bnpo/beta"] == 1.0
    assert_matches(adv, finalize(none_ref(rewards.tolist(), group_size)), atol=1e-6)


def test_bnpo_overdispersed_fit_clips_to_one():
    # p_hat in {0, 1}: v > mu(1-mu), so a, b < 0 and alpha = beta = max(1, ...) = 1, no fallback
    rewards = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    norm = get_normalizer("bnpo")
    adv = norm(rewards, group_size=2)
    assert norm.last_stats["bnpo/fallbacks"] == 0
    assert norm.last_stats["bnpo/a"] < 0 and norm.last_stats["bnpo/b"] < 0
    assert norm.last_stats["bnpo/alpha"] == 1.0 and norm.last_stats["bnpo/beta"] == 1.0
    assert adv.tolist() == [0.0] * 8


@pytest.mark.parametrize("max_weight,num_clamped", [(0.5, 3), (1.2, 1), (3.0, 1), (10.0, 0)])
def test_bnpo_weight_clamped_to_max_weight(max_weight, num_clamped):
    # Beta(4, 4) fixed, B(4, 4) = 1/140, f(p) = 140 p^3 (1-p)^3; p_hat = 1/8, 1/4, 1/2, 3/4:
    # 1/f = 5.46, 1.08, 0.457, 1.08
    successes = [1, 2, 4, 6]
    rewards = torch.tensor([float(i < k) for k in successes for i in range(8)])
    norm = get_normalizer("bnpo", alpha=4.0, beta=4.0, max_weight=max_weight)
    adv = norm(rewards, group_size=8)
    expected = []
    for k in successes:
        p_hat = k / 8
        inv_f = 1 / (140 * p_hat**3 * (1 - p_hat) ** 3)
        expected += [(float(i < k) - p_hat) * min(inv_f, max_weight) for i in range(8)]
    assert norm.last_stats["bnpo/clamped_weights"] == num_clamped
    assert_matches(adv, expected)


def test_bnpo_no_clamping_by_default():
    norm = get_normalizer("bnpo")
    norm(_bnpo_batch(0), group_size=8)
    assert norm.last_stats["bnpo/clamped_weights"] == 0


@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (0.0, 10.0), (2.0, 3.0)])
def test_bnpo_reward_range_rescales(lo, hi):
    unit = random_rewards(4, 4, unit=True)
    rewards = unit * (hi - lo) + lo
    expected = BNPORef(reward_range=(lo, hi))(as_rows(rewards), 4)
    assert_matches(get_normalizer("bnpo", reward_range=(lo, hi))(rewards, group_size=4), expected)
    # and the rescaled problem is the unit one
    assert_matches(get_normalizer("bnpo")(unit, group_size=4), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", [1, 4, 16])
def test_bnpo_decompose_with_ranges_and_weights(seed, group_size):
    ranges = [(0.0, 1.0), (-1.0, 1.0), (0.0, 10.0)]
    unit = random_rewards(seed, group_size, num_funcs=3, unit=True)
    rewards = unit.clone()
    rewards[:, 1] = unit[:, 1] * 2 - 1
    rewards[:, 2] = unit[:, 2] * 10
    weights = [1.0, 0.5, 2.0]
    ref = BNPORef(reward_range=ranges)
    expected = ref(as_rows(rewards), group_size, weights)
    norm = get_normalizer("bnpo", reward_range=ranges)
    adv = norm(rewards, group_size=group_size, reward_weights=weights)
    assert_matches(adv, expected)
    assert_unscored_zero(adv, rewards)


def test_bnpo_decompose_row_weights_only_over_scored_columns():
    # columns fixed to alpha = beta = 1: A_k = r_k - p_k; row 1 has column 0 unscored
    rewards = torch.tensor([[1.0, 0.0], [NAN, 1.0], [0.0, 1.0], [1.0, 0.0]])
    norm = get_normalizer("bnpo", alpha=1.0, beta=1.0, decompose=True)
    adv = norm(rewards, group_size=2, reward_weights=[1.0, 3.0])
    # group 0: p = (1, 0.5) -> A_0 = (0, nan), A_1 = (-0.5, 0.5); row 0: (1*0 + 3*-0.5)/4, row 1: 0.5
    # group 1: p = (0.5, 0.5) -> A_0 = (-0.5, 0.5), A_1 = (0.5, -0.5)
    expected = [-1.5 / 4, 0.5, (-0.5 + 1.5) / 4, (0.5 - 1.5) / 4]
    assert_matches(adv, expected, atol=1e-6)


def test_bnpo_decompose_off_normalizes_the_weighted_sum():
    rewards = random_rewards(7, 4, num_funcs=3, unit=True)
    weights = [1.0, 0.5, 2.0]
    ref = BNPORef(reward_range=(0.0, 3.5), decompose=False)
    expected = ref(as_rows(rewards), 4, weights)
    norm = get_normalizer("bnpo", reward_range=(0.0, 3.5), decompose=False)
    assert_matches(norm(rewards, group_size=4, reward_weights=weights), expected)


def test_bnpo_single_column_is_not_decomposed_by_default():
    # F = 1: decompose defaults to off, so the weighted reward 0.5 * r is what gets normalized
    rewards = random_rewards(8, 4, num_funcs=1, unit=True)
    expected = BNPORef()(as_rows(rewards), 4, [0.5])
    assert expected == BNPORef()(combine(as_rows(rewards), [0.5]), 4)
    assert expected != BNPORef(decompose=True)(as_rows(rewards), 4, [0.5])
    assert_matches(get_normalizer("bnpo")(rewards, group_size=4, reward_weights=[0.5]), expected)


@pytest.mark.parametrize("ema", [0.0, 0.5, 0.9])
def test_bnpo_ema_sequence_matches_reference(ema):
    norm = get_normalizer("bnpo", ema=ema)
    ref = BNPORef(ema=ema)
    for step, update in enumerate([True, True, False, True, True]):
        rewards = _bnpo_batch(step)
        expected = ref(rewards.tolist(), 8, update=update)
        assert_matches(norm(rewards, group_size=8, update=update), expected, rtol=1e-4)
        for key in ("bnpo/alpha", "bnpo/beta", "bnpo/a", "bnpo/b", "bnpo/fallbacks"):
            assert norm.last_stats[key] == pytest.approx(ref.last_stats[key], rel=1e-6, nan_ok=True)


def test_bnpo_ema_first_call_uses_batch_moments():
    rewards = _bnpo_batch(0)
    smoothed = get_normalizer("bnpo", ema=0.9)
    plain = get_normalizer("bnpo")
    assert torch.equal(smoothed(rewards, group_size=8), plain(rewards, group_size=8))
    assert smoothed.last_stats["bnpo/alpha"] == plain.last_stats["bnpo/alpha"]


@pytest.mark.parametrize("ema", [0.0, 0.6])
def test_bnpo_decompose_ema_keeps_per_column_moments(ema):
    norm = get_normalizer("bnpo", ema=ema)
    ref = BNPORef(ema=ema)
    for step in range(3):
        rewards = torch.stack([_bnpo_batch(step), _bnpo_batch(step + 10)], dim=1)
        expected = ref(as_rows(rewards), 8, [1.0, 2.0])
        assert_matches(norm(rewards, group_size=8, reward_weights=[1.0, 2.0]), expected, rtol=1e-4)


def test_bnpo_last_stats_keys():
    norm = get_normalizer("bnpo")
    norm(_bnpo_batch(1), group_size=8)
    keys = {"bnpo/a", "bnpo/b", "bnpo/alpha", "bnpo/beta", "bnpo/fallbacks", "bnpo/clamped_weights"}
    assert keys <= set(norm.last_stats)
    assert all(isinstance(v, float) for v in norm.last_stats.values())


# --------------------------------------------------------------------------------------------------- EBPO


def test_welford_merge_equals_sequential_feeding():
    rng = random.Random(0)
    merged, sequential = Welford(), SequentialWelford()
    assert merged.variance == 0.0
    for size in [1, 5, 0, 17, 2, 64, 3]:
        batch = [rng.gauss(3.0, 2.0) if rng.random() > 0.2 else NAN for _ in range(size)]
        merged = merged.merged(torch.tensor(batch, dtype=torch.float64))
        for x in batch:
            if not math.isnan(x):
                sequential.add(x)
        assert merged.count == sequential.count
        assert merged.mean == pytest.approx(sequential.mean, rel=1e-12, abs=1e-12)
        assert merged.m2 == pytest.approx(sequential.m2, rel=1e-12, abs=1e-12)
        assert merged.variance == pytest.approx(sequential.variance, rel=1e-12, abs=1e-12)


def test_welford_variance_zero_below_two_values():
    w = Welford().merged(torch.tensor([5.0]))
    assert w.count == 1 and w.mean == 5.0 and w.variance == 0.0


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_ebpo_sequence_matches_reference(group_size, standardize):
    norm = get_normalizer("ebpo", standardize=standardize)
    ref = EBPORef(standardize=standardize)
    for step, update in enumerate([True, True, False, True]):
        rewards = random_rewards(step, group_size, num_funcs=2)
        weights = [1.0, 0.5]
        expected = ref(combine(as_rows(rewards), weights), group_size, update=update)
        adv = norm(rewards, group_size=group_size, reward_weights=weights, update=update)
        assert_matches(adv, expected, rtol=1e-4, atol=1e-5)
        for key in ("ebpo/global_mean", "ebpo/reward_var", "ebpo/group_mean_var"):
            assert norm.last_stats[key] == pytest.approx(ref.last_stats[key], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("group_size", [1, 4, 16])
def test_ebpo_shrinkage_stat_without_unscored_groups(group_size):
    norm, ref = get_normalizer("ebpo"), EBPORef()
    for step in range(3):
        rewards = random_rewards(step + 20, group_size, nans=False)
        rewards[0] = NAN  # a partly scored group, so n_g differs between groups
        norm(rewards, group_size=group_size)
        ref(rewards.tolist(), group_size)
        assert norm.last_stats["ebpo/shrinkage"] == pytest.approx(ref.last_stats["ebpo/shrinkage"], rel=1e-5)


def test_ebpo_closed_form_first_call():
    # one call on a fresh state: mu = 3/8, s2 = var of 8 rewards, t2 = var of (3/4, 0)
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    norm = get_normalizer("ebpo", standardize=False)
    adv = norm(rewards, group_size=4)
    mu = 3 / 8
    s2 = (3 * (5 / 8) ** 2 + 5 * (3 / 8) ** 2) / 7
    t2 = (3 / 4 - 3 / 8) ** 2 * 2
    shrink = (s2 / 4) / (s2 / 4 + t2)
    v = [(1 - shrink) * 0.75 + shrink * mu, shrink * mu]
    expected = [r - v[i // 4] for i, r in enumerate(rewards.tolist())]
    assert_matches(adv, expected, atol=1e-6)
    assert norm.last_stats["ebpo/shrinkage"] == pytest.approx(shrink)
    assert norm.last_stats["ebpo/global_mean"] == pytest.approx(mu)


@pytest.mark.parametrize("rewards", [[0.5] * 8, [NAN, 2.0, NAN, NAN, NAN, NAN, NAN, NAN]])
def test_ebpo_zero_denominator_means_no_shrinkage(rewards):
    # every reward seen is equal (or only one was seen): s2 = t2 = 0, so S_g = 0 and A = 0
    norm = get_normalizer("ebpo", standardize=False)
    adv = norm(torch.tensor(rewards), group_size=4)
    assert norm.last_stats["ebpo/reward_var"] == 0 and norm.last_stats["ebpo/group_mean_var"] == 0
    assert norm.last_stats["ebpo/shrinkage"] == 0
    assert adv.tolist() == [0.0] * 8


@pytest.mark.parametrize("warmup", [0, 3])
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("group_size", [2, 4, 16])
def test_ebpo_all_zero_group_gets_negative_advantage(group_size, standardize, warmup):
    norm = get_normalizer("ebpo", standardize=standardize)
    for step in range(warmup):
        norm(random_rewards(step, group_size, unit=True, nans=False), group_size=group_size)
    rng = random.Random(group_size)
    rewards = [0.0] * group_size
    for _ in range(3):
        rewards += [float(rng.random() < 0.5) for _ in range(group_size)]
    rewards[group_size] = 1.0  # some reward is positive
    adv = norm(torch.tensor(rewards), group_size=group_size)
    assert norm.last_stats["ebpo/global_mean"] > 0
    assert (adv[:group_size] < 0).all()
    # GRPO gives such a group no signal at all
    assert (get_normalizer("group")(torch.tensor(rewards), group_size=group_size)[:group_size] == 0).all()


def test_ebpo_last_stats_keys():
    norm = get_normalizer("ebpo")
    norm(_bnpo_batch(0), group_size=8)
    keys = {"ebpo/shrinkage", "ebpo/global_mean", "ebpo/reward_var", "ebpo/group_mean_var"}
    assert keys <= set(norm.last_stats)


# ------------------------------------------------------------------------------------------------- median


@pytest.mark.parametrize("center", ["group_mean", "source_median"])
@pytest.mark.parametrize("window", [0, 1, 3, 8])
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_median_sequence_matches_reference(group_size, window, center):
    norm = get_normalizer("median", window=window, center=center)
    ref = MedianRef(window=window, center=center)
    for step, update in enumerate([True, True, False, True, True, True]):
        rewards = random_rewards(step + 30, group_size)
        sources = random_sources(step, rewards.shape[0] // group_size, group_size)
        expected = ref(rewards.tolist(), group_size, sources, update=update)
        adv = norm(rewards, group_size=group_size, data_sources=sources, update=update)
        assert_matches(adv, expected)
        for key in ("median/fallback_source_std", "median/fallback_unit"):
            assert norm.last_stats[key] == ref.last_stats[key]


def test_median_default_window_is_eight():
    norm, ref = get_normalizer("median"), MedianRef(window=8)
    for step in range(11):
        rewards = random_rewards(step + 40, 4, nans=False)
        sources = random_sources(step, rewards.shape[0] // 4, 4)
        assert_matches(norm(rewards, group_size=4, data_sources=sources), ref(rewards.tolist(), 4, sources))


def test_median_scale_closed_form_interpolated():
    # source "a": group stds 1, 2, 3, 4 -> median 2.5; source "b": stds 2, 6 -> 4 (Bessel, pairs)
    pairs = [(0.0, math.sqrt(2)), (0.0, 2 * math.sqrt(2)), (0.0, 3 * math.sqrt(2)), (0.0, 4 * math.sqrt(2))]
    pairs += [(1.0, 1.0 + 2 * math.sqrt(2)), (0.0, 6 * math.sqrt(2))]
    rewards = torch.tensor([x for pair in pairs for x in pair], dtype=torch.float64)
    sources = ["a"] * 8 + ["b"] * 4
    norm = get_normalizer("median")
    adv = norm(rewards, group_size=2, data_sources=sources)
    expected = []
    for i, (x, y) in enumerate(pairs):
        scale = 2.5 if i < 4 else 4.0
        m = (x + y) / 2
        expected += [(x - m) / (scale + 1e-4), (y - m) / (scale + 1e-4)]
    assert_matches(adv, expected)
    assert norm.last_stats["median/fallback_source_std"] == 0 and norm.last_stats["median/fallback_unit"] == 0


def test_median_fallbacks():
    # "a": constant groups with different means -> source std; "b": all rewards equal -> unit; "c": normal
    rewards = torch.tensor([1.0, 1.0, 3.0, 3.0, 2.0, 2.0, 2.0, NAN, 0.0, 2.0])
    sources = ["a"] * 4 + ["b"] * 2 + ["b"] * 2 + ["c"] * 2
    norm = get_normalizer("median")
    adv = norm(rewards, group_size=2, data_sources=sources)
    assert norm.last_stats["median/fallback_source_std"] == 1
    assert norm.last_stats["median/fallback_unit"] == 1
    std_a = math.sqrt(4 / 3)  # stdev(1, 1, 3, 3)
    scale_c = math.sqrt(2)
    expected = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1 / (scale_c + 1e-4), 1 / (scale_c + 1e-4)]
    assert_matches(adv, expected)
    assert norm.last_stats["median/scale/a"] == pytest.approx(std_a, rel=1e-6)
    assert norm.last_stats["median/scale/b"] == 1.0
    # the pooled history of "a" has no positive std either (sources are pooled separately)
    adv2 = norm(torch.tensor([1.0, 1.0, 3.0, 3.0]), group_size=2, data_sources=["a"] * 4)
    assert norm.last_stats["median/fallback_source_std"] == 1 and adv2.tolist() == [0.0] * 4


def test_median_source_median_centre_closed_form():
    norm = get_normalizer("median", center="source_median", window=1)
    norm(torch.tensor([0.0, 1.0, 2.0, 10.0]), group_size=2, data_sources=["a"] * 4)
    adv = norm(torch.tensor([4.0, 6.0]), group_size=2, data_sources=["a"] * 2)
    # reward pool 0, 1, 2, 10, 4, 6 -> median 3; std pool stdev(0,1), stdev(2,10), stdev(4,6) -> sqrt(2)
    scale = math.sqrt(2)
    assert_matches(adv, [(4 - 3) / (scale + 1e-4), (6 - 3) / (scale + 1e-4)])


# ---------------------------------------------------------------------------- state: JSON and update=False

STATEFUL = [
    ("ebpo", {}),
    ("ebpo", {"standardize": False}),
    ("median", {"window": 3}),
    ("median", {"window": 8, "center": "source_median"}),
    ("bnpo", {"ema": 0.7}),
]


def _stateful_batches(name: str, count: int = 4):
    out = []
    for step in range(count):
        if name == "bnpo":
            rewards = _bnpo_batch(step + 100 * (step % 2))
        else:
            rewards = random_rewards(step, 8, num_groups=6) * (1 + 2 * step)
        sources = random_sources(step, rewards.shape[0] // 8, 8)
        out.append((rewards, sources))
    return out


@pytest.mark.parametrize("name,kwargs", STATEFUL)
def test_state_round_trip_through_json(name, kwargs):
    batches = _stateful_batches(name)
    norm = get_normalizer(name, **kwargs)
    for rewards, sources in batches[:-1]:
        norm(rewards, group_size=8, data_sources=sources)
    state = json.loads(json.dumps(norm.state_dict()))
    restored = get_normalizer(name, **kwargs)
    restored.load_state_dict(state)
    rewards, sources = batches[-1]
    expected = norm(rewards, group_size=8, data_sources=sources)
    got = restored(rewards, group_size=8, data_sources=sources)
    assert torch.equal(got, expected)
    assert restored.last_stats == pytest.approx(norm.last_stats, nan_ok=True)
    assert json.dumps(restored.state_dict(), sort_keys=True) == json.dumps(norm.state_dict(), sort_keys=True)
    # the state carries information: a fresh instance gives a different answer
    fresh = get_normalizer(name, **kwargs)(rewards, group_size=8, data_sources=sources)
    assert not torch.allclose(fresh, expected)


@pytest.mark.parametrize("name", ["group", "batch", "none", "rloo", "bnpo", "opo", "gdpo", "passk"])
def test_stateless_state_dict_is_empty(name):
    norm = get_normalizer(name)
    norm(_bnpo_batch(0), group_size=8)
    assert norm.state_dict() == {}
    norm.load_state_dict({})


def _reference_for(name: str, kwargs: dict):
    if name == "ebpo":
        return EBPORef(**kwargs)
    if name == "median":
        return MedianRef(**kwargs)
    return BNPORef(**kwargs)


def _ref_step(ref, name, rewards, sources, update):
    if name == "median":
        return ref(rewards.tolist(), 8, sources, update=update)
    return ref(rewards.tolist(), 8, update=update)


@pytest.mark.parametrize("name,kwargs", STATEFUL)
def test_update_false_leaves_state_unchanged(name, kwargs):
    batches = _stateful_batches(name, 5)
    norm = get_normalizer(name, **kwargs)
    ref = _reference_for(name, kwargs)
    for rewards, sources in batches[:2]:
        norm(rewards, group_size=8, data_sources=sources)
        _ref_step(ref, name, rewards, sources, True)
    before = copy.deepcopy(json.loads(json.dumps(norm.state_dict())))
    for rewards, sources in batches[2:4]:
        adv = norm(rewards, group_size=8, data_sources=sources, update=False)
        assert_matches(adv, _ref_step(ref, name, rewards, sources, False), rtol=1e-4)
    assert json.loads(json.dumps(norm.state_dict())) == before
    rewards, sources = batches[4]
    assert_matches(
        norm(rewards, group_size=8, data_sources=sources),
        _ref_step(ref, name, rewards, sources, True),
        rtol=1e-4,
    )


@pytest.mark.parametrize("name,kwargs", STATEFUL)
def test_update_false_output_equals_update_true_output(name, kwargs):
    batches = _stateful_batches(name, 3)
    a, b = get_normalizer(name, **kwargs), get_normalizer(name, **kwargs)
    for rewards, sources in batches[:2]:
        a(rewards, group_size=8, data_sources=sources)
        b(rewards, group_size=8, data_sources=sources)
    rewards, sources = batches[2]
    assert torch.equal(
        a(rewards, group_size=8, data_sources=sources, update=False),
        b(rewards, group_size=8, data_sources=sources, update=True),
    )
