"""The built-in sources, registered when :mod:`bnpo_trl.data` is imported (``arithmetic`` is registered by
:mod:`bnpo_trl.tasks`, which owns that generator).

Each Hub source is read by :func:`~bnpo_trl.data.loading.load_schema_source` with its own row parser;
``local`` is :func:`~bnpo_trl.data.loading.load_local` with a ``column_map``.
"""

from __future__ import annotations

from bnpo_trl.data import rows
from bnpo_trl.data.loading import load_local_source, load_schema_source
from bnpo_trl.data.registry import DatasetSpec, register_dataset

BUILTIN_SOURCES: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="math",
        load=load_schema_source,
        hub_id="DigitalLearningGmbH/MATH-lighteval",
        default_split="train",
        required_columns=("problem", "solution"),
        parser=rows.parse_math,
        has_difficulty=True,
        description="MATH (Hendrycks) train/test; gold = last \\boxed{} of the solution; difficulty = level",
        aliases=("math-lighteval", "hendrycks_math", "math_train"),
    ),
    DatasetSpec(
        name="math500",
        load=load_schema_source,
        hub_id="HuggingFaceH4/MATH-500",
        default_split="test",
        required_columns=("problem", "answer"),
        parser=rows.parse_math500,
        has_difficulty=True,
        description="MATH-500 test subset; difficulty = level",
        aliases=("math-500", "math_500"),
    ),
    DatasetSpec(
        name="gsm8k",
        load=load_schema_source,
        hub_id="openai/gsm8k",
        config="main",
        default_split="train",
        required_columns=("question", "answer"),
        parser=rows.parse_gsm8k,
        description="GSM8K; gold after '####', commas removed",
    ),
    DatasetSpec(
        name="aime24",
        load=load_schema_source,
        hub_id="HuggingFaceH4/aime_2024",
        default_split="train",
        required_columns=("problem", "answer"),
        parser=rows.parse_problem_answer,
        description="AIME 2024 (30 problems)",
        aliases=("aime_2024", "aime2024"),
    ),
    DatasetSpec(
        name="aime25",
        load=load_schema_source,
        hub_id="math-ai/aime25",
        default_split="test",
        required_columns=("problem", "answer"),
        parser=rows.parse_problem_answer,
        description="AIME 2025 (30 problems)",
        aliases=("aime_2025", "aime2025"),
    ),
    DatasetSpec(
        name="amc23",
        load=load_schema_source,
        hub_id="math-ai/amc23",
        default_split="test",
        required_columns=("answer", ("question", "problem")),
        parser=rows.parse_amc,
        description="AMC 2023 (40 problems); float answers normalised (27.0 -> '27')",
        aliases=("amc_2023", "amc2023"),
    ),
    DatasetSpec(
        name="dapo",
        load=load_schema_source,
        hub_id="BytedTsinghua-SIA/DAPO-Math-17k",
        default_split="train",
        required_columns=("prompt", "reward_model"),
        parser=rows.parse_dapo,
        dedupe=True,
        description="DAPO-Math-17k (verl format); problem extracted from the prompt; deduplicated",
        aliases=("dapo-math-17k", "dapo_math", "math_dapo"),
    ),
    DatasetSpec(
        name="local",
        load=load_local_source,
        description="A local jsonl/json/parquet/csv file; columns named by column_map",
    ),
)

for _spec in BUILTIN_SOURCES:
    register_dataset(_spec)
