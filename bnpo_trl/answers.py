"""Final answers in text: the last ``\\boxed{}``, GSM8K's ``####`` line, gold answers as strings.

The one home of answer parsing: the loaders (:mod:`bnpo_trl.data`), the rewards (:mod:`bnpo_trl.rewards`)
and the evaluation (:mod:`bnpo_trl.evaluation`) all read answers through these functions. Every function is
a linear-time string scan (a 1 MB completion costs milliseconds), so it may run in the trainer process;
anything that can hang (sympy) runs in the reward worker pool instead.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

__all__ = [
    "box_at",
    "boxed_answer",
    "canonical_answer",
    "clock_minutes",
    "extract_gsm8k_answer",
    "find_boxed",
    "last_boxed",
    "normalize_answer",
    "normalize_number_spacing",
    "prepare_gold",
    "text_after_hashes",
]

_BOX_NAME = r"\\(?:boxed|fbox)(?![A-Za-z])"
_BRACE_TOKENS = re.compile(r"\\\\|\\[{}]|" + _BOX_NAME + r"\s*\{|[{}]")
_BRACES = re.compile(r"\\\\|\\[{}]|[{}]")  # `\\` (line break) and `\{`, `\}` (literal braces) do not nest
_BOX_OPEN = re.compile(_BOX_NAME + r"\s*\{")
_BOX_NAMES = re.compile(_BOX_NAME)
_BARE_BOX = re.compile(_BOX_NAME + r"\s+(?=[^\s{$])([^\s$]+)")  # `\boxed 5`: a space, then a bare token
_THIN_SPACE_IN_NUMBER = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")
_MATH_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)"))
_TRAILING_MARK = re.compile(r"(?:\\[,;:! ]|~|\s)*(?<![.\\])[.,;](?:\\[,;:! ]|~|\s)*$")  # not an ellipsis
_BOLD = re.compile(r"\\(?:textbf|mathbf|boldsymbol|bm)\s*\{")
_BOLD_GROUP = re.compile(r"\{\\bf\s+")
_PAREN_INTEGER = re.compile(r"\(\s*(\d+)\s*\)")
_ZERO_PADDED = re.compile(r"-?0+\d+")
_POINT_ZEROS = re.compile(r"(?<![\d.])(\d+)\.0+(?![\d.])")  # `35.0` -> `35`, not `1.05` or `1.0.2`
_TEXT_COMMAND = re.compile(r"\\(?:text|mbox|mathrm|textrm|rm)\s*\{([^{}]*)\}")
_CLOCK = re.compile(r"(\d{1,2}):([0-5]\d)\s*(?:([ap])\.?\s*m\.?)?")


def find_boxed(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every complete ``\\boxed{...}`` (or ``\\fbox{...}``) content (``text[start:end]``;
    ``end`` is the closing brace), in order of the closing brace.

    Braces are matched as in LaTeX: ``\\{`` and ``\\}`` are literal braces, ``\\\\`` is a line break; a
    box whose closing brace is missing (a truncated completion) is not complete.

    Examples:
        >>> text = r"\\boxed{1} then \\fbox{\\{2\\}} and \\boxed{3"
        >>> [text[start:end] for start, end in find_boxed(text)]
        ['1', '\\\\{2\\\\}']
    """
    spans: list[tuple[int, int]] = []
    stack: list[int] = []  # content start for a box, -1 for a plain group
    for match in _BRACE_TOKENS.finditer(text):
        token = match.group()
        if token == "}":
            if stack:
                start = stack.pop()
                if start >= 0:
                    spans.append((start, match.start()))
        elif token == "{":
            stack.append(-1)
        elif token.startswith(("\\boxed", "\\fbox")):
            stack.append(match.end())
    return spans


def box_at(text: str, start: int) -> tuple[int, int] | None:
    """``(start, end)`` of the content of the ``\\boxed{...}`` that begins at ``text[start]``; ``None`` if
    no ``\\boxed{`` begins there or its closing brace is missing. Reads only up to the closing brace.

    Examples:
        >>> box_at(r"x \\boxed{a{b}} y", 2)
        (9, 13)
    """
    opening = _BOX_OPEN.match(text, start)
    if opening is None:
        return None
    depth = 1
    for match in _BRACES.finditer(text, opening.end()):
        if match.group() == "{":
            depth += 1
        elif match.group() == "}":
            depth -= 1
            if depth == 0:
                return opening.end(), match.start()
    return None


def _bare_token(text: str, start: int) -> tuple[str, int] | None:
    """``\\boxed 5`` at ``text[start]``: the token (trailing ``.,;`` dropped) and where it ends."""
    match = _BARE_BOX.match(text, start)
    if match is None:
        return None
    token = match.group(1).rstrip(".,;")
    return (token, match.end()) if token else None


def last_boxed(text: str | None) -> str | None:
    """The stripped content of the last complete ``\\boxed{...}`` or ``\\fbox{...}`` (or of the brace-less
    ``\\boxed 5``, up to the next space or ``$``); ``None`` without one.

    The last box of the text is read first (this costs only the length of its content); when it is not
    complete (a truncated completion), the box that ended last before it counts. ``\\boxedx`` is not a box.

    Examples:
        >>> last_boxed(r"First \\boxed{2}, then the final answer \\boxed{\\frac{1}{2}}.")
        '\\\\frac{1}{2}'
        >>> last_boxed(r"\\boxed{2}, then \\boxed{3"), last_boxed("no box"), last_boxed(r"so $\\boxed 5$.")
        ('2', None, '5')
        >>> last_boxed(r"\\fbox{\\{1,2\\}}")
        '\\\\{1,2\\\\}'
    """
    if not text:
        return None
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    while start >= 0 and not _BOX_NAMES.match(text, start):  # `\boxedx`: look further left
        start = max(text.rfind("\\boxed", 0, start), text.rfind("\\fbox", 0, start))
    if start < 0:
        return None
    span = box_at(text, start)
    if span is not None:
        return text[span[0] : span[1]].strip()
    bare = _bare_token(text, start)
    if bare is not None:
        return bare[0]
    # The last box is truncated: the candidate (braced or bare) that ends last counts.
    candidates = [(end, text[begin:end].strip()) for begin, end in find_boxed(text)]
    for match in _BOX_NAMES.finditer(text):
        bare = _bare_token(text, match.start())
        if bare is not None:
            candidates.append((bare[1], bare[0]))
    return max(candidates)[1] if candidates else None


def text_after_hashes(text: str) -> str | None:
    """The stripped text after the last ``####`` (GSM8K's final-answer marker); ``None`` without one.

    Examples:
        >>> text_after_hashes("She pays 2 * 600 = 1200 dollars.\\n#### 1200"), text_after_hashes("12")
        ('1200', None)
    """
    return text.rsplit("####", 1)[1].strip() if "####" in text else None


def extract_gsm8k_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after the last ``####``, commas, a final full stop and
    a leading ``$`` removed.

    Examples:
        >>> extract_gsm8k_answer("She pays 2 * 600 = 1,200 dollars.\\n#### 1,200")
        '1200'
    """
    answer = text_after_hashes(solution)
    if answer is None:
        raise ValueError(f"GSM8K answer has no '####' marker: {solution[-80:]!r}")
    answer = answer.replace(",", "")
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1]
    if answer.startswith("$"):
        answer = answer[1:].strip()
    return answer


def normalize_answer(value: Any) -> str | None:
    """A gold answer value as a string: numbers lose a trailing ``.0`` (``27.0`` -> ``"27"``), strings are
    stripped; ``None``, NaN, infinities and empty strings give ``None``.

    Examples:
        >>> normalize_answer(27.0), normalize_answer(0.5), normalize_answer(" 12 "), normalize_answer(3)
        ('27', '0.5', '12', '3')
    """
    import numpy as np

    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    return text or None


def normalize_number_spacing(latex: str) -> str:
    """Drop LaTeX thin spaces used as thousands separators (``1\\,000`` -> ``1000``), which math-verify
    reads as a product.

    Examples:
        >>> normalize_number_spacing(r"1\\,234\\,567")
        '1234567'
    """
    return _THIN_SPACE_IN_NUMBER.sub("", latex)


def prepare_gold(value: Any) -> str | None:
    """A dataset's gold answer as the raw LaTeX of the answer alone; ``None`` when there is none.

    - numbers become strings (:func:`normalize_answer`);
    - a solution with ``\\boxed{}`` gives the content of its last box (:func:`last_boxed`);
    - a GSM8K solution gives the text after its last ``####`` (:func:`text_after_hashes`);
    - surrounding ``$...$``, ``\\(...\\)``, ``\\[...\\]`` are removed, and thin spaces in numbers.

    Examples:
        >>> prepare_gold(r"So $x = 2$ and the answer is $\\boxed{2\\sqrt{3}}$.")
        '2\\\\sqrt{3}'
        >>> prepare_gold("She pays 2 * 600 = 1200 dollars.\\n#### 1200")
        '1200'
        >>> prepare_gold(r"$\\frac{1}{2}$"), prepare_gold(27), prepare_gold(None)
        ('\\\\frac{1}{2}', '27', None)
    """
    if not isinstance(value, str) and (isinstance(value, bool) or not isinstance(value, int | float)):
        if value is None:
            return None
        raise TypeError(
            f"a gold answer must be a string or a number, got {type(value).__name__}: {value!r:.80}"
        )
    gold = normalize_answer(value)
    if gold is None:
        return None
    if "\\boxed" in gold or "\\fbox" in gold:
        boxed = last_boxed(gold)
        if boxed is not None:
            gold = boxed
    elif "####" in gold:
        gold = text_after_hashes(gold) or ""
    changed = True
    while changed:
        changed = False
        for left, right in _MATH_WRAPPERS:
            inner = gold[len(left) : -len(right)]
            wrapped = len(gold) > len(left) + len(right) and gold.startswith(left) and gold.endswith(right)
            if wrapped and left not in inner and right not in inner:  # but not `$x$ and $y$`
                gold = inner.strip()
                changed = True
    gold = canonical_answer(gold)
    return gold or None


def _unwrap_whole(answer: str, opening: re.Pattern[str]) -> str | None:
    """The content of ``answer`` when all of it is one group opened by ``opening`` (``\\textbf{...}``)."""
    match = opening.match(answer)
    if match is None:
        return None
    depth = 1
    for token in _BRACES.finditer(answer, match.end()):
        if token.group() in ("{", "}"):
            depth += 1 if token.group() == "{" else -1
            if depth == 0:
                return answer[match.end() : token.start()].strip() if token.end() == len(answer) else None
    return None


def canonical_answer(answer: str) -> str:
    """An answer's LaTeX (a box's content, or a gold) without what changes its form but not its value, so
    that math-verify compares values: a sentence's final ``.``/``,``/``;`` (not an ellipsis), a bold
    wrapper around the whole answer (``\\textbf{...}``, ``\\mathbf``, ``{\\bf ...}``), parentheses around
    a lone integer (AoPS's ``(073)``), the leading zeros of an integer (AIME's ``073``) and the zero
    decimals of a number (``35.0\\%`` -> ``35\\%``); thin spaces in numbers go first
    (:func:`normalize_number_spacing`).

    Examples:
        >>> canonical_answer("284."), canonical_answer(r"\\$18.90."), canonical_answer("1, 2, 3, ...")
        ('284', '\\\\$18.90', '1, 2, 3, ...')
        >>> canonical_answer(r"\\textbf{(073)}"), canonical_answer(r"35.0\\%"), canonical_answer("1.05")
        ('73', '35\\\\%', '1.05')
    """
    answer, previous = normalize_number_spacing(answer), None
    while answer != previous:
        previous = answer
        answer = _TRAILING_MARK.sub("", answer.strip())
        for opening in (_BOLD, _BOLD_GROUP):
            inner = _unwrap_whole(answer, opening)
            if inner is not None:
                answer = inner
        if paren := _PAREN_INTEGER.fullmatch(answer):
            answer = paren.group(1)
    if _ZERO_PADDED.fullmatch(answer):
        negative = answer.startswith("-")
        answer = ("-" if negative else "") + (answer.lstrip("-").lstrip("0") or "0")
    return _POINT_ZEROS.sub(r"\1", answer)


@functools.lru_cache(maxsize=4096)  # called for each row's gold: a batch repeats each gold G times
def clock_minutes(answer: str) -> tuple[int, bool] | None:
    """A time of day (``4:30 p.m.``, ``\\text{12:05 a.m.}``, ``16:30``) as (minutes after midnight, whether
    it said a.m./p.m.); ``None`` for anything else (``3:4``, a ratio, has one-digit minutes).

    Examples:
        >>> clock_minutes(r"4:30 \\text{ p.m.}"), clock_minutes(r"\\text{12:05 a.m.}"), clock_minutes("16:30")
        ((990, True), (5, True), (990, False))
        >>> clock_minutes("3:4"), clock_minutes("13:30 pm"), clock_minutes("2/15")
        (None, None, None)
    """
    text = answer
    for _ in range(2):
        text = _TEXT_COMMAND.sub(r"\1", text)
    text = re.sub(r"\\[,;:! ]|~", " ", text).strip().lower()
    match = _CLOCK.fullmatch(text)
    if match is None:
        return None
    hours, minutes, half = int(match.group(1)), int(match.group(2)), match.group(3)
    if half is not None:
        if not 1 <= hours <= 12:
            return None
        hours = hours % 12 + (12 if half == "p" else 0)
    elif hours > 23:
        return None
    return hours * 60 + minutes, half is not None


def boxed_answer(text: str) -> str | None:
    """The final answer of a completion as the verifier compares it: the content of its last complete box,
    thin spaces in numbers removed, in :func:`canonical_answer` form; ``None`` without a box or for an empty one.

    >>> boxed_answer(r"First \\boxed{1}, finally \\boxed{1\\,000.}"), boxed_answer("no box") is None
    ('1000', True)
    """
    boxed = last_boxed(text)
    return None if boxed is None else canonical_answer(boxed) or None
