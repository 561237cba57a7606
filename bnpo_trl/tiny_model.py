"""Fully offline tiny causal LM and tokenizer for tests, the CPU quickstart and benchmarks.

Nothing here touches the network: the tokenizer is a byte-level BPE trained with the ``tokenizers``
library on a few hundred synthetic lines (arithmetic, ``\\boxed{}`` answers, short math phrases,
LaTeX, ``<think>`` tags), and the model is a randomly initialised ``Qwen2ForCausalLM``.

Public API:

- :func:`build_tokenizer` trains the tokenizer in memory (deterministic: same output every build).
- :func:`tiny_model_path` builds the model and tokenizer once, saves them with ``save_pretrained``
  into a cache folder (``$BNPO_TRL_CACHE`` or ``~/.cache/bnpo_trl``) and returns the folder path. The
  folder loads with ``AutoModelForCausalLM.from_pretrained`` and
  :func:`bnpo_trl.models.load_plain_tokenizer` (not ``AutoTokenizer``: transformers 5.x maps
  ``model_type=qwen2`` to ``Qwen2Tokenizer``, which swaps in a different pre-tokenizer than the saved
  ``tokenizer.json``); ``tiny:<sizes>`` names it wherever a model is expected (:mod:`bnpo_trl.models`).

Digits are always split one per token (``pre_tokenizers.Digits(individual_digits=True)`` runs in
front of the byte-level pre-tokenizer) and the full 256-byte alphabet is in the vocabulary, so any
text encodes and decodes losslessly.

From the command line, ``python -m bnpo_trl.tiny_model [--hidden-size 128 ...]`` prints the folder path.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from transformers import PreTrainedTokenizerFast

__all__ = [
    "BOS_TOKEN",
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "IM_START_TOKEN",
    "PAD_TOKEN",
    "TINY_MODEL_VERSION",
    "build_tokenizer",
    "default_cache_dir",
    "tiny_model_path",
]

#: Bump when the tokenizer corpus, template or model recipe changes: cached folders are then rebuilt.
TINY_MODEL_VERSION = "v1"

IM_START_TOKEN = "<|im_start|>"
#: End of an assistant turn; the EOS token of the tokenizer, the model config and the generation config.
EOS_TOKEN = "<|im_end|>"
#: Padding token (as in Qwen2 checkpoints, which also use it as ``bos_token_id`` in the model config).
PAD_TOKEN = "<|endoftext|>"
#: The tokenizer has no BOS token (``bos_token=None``), like Qwen2 chat tokenizers.
BOS_TOKEN = None

logger = logging.getLogger(__name__)

_SPECIAL_TOKENS = [PAD_TOKEN, IM_START_TOKEN, EOS_TOKEN]
_VOCAB_SIZE = 300  # 256 byte symbols + 3 special tokens + ~40 merges
_MAX_LENGTH = 512
_MARKER_FILE = "bnpo_trl_tiny_model.json"

#: ChatML template (system/user/assistant). Prompt/completion training (TRL ``SFTTrainer``
#: completion-only loss) needs the rendered prompt with ``add_generation_prompt=True`` to be a prefix of
#: the rendered prompt + completion, which ChatML satisfies. The assistant turn, ``<|im_end|>``
#: included, sits inside ``{% generation %}`` markers so ``assistant_only_loss=True`` works as well.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- generation -%}"
    "{{ message['content'] + '<|im_end|>' }}"
    "{%- endgeneration -%}"
    "{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- endif -%}"
)

_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

_PHRASES = [
    "The answer is",
    "Let's think step by step.",
    "First, we add the tens and then the ones.",
    "Therefore, the final answer is",
    "We compute the sum.",
    "So the result is",
    "Simplify the fraction.",
    "Solve for x.",
    "How many positive integers are there?",
    "Find the value of the expression.",
    "The probability is",
    "the remainder when divided by",
    "Compute the area of the triangle.",
    "system",
    "user",
    "assistant",
    _SYSTEM_PROMPT,
]

_LATEX = [
    "\\frac{1}{2}",
    "\\frac{3}{4}",
    "\\sqrt{2}",
    "\\sqrt{x^2 + 1}",
    "x^2 + 2x + 1 = 0",
    "\\pi r^2",
    "\\left( \\frac{a}{b} \\right)",
    "\\cdot",
    "\\times",
    "\\dfrac{7}{9}",
    "$x = 5$",
    "\\boxed{\\frac{1}{2}}",
    "\\text{(A)}",
]


def _corpus() -> list[str]:
    """The synthetic training lines: fixed phrases plus seeded random arithmetic (deterministic)."""
    rng = random.Random(0)
    lines: list[str] = list(_PHRASES) + list(_LATEX)
    for _ in range(240):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice(["+", "-", "*"])
        value = a + b if op == "+" else a - b if op == "-" else a * b
        lines.append(f"What is {a} {op} {b}?")
        lines.append(f"<think>\n{a} {op} {b} = {value}\n</think>\n\\boxed{{{value}}}")
        lines.append(f"The answer is $\\boxed{{{value}}}$.")
    return lines


def build_tokenizer(extra_texts: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """Train the tiny byte-level BPE tokenizer in memory, with a ChatML chat template.

    Args:
        extra_texts: Additional training lines, appended to the built-in synthetic corpus (the vocabulary
            size stays fixed; extra text only changes which merges are learned).

    Returns:
        A ``PreTrainedTokenizerFast`` with ``eos_token="<|im_end|>"``, ``pad_token="<|endoftext|>"``,
        ``bos_token=None``, ``<|im_start|>`` as an extra special token, left padding and
        :data:`CHAT_TEMPLATE`. The same inputs give the same tokenizer on every build.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = _corpus()
    if extra_texts is not None:
        if isinstance(extra_texts, str):
            raise TypeError(
                "extra_texts must be an iterable of strings, not a single string; wrap it in a list."
            )
        texts.extend(str(text) for text in extra_texts)

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        unk_token=None,
        extra_special_tokens=[IM_START_TOKEN],
        chat_template=CHAT_TEMPLATE,
        model_max_length=_MAX_LENGTH,
        padding_side="left",
    )


def default_cache_dir() -> Path:
    """The cache folder: ``$BNPO_TRL_CACHE`` if set, else ``~/.cache/bnpo_trl``."""
    env = os.environ.get("BNPO_TRL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bnpo_trl"


def _model_spec(
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    seed: int,
) -> dict[str, object]:
    return {
        "version": TINY_MODEL_VERSION,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "intermediate_size": intermediate_size,
        "seed": seed,
        "max_position_embeddings": _MAX_LENGTH,
        "vocab_size_target": _VOCAB_SIZE,
        "chat_template": CHAT_TEMPLATE,
        "corpus_sha": hashlib.sha256("\n".join(_corpus()).encode()).hexdigest(),
    }


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def tiny_model_path(
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int | None = None,
    intermediate_size: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Build (once) and cache a random tiny ``Qwen2ForCausalLM`` plus its tokenizer; return the folder.

    The folder name is derived from the parameters and :data:`TINY_MODEL_VERSION` (plus a hash of the
    tokenizer recipe), so a later call with the same arguments reuses it. Building is safe with several
    processes at once: each builds in a temporary folder beside the destination and renames it into
    place atomically; a process that finds the destination already there uses it and drops its own.

    Args:
        hidden_size: Model width; must be divisible by ``num_attention_heads``.
        num_hidden_layers: Number of decoder layers.
        num_attention_heads: Number of attention heads.
        num_key_value_heads: Key/value heads (grouped-query attention); defaults to ``num_attention_heads``
            and must divide it.
        intermediate_size: MLP width; defaults to ``4 * hidden_size``.
        seed: Seed of the random initialisation (the global torch RNG is left untouched).
        cache_dir: Where to cache; defaults to ``$BNPO_TRL_CACHE`` or ``~/.cache/bnpo_trl``.

    Returns:
        The path of a folder that loads with ``AutoModelForCausalLM.from_pretrained`` and
        :func:`bnpo_trl.models.load_plain_tokenizer`.
    """
    if num_key_value_heads is None:
        num_key_value_heads = num_attention_heads
    if intermediate_size is None:
        intermediate_size = 4 * hidden_size
    _check_shape(hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size)
    spec = _model_spec(
        hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size, seed
    )
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    name = (
        f"tiny-qwen2-h{hidden_size}-l{num_hidden_layers}-a{num_attention_heads}-kv{num_key_value_heads}"
        f"-i{intermediate_size}-s{seed}-{TINY_MODEL_VERSION}-{digest}"
    )
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dest = root / name
    if _is_complete(dest):
        return str(dest)
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):  # one builder; the other processes wait, then reuse it
        if _is_complete(dest):
            return str(dest)
        if dest.exists():  # a build that lost files (or a foreign folder): build it again
            logger.warning("The tiny-model cache %s is incomplete: rebuilding it.", dest)
            shutil.rmtree(dest)
        _build_atomically(root, name, dest, spec)
    if not _is_complete(dest):
        raise RuntimeError(
            f"Building the tiny model into {dest} left it incomplete: {_missing(dest)} missing."
        )
    return str(dest)


#: What a usable cached folder holds (the marker is written last, after the others were checked).
_COMPLETE_FILES = ("config.json", "model.safetensors", "tokenizer.json", _MARKER_FILE)


def _missing(folder: Path) -> list[str]:
    return [f for f in _COMPLETE_FILES if not (folder / f).is_file()]


def _is_complete(folder: Path) -> bool:
    return folder.is_dir() and not _missing(folder)


def _check_shape(
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
) -> None:
    for name, value in [
        ("hidden_size", hidden_size),
        ("num_hidden_layers", num_hidden_layers),
        ("num_attention_heads", num_attention_heads),
        ("num_key_value_heads", num_key_value_heads),
        ("intermediate_size", intermediate_size),
    ]:
        _check_positive(name, value)
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads}); "
            "change one of them."
        )
    if num_attention_heads % num_key_value_heads:
        raise ValueError(
            f"num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads "
            f"({num_key_value_heads}); change num_key_value_heads."
        )
    if (hidden_size // num_attention_heads) % 2:
        raise ValueError(
            f"The head dimension hidden_size / num_attention_heads = {hidden_size // num_attention_heads} must "
            "be even for rotary embeddings; change hidden_size or num_attention_heads."
        )


def _build_atomically(root: Path, name: str, dest: Path, spec: dict[str, object]) -> None:
    """Build into a temporary folder next to ``dest``, then rename it into place (atomic on one disk)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        _build_into(tmp, spec)
        # mkdtemp creates the folder 0o700: make the cache readable like any other model folder.
        os.chmod(tmp, 0o755)
        for child in tmp.iterdir():
            os.chmod(child, 0o644)
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            # Another process renamed its complete build into place first: use that one.
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and (dest / _MARKER_FILE).is_file():
                return
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _build_into(folder: Path, spec: dict[str, object]) -> None:
    """Build tokenizer + random Qwen2 model and ``save_pretrained`` both into ``folder``."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # transformers' save_pretrained writes nothing on a rank other than 0 once a process group exists
        _build_in_child_process(folder, spec)
        return
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        max_position_embeddings=_MAX_LENGTH,
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec["seed"]))  # type: ignore[arg-type]
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    missing = [f for f in _COMPLETE_FILES if f != _MARKER_FILE and not (folder / f).is_file()]
    if missing:
        raise RuntimeError(f"save_pretrained left {missing} out of {folder}.")
    n_params = sum(p.numel() for p in model.parameters())
    # Written last: its presence marks a complete build.
    (folder / _MARKER_FILE).write_text(json.dumps({**spec, "num_parameters": n_params}, indent=2) + "\n")


def _build_in_child_process(folder: Path, spec: dict[str, object]) -> None:
    """:func:`_build_into` in a fresh interpreter (no process group), for a rank of a distributed run."""
    import subprocess
    import sys

    code = "import json, sys, pathlib; from bnpo_trl.tiny_model import _build_into; "
    code += "_build_into(pathlib.Path(sys.argv[1]), json.loads(sys.argv[2]))"
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")
    }
    subprocess.run([sys.executable, "-c", code, str(folder), json.dumps(spec)], check=True, env=env)


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bnpo_trl.tiny_model",
        description="Build (once) the tiny offline Qwen2 model and tokenizer and print the folder path.",
    )
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-hidden-layers", type=int, default=2)
    parser.add_argument("--num-attention-heads", type=int, default=4)
    parser.add_argument("--num-key-value-heads", type=int, default=None)
    parser.add_argument("--intermediate-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    print(
        tiny_model_path(
            hidden_size=args.hidden_size,
            num_hidden_layers=args.num_hidden_layers,
            num_attention_heads=args.num_attention_heads,
            num_key_value_heads=args.num_key_value_heads,
            intermediate_size=args.intermediate_size,
            seed=args.seed,
            cache_dir=args.cache_dir,
        )
    )


if __name__ == "__main__":
    _main()
