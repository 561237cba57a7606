"""Checkpoint folders: which are complete, which one to resume from, and the normalizer state inside them.

transformers writes a checkpoint in this order: model (our ``normalizer_state.json`` is written right after
it, in :meth:`NormalizedGRPOTrainer.save_model`), optimizer, scheduler, RNG, ``trainer_state.json``, Hub push,
rotation of older checkpoints. A checkpoint is *complete* when ``trainer_state.json`` parses and, for a
stateful normalizer, ``normalizer_state.json`` does too; a kill anywhere in that sequence leaves the newest
folder incomplete and the previous one complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

__all__ = [
    "NORMALIZER_STATE_FILE",
    "auto_resume_checkpoint",
    "checkpoint_problem",
    "checkpoint_step",
    "checkpoint_to_resume",
    "complete_checkpoints",
    "read_normalizer_state",
    "resolve_resume",
    "write_normalizer_state",
]

logger = logging.getLogger(__name__)

NORMALIZER_STATE_FILE = "normalizer_state.json"
TRAINER_STATE_FILE = "trainer_state.json"
#: Entries of an output_dir that do not make it "an earlier run's output" (logging only).
_IGNORED_ENTRIES = {"runs", "logs", ".gitignore"}
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_TRUE = {"true", "yes", "1", "last", "latest"}
_FALSE = {"", "false", "no", "0", "none", "null"}


def _parses(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def checkpoint_problem(folder: str | os.PathLike, needs_state: bool) -> str | None:
    """Why ``folder`` cannot be resumed from (``None`` when it is complete)."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not _parses(folder / TRAINER_STATE_FILE):
        return f"{folder} has no readable {TRAINER_STATE_FILE} (the save was interrupted)"
    if needs_state and not (folder / NORMALIZER_STATE_FILE).exists():
        return f"{folder} has no {NORMALIZER_STATE_FILE} (written by another trainer, or the save was interrupted)"
    return None


def checkpoint_step(folder: str | os.PathLike) -> int:
    """The ``global_step`` recorded in a complete checkpoint's ``trainer_state.json``."""
    return int(json.loads((Path(folder) / TRAINER_STATE_FILE).read_text())["global_step"])


def complete_checkpoints(output_dir: str | os.PathLike, needs_state: bool) -> list[Path]:
    """The complete ``checkpoint-<step>`` folders of ``output_dir``, newest first; incomplete newer ones are
    skipped with a warning."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    complete = []
    for _, folder in sorted(found, reverse=True):
        problem = checkpoint_problem(folder, needs_state)
        if problem is None:
            complete.append(folder)
        elif not complete:
            logger.warning("Skipping the incomplete checkpoint %s: %s.", folder, problem)
    return complete


def resolve_resume(value: Any, output_dir: str | os.PathLike, needs_state: bool) -> str | None:
    """``resume_from_checkpoint`` as YAML or the command line gives it -> a checkpoint folder or ``None``.

    ``true``/``"true"``/``"last"`` -> the newest complete checkpoint of ``output_dir``; ``false``/``"false"``/
    ``None`` -> ``None``; a path must be a complete checkpoint.
    """
    if value is None or value is False:
        return None
    text = str(value).strip()
    if value is True or text.lower() in _TRUE:
        complete = complete_checkpoints(output_dir, needs_state)
        if not complete:
            raise ValueError(
                f"resume_from_checkpoint=true but {output_dir} has no complete checkpoint to resume from; "
                "start without resume_from_checkpoint or give a checkpoint folder."
            )
        return str(complete[0])
    if text.lower() in _FALSE:
        return None
    problem = checkpoint_problem(text, needs_state)
    if problem is not None:
        hint = (
            " Set allow_fresh_normalizer_state: true to resume it with a fresh normalizer state."
            if NORMALIZER_STATE_FILE in problem
            else ""
        )
        raise ValueError(f"Cannot resume from {text}: {problem}.{hint}")
    return text


def auto_resume_checkpoint(output_dir: str | os.PathLike, needs_state: bool) -> str | None:
    """``auto_resume``: the newest complete checkpoint of ``output_dir``, ``None`` for a new or empty folder,
    and an error for a folder that holds another run's output but no complete checkpoint."""
    complete = complete_checkpoints(output_dir, needs_state)
    if complete:
        logger.warning("auto_resume: resuming from %s.", complete[0])
        return str(complete[0])
    root = Path(output_dir)
    leftovers = (
        sorted(p.name for p in root.iterdir() if p.name not in _IGNORED_ENTRIES) if root.is_dir() else []
    )
    if leftovers:
        raise ValueError(
            f"auto_resume: output_dir {output_dir} is not empty ({', '.join(leftovers[:5])}) but has no complete "
            "checkpoint to resume from. Choose a new output_dir, or set auto_resume: false to train over it."
        )
    return None


def checkpoint_to_resume(
    value: Any, output_dir: str | os.PathLike, auto_resume: bool, needs_state: bool
) -> str | None:
    """The checkpoint a run resumes from: ``resume_from_checkpoint`` (``value``) resolved by
    :func:`resolve_resume`, else with ``auto_resume`` the choice of :func:`auto_resume_checkpoint`."""
    checkpoint = resolve_resume(value, output_dir, needs_state)
    if checkpoint is None and auto_resume:
        checkpoint = auto_resume_checkpoint(output_dir, needs_state)
    return checkpoint


def write_normalizer_state(folder: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``normalizer_state.json`` atomically (a temporary file, then ``os.replace``)."""
    path = Path(folder) / NORMALIZER_STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{NORMALIZER_STATE_FILE}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def read_normalizer_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The payload of ``folder/normalizer_state.json``; a clear error for a truncated or foreign file."""
    path = Path(folder) / NORMALIZER_STATE_FILE
    try:
        payload = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}): the file is truncated or corrupt. Resume from an earlier "
            "checkpoint, or set allow_fresh_normalizer_state: true and delete the file to start the state fresh."
        ) from err
    if not isinstance(payload, dict) or not {"normalizer", "state"} <= set(payload):
        raise ValueError(
            f"{path} is not a bnpo-trl normalizer state (expected an object with 'normalizer' and 'state')."
        )
    return payload
