"""Batches of MATH-style completions for the reward benchmarks, generated offline with their labels.

G=16 completions for each problem; golds are stored as datasets store them (raw LaTeX: integers, fractions,
radicals, intervals, decimals, lists of roots, polynomials, multiple-choice letters, degrees, percents, large
numbers). Completions are correct answers in several equivalent forms, plausible wrong answers, long
reasoning before the box, several boxes, answers without a box ("The final answer is $x$"), truncated
completions without an answer, and a fraction of pathological items (nested exponents, 10^5-character
garbage with and without a box, 5,000 nested braces). Every completion carries the label the generator
meant (correct or not), so disagreements between verifiers can be attributed.
"""

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass
from fractions import Fraction

G = 16
#: Problem kinds whose raw-LaTeX gold math-verify's default parse (TRL) reads correctly.
SAME_GOLD_KINDS = ("int", "neg", "frac", "decimal", "degrees", "percent")


@dataclass
class Item:
    gold: str
    text: str
    label: bool  # what the generator meant: is this completion's final answer correct?
    kind: str  # problem kind, or "pathological"


def problem(rng: random.Random) -> tuple[str, str, list[str], list[str]]:
    """(kind, gold as stored in a dataset, correct answer forms, wrong answers)."""
    kind = rng.choice(
        ["int", "int", "int", "neg", "frac", "frac", "radical", "interval", "decimal", "roots", "poly", "choice",
         "degrees", "percent", "big"]
    )  # fmt: skip
    if kind == "int":
        n = rng.randint(2, 999)
        return kind, str(n), [str(n)], [str(n + 1), str(n - 1), str(2 * n), str(-n)]
    if kind == "neg":
        n = rng.randint(1, 99)
        return kind, f"-{n}", [f"-{n}"], [str(n), f"-{n + 1}"]
    if kind == "frac":
        b = rng.randint(2, 16)
        a = rng.choice([k for k in range(1, 3 * b) if math.gcd(k, b) == 1])
        forms = [rf"\frac{{{a}}}{{{b}}}", rf"\dfrac{{{a}}}{{{b}}}", f"{a}/{b}"]
        if Fraction(a, b).denominator in (2, 4, 5, 8, 10, 16):
            forms.append(str(float(Fraction(a, b))))
        return (
            kind,
            rf"\frac{{{a}}}{{{b}}}",
            forms,
            [rf"\frac{{{b}}}{{{a}}}", rf"\frac{{{a + 1}}}{{{b}}}", f"-{a}/{b}"],
        )
    if kind == "radical":
        a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7, 10, 11])
        a = a if a != b else a + 1  # the wrong answer b\sqrt{a} must differ from a\sqrt{b}
        forms = [rf"{a}\sqrt{{{b}}}", rf"\sqrt{{{a * a * b}}}", rf"{a} \cdot \sqrt{{{b}}}"]
        return (
            kind,
            rf"{a}\sqrt{{{b}}}",
            forms,
            [str(a), rf"\sqrt{{{b}}}", rf"{a}\sqrt{{{b + 1}}}", rf"{b}\sqrt{{{a}}}"],
        )
    if kind == "interval":
        a = rng.randint(-9, 5)
        b = a + rng.randint(1, 9)
        return kind, f"[{a}, {b})", [f"[{a},{b})", f"[{a}, {b})"], [f"({a},{b})", f"[{a},{b}]", str(b)]
    if kind == "decimal":
        n = rng.randint(1, 99) + 0.5
        frac = Fraction(n)
        return (
            kind,
            str(n),
            [str(n), rf"\frac{{{frac.numerator}}}{{{frac.denominator}}}"],
            [str(n - 1), str(n + 0.25)],
        )
    if kind == "roots":
        a = rng.randint(-9, -1)
        b = rng.choice([k for k in range(1, 10) if k != -a])  # {-a, -b} must differ from {a, b}
        return kind, f"{a}, {b}", [f"{a}, {b}", f"{b}, {a}", rf"\{{{a}, {b}\}}"], [str(b), f"{-a}, {-b}"]
    if kind == "poly":
        a = rng.randint(1, 9)
        return (
            kind,
            f"x^2+{2 * a}x+{a * a}",
            [f"(x+{a})^2", f"x^2 + {2 * a}x + {a * a}"],
            [f"(x-{a})^2", f"x^2+{a * a}"],
        )
    if kind == "choice":
        letter = rng.choice("ABCDE")
        others = [c for c in "ABCDE" if c != letter]
        return kind, rf"\text{{({letter})}}", [letter, rf"\text{{({letter})}}", f"({letter})"], others[:2]
    if kind == "degrees":
        n = rng.choice([30, 45, 60, 72, 120, 135])
        return kind, rf"{n}^\circ", [str(n), rf"{n}^\circ", rf"{n}^{{\circ}}"], [str(180 - n), str(n + 10)]
    if kind == "percent":
        n = rng.randint(5, 95)
        return kind, rf"{n}\%", [rf"{n}\%", str(n)], [rf"{100 - n}\%", str(n + 1)]
    n = rng.randint(1000, 999_999)  # big
    return (
        kind,
        f"{n:,}".replace(",", "{,}"),
        [str(n), f"{n:,}", f"{n:,}".replace(",", r"\,")],
        [str(n + 10), str(n // 10)],
    )


_WORDS = [
    "we",
    "let",
    "then",
    "so",
    "thus",
    "note",
    "that",
    "compute",
    "substitute",
    "simplify",
    "check",
    "the",
    "value",
    "of",
    "and",
    "since",
    "hence",
]


def _reasoning(rng: random.Random, words: int) -> str:
    parts = []
    for i in range(words // 12):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        parts.append(
            " ".join(rng.choices(_WORDS, k=9))
            + f" ${a} + {b} = {a + b}$, and $x_{{{i}}} = \\frac{{{a}}}{{{b}}}$."
        )
    return " ".join(parts)


def _completion(rng: random.Random, answer: str | None, decoy: str) -> str:
    if answer is None:  # truncated: the model ran out of tokens before answering
        return _reasoning(rng, rng.randint(100, 600))
    style = rng.random()
    if style < 0.55:
        return f"{_reasoning(rng, rng.randint(20, 80))} Therefore the answer is $\\boxed{{{answer}}}$."
    if style < 0.80:
        return f"{_reasoning(rng, rng.randint(300, 1500))}\n\nThe final answer is $\\boxed{{{answer}}}$."
    if style < 0.90:
        return f"First attempt gives $\\boxed{{{decoy}}}$. {_reasoning(rng, 40)} Correcting this: $\\boxed{{{answer}}}$."
    return f"{_reasoning(rng, rng.randint(20, 80))} The final answer is ${answer}$."


def _pathological(rng: random.Random, i: int) -> str:
    variant = i % 6
    if variant in (0, 1):
        a, b, c, d = (rng.randint(5, 9) for _ in range(4))
        return rf"After a long computation, the answer is $\boxed{{{a}^{{{b}^{{{c}^{{{d}}}}}}}}}$."
    if variant in (2, 3):
        return "".join(
            rng.choices(string.ascii_letters + string.digits + string.punctuation + " ", k=100_000)
        )
    if variant == 4:
        junk = "".join(rng.choices("x+-*^()0123456789 ", k=100_000))
        return rf"\boxed{{{junk}}}"
    if rng.random() < 0.5:
        return r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}"
    return rf"\boxed{{{rng.randint(2, 9)}^{{{rng.randint(2, 9)}^{{{rng.randint(2, 9)}^{{{rng.randint(2, 9)}}}}}}}}}"


def make_batch(
    problems: list[tuple[str, str, list[str], list[str]]], seed: int, frac_pathological: float
) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for kind, gold, forms, wrongs in problems:
        p_correct = rng.random()
        favourite = rng.choice(forms)
        for _ in range(G):
            r = rng.random()
            if r < 0.08:
                items.append(Item(gold, _completion(rng, None, ""), False, kind))
            elif r < 0.08 + 0.92 * p_correct:
                answer = favourite if rng.random() < 0.7 else rng.choice(forms)
                items.append(Item(gold, _completion(rng, answer, rng.choice(wrongs)), True, kind))
            else:
                answer = wrongs[0] if rng.random() < 0.6 else rng.choice(wrongs)
                items.append(Item(gold, _completion(rng, answer, favourite), False, kind))
    n_bad = round(frac_pathological * len(items))
    for j, index in enumerate(rng.sample(range(len(items)), n_bad)):
        items[index] = Item(items[index].gold, _pathological(rng, j), False, "pathological")
    return items
