"""The text of a completion as TRL passes it (a string or a list of messages).

Answer parsing (the last ``\\boxed{}``, gold answers) lives in :mod:`bnpo_trl.answers`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Completion", "completion_text", "completion_texts"]

#: A completion as TRL passes it: a string (standard format) or a list of messages (conversational).
Completion = str | Sequence[Mapping[str, Any]]


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
