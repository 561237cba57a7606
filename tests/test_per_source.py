"""``per_source: true`` for bnpo and ebpo: statistics per data source, against loop references."""

from __future__ import annotations

import json
import random

import pytest
import torch

from bnpo_trl.normalizers import get_normalizer
from tests.reference_normalizers import EBPOPerSourceRef, bnpo_per_source_ref, finalize

SOURCES = ["math", "gsm8k", "aime"]


def mixture(seed: int, group_size: int, num_groups: int, solo_source: bool = False):
    """(rewards (N,) in {0, 1} with a few NaN, row sources): sources of very different success rates."""
    rng = random.Random(seed)
    rate = {"math": 0.5, "gsm8k": 0.85, "aime": 0.1}
    sources = [rng.choice(SOURCES[:2]) for _ in range(num_groups)]
    if solo_source:
        sources[rng.randrange(num_groups)] = "aime"  # one group only: the pooled fit / prior
    rows, row_sources = [], []
    for source in sources:
        p = min(1.0, max(0.0, rate[source] + rng.uniform(-0.3, 0.3)))
        rows += [float(rng.random() < p) if rng.random() > 0.05 else float("nan") for _ in range(group_size)]
        row_sources += [source] * group_size
    return torch.tensor(rows), row_sources


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("group_size", [2, 4, 8])
def test_bnpo_per_source_matches_the_loop_reference(seed, group_size):
    rewards, sources = mixture(seed, group_size, num_groups=9, solo_source=seed % 2 == 0)
    norm = get_normalizer("bnpo", per_source=True)
    adv = norm(rewards, group_size=group_size, data_sources=sources)
    expected, fallbacks = bnpo_per_source_ref(rewards.tolist(), group_size, sources)
    torch.testing.assert_close(adv, torch.tensor(finalize(expected)), rtol=1e-5, atol=1e-5)
    assert norm.last_stats["bnpo/per_source_fallbacks"] == fallbacks
    if seed % 2 == 0:
        assert fallbacks >= 1 and norm.last_stats["bnpo/source/aime/alpha"] == norm.last_stats["bnpo/alpha"]


def test_bnpo_per_source_is_bnpo_on_each_source_alone():
    """With enough groups of spread in every source, each source's rows get exactly what bnpo gives that
    source's rows on their own (the closed form of "one fit per source")."""
    a = torch.tensor([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0], dtype=torch.float32)  # hard source
    b = torch.tensor([1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1], dtype=torch.float32)  # easy source
    rewards, sources = torch.cat([a[:4], b[:4], a[4:], b[4:]]), ["a"] * 4 + ["b"] * 4 + ["a"] * 8 + ["b"] * 8
    adv = get_normalizer("bnpo", per_source=True)(rewards, group_size=4, data_sources=sources)
    alone_a = get_normalizer("bnpo")(a, group_size=4)
    alone_b = get_normalizer("bnpo")(b, group_size=4)
    assert torch.equal(torch.cat([adv[:4], adv[8:16]]), alone_a)
    assert torch.equal(torch.cat([adv[4:8], adv[16:]]), alone_b)
    assert not torch.equal(adv, get_normalizer("bnpo")(rewards, group_size=4))  # pooled differs


@pytest.mark.parametrize("seed", range(4))
def test_ebpo_per_source_matches_the_loop_reference_over_steps(seed):
    norm, ref = get_normalizer("ebpo", per_source=True), EBPOPerSourceRef()
    for step in range(4):
        rewards, sources = mixture(100 * seed + step, 4, num_groups=6, solo_source=step == 0)
        adv = norm(rewards, group_size=4, data_sources=sources)
        expected = ref(rewards.tolist(), 4, sources)
        torch.testing.assert_close(adv, torch.tensor(finalize(expected)), rtol=1e-4, atol=1e-5)
        assert norm.last_stats["ebpo/per_source_fallbacks"] == ref.fallbacks


@pytest.mark.parametrize("name", ["bnpo", "ebpo"])
def test_per_source_state_round_trips_through_json(name):
    kwargs = {"per_source": True, **({"ema": 0.5} if name == "bnpo" else {})}
    norm = get_normalizer(name, **kwargs)
    for step in range(3):
        rewards, sources = mixture(step, 4, num_groups=6)
        norm(rewards, group_size=4, data_sources=sources)
    state = json.loads(json.dumps(norm.state_dict(), allow_nan=False))
    assert any("@" in k for k in state.get("ema_moments", {})) or set(state.get("by_source", {})) >= {"math"}
    restored = get_normalizer(name, **kwargs)
    restored.load_state_dict(state)
    rewards, sources = mixture(99, 4, num_groups=6)
    assert torch.equal(
        norm(rewards, group_size=4, data_sources=sources),
        restored(rewards, group_size=4, data_sources=sources),
    )


def test_ebpo_per_source_state_is_checked():
    norm = get_normalizer("ebpo", per_source=True)
    rewards, sources = mixture(0, 4, num_groups=4)
    norm(rewards, group_size=4, data_sources=sources)
    state = norm.state_dict()
    with pytest.raises(ValueError, match="per_source=False"):
        get_normalizer("ebpo").load_state_dict(state)
    state["by_source"]["math"]["group_means"]["count"] = 10**6
    with pytest.raises(ValueError, match=r"by_source\.math\.group_means\.count"):
        get_normalizer("ebpo", per_source=True).load_state_dict(state)


@pytest.mark.parametrize("name", ["bnpo", "ebpo"])
def test_per_source_without_sources_names_the_config_field(name):
    with pytest.raises(ValueError, match="data_source_column"):
        get_normalizer(name, per_source=True)(torch.tensor([1.0, 0.0, 1.0, 1.0]), group_size=2)


def test_per_source_off_ignores_sources():
    rewards, sources = mixture(3, 4, num_groups=6)
    for name in ("bnpo", "ebpo"):
        with_sources = get_normalizer(name)(rewards, group_size=4, data_sources=sources)
        assert torch.equal(with_sources, get_normalizer(name)(rewards, group_size=4))
