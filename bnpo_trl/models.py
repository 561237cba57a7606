"""Model and tokenizer loading for training and evaluation: Hub ids, local folders and ``tiny:<sizes>``.

``tiny:hidden_size=128,num_hidden_layers=3`` names the offline tiny model (:mod:`bnpo_trl.tiny_model`),
built once and cached. A folder whose tokenizer is a plain ``tokenizer.json`` (the tiny model and every
checkpoint trained from it) loads that file as it is: transformers 5.x's ``AutoTokenizer`` maps
``model_type=qwen2`` to ``Qwen2Tokenizer``, which swaps in a different pre-tokenizer.

Imports of torch and transformers happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "TINY_PREFIX",
    "end_of_turn_token_ids",
    "has_plain_tokenizer",
    "load_model",
    "load_model_and_tokenizer",
    "load_plain_tokenizer",
    "load_tokenizer",
    "resolve_model_path",
]

TINY_PREFIX = "tiny:"
_PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
_PAD_TOKEN = "<|endoftext|>"  # the tiny model's pad token (Qwen2's)


def resolve_model_path(spec: str) -> str:
    """``tiny:<k=v,...>`` -> the folder of the offline tiny model (built on first use); anything else as is.

    Examples:
        >>> resolve_model_path("Qwen/Qwen2.5-Math-1.5B")
        'Qwen/Qwen2.5-Math-1.5B'
    """
    if not spec.startswith(TINY_PREFIX):
        looks_local = (
            spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1 or os.sep in spec.replace("/", "")
        )
        if looks_local and not Path(spec).expanduser().exists():
            raise FileNotFoundError(
                f"Model folder {spec!r} does not exist (check the path; a Hub model id is written owner/name)."
            )
        return spec
    from bnpo_trl.tiny_model import tiny_model_path

    try:
        sizes = {k: int(v) for k, v in (kv.split("=") for kv in spec[len(TINY_PREFIX) :].split(",") if kv)}
    except ValueError as err:
        raise ValueError(
            f"Bad tiny model spec {spec!r}: write tiny:hidden_size=128,num_hidden_layers=3,... "
            "(integers; see bnpo_trl.tiny_model.tiny_model_path)."
        ) from err
    return tiny_model_path(**sizes)


def has_plain_tokenizer(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a ``tokenizer.json`` whose config names a plain fast tokenizer class."""
    config_file = Path(folder) / "tokenizer_config.json"
    if not (config_file.is_file() and (Path(folder) / "tokenizer.json").is_file()):
        return False
    return json.loads(config_file.read_text()).get("tokenizer_class") in _PLAIN_TOKENIZER_CLASSES


def load_plain_tokenizer(path: str | os.PathLike[str]) -> Any:
    """Load a folder's ``tokenizer.json`` as it is (``PreTrainedTokenizerFast``), padding on the left
    (batched generation needs it), with a pad token set.

    Args:
        path: A folder holding ``tokenizer.json`` and ``tokenizer_config.json`` (e.g. the one returned by
            :func:`bnpo_trl.tiny_model.tiny_model_path`, or any folder saved with ``save_pretrained``).
    """
    from transformers import PreTrainedTokenizerFast

    folder = Path(path)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"No tokenizer.json in {str(folder)!r}. Pass the folder returned by "
            "bnpo_trl.tiny_model.tiny_model_path() (or any folder saved with tokenizer.save_pretrained)."
        )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder), padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = _PAD_TOKEN if _PAD_TOKEN in tokenizer.get_vocab() else tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(spec: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a model (Hub id, folder or ``tiny:...``): a plain ``tokenizer.json`` folder as it
    is (:func:`load_plain_tokenizer`), anything else through ``AutoTokenizer`` (pad token = EOS if unset)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    if has_plain_tokenizer(path):
        return load_plain_tokenizer(path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    spec: str,
    dtype: str | None = "auto",
    device: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    **init_kwargs: Any,
) -> Any:
    """A causal LM: a Hub id, a folder (a PEFT adapter folder is merged into its base model), or
    ``tiny:<k=v,...>``; moved to ``device`` when given (``"auto"``: CUDA if available, else CPU)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(spec)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, **init_kwargs}
    for key, value in (
        ("dtype", dtype),
        ("revision", revision),
        ("attn_implementation", attn_implementation),
    ):
        if value is not None:
            kwargs[key] = value
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, **kwargs).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model if device is None else model.to(device)


def load_model_and_tokenizer(model_args: Any, training_args: Any) -> tuple[Any, Any]:
    """The model and tokenizer a training run starts from, from TRL's ``ModelConfig`` (name, revision,
    dtype, attention, remote code) and the GRPO config's ``model_init_kwargs``."""
    name = model_args.model_name_or_path
    if name is None:
        raise ValueError(
            "Set model_name_or_path (a Hub id, a folder, or tiny:hidden_size=128,... for the offline model)."
        )
    init_kwargs = dict(training_args.model_init_kwargs or {})
    # TRL 1.16's ModelConfig has no trust_remote_code; model_init_kwargs may carry it
    trust_remote_code = bool(
        init_kwargs.pop("trust_remote_code", getattr(model_args, "trust_remote_code", False))
    )
    model = load_model(
        name,
        dtype=init_kwargs.pop("dtype", model_args.dtype),
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
        attn_implementation=init_kwargs.pop("attn_implementation", model_args.attn_implementation),
        **init_kwargs,
    )
    tokenizer = load_tokenizer(name, revision=model_args.model_revision, trust_remote_code=trust_remote_code)
    return model, tokenizer


def end_of_turn_token_ids(tokenizer: Any) -> list[int]:
    """The special token the chat template puts right after an assistant message (``<|im_end|>`` for
    ChatML/Qwen, ``<|eot_id|>`` for Llama 3); empty when there is none. Generation stops there too:
    a base model such as Qwen2.5-Math-7B has ``<|endoftext|>`` as EOS but ends chat turns with
    ``<|im_end|>``."""
    marker = "bnpo-end-of-turn-probe"
    messages = [{"role": "user", "content": "1"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # no template, or one that rejects this conversation
        return []
    if not isinstance(text, str) or marker not in text:
        return []
    tail = text[text.rindex(marker) + len(marker) :]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    if not ids:
        return []
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    first = int(ids[0])
    special = first in set(getattr(tokenizer, "all_special_ids", []) or []) or getattr(
        added.get(first), "special", False
    )
    return [first] if special else []
