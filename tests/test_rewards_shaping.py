"""Format rewards, length/repetition shaping, `gsm8k` and `per_source`.

`overlong`, `repetition` and `cosine` are checked against TRL's own implementations (trl.rewards), an
independent reference, on cases where both define the same quantity.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trl.rewards import get_cosine_scaled_reward, get_repetition_penalty_reward, get_soft_overlong_punishment

from bnpo_trl.rewards import boxed_format, cosine, gsm8k, overlong, per_source, repetition, think_format
from bnpo_trl.rewards.per_source import parse_number

TIMEOUT = 2.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"The answer is \boxed{42}", 1.0),
        (r"So $\boxed{\frac{1}{2}}$.", 1.0),
        (r"\[ \boxed{x^2} \]", 1.0),
        (r"\boxed{\{1, 2\}}", 1.0),
        (r"\boxed{1} and then \boxed{2}", 0.0),  # two boxes
        (r"\boxed{42} is my answer", 0.0),  # text after the box
        (r"\boxed{35}}}}}}", 0.0),  # the reward hack with extra braces
        (r"\boxed{}", 0.0),
        (r"\boxed{  }", 0.0),
        (r"\boxed{42", 0.0),  # truncated
        ("42", 0.0),
        ("", 0.0),
    ],
)
def test_boxed_format(text, expected) -> None:
    assert boxed_format([text]) == [expected]
    assert boxed_format([[{"role": "assistant", "content": text}]]) == [expected]


@pytest.mark.parametrize(
    ("text", "prefilled", "expected"),
    [
        ("<think>reasoning</think>answer", False, 1.0),
        ("  <think>\nreasoning\n</think>\n\\boxed{4}", False, 1.0),
        ("<think>reasoning</think>", False, 0.0),  # no answer after it
        ("<think></think>answer", False, 0.0),  # no reasoning
        ("<think>a<think>b</think>answer", False, 0.0),
        ("<think>a</think>b</think>answer", False, 0.0),
        ("answer <think>reasoning</think> more", False, 0.0),
        ("reasoning</think>answer", False, 0.0),
        ("reasoning</think>answer", True, 1.0),
        ("<think>reasoning</think>answer", True, 0.0),
        ("no tags", True, 0.0),
    ],
)
def test_think_format(text, prefilled, expected) -> None:
    assert think_format([text], prefilled=prefilled) == [expected]


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=20),
    max_length=st.integers(1, 200),
    data=st.data(),
)
def test_overlong_matches_trl(lengths, max_length, data) -> None:
    cache = data.draw(st.integers(1, max_length))
    ids = [[0] * n for n in lengths]
    ours = overlong(completion_ids=ids, max_length=max_length, cache_length=cache)
    theirs = get_soft_overlong_punishment(max_completion_len=max_length, soft_punish_cache=cache)(ids)
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert all(-1.0 <= r <= 0.0 for r in ours)


def test_overlong_default_cache_and_missing_ids() -> None:
    assert overlong(completion_ids=[[0] * 75, [0] * 90], max_length=100) == [
        0.0,
        -0.6,
    ]  # cache 25: band 75..100
    with pytest.raises(ValueError, match="needs completion_ids"):
        overlong(completions=["a"], max_length=10)


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(st.lists(st.integers(0, 4), max_size=30), min_size=1, max_size=10),
    ngram_size=st.integers(1, 5),
    max_penalty=st.floats(-3.0, 0.0),
)
def test_repetition_matches_trl(ids, ngram_size, max_penalty) -> None:
    ours = repetition(completion_ids=ids, ngram_size=ngram_size, max_penalty=max_penalty)
    theirs = get_repetition_penalty_reward(ngram_size=ngram_size, max_penalty=max_penalty)(ids)
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_repetition_words() -> None:
    assert repetition(["one two three four", "la la la la la", "hi"], unit="words", ngram_size=2) == [
        0.0,
        -0.75,
        0.0,
    ]


@pytest.mark.parametrize("length", [0, 1, 25, 50, 99, 100, 150])
def test_cosine_matches_trl_when_both_parse_the_gold(length) -> None:
    # Golds that math-verify's default parse reads correctly, so TRL's correctness equals ours.
    golds = [r"\frac{1}{3}", r"\frac{1}{3}", "7", "7"]
    texts = [r"\boxed{\frac{1}{3}}", r"\boxed{\frac{1}{2}}", r"\boxed{7}", "no answer"]
    ids = [[1] * length] * 4
    ours = cosine(texts, ids, answer=golds, max_length=100, timeout=TIMEOUT)
    trl = get_cosine_scaled_reward(max_len=100)([[{"content": t}] for t in texts], golds, ids)
    assert ours == pytest.approx(trl, abs=1e-12)


def test_cosine_formula_and_none_for_unparsed_gold() -> None:
    ids = [[1] * 30] * 3
    got = cosine([r"\boxed{2\sqrt{3}}", r"\boxed{2}", r"\boxed{1}"], ids, answer=[r"2\sqrt{3}", r"2\sqrt{3}", ""],
                 max_length=120, timeout=TIMEOUT)  # fmt: skip
    c = 0.5 * (1 + math.cos(math.pi * 30 / 120))
    assert got == pytest.approx([0.5 + c * 0.5, -0.5 + c * -0.5, None])


def test_cosine_uses_the_accuracy_verdict_cache() -> None:
    from bnpo_trl.rewards import accuracy
    from bnpo_trl.rewards.accuracy import get_verifier
    from bnpo_trl.rewards.pool import PoolSettings

    texts, golds = [r"\boxed{0.25}", r"\boxed{\dfrac14}"], [r"\frac{1}{4}", r"\frac{1}{4}"]
    assert accuracy(texts, answer=golds, timeout=TIMEOUT + 0.25) == [1.0, 1.0]
    verifier = get_verifier(PoolSettings(timeout=TIMEOUT + 0.25))
    misses = verifier.cache_misses
    assert cosine(texts, [[1], [1]], answer=golds, max_length=10, timeout=TIMEOUT + 0.25)[0] > 0.5
    assert verifier.cache_misses == misses  # same pool, same cache: no second parse


@pytest.mark.parametrize(
    ("gold", "text", "expected"),
    [
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", r"So she sold \boxed{72} clips.", 1.0),
        ("72", "#### 72", 1.0),
        ("72", "The total is 72.00", 1.0),
        ("1200", r"\boxed{\$1,200}", 1.0),
        ("1200", r"\boxed{1200 \text{ dollars}}", 1.0),
        ("-3", r"\boxed{-3}", 1.0),
        ("-3", r"\boxed{3}", 0.0),
        ("0.5", r"\boxed{.5}", 1.0),
        ("72", "First 70, then 72, finally 71", 0.0),  # the last number counts
        ("72", r"\boxed{72} but actually 71", 1.0),  # the box wins over later numbers
        ("72", "no number here", 0.0),
        ("72", "", 0.0),
        ("no number", r"\boxed{1}", None),
        (None, r"\boxed{1}", None),
    ],
)
def test_gsm8k(gold, text, expected) -> None:
    assert gsm8k([text], answer=[gold]) == [expected]


def test_gsm8k_strict_needs_box_or_marker_and_counts() -> None:
    metrics: dict[str, float] = {}
    texts = ["The total is 72", "#### 72", r"\boxed{72}", "nothing"]
    assert gsm8k(texts, answer=["72"] * 4, strict=True, log_metric=metrics.__setitem__) == [
        0.0,
        1.0,
        1.0,
        0.0,
    ]
    assert metrics == {
        "rewards/gsm8k/no_answer": 2.0,
        "rewards/gsm8k/unparsed_gold": 0.0,
        "rewards/gsm8k/timeouts": 0.0,
    }


def test_parse_number() -> None:
    assert parse_number("1,234,567.25 apples") == 1234567.25
    assert parse_number("a -7 b") == -7
    assert parse_number("x") is None


def test_per_source_dispatches_rows_with_their_own_columns() -> None:
    seen: list[dict] = []

    def spy(completions, **kwargs):
        seen.append(
            {"completions": list(completions), **{k: v for k, v in kwargs.items() if k != "log_metric"}}
        )
        return [0.5] * len(completions)

    import sys
    import types

    module = types.ModuleType("per_source_spy_module")
    module.spy = spy
    sys.modules["per_source_spy_module"] = module
    metrics: dict[str, float] = {}
    rewards = per_source(
        [r"\boxed{0.5}", "#### 12", "c", r"\boxed{3}", "e"],
        prompts=["p0", "p1", "p2", "p3", "p4"],
        completion_ids=[[0], [1], [2], [3], [4]],
        answer=[r"\frac12", "12", "x", "4", "y"],
        data_source=["MATH", "gsm8k", "custom", "math500", None],
        trainer_state="state",
        mapping={"gsm8k*": "gsm8k", "math*": {"name": "accuracy", "timeout": TIMEOUT}, "cust*": "per_source_spy_module:spy"},
        log_metric=metrics.__setitem__,
    )  # fmt: skip
    assert rewards == [
        1.0,
        1.0,
        0.5,
        0.0,
        None,
    ]  # MATH matches math* (case-insensitive); None matches nothing
    assert seen == [
        {"completions": ["c"], "prompts": ["p2"], "completion_ids": [[2]], "answer": ["x"],
         "data_source": ["custom"], "trainer_state": "state"}
    ]  # fmt: skip
    assert metrics["rewards/per_source/unmatched"] == 1
    assert metrics["rewards/per_source/accuracy/no_answer"] == 0
    assert "rewards/per_source/gsm8k/no_answer" in metrics


def test_per_source_default_mapping_and_errors() -> None:
    rewards = per_source(
        [r"\boxed{2\sqrt{3}}", "#### 7"], answer=[r"2\sqrt{3}", "7"], data_source=["dapo", "gsm8k"]
    )
    assert rewards == [1.0, 1.0]
    with pytest.raises(ValueError, match="source_column"):
        per_source(["a"], answer=["1"])  # no data_source column
