"""What a ``pip install bnpo-trl`` user gets: a wheel, installed into a fresh virtual environment with no
checkout on the path, lists the shipped recipes and runs the quickstart from an empty folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with only the wheel installed; its dependencies come from this interpreter's
    site-packages through a .pth line (which, unlike a site dir, does not run this checkout's editable
    install hook), so the package can only be imported from the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    _run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp / "dist")], cwd=tmp
    )
    (wheel,) = (tmp / "dist").glob("bnpo_trl-*.whl")
    env_dir = tmp / "fresh"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], cwd=tmp)
    return env_dir


@pytest.mark.slow
def test_wheel_imports_from_itself_and_ships_the_configs(installed, tmp_path):
    code = "import bnpo_trl, bnpo_trl.cli as c; print(bnpo_trl.__file__); print(len(c.shipped_configs()))"
    out = _run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path).stdout.split()
    assert Path(out[0]).is_relative_to(installed) and not Path(out[0]).is_relative_to(ROOT)
    shipped = sorted(p.relative_to(ROOT / "bnpo_trl" / "configs").as_posix()
                     for p in (ROOT / "bnpo_trl" / "configs").rglob("*.yaml"))  # fmt: skip
    assert int(out[1]) == len(shipped)
    listing = _run([str(installed / "bin" / "bnpo-trl"), "recipes"], cwd=tmp_path).stdout
    assert all(name in listing for name in shipped)
    _run([str(installed / "bin" / "bnpo-trl"), "recipes", "--copy", "mine"], cwd=tmp_path)
    assert (
        sorted(p.relative_to(tmp_path / "mine").as_posix() for p in (tmp_path / "mine").rglob("*.yaml"))
        == shipped
    )


@pytest.mark.slow
def test_wheel_runs_the_quickstart_from_an_empty_folder(installed, tmp_path):
    fast = ["--max_steps", "2", "--sft_warmup", "false", "--dataset_limit", "64", "--eval_dataset_limit", "16",
            "--per_device_train_batch_size", "16", "--heldout_eval_steps", "0", "--disable_tqdm", "true"]  # fmt: skip
    proc = _run([str(installed / "bin" / "bnpo-trl"), "quickstart", *fast], cwd=tmp_path)
    assert "Held-out accuracy:" in proc.stdout
    summary = json.loads((tmp_path / "outputs" / "quickstart" / "run_summary.json").read_text())
    assert summary["steps"] == 2 and "accuracy_before" in summary and "accuracy_after" in summary
