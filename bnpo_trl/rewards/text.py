"""Text helpers shared by the rewards: completion text, the last ``\\boxed{}``, gold answers.

All of them run in the trainer process, so they are linear-time string scans (a 1 MB completion costs
milliseconds); anything that can hang (sympy) runs in the worker pool instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "box_at",
    "completion_text",
    "completion_texts",
    "find_boxed",
    "last_boxed",
    "normalize_number_spacing",
    "prepare_gold",
]

#: A completion as TRL passes it: a string (standard format) or a list of messages (conversational).
Completion = str | Sequence[Mapping[str, Any]]

_BRACE_TOKENS = re.compile(r"\\\\|\\[{}]|\\boxed\s*\{|[{}]")
_BRACES = re.compile(r"\\\\|\\[{}]|[{}]")  # `\\` (line break) and `\{`, `\}` (literal braces) do not nest
_BOX_OPEN = re.compile(r"\\boxed\s*\{")
_THIN_SPACE_IN_NUMBER = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")
_MATH_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)"))


def _message_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # multimodal content blocks: [{"type": "text", "text": ...}, ...]
        return "".join(
            block.get("text", "")
            for block in content
            if isinstance(block, Mapping) and block.get("type") == "text"
        )
    raise TypeError(
        f"message content must be a string or a list of content blocks, got {type(content).__name__}"
    )


def completion_text(completion: Completion) -> str:
    """The text of one completion: the string itself, or the assistant messages' contents joined by newlines.

    Examples:
        >>> completion_text("The answer is 4.")
        'The answer is 4.'
        >>> completion_text([{"role": "assistant", "content": "The answer is 4."}])
        'The answer is 4.'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        parts = [
            _message_text(message.get("content"))
            for message in completion
            if isinstance(message, Mapping) and message.get("role", "assistant") == "assistant"
        ]
        return "\n".join(part for part in parts if part)
    raise TypeError(
        "a completion must be a string or a list of {'role', 'content'} messages (TRL's standard or "
        f"conversational format), got {type(completion).__name__}"
    )


def completion_texts(completions: Sequence[Completion]) -> list[str]:
    """:func:`completion_text` of every completion."""
    if isinstance(completions, str) or not isinstance(completions, Sequence):
        raise TypeError(
            f"completions must be a list (one entry per completion), got {type(completions).__name__}"
        )
    return [completion_text(completion) for completion in completions]


def find_boxed(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every complete ``\\boxed{...}`` content (``text[start:end]``; ``end`` is the
    closing brace), in order of the closing brace.

    Braces are matched as in LaTeX: ``\\{`` and ``\\}`` are literal braces, ``\\\\`` is a line break; a
    box whose closing brace is missing (a truncated completion) is not complete.

    Examples:
        >>> text = r"\\boxed{1} then \\boxed{\\{2\\}} and \\boxed{3"
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
        elif token.startswith("\\boxed"):
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


def last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}``, or ``None`` without one.

    The last ``\\boxed`` of the text is read first (this costs only the length of its content); when it is
    not complete (a truncated completion), the box that closed last before it counts.

    Examples:
        >>> last_boxed(r"First \\boxed{2}, then the final answer \\boxed{\\frac{1}{2}}.")
        '\\\\frac{1}{2}'
        >>> last_boxed(r"\\boxed{2}, then \\boxed{3"), last_boxed("no box")
        ('2', None)
    """
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    span = box_at(text, start)
    if span is None:
        spans = find_boxed(text)
        if not spans:
            return None
        span = spans[-1]
    return text[span[0] : span[1]]


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

    - a solution with ``\\boxed{}`` gives the content of its last box;
    - a GSM8K solution gives the text after its last ``####``;
    - surrounding ``$...$``, ``\\(...\\)``, ``\\[...\\]`` are removed; numbers become strings.

    Examples:
        >>> prepare_gold(r"So $x = 2$ and the answer is $\\boxed{2\\sqrt{3}}$.")
        '2\\\\sqrt{3}'
        >>> prepare_gold("She pays 2 * 600 = 1200 dollars.\\n#### 1200")
        '1200'
        >>> prepare_gold(r"$\\frac{1}{2}$"), prepare_gold(27), prepare_gold(None)
        ('\\\\frac{1}{2}', '27', None)
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = repr(value) if isinstance(value, float) and not value.is_integer() else str(int(value))
    if not isinstance(value, str):
        raise TypeError(
            f"a gold answer must be a string or a number, got {type(value).__name__}: {value!r:.80}"
        )
    gold = value.strip()
    if "\\boxed" in gold:
        boxed = last_boxed(gold)
        if boxed is not None:
            gold = boxed.strip()
    elif "####" in gold:
        gold = gold.rsplit("####", 1)[1].strip()
    changed = True
    while changed:
        changed = False
        for left, right in _MATH_WRAPPERS:
            inner = gold[len(left) : -len(right)]
            wrapped = len(gold) > len(left) + len(right) and gold.startswith(left) and gold.endswith(right)
            if wrapped and left not in inner and right not in inner:  # but not `$x$ and $y$`
                gold = inner.strip()
                changed = True
    gold = normalize_number_spacing(gold)
    return gold or None
