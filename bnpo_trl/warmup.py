"""Supervised warm-up before RL (TRL ``SFTTrainer``), stopped on held-out accuracy."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

from bnpo_trl.arguments import WarmupArguments
from bnpo_trl.callbacks import BenchmarkEvalCallback, StopOnAccuracyCallback

logger = logging.getLogger(__name__)


def sft_warmup(
    model: Any,
    tokenizer: Any,
    train: Any,
    check_set: Any,
    reward: Any,
    warmup_args: WarmupArguments,
    training_args: Any,
    max_new_tokens: int = 16,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``train``'s ``prompt``/``completion`` pairs (TRL SFTTrainer,
    completion-only loss) until greedy accuracy on ``check_set`` reaches the target or the budget ends.

    The accuracy check generates up to ``max_new_tokens`` tokens for all of ``check_set``
    (``bnpo_trl.pipeline.load_warmup_check_set`` chooses those rows: at most ``sft_warmup_eval_limit``). Returns what happened: steps, seconds, accuracy, whether the
    target was reached, and the accuracy history.
    """
    from trl import SFTConfig, SFTTrainer

    if "completion" not in train.column_names:
        raise ValueError(
            "sft_warmup needs a `completion` column (the gold answer as an assistant message) in the training set."
        )
    check = BenchmarkEvalCallback.greedy(tokenizer, check_set, reward, 0, max_new_tokens, name="warmup_check")
    stopper = StopOnAccuracyCallback(
        check,
        warmup_args.sft_warmup_target_accuracy,
        warmup_args.sft_warmup_max_seconds,
        warmup_args.sft_warmup_eval_steps,
        warmup_args.sft_warmup_fine_eval_steps,
        warmup_args.sft_warmup_fine_eval_from,
    )
    with tempfile.TemporaryDirectory(prefix="bnpo_warmup_") as tmp:
        config = SFTConfig(
            output_dir=os.path.join(tmp, "warmup"),
            per_device_train_batch_size=warmup_args.sft_warmup_batch_size,
            learning_rate=warmup_args.sft_warmup_learning_rate,
            lr_scheduler_type="constant",
            weight_decay=warmup_args.sft_warmup_weight_decay,
            adam_beta2=0.98,
            max_steps=warmup_args.sft_warmup_max_steps,  # usually stopped earlier, by accuracy or time
            logging_steps=warmup_args.sft_warmup_eval_steps,
            save_strategy="no",
            report_to="none",
            bf16=training_args.bf16,
            use_cpu=training_args.use_cpu,
            seed=training_args.seed,
            disable_tqdm=training_args.disable_tqdm,
            completion_only_loss=True,
            gradient_checkpointing=training_args.gradient_checkpointing,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=train.select_columns(["prompt", "completion"]),
            processing_class=tokenizer,
            callbacks=[stopper],
        )
        trainer.train()
    seconds = time.perf_counter() - stopper.started
    reached = stopper.accuracy >= warmup_args.sft_warmup_target_accuracy
    if not reached:
        logger.warning(
            "Warm-up stopped at %.1f%% held-out accuracy after %.0f s, below the %.0f%% target.",
            100 * stopper.accuracy,
            seconds,
            100 * warmup_args.sft_warmup_target_accuracy,
        )
    return {
        "steps": trainer.state.global_step,
        "seconds": seconds,
        "accuracy": stopper.accuracy,
        "target": warmup_args.sft_warmup_target_accuracy,
        "reached_target": reached,
        "learning_rate_cuts": stopper.lr_cuts,
        "history": stopper.history,
    }
