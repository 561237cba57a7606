"""Format rewards: ``boxed_format`` (exactly one final ``\\boxed{}``) and ``think_format``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bnpo_trl.answers import box_at

from .registry import register_reward
from .text import Completion, completion_texts

__all__ = ["boxed_format", "think_format"]

# What may follow the final box: spaces, closing math delimiters, a full stop.
_AFTER_BOX = re.compile(r"(?:\s|\$|\.|\\\]|\\\))*")


def _one_final_box(text: str) -> bool:
    if text.count("\\boxed") != 1:
        return False
    span = box_at(text, text.index("\\boxed"))
    if span is None:
        return False
    start, end = span
    return bool(text[start:end].strip()) and _AFTER_BOX.fullmatch(text, end + 1) is not None


@register_reward("boxed_format", reward_range=(0.0, 1.0))
def boxed_format(completions: Sequence[Completion], **kwargs: Any) -> list[float]:
    r"""1.0 if the completion has exactly one ``\boxed{...}``, non-empty and at the end (only spaces, ``$``,
    ``\]``, ``\)`` or ``.`` after it), else 0.0. Extra closing braces after the box (``\boxed{35}}}}``, a
    reward hack seen in practice) score 0.

    Example:
        >>> from bnpo_trl.rewards import boxed_format
        >>> boxed_format([r"So $\boxed{42}$.", r"\boxed{1} or \boxed{2}", r"\boxed{35}}}}", "42", r"\boxed{}"])
        [1.0, 0.0, 0.0, 0.0, 0.0]
    """
    return [1.0 if _one_final_box(text) else 0.0 for text in completion_texts(completions)]


def _think_ok(text: str, prefilled: bool) -> bool:
    if prefilled:  # the chat template already opened <think> in the prompt
        reasoning_start = 0
        if "<think>" in text:
            return False
    else:
        stripped = text.lstrip()
        if not stripped.startswith("<think>") or text.count("<think>") != 1:
            return False
        reasoning_start = len(text) - len(stripped) + len("<think>")
    if text.count("</think>") != 1:
        return False
    close = text.index("</think>")
    return (
        close >= reasoning_start
        and bool(text[reasoning_start:close].strip())
        and bool(text[close + 8 :].strip())
    )


@register_reward("think_format", reward_range=(0.0, 1.0))
def think_format(completions: Sequence[Completion], *, prefilled: bool = False, **kwargs: Any) -> list[float]:
    """1.0 if the completion is ``<think>reasoning</think>answer``: one ``<think>`` at the start, one
    ``</think>``, non-empty reasoning and a non-empty answer after it; else 0.0.

    Args:
        prefilled: The chat template puts ``<think>`` at the end of the prompt (Qwen3, DeepSeek-R1): the
            completion must then hold no ``<think>`` and one ``</think>``.

    Example:
        >>> from bnpo_trl.rewards import think_format
        >>> think_format(["<think>2+2=4</think> The answer is 4.", "<think>2+2=4</think>", "The answer is 4."])
        [1.0, 0.0, 0.0]
        >>> think_format(["2+2=4</think> 4"], prefilled=True)
        [1.0]
    """
    return [1.0 if _think_ok(text, prefilled) else 0.0 for text in completion_texts(completions)]
