"""A vLLM worker process of :class:`bnpo_trl.evaluation.vllm_backend.VLLMBackend`.

Run as a script, never imported: ``python _vllm_worker.py SPEC_JSON OUT_JSON``. It imports only the
standard library and vLLM (not bnpo_trl, not the training stack), so each data-parallel shard is a
clean process on its own GPUs that frees them when it exits.

SPEC_JSON: ``{"llm": <vllm.LLM kwargs>, "sampling": <SamplingParams kwargs>, "seeds": [one per prompt],
"prompt_token_ids": [[...], ...], "progress": bool}``. OUT_JSON: ``{"texts", "lengths", "terminated"}``,
each ``[prompt][sample]`` in sample-index order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run(spec_path: str, out_path: str) -> None:
    """Read the spec, generate, write texts/lengths/terminated."""
    spec = json.loads(Path(spec_path).read_text())
    from vllm import LLM, SamplingParams

    llm = LLM(**spec["llm"])
    params = [SamplingParams(**spec["sampling"], seed=s) for s in spec["seeds"]]
    prompts = [{"prompt_token_ids": ids} for ids in spec["prompt_token_ids"]]
    outputs = llm.generate(prompts, params, use_tqdm=spec.get("progress", True))
    result: dict[str, list] = {"texts": [], "lengths": [], "terminated": []}
    for output in outputs:
        samples = sorted(output.outputs, key=lambda o: o.index)
        result["texts"].append([o.text for o in samples])
        result["lengths"].append([len(o.token_ids) for o in samples])
        result["terminated"].append([o.finish_reason == "stop" for o in samples])
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    # This file's folder (the evaluation package) comes first on sys.path when run as a script; drop it
    # so that its module names cannot shadow anything vLLM imports.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: python {Path(__file__).name} SPEC_JSON OUT_JSON")
    run(sys.argv[1], sys.argv[2])
