"""Reading sources into the column contract: local files, the Hub, and the shared parse/filter step.

:func:`load_dataset_by_name` resolves a name in the registry and calls the spec's ``load``; the loaders
here (:func:`load_schema_source` for Hub-schema sources, :func:`load_local_source` for ``local``) are the
``load`` of the built-in specs. All of them end in ``_finalize``, which owns the rules every source
shares (dropping unusable rows, deduplication, ``limit``, the output features).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, List, Value

from bnpo_trl.answers import normalize_answer
from bnpo_trl.data.registry import (
    DEFAULT_SYSTEM_PROMPT,
    DatasetSpec,
    LoadOptions,
    RowParser,
    resolve_dataset,
)
from bnpo_trl.data.rows import as_float, last_user_content

logger = logging.getLogger(__name__)

__all__ = ["load_dataset_by_name", "load_local", "load_local_source", "load_schema_source"]

_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}

#: Output features, fixed so that datasets from different sources concatenate.
_FEATURES = Features(
    {
        "prompt": List({"role": Value("string"), "content": Value("string")}),
        "answer": Value("string"),
        "data_source": Value("string"),
        "difficulty": Value("float64"),
    }
)

_COLUMN_MAP_KEYS = ("problem", "answer", "difficulty", "data_source")


def _read_local(path: str | os.PathLike[str], cache_dir: str | None = None) -> Dataset:
    """Read a jsonl/json/parquet/csv file (or a glob of them) with ``datasets.load_dataset``."""
    from datasets import load_dataset

    text = str(path)
    suffix = Path(text).suffix.lower()
    builder = _LOCAL_BUILDERS.get(suffix)
    if builder is None:
        raise ValueError(
            f"Cannot tell the format of {text!r} from its extension {suffix!r}; use one of "
            f"{', '.join(sorted(_LOCAL_BUILDERS))}."
        )
    single = not any(ch in text for ch in "*?[")
    if single and not Path(text).is_file():
        raise FileNotFoundError(f"Data file not found: {text!r}.")
    empty = ValueError(f"Data file {text!r} holds no rows (it is empty, blank or a header only).")
    if single and not Path(text).read_bytes()[: 1 << 20].strip():
        raise empty
    try:
        dataset = load_dataset(builder, data_files=text, split="train", cache_dir=cache_dir)
    except (StopIteration, ValueError) as err:  # datasets: "Instruction 'train' corresponds to no data!"
        if "corresponds to no data" in str(err) or isinstance(err, StopIteration):
            raise empty from err
        raise ValueError(f"Cannot read {text!r} as {builder}: {err}") from err
    if len(dataset) == 0:
        raise empty
    return dataset


def _read_hub(spec: DatasetSpec, options: LoadOptions, split: str) -> Dataset:
    from datasets import load_dataset

    repo = options.hub_id or spec.hub_id
    kwargs: dict[str, Any] = {"split": split}
    if options.revision is not None:
        kwargs["revision"] = options.revision
    try:
        return load_dataset(repo, options.config if options.config is not None else spec.config, **kwargs)
    except ConnectionError as err:  # offline, or the Hub unreachable (after datasets' retries)
        raise ConnectionError(
            f"Cannot read the {spec.name!r} dataset from the Hub ({repo}): {err}. Without Hub access, give a "
            f"local copy of it (a jsonl/json/parquet/csv file with {spec.hub_id}'s columns) as dataset_path "
            "(eval_dataset_path for the held-out set, path: in a dataset_mixture entry); set HF_HUB_OFFLINE=1 "
            "to fail at once instead of retrying."
        ) from err


def _check_columns(dataset: Dataset, needed: Iterable[tuple[str, str]], where: str) -> None:
    """``needed`` holds (column, field); raise naming the ``column_map`` key that fixes a missing one."""
    for column, field_name in needed:
        if column not in dataset.column_names:
            raise ValueError(
                f"Column {column!r} (the {field_name}) not found in {where}; its columns are "
                f"{dataset.column_names}. Name the right one: in a recipe `dataset_column_map: "
                f"{{{field_name}: <column>}}` (eval_dataset_column_map for the held-out file, `column_map:` "
                f"inside a dataset_mixture entry); for bnpo-trl eval `--column_map "
                f"'{{\"{field_name}\": \"<column>\"}}'`; in Python column_map={{'{field_name}': '<column>'}}."
            )


def _messages(problem: str, system_prompt: str | None, user_template: str) -> list[dict[str, str]]:
    content = user_template.format(problem=problem)
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    messages.append({"role": "user", "content": content})
    return messages


def _usable_indices(dataset: Dataset, dedupe: bool) -> tuple[list[int], int, int]:
    """-> (indices of usable rows, first occurrences only with ``dedupe``; #unusable; #duplicates).

    One pass in batches over two columns, since the DAPO Hub copy has 1.79 M rows.
    """
    keep: list[int] = []
    seen: set[bytes] = set()
    n_unusable = n_dupes = 0
    index = 0
    for batch in dataset.select_columns(["_problem", "answer"]).iter(batch_size=10_000):
        for problem, answer in zip(batch["_problem"], batch["answer"], strict=True):
            if not (problem and answer):
                n_unusable += 1
            elif dedupe and (digest := hashlib.blake2b(problem.encode(), digest_size=16).digest()) in seen:
                n_dupes += 1
            else:
                if dedupe:
                    seen.add(digest)
                keep.append(index)
            index += 1
    return keep, n_unusable, n_dupes


def _finalize(
    raw: Dataset,
    parser: RowParser,
    *,
    data_source: str | Callable[[Mapping[str, Any]], str],
    system_prompt: str | None,
    user_template: str,
    keep_columns: Sequence[str],
    limit: int | None,
    dedupe: bool,
    where: str,
    num_proc: int | None,
    report: dict[str, int] | None = None,
) -> Dataset:
    """Parse rows, drop the unusable ones, deduplicate, limit and cast to the output features; ``report``
    (when given) gets ``rows_read``, ``dropped_unusable`` and ``dropped_duplicates``."""
    if "{problem}" not in user_template:
        raise ValueError(f"user_template must contain '{{problem}}', got {user_template!r}.")
    for column in keep_columns:
        if column not in raw.column_names:
            raise ValueError(
                f"keep_columns names {column!r}, which is not in {where}; columns: {raw.column_names}."
            )
        if column in _FEATURES:
            raise ValueError(f"keep_columns cannot name {column!r}: it is one of the output columns.")
    n_read = len(raw)

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        parsed = parser(row)
        problem = parsed["problem"]
        problem = problem.strip() if isinstance(problem, str) else None
        answer = parsed["answer"]
        source = data_source(row) if callable(data_source) else data_source
        return {
            "prompt": _messages(problem, system_prompt, user_template) if problem else [],
            "answer": answer if answer else None,
            "data_source": str(source),
            "difficulty": parsed["difficulty"],
            "_problem": problem or "",
        }

    features = Features(
        {**_FEATURES, "_problem": Value("string"), **{c: raw.features[c] for c in keep_columns}}
    )
    drop = [c for c in raw.column_names if c not in keep_columns]
    dataset = raw.map(
        convert, remove_columns=drop, features=features, num_proc=num_proc, desc=f"Parsing {where}"
    )
    keep, n_unusable, n_dupes = _usable_indices(dataset, dedupe)
    if report is not None:
        report.update(rows_read=n_read, dropped_unusable=n_unusable, dropped_duplicates=n_dupes)
    if n_unusable:
        logger.warning(
            "%s: dropped %d of %d rows with no problem text or no gold answer.", where, n_unusable, n_read
        )
    if n_dupes:
        logger.info("%s: dropped %d duplicate problems.", where, n_dupes)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}.")
        keep = keep[:limit]
    if not keep:
        raise ValueError(
            f"{where} is empty after filtering: {n_read} rows read, {n_unusable} without a problem or gold "
            f"answer, {n_dupes} duplicates, limit={limit}. Check the split/path and the column_map "
            "(the answer column may be wrong), or raise limit."
        )
    if len(keep) != len(dataset):
        dataset = dataset.select(keep)
    return dataset.remove_columns("_problem").flatten_indices()


def _local_parser(raw: Dataset, mapping: Mapping[str, str], where: str) -> tuple[RowParser, str | None]:
    """The row parser for a local file's ``column_map`` (columns checked) and its ``data_source`` column."""
    problem_col = mapping.get("problem", "problem")
    answer_col = mapping.get("answer", "answer")
    _check_columns(raw, [(problem_col, "problem"), (answer_col, "answer")], where)
    difficulty_col = mapping.get("difficulty", "difficulty" if "difficulty" in raw.column_names else None)
    source_col = mapping.get("data_source")
    optional = [
        (c, f) for c, f in [(difficulty_col, "difficulty"), (source_col, "data_source")] if c is not None
    ]
    _check_columns(raw, optional, where)

    def parse(row: Mapping[str, Any]) -> dict[str, Any]:
        problem = row[problem_col]
        if isinstance(problem, list):
            problem = last_user_content(problem)
        return {
            "problem": problem if isinstance(problem, str) else (None if problem is None else str(problem)),
            "answer": normalize_answer(row[answer_col]),
            "difficulty": as_float(row[difficulty_col]) if difficulty_col else None,
        }

    return parse, source_col


def load_local(
    path: str | os.PathLike[str],
    column_map: Mapping[str, str] | None = None,
    *,
    data_source: str | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    user_template: str = "{problem}",
    limit: int | None = None,
    keep_columns: Sequence[str] = (),
    dedupe: bool = False,
    num_proc: int | None = None,
    cache_dir: str | None = None,
    report: dict[str, int] | None = None,
) -> Dataset:
    """Load your own ``jsonl``/``json``/``parquet``/``csv`` file into the column contract.

    Args:
        path: The file (its extension picks the reader; a glob of files of one type works too).
        column_map: Maps the contract's fields to the file's columns. Keys: ``problem`` (default column
            ``"problem"``), ``answer`` (default ``"answer"``), optional ``difficulty`` (default: the
            ``"difficulty"`` column if present) and optional ``data_source`` (a column holding the source
            name per row). The problem column may hold strings or chat message lists (the last user
            message is then used). Example: ``{"problem": "question", "answer": "final"}``.
        data_source: Constant ``data_source`` value (default: the file name without extension).
        system_prompt: System message; ``None`` omits it.
        user_template: Format string for the user message, with ``{problem}``.
        limit: Keep at most this many rows (the first ones, after filtering).
        keep_columns: Source columns to carry over unchanged.
        dedupe: Drop rows whose problem text repeats an earlier row's.
        num_proc: Processes for ``Dataset.map``.
        cache_dir: ``datasets`` cache folder.
        report: A dict to fill with the rows read and dropped (see :func:`load_dataset_by_name`).

    Returns:
        The dataset (columns ``prompt``, ``answer``, ``data_source``, ``difficulty`` + ``keep_columns``).
    """
    mapping = dict(column_map or {})
    unknown = set(mapping) - set(_COLUMN_MAP_KEYS)
    if unknown:
        raise ValueError(
            f"Unknown column_map keys {sorted(unknown)}; allowed: {', '.join(_COLUMN_MAP_KEYS)}."
        )
    raw = _read_local(path, cache_dir=cache_dir)
    where = f"local file {str(path)!r}"
    parse, source_col = _local_parser(raw, mapping, where)
    constant_source = data_source or Path(str(path)).name.split(".")[0]
    source: str | Callable[[Mapping[str, Any]], str]
    if source_col is not None:

        def source(row: Mapping[str, Any]) -> str:
            return str(row[source_col]) if row[source_col] is not None else constant_source

    else:
        source = constant_source
    return _finalize(
        raw,
        parse,
        data_source=source,
        system_prompt=system_prompt,
        user_template=user_template,
        keep_columns=keep_columns,
        limit=limit,
        dedupe=dedupe,
        where=where,
        num_proc=num_proc,
        report=report,
    )


def load_local_source(spec: DatasetSpec, options: LoadOptions) -> Dataset:
    """The ``load`` of the ``local`` spec: :func:`load_local` on ``options.path`` (required)."""
    if options.path is None:
        raise ValueError(
            f"Dataset {spec.name!r} needs path=... (a jsonl/json/parquet/csv file) and usually column_map."
        )
    return load_local(
        options.path,
        options.column_map,
        data_source=options.data_source,
        system_prompt=options.system_prompt,
        user_template=options.user_template,
        limit=options.limit,
        keep_columns=options.keep_columns,
        dedupe=bool(options.dedupe),
        num_proc=options.num_proc,
        cache_dir=options.cache_dir,
        report=options.report,
    )


def _missing_columns(spec: DatasetSpec, columns: Sequence[str]) -> list[str]:
    """``spec.required_columns`` not in ``columns``; a tuple of alternatives is named by its first."""
    missing = []
    for required in spec.required_columns:
        alternatives = (required,) if isinstance(required, str) else required
        if not any(name in columns for name in alternatives):
            missing.append(alternatives[0])
    return missing


def load_schema_source(spec: DatasetSpec, options: LoadOptions) -> Dataset:
    """The ``load`` of a source with a fixed schema: read the Hub (or ``options.path``, a file of the same
    columns), check ``spec.required_columns`` and parse every row with ``spec.parser``."""
    if options.column_map:
        raise ValueError(
            f"column_map is only for the 'local' dataset; {spec.name!r} has a fixed schema. Use "
            f"name='local' with path=... to read a file whose columns differ from {spec.hub_id}'s."
        )
    if spec.parser is None:
        raise ValueError(f"Dataset spec {spec.name!r} has no parser, so load_schema_source cannot read it.")
    split = options.split or spec.default_split
    if options.path is not None:
        raw = _read_local(options.path, cache_dir=options.cache_dir)
        where = f"{spec.name} (local file {str(options.path)!r})"
    else:
        raw = _read_hub(spec, options, split)
        where = f"{spec.name} ({options.hub_id or spec.hub_id}, split {split!r})"
    missing = _missing_columns(spec, raw.column_names)
    if missing:
        raise ValueError(
            f"{where} lacks the column(s) {missing} that the {spec.name!r} schema needs; its columns are "
            f"{raw.column_names}. For a file with other column names use name='local' with "
            "column_map={'problem': '<column>', 'answer': '<column>'}."
        )
    return _finalize(
        raw,
        spec.parser,
        data_source=options.data_source or spec.name,
        system_prompt=options.system_prompt,
        user_template=options.user_template,
        keep_columns=options.keep_columns,
        limit=options.limit,
        dedupe=spec.dedupe if options.dedupe is None else options.dedupe,
        where=where,
        num_proc=options.num_proc,
        report=options.report,
    )


def load_dataset_by_name(
    name: str,
    split: str | None = None,
    path: str | os.PathLike[str] | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    limit: int | None = None,
    *,
    column_map: Mapping[str, str] | None = None,
    data_source: str | None = None,
    user_template: str = "{problem}",
    keep_columns: Sequence[str] = (),
    dedupe: bool | None = None,
    hub_id: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    num_proc: int | None = None,
    cache_dir: str | None = None,
    report: dict[str, int] | None = None,
) -> Dataset:
    """Load a registered dataset (see :data:`~bnpo_trl.data.DATASETS`) into the column contract.

    The registry resolves ``name`` and the spec's own ``load`` does the rest, so every source (and one you
    add with :func:`~bnpo_trl.data.register_dataset`) takes the same arguments.

    Args:
        name: Registry name (``math``, ``math500``, ``gsm8k``, ``aime24``, ``aime25``, ``amc23``,
            ``dapo``, ``local``, ``arithmetic``) or an alias (``math-500``, ``aime_2024``, ...).
        split: Hub split (default: the source's usual one, e.g. ``test`` for MATH-500). Ignored with
            ``path=`` (a local file is a single split).
        path: Read this local file instead of the Hub; it must have the Hub dataset's columns
            (for ``local`` it is required and ``column_map`` names the columns).
        system_prompt: System message; ``None`` omits it.
        limit: Keep at most this many rows (the first ones, after filtering and deduplication).
        column_map: Only for ``local``: see :func:`load_local`.
        data_source: Value of the ``data_source`` column (default: the registry name).
        user_template: Format string for the user message, with ``{problem}``.
        keep_columns: Source columns to carry over unchanged (e.g. ``["unique_id"]``).
        dedupe: Drop repeated problems (default: only for ``dapo``, whose Hub copy repeats each ~100x).
        hub_id, config, revision: Override the Hub dataset id, config and revision.
        num_proc: Processes for ``Dataset.map``.
        cache_dir: ``datasets`` cache folder.
        report: A dict that loaders which parse rows fill with ``rows_read``, ``dropped_unusable`` (no
            problem text or no gold answer) and ``dropped_duplicates``.

    Returns:
        The dataset (columns ``prompt``, ``answer``, ``data_source``, ``difficulty`` + ``keep_columns``).
    """
    spec = resolve_dataset(name)
    options = LoadOptions(
        split=split,
        path=path,
        system_prompt=system_prompt,
        limit=limit,
        column_map=column_map,
        data_source=data_source,
        user_template=user_template,
        keep_columns=keep_columns,
        dedupe=dedupe,
        hub_id=hub_id,
        config=config,
        revision=revision,
        num_proc=num_proc,
        cache_dir=cache_dir,
        report=report,
    )
    return spec.load(spec, options)
