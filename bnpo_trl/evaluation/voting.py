"""Majority voting (maj@n): the answer most of a problem's n samples agree on, answers grouped by the verifier.

Per problem, each sample votes with the content of its last ``\\boxed{}`` in the verifier's canonical form
(:func:`bnpo_trl.answers.boxed_answer`; a sample without one does not vote). Answers are grouped by mathematical equivalence, not by string equality: an answer joins the first
group whose representative (its first answer) the verifier (:class:`bnpo_trl.rewards.MathVerifier`, the
checker of the ``accuracy`` reward) judges equal to it, with the representative as the gold; ``0.5``,
``1/2`` and ``\\frac{1}{2}`` are one group. The largest group wins; a tie goes to the group whose first
vote came first. maj@n of a problem is 1 when the winner's representative sample is correct (as the
benchmark scored it), 0 otherwise or when no sample voted. Defined by this project after the majority
voting of Wang et al. 2022 (self-consistency, arXiv 2203.11171), whose answers are grouped by equality.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bnpo_trl.answers import boxed_answer

__all__ = ["majority_correct"]


def majority_correct(
    texts: Sequence[Sequence[str]], correct: Sequence[Sequence[bool]], verifier: Any = None
) -> list[bool]:
    """Per problem (``[problem][sample]`` tables), whether its majority answer is correct.

    ``verifier`` has ``judge(golds, texts) -> verdicts`` (default: the ``accuracy`` reward's shared
    :func:`bnpo_trl.rewards.get_verifier`). Comparisons run in rounds, one ``judge`` call per round for all
    problems: each round compares every problem's next distinct answer with its groups' representatives.

    >>> class Equal:  # a stand-in verifier: equality of numbers
    ...     def judge(self, golds, texts):
    ...         return ["correct" if float(g) == float(t[7:-1]) else "wrong" for g, t in zip(golds, texts)]
    >>> texts = [[r"\\boxed{0.5}", r"\\boxed{.50}", r"\\boxed{3}"], [r"\\boxed{7}", "none", r"\\boxed{8}"]]
    >>> majority_correct(texts, [[True, True, False], [False, False, True]], Equal())
    [True, False]
    """
    if verifier is None:
        from bnpo_trl.rewards import get_verifier

        verifier = get_verifier()
    votes = [[boxed_answer(text) for text in row] for row in texts]
    distinct = [list(dict.fromkeys(a for a in row if a is not None)) for row in votes]
    group_of: list[dict[str, str]] = [{} for _ in votes]  # answer -> its group's representative
    for round_ in range(max((len(d) for d in distinct), default=0)):
        pairs = []  # (problem, answer, representative) compared in this round
        for p, answers in enumerate(distinct):
            if round_ < len(answers):
                reps = list(dict.fromkeys(group_of[p].values()))
                pairs += [(p, answers[round_], rep) for rep in reps]
        verdicts = verifier.judge([rep for _, _, rep in pairs], [rf"\boxed{{{a}}}" for _, a, _ in pairs])
        joined: dict[tuple[int, str], str] = {}
        for (p, answer, rep), verdict in zip(pairs, verdicts, strict=True):
            if verdict == "correct" and (p, answer) not in joined:
                joined[(p, answer)] = rep  # reps are in order of first vote: the first match wins
        for p, answers in enumerate(distinct):
            if round_ < len(answers):
                group_of[p][answers[round_]] = joined.get((p, answers[round_]), answers[round_])
    out = []
    for p, row in enumerate(votes):
        counts: dict[str, int] = {}
        for answer in row:
            if answer is not None:
                rep = group_of[p][answer]
                counts[rep] = counts.get(rep, 0) + 1
        if not counts:
            out.append(False)
            continue
        winner = max(counts, key=counts.get)  # dicts keep first-vote order: max returns the earliest tie
        out.append(bool(correct[p][row.index(winner)]))
    return out
