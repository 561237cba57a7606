"""Tests of the offline tiny model and tokenizer builder (bnpo_trl.tiny_model)."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import pytest
import torch

from bnpo_trl import tiny_model
from bnpo_trl.models import load_plain_tokenizer
from bnpo_trl.tiny_model import (
    CHAT_TEMPLATE,
    EOS_TOKEN,
    IM_START_TOKEN,
    PAD_TOKEN,
    build_tokenizer,
    tiny_model_path,
)
from tests.trainer_utils import tiny_grpo_kwargs

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def _messages(question: str, system: str | None = SYSTEM) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return [*msgs, {"role": "user", "content": question}]


def _ids(tok, messages, **kwargs) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


# --------------------------------------------------------------------------------------------- tokenizer


def test_build_tokenizer_is_deterministic_and_matches_saved(tokenizer) -> None:
    first, second = build_tokenizer(), build_tokenizer()
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    # The saved folder may have been built by another process: same vocabulary and merges there too.
    saved = json.loads(tokenizer.backend_tokenizer.to_str())
    fresh = json.loads(first.backend_tokenizer.to_str())
    assert saved["model"]["vocab"] == fresh["model"]["vocab"]
    assert saved["model"]["merges"] == fresh["model"]["merges"]


def test_tokenizer_special_tokens_and_size() -> None:
    tok = build_tokenizer()
    assert 100 <= len(tok) <= 320
    assert tok.eos_token == EOS_TOKEN
    assert tok.pad_token == PAD_TOKEN
    assert tok.bos_token is None
    assert tok.padding_side == "left"
    for special in (IM_START_TOKEN, EOS_TOKEN, PAD_TOKEN):
        ids = tok(special, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"{special} should be one token, got {ids}"
    assert tok.chat_template == CHAT_TEMPLATE


def test_extra_texts_change_merges_but_not_size() -> None:
    extra = ["zyzzyva quokka " * 3] * 50
    tok = build_tokenizer(extra_texts=extra)
    assert len(tok) == len(build_tokenizer())
    assert len(tok("zyzzyva", add_special_tokens=False)["input_ids"]) < len("zyzzyva")
    with pytest.raises(TypeError, match="wrap it in a list"):
        build_tokenizer(extra_texts="a single string")


def test_digits_are_one_per_token_and_round_trip(tokenizer) -> None:
    rng = random.Random(1)
    for _ in range(50):
        a, b = rng.randint(0, 10**6), rng.randint(0, 999)
        text = f"What is {a} + {b}? \\boxed{{{a + b}}}"
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = [tokenizer.decode([i]) for i in ids]
        digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
        assert all(len(p) == 1 for p in digit_pieces), digit_pieces
        assert "".join(digit_pieces) == f"{a}{b}{a + b}"
        assert tokenizer.decode(ids) == text
    # Any text (unicode, LaTeX, newlines) round-trips: the full byte alphabet is in the vocabulary.
    for text in ["\\frac{1}{2} + \\sqrt{3}", "<think>\nx² ≥ 0 — 中文\n</think>", "  tabs\tand\n\nnewlines "]:
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template_renders_chatml(tokenizer) -> None:
    messages = _messages("What is 37 + 45?")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 37 + 45?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert not no_prompt.endswith("assistant\n")
    no_system = tokenizer.apply_chat_template(_messages("Hi", system=None), tokenize=False)
    assert no_system == "<|im_start|>user\nHi<|im_end|>\n"
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "\\boxed{82}"}], tokenize=False
    )
    assert full == text + "\\boxed{82}<|im_end|>\n"


def test_prompt_is_token_prefix_of_prompt_plus_completion(tokenizer) -> None:
    """What TRL's SFTTrainer needs for completion-only loss on prompt/completion conversational data."""
    for completion in ["\\boxed{82}", "The answer is 82.", "<think>\n37 + 45 = 82\n</think>\n\\boxed{82}"]:
        prompt = _messages("What is 37 + 45?")
        prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=True)
        full_ids = _ids(tokenizer, [*prompt, {"role": "assistant", "content": completion}])
        assert full_ids[: len(prompt_ids)] == prompt_ids
        assert full_ids[-2:] == [tokenizer.eos_token_id, tokenizer("\n")["input_ids"][0]]


def test_assistant_mask_covers_completion_and_eos(tokenizer) -> None:
    messages = [*_messages("What is 2 + 2?"), {"role": "assistant", "content": "\\boxed{4}"}]
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(masked) == "\\boxed{4}<|im_end|>"


# ------------------------------------------------------------------------------------------------- model


def test_model_loads_and_generates(tiny_path: str, tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    cfg = model.config
    assert cfg.vocab_size == len(tokenizer)
    assert cfg.tie_word_embeddings
    assert cfg.eos_token_id == tokenizer.eos_token_id
    assert cfg.pad_token_id == tokenizer.pad_token_id
    assert cfg.bos_token_id == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) < 500_000

    prompts = [
        tokenizer.apply_chat_template(_messages(q), tokenize=False, add_generation_prompt=True)
        for q in ["What is 1 + 2?", "What is 37 + 45? Show your work."]
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert (batch["attention_mask"][0, 0] == 0).item()  # left padding
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    prompt_len = batch["input_ids"].shape[1]
    assert out.shape[0] == 2 and prompt_len < out.shape[1] <= prompt_len + 6
    assert torch.equal(out[:, :prompt_len], batch["input_ids"])
    assert all(isinstance(t, str) for t in tokenizer.batch_decode(out[:, prompt_len:]))


def test_tiny_model_path_is_cached_and_seeded(tmp_path: Path) -> None:
    kwargs = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "cache_dir": tmp_path}
    first = tiny_model_path(**kwargs)
    marker = Path(first) / "bnpo_trl_tiny_model.json"
    mtime = marker.stat().st_mtime_ns
    assert tiny_model_path(**kwargs) == first
    assert marker.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert oct(os.stat(first).st_mode & 0o777) == "0o755"
    info = json.loads(marker.read_text())
    assert info["hidden_size"] == 16 and info["intermediate_size"] == 64 and info["num_key_value_heads"] == 2

    other_seed = tiny_model_path(**kwargs, seed=1)
    assert other_seed != first
    from safetensors.torch import load_file

    w0 = load_file(os.path.join(first, "model.safetensors"))
    w1 = load_file(os.path.join(other_seed, "model.safetensors"))
    name = "model.embed_tokens.weight"
    assert not torch.equal(w0[name], w1[name])
    # Same seed in a fresh cache gives the same weights.
    again = load_file(
        os.path.join(tiny_model_path(**{**kwargs, "cache_dir": tmp_path / "b"}), "model.safetensors")
    )
    assert torch.equal(w0[name], again[name])
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_env_var_sets_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BNPO_TRL_CACHE", str(tmp_path / "envcache"))
    path = tiny_model_path(hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    assert Path(path).parent == tmp_path / "envcache"
    monkeypatch.delenv("BNPO_TRL_CACHE")
    assert tiny_model.default_cache_dir() == Path.home() / ".cache" / "bnpo_trl"


def test_concurrent_builds_end_with_one_complete_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builders racing: one builds under the file lock, the other waits and uses its folder."""
    real_build = tiny_model._build_into
    builds: list[Path] = []

    def slow_build(folder: Path, spec: dict[str, object]) -> None:
        builds.append(folder)
        time.sleep(0.5)  # the other thread reaches the lock meanwhile
        real_build(folder, spec)

    monkeypatch.setattr(tiny_model, "_build_into", slow_build)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(
                tiny_model_path(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, cache_dir=tmp_path)
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 2 and results[0] == results[1] and len(builds) == 1
    assert (Path(results[0]) / "bnpo_trl_tiny_model.json").is_file()
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert left == [Path(results[0]).name]  # temp folders cleaned up


def test_an_incomplete_cache_folder_is_rebuilt(tmp_path: Path) -> None:
    kwargs = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "cache_dir": tmp_path}
    path = Path(tiny_model_path(**kwargs))
    (path / "bnpo_trl_tiny_model.json").unlink()
    assert tiny_model_path(**kwargs) == str(path)
    assert (path / "bnpo_trl_tiny_model.json").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 10, "num_attention_heads": 4}, "divisible by num_attention_heads"),
        ({"num_attention_heads": 4, "num_key_value_heads": 3}, "multiple of num_key_value_heads"),
        ({"hidden_size": 12, "num_attention_heads": 4}, "must be even"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
    ],
)
def test_invalid_shapes_raise(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_model_path(cache_dir=tmp_path, **kwargs)


def test_load_tokenizer_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tiny_model_path"):
        load_plain_tokenizer(tmp_path)


# -------------------------------------------------------------------------------------------------- TRL


def test_two_step_grpo_run_on_cpu(tiny_path: str, tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    dataset = Dataset.from_list(
        [
            {"prompt": _messages(f"What is {a} + {b}?"), "answer": str(a + b)}
            for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]
        ]
    )

    def contains_answer(completions, answer, **kwargs) -> list[float]:
        return [
            float(ans in c[0]["content"]) + 0.1 * len(c[0]["content"])
            for c, ans in zip(completions, answer, strict=True)
        ]

    args = GRPOConfig(**tiny_grpo_kwargs(tmp_path, max_completion_length=8, learning_rate=1e-3))
    trainer = GRPOTrainer(
        model=tiny_path,
        reward_funcs=contains_answer,
        args=args,
        train_dataset=dataset,
        processing_class=load_plain_tokenizer(tiny_path),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    result = trainer.train()
    assert trainer.state.global_step == 2
    assert result.training_loss == result.training_loss  # not NaN
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logs) == 2
    changed = any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert changed, "two GRPO steps with non-constant rewards should update the weights"
