"""`accuracy`: a table of (gold, completion, expected) cases, fallbacks and their counts, caches, threads.

Golds are written the way datasets store them (raw LaTeX, no `$`, no `\\boxed`). Expected values are what a
careful grader would say; where math-verify's default parse (TRL's `accuracy_reward`) gets the gold wrong,
the case says so.
"""

from __future__ import annotations

import asyncio
import random
import string
import threading
import time

import pytest

from bnpo_trl.answers import canonical_answer
from bnpo_trl.rewards import accuracy, get_reward_funcs
from bnpo_trl.rewards.accuracy import MathVerifier, log_counts, prediction_text
from bnpo_trl.rewards.pool import VerifierPool

TIMEOUT = 2.0  # short per-item timeout keeps the pathological cases fast
_LONG = " ".join(
    f"Step {i}: we compute ${i}+{i} = {2 * i}$ and note that $x_{{{i}}} = \\frac{{{i}}}{{{i + 1}}}$."
    for i in range(1, 400)
)
_NESTED_BRACES = r"\boxed{" + "{" * 5000 + "5" + "}" * 5000 + "}"

# (id, gold, completion, expected)
CASES = [
    # equivalent forms
    ("frac-vs-decimal", r"\frac{1}{2}", r"Hence \boxed{0.5}", 1.0),
    ("frac-vs-dfrac12", r"\frac{1}{2}", r"$\boxed{\dfrac12}$", 1.0),
    ("decimal-vs-frac", "0.5", r"\boxed{\frac{1}{2}}", 1.0),
    ("dfrac-vs-slash", r"\dfrac{1}{2}", r"\boxed{1/2}", 1.0),
    ("frac-vs-decimal-3/4", r"\frac{3}{4}", r"\boxed{0.75}", 1.0),
    ("dfrac-vs-tfrac34", r"\dfrac{3}{4}", r"\boxed{\tfrac34}", 1.0),
    ("mixed-number", r"\frac{7}{2}", r"\boxed{3\frac{1}{2}}", 1.0),
    ("sqrt8-vs-2sqrt2", r"\sqrt{8}", r"\boxed{2\sqrt{2}}", 1.0),
    ("2sqrt2-vs-sqrt8", r"2\sqrt{2}", r"\boxed{\sqrt{8}}", 1.0),
    ("radical-gold", r"2\sqrt{3}", r"\boxed{2\sqrt{3}}", 1.0),
    ("radical-gold-not-2", r"2\sqrt{3}", r"\boxed{2}", 0.0),  # default parse reads the gold as 2
    ("sqrt3-over-2", r"\frac{\sqrt{3}}{2}", r"\boxed{\frac{1}{2}\sqrt{3}}", 1.0),
    ("interval", "[2, 5)", r"\boxed{[2,5)}", 1.0),
    ("interval-open-wrong", "[2, 5)", r"\boxed{(2,5)}", 0.0),
    ("interval-not-5", "[2, 5)", r"\boxed{5}", 0.0),  # default parse reads the gold as 5
    ("interval-infinity", r"(-\infty, 3]", r"\boxed{(-\infty,3]}", 1.0),
    ("set-order", r"\{1, 2, 3\}", r"\boxed{\{3, 2, 1\}}", 1.0),
    ("list-order", "1, 2, 3", r"\boxed{3, 2, 1}", 1.0),
    ("negative", "-3", r"\boxed{-3}", 1.0),
    ("negative-sign-wrong", "-3", r"\boxed{3}", 0.0),
    ("negative-frac", r"-\frac{1}{2}", r"\boxed{-0.5}", 1.0),
    ("negative-frac-sign-wrong", r"-\frac{1}{2}", r"\boxed{\frac{1}{2}}", 0.0),
    ("text-choice", r"\text{(B)}", r"\boxed{B}", 1.0),  # default parse cannot parse this gold at all
    ("text-choice-same", r"\text{(B)}", r"\boxed{\text{(B)}}", 1.0),
    ("text-choice-wrong", r"\text{(B)}", r"\boxed{C}", 0.0),
    ("text-word", r"\text{Monday}", r"\boxed{\text{Monday}}", 1.0),
    ("degrees-gold", r"45^\circ", r"\boxed{45}", 1.0),
    ("degrees-pred", "45", r"\boxed{45^\circ}", 1.0),
    ("percent", r"50\%", r"\boxed{50\%}", 1.0),
    ("percent-bare", r"50\%", r"\boxed{50}", 1.0),
    ("thousands-braced-comma", r"1{,}000", r"\boxed{1000}", 1.0),
    ("thousands-comma-negspace", r"1,\!000", r"\boxed{1000}", 1.0),
    ("thousands-comma-gold", "10,000", r"\boxed{10000}", 1.0),
    ("thousands-comma-pred", "1000", r"\boxed{1,000}", 1.0),
    ("thousands-thin-space", "1000", r"\boxed{1\,000}", 1.0),
    ("thousands-wrong", "1000", r"\boxed{100}", 0.0),
    ("thousands-thin-space-no-box", "1000", r"The final answer is $1\,000$.", 1.0),
    ("units-text", r"10\text{ cm}", r"\boxed{10}", 1.0),
    ("dollars", r"\$5", r"\boxed{5}", 1.0),
    ("equation", "y = 2x - 4", r"\boxed{y = 2x - 4}", 1.0),
    ("equation-factored", "y = 2x - 4", r"\boxed{y=2(x-2)}", 1.0),
    ("equation-not-4", "y = 2x - 4", r"\boxed{4}", 0.0),  # default parse reads the gold as 4
    ("polynomial", "x^2+2x+1", r"\boxed{(x+1)^2}", 1.0),
    ("assignment", "3", r"\boxed{x = 3}", 1.0),
    ("float-integer", "3", r"\boxed{3.0}", 1.0),
    ("matrix", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\boxed{\begin{pmatrix}1\\2\end{pmatrix}}", 1.0),
    ("infinity", r"\infty", r"\boxed{\infty}", 1.0),
    # wrong answers that look close
    ("pm-pred", "2021", r"\boxed{\pm 2021}", 0.0),
    ("pm-gold", r"\pm 2021", r"\boxed{2021}", 0.0),
    ("pm-both", r"\pm 2021", r"\boxed{\pm 2021}", 1.0),
    ("decimal-close", "12", r"\boxed{12.5}", 0.0),
    ("pi-approx", r"\pi", r"\boxed{3.14}", 0.0),
    # where the answer is
    ("long-reasoning", "17", _LONG + r" Therefore the answer is $\boxed{17}$.", 1.0),
    ("long-reasoning-wrong", "17", _LONG + r" We saw 17 before, but the answer is $\boxed{18}$.", 0.0),
    ("last-box-counts", "5", r"First guess \boxed{3}. Wait, that is wrong: \boxed{5}", 1.0),
    ("last-box-counts-wrong", "5", r"First \boxed{5}. Hmm, no: \boxed{3}", 0.0),
    ("box-after-think", "5", r"<think>maybe \boxed{4}</think> The answer is \boxed{5}", 1.0),
    ("extra-braces", "2", r"\boxed{2}}}}}", 1.0),  # right answer; boxed_format is what punishes the braces
    ("final-answer-anchor", "5", "The final answer is $5$.", 1.0),
    ("answer-colon-anchor", "42", "Answer: 42", 1.0),
    ("no-anchor", "5", "so x = 5, done", 0.0),
    ("empty", "5", "", 0.0),
    ("no-answer", "5", "I don't know.", 0.0),
    ("empty-box", "5", r"\boxed{}", 0.0),
    ("truncated-box", "5", r"the answer is \boxed{5", 0.0),
    # gold given as a full solution
    ("solution-gold", r"So the answer is $\boxed{\frac{1}{2}}$.", r"\boxed{0.5}", 1.0),
    ("gsm8k-solution-gold", "She pays 2 * 600 = 1200 dollars.\n#### 1200", r"\boxed{1200}", 1.0),
    # form, not value (answers.canonical_answer): a sentence's final mark, bold, (073), zero decimals
    ("period-in-box", "284", r"\boxed{284.}", 1.0),
    ("comma-in-box", "284", r"\boxed{284,}", 1.0),
    ("period-after-sqrt", r"3\sqrt{13}", r"\boxed{3\sqrt{13}.}", 1.0),
    ("period-after-dollars", r"\$18.90", r"\boxed{\$18.90.}", 1.0),
    (
        "period-after-tuple",
        r"\left( 3, \frac{\pi}{2} \right)",
        r"\boxed{\left( 3, \frac{\pi}{2} \right).}",
        1.0,
    ),
    ("period-in-gold", "104.", r"\boxed{104}", 1.0),
    ("ellipsis-kept", "1, 2, 3", r"\boxed{1, 2, 3, \ldots}", 0.0),
    ("decimal-percent", "35", r"\boxed{35.0\%}", 1.0),
    ("decimal-zeros", "12", r"\boxed{12.00}", 1.0),
    ("textbf-paren-leading-zero", "073", r"\boxed{\textbf{(073)}}", 1.0),
    ("mathbf", "12", r"\boxed{\mathbf{12}}", 1.0),
    ("bf-group", "7", r"\boxed{{\bf 7}}", 1.0),
    ("leading-zeros-vs-bare", "73", r"\boxed{073}", 1.0),
    ("bare-vs-leading-zeros", "073", r"\boxed{73}", 1.0),
    ("guard-leading-zeros-vs-decimal", "73.5", r"\boxed{073}", 0.0),
    ("guard-period-is-not-decimal", "284", r"\boxed{284.5}", 0.0),
    ("guard-decimals-not-zero", "1", r"\boxed{1.05}", 0.0),
    ("guard-interval-keeps-parens", "5", r"\boxed{(0, 5)}", 0.0),
    # times of day (not ratios): answers.clock_minutes
    ("clock-pm", r"\text{4:30 p.m.}", r"\boxed{4:30 \text{ p.m.}}", 1.0),
    ("clock-am", "12:05 a.m.", r"\boxed{\text{12:05 a.m.}}", 1.0),
    ("clock-24-hour", r"\text{4:30 p.m.}", r"\boxed{16:30}", 1.0),
    ("clock-gold-without-marker", "4:30", r"\boxed{4:30 pm}", 1.0),
    ("guard-clock-vs-ratio", r"\frac{2}{15}", r"\boxed{4:30}", 0.0),
    ("guard-ratio-vs-clock", r"\text{4:30 p.m.}", r"\boxed{\frac{2}{15}}", 0.0),
    ("guard-am-vs-pm", r"\text{4:30 p.m.}", r"\boxed{4:30 a.m.}", 0.0),
    ("guard-clock-without-marker", r"\text{4:30 p.m.}", r"\boxed{4:30}", 0.0),
    ("ratio-stays-a-ratio", "3:4", r"\boxed{3:4}", 1.0),
    # pathological (scored 0 and counted as timeouts)
    ("nested-exponent", "5", r"\boxed{9^{9^{9^{9}}}}", 0.0),
    ("nested-braces", "5", _NESTED_BRACES, 0.0),
    ("huge-power", "5", r"\boxed{2^{10^{10}}}", 0.0),
    # unparseable gold: None
    ("empty-gold", "", r"\boxed{5}", None),
    ("missing-gold", None, r"\boxed{5}", None),
    ("empty-boxed-gold", r"\boxed{}", r"\boxed{5}", None),
]


@pytest.fixture(scope="module")
def table_run() -> tuple[dict[str, float | None], dict[str, float]]:
    """The whole table scored in one batch (as in training): scores by case id, and the logged counts."""
    metrics: dict[str, float] = {}
    golds = [gold for _, gold, _, _ in CASES]
    completions = [[{"role": "assistant", "content": text}] for _, _, text, _ in CASES]
    scores = accuracy(completions, answer=golds, timeout=TIMEOUT, log_metric=metrics.__setitem__)
    return {case[0]: score for case, score in zip(CASES, scores, strict=True)}, metrics


def test_table_has_enough_cases() -> None:
    assert len(CASES) >= 60
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_table(table_run, case) -> None:
    case_id, _, _, expected = case
    assert table_run[0][case_id] == expected


def test_table_counts(table_run) -> None:
    metrics = table_run[1]
    assert metrics["rewards/accuracy/unparsed_gold"] == 3
    assert metrics["rewards/accuracy/timeouts"] == 3  # nested exponent, nested braces, huge power
    # empty, "I don't know.", empty box, truncated box, "so x = 5, done"
    assert metrics["rewards/accuracy/no_answer"] == 5


def test_plain_and_conversational_completions_agree() -> None:
    golds = [r"\frac{1}{2}", "3", "[2, 5)"]
    texts = [r"\boxed{0.5}", r"\boxed{4}", r"\boxed{[2,5)}"]
    conversational = [[{"role": "assistant", "content": t}] for t in texts]
    blocks = [[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t in texts]
    expected = [1.0, 0.0, 1.0]
    assert accuracy(texts, answer=golds, timeout=TIMEOUT) == expected
    assert accuracy(conversational, answer=golds, timeout=TIMEOUT) == expected
    assert accuracy(blocks, answer=golds, timeout=TIMEOUT) == expected


def test_gold_column_solution_and_missing_column() -> None:
    solutions = [r"We get $x = \boxed{2\sqrt{3}}$.", r"Thus $\boxed{[2, 5)}$."]
    texts = [r"\boxed{\sqrt{12}}", r"\boxed{5}"]
    assert accuracy(texts, solution=solutions, gold_column="solution", timeout=TIMEOUT) == [1.0, 0.0]
    with pytest.raises(ValueError, match="gold_column"):
        accuracy(texts, solution=solutions, timeout=TIMEOUT)  # default column `answer` is absent
    with pytest.raises(ValueError, match="one value per completion"):
        accuracy(texts, answer=["1"], timeout=TIMEOUT)


def test_bad_completion_type_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="completion must be a string or a list"):
        accuracy([42], answer=["1"], timeout=TIMEOUT)


def test_prediction_text_takes_last_complete_box() -> None:
    assert prediction_text(r"\boxed{1} and \boxed{2} and \boxed{3") == r"\boxed{2}"
    assert prediction_text(r"\boxed{\{1, 2\}}") == r"\boxed{\{1, 2\}}"
    assert prediction_text(r"\boxed {7}") == r"\boxed{7}"


def test_verdict_and_gold_caches() -> None:
    pool = VerifierPool(workers=1, timeout=TIMEOUT)
    try:
        verifier = MathVerifier(pool)
        golds = ["1.5", "1.5", "1.5", "2.5", "2.5", "2.5"]
        texts = [
            r"\boxed{1.5}",
            r"\boxed{1.5}",
            r"\boxed{3}",
            r"\boxed{2.5}",
            r"\boxed{2.5}",
            r"\boxed{\frac52}",
        ]
        first = verifier.judge(golds, texts)
        assert first == ["correct", "correct", "wrong", "correct", "correct", "correct"]
        # the four boxes that hold the gold's text are decided here; the two other pairs go to the workers,
        # which parse each new gold on the way (no separate gold check)
        assert verifier.exact_verdicts == 4
        assert pool.stats.requests == 2
        assert verifier.judge(golds, texts) == first
        assert pool.stats.requests == 2  # a later epoch: everything from the cache
        assert verifier.judge(["1.5"], [r"\boxed{4}"]) == ["wrong"]
        assert pool.stats.requests == 3  # the gold is known, only the new pair is verified
        assert verifier.judge(["7/3"], [r"\boxed{7/3}"]) == ["correct"]
        assert pool.stats.requests == 4  # a new gold with only an exact answer: its gold is checked once
        assert (
            verifier.judge(["7/3"], ["  "]) == ["no_answer"] and pool.stats.requests == 4
        )  # nothing to parse
    finally:
        pool.close()


def test_a_new_gold_whose_only_answer_times_out_scores_0_not_none() -> None:
    # The item's request (which would parse the gold) runs out of CPU budget: the gold is then checked alone,
    # and the row is a timeout (0.0), not an unparsed gold (None). A CPU-budget timeout is not retried.
    pool = VerifierPool(workers=1, timeout=TIMEOUT)
    try:
        verifier = MathVerifier(pool)
        assert verifier.judge(["7/3"], [r"\boxed{9^{9^{9^{9}}}}"]) == ["timeout"]
        assert pool.stats.cpu_timeouts == 1 and verifier.retried == 0
        assert pool.stats.requests == 2  # the item, then the gold check
        assert verifier.judge(["7/3"], [r"\boxed{7/3}"]) == ["correct"] and pool.stats.requests == 2
    finally:
        pool.close()


EXACT_GOLDS = [  # golds of many forms: a box holding the gold's own text is what math-verify calls correct
    r"\frac{3}{4}", r"2\sqrt{3}", "[2, 5)", "-1, 3", "x^2+2x+1", r"\text{(B)}", r"45^\circ", r"12\%",
    "y = 2x - 4", r"\pi", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"x \in (0, \infty)", r"\{1, 2\}",
    r"\text{Monday}", "4:30", r"\infty", "0.5", r"1{,}000", r"\dfrac{\sqrt{5}}{2}", r"(-\infty, 3]",
]  # fmt: skip


def test_exact_text_fast_path_agrees_with_math_verify() -> None:
    pool = VerifierPool(workers=1, timeout=TIMEOUT)
    try:
        verifier = MathVerifier(pool)
        texts = [rf"\boxed{{{gold}}}" for gold in EXACT_GOLDS]
        statuses = verifier.judge(EXACT_GOLDS, texts)
        assert verifier.exact_verdicts == len(EXACT_GOLDS) and statuses == ["correct"] * len(EXACT_GOLDS)
        replies = pool.run(
            [
                {"op": "item", "gold": gold, "pred": text}
                for gold, text in zip(EXACT_GOLDS, texts, strict=True)
            ]
        )
        assert [reply["status"] for reply in replies] == statuses
        # a gold that does not parse scores None even when the box repeats it (and stays known)
        assert verifier.judge([r"\text{}", "1"], [r"\boxed{\text{}}", "  "]) == ["unparsed_gold", "no_answer"]
        requests = pool.stats.requests
        assert verifier.judge([r"\text{}"], [r"\boxed{\text{}}"]) == ["unparsed_gold"]
        assert pool.stats.requests == requests
    finally:
        pool.close()


INTEGER_PAIRS = [  # (gold, box content): plain integers, and look-alikes that must go to math-verify
    ("143", "143"), ("143", "134"), ("0", "0"), ("-7", "-7"), ("-7", "7"), ("100", "1000"),
    ("123456789012345", "123456789012345"), ("123456789012345", "123456789012346"),
    ("7", "07"), ("7", "7.0"), ("0", "-0"), ("7", "+7"), ("-0", "0"), ("1234567890123456", "1234567890123456"),
    ("1234567890123456", "1234567890123457"), ("5", "5 "), ("1/2", "1/2"),
]  # fmt: skip


def test_integer_fast_path_agrees_with_math_verify() -> None:
    pool = VerifierPool(workers=1, timeout=TIMEOUT)
    try:
        verifier = MathVerifier(pool)
        texts = [rf"\boxed{{{answer}}}" for _, answer in INTEGER_PAIRS]
        statuses = verifier.judge([gold for gold, _ in INTEGER_PAIRS], texts)
        fast = sum(
            1 for gold, answer in INTEGER_PAIRS if _plain(gold) and _plain(canonical_answer(answer.strip()))
        )  # the box's content, canonical: `07` and `7.0` are the integer 7
        assert verifier.integer_verdicts == fast == 11  # the first eight pairs, 07, 7.0 and ("5", "5 ")
        # the reference: every pair through the workers (math-verify), gold parsed the way the verifier does
        replies = pool.run(
            [
                {"op": "item", "gold": gold, "pred": text}
                for (gold, _), text in zip(INTEGER_PAIRS, texts, strict=True)
            ]
        )
        assert statuses == [reply["status"] for reply in replies]
        assert statuses[:8] == [
            "correct",
            "wrong",
            "correct",
            "correct",
            "wrong",
            "wrong",
            "correct",
            "wrong",
        ]
    finally:
        pool.close()


def _plain(text: str) -> bool:
    """A slow reference for the fast path's rule: an optional minus sign, then digits with no leading zero
    (``0`` alone is fine, ``-0`` is not), at most 15 of them."""
    digits = text[1:] if text.startswith("-") else text
    if not digits or not all(c in "0123456789" for c in digits) or len(digits) > 15:
        return False
    if digits == "0":
        return text == "0"
    return digits[0] != "0"


def _garbage(n: int, seed: int) -> str:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "{}^_+-=()[]\\$ "
    return "".join(rng.choices(alphabet, k=n))


PATHOLOGICAL = [
    ("nested-exponent", r"\boxed{9^{9^{9^{9}}}}"),
    ("nested-braces", _NESTED_BRACES),
    ("1MB-garbage", _garbage(1_000_000, 0)),
    ("1MB-garbage-boxed", r"\boxed{" + _garbage(1_000_000, 1).replace("{", "(").replace("}", ")") + "}"),
]


@pytest.mark.parametrize(("name", "text"), PATHOLOGICAL, ids=[name for name, _ in PATHOLOGICAL])
def test_pathological_completion_returns_within_timeout_and_pool_keeps_working(name, text) -> None:
    timeout = 1.5
    pool = VerifierPool(workers=1, timeout=timeout)
    try:
        verifier = MathVerifier(pool)
        assert verifier.judge(["1.5"], [r"\boxed{1.5}"]) == ["correct"]  # workers started and warm
        metrics: dict[str, float] = {}
        start = time.monotonic()
        statuses = verifier.judge(["5"], [text])
        elapsed = time.monotonic() - start
        assert elapsed < timeout + 1.0, f"{name} took {elapsed:.2f} s"
        assert statuses[0] in ("timeout", "no_answer"), statuses
        log_counts(metrics.__setitem__, "accuracy", statuses)
        assert metrics["rewards/accuracy/timeouts"] + metrics["rewards/accuracy/no_answer"] == 1
        assert verifier.judge(["5.5", "6.5"], [r"\boxed{5.5}", r"\boxed{7}"]) == ["correct", "wrong"]
    finally:
        pool.close()


def test_pathological_items_are_timeouts_not_wrong_answers() -> None:
    pool = VerifierPool(workers=2, timeout=1.5)
    try:
        statuses = MathVerifier(pool).judge(["5", "5"], [r"\boxed{9^{9^{9^{9}}}}", _NESTED_BRACES])
        assert statuses == ["timeout", "timeout"]
    finally:
        pool.close()


def _thread_result(func, *args, **kwargs):
    out: dict[str, object] = {}

    def target() -> None:
        try:
            out["value"] = func(*args, **kwargs)
        except BaseException as error:  # re-raised in the test thread
            out["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.slow
def test_same_results_from_a_non_main_thread(table_run) -> None:
    # A different timeout gives a separate pool and caches: nothing is answered from the main thread's cache.
    golds = [gold for _, gold, _, _ in CASES]
    texts = [text for _, _, text, _ in CASES]
    scores = _thread_result(accuracy, texts, answer=golds, timeout=TIMEOUT + 0.5)
    assert scores == [table_run[0][case[0]] for case in CASES]


def test_async_reward_on_a_daemon_thread_like_trl() -> None:
    # TRL 1.16 runs `async def` rewards on an event loop in a daemon thread; math-verify's SIGALRM fails there.
    async def async_accuracy(completions, **kwargs):
        return accuracy(completions, **kwargs)

    result = _thread_result(
        asyncio.run,
        async_accuracy([r"\boxed{0.5}", r"\boxed{9^{9^{9^{9}}}}"], answer=["1/2", "1"], timeout=1.6),
    )
    assert result == [1.0, 0.0]


def test_accuracy_from_the_registry_with_kwargs() -> None:
    (func,) = get_reward_funcs([{"name": "accuracy", "gold_column": "solution", "timeout": TIMEOUT}])
    assert func(
        completions=[r"\boxed{2}"], solution=[r"$\boxed{2}$"], prompts=["p"], completion_ids=[[1]]
    ) == [1.0]
