"""benchmarks.device (examples/s and MFU of the training step and the predictivity pass) and the accelerator
table behind it and behind `launch.reproduce --dry_run`'s estimate on a named accelerator."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

import reproduce_fixtures as rf
from benchmarks import device
from skillneurons_jax import accelerators
from skillneurons_jax.pipeline import build  # noqa: E402
from skillneurons_jax.pipeline.settings import StudySettings  # noqa: E402


def test_forward_flops_of_roberta_base_and_t5_base_by_hand():
    S, H, F, L = 228, 768, 3072, 12
    enc = L * (8 * S * H * H + 4 * S * S * H + 4 * S * H * F)
    r = device.forward_flops(device.SHAPES["roberta-base"])
    assert r["forward"] == enc and r["train_step"] == 2 * r["weight"] + 3 * r["attention"]
    t = device.forward_flops(device.SHAPES["t5-base"])
    decoder = L * (12 * H * H + 4 * S * H * H + 4 * H * F + 4 * H + 4 * S * H)
    assert t["forward"] == enc + decoder
    assert 38e9 < r["forward"] < 42e9    # ~2 x 85M non-embedding parameters x 228 positions, plus attention


def test_known_accelerators_and_their_peaks():
    assert accelerators.known("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert accelerators.known("NVIDIA H200") == "h200"
    assert accelerators.known("NVIDIA A100-SXM4-40GB") == "a100"
    assert accelerators.known("TPU v4") == "tpu-v4" and accelerators.known("TPU v5 lite") == "tpu-v5e"
    assert accelerators.known("cpu") is None
    assert accelerators.datasheet_peak("a100", "bfloat16") == 312e12
    assert accelerators.datasheet_peak("tpu-v4", "float32") is None
    label, rate = accelerators.accelerator_rate("989e12", chips=8, utilisation=0.5)
    assert rate == pytest.approx(8 * 0.5 * 989e12) and "8 x" in label
    with pytest.raises(ValueError, match="unknown accelerator 'gpu9000'"):
        accelerators.accelerator_rate("gpu9000")
    with pytest.raises(ValueError, match="utilisation"):
        accelerators.accelerator_rate("a100", utilisation=0)


def test_sweep_estimate_scales_with_the_accelerator_rate(tmp_path):
    model = rf.make_model(tmp_path)
    data = rf.write_data(tmp_path / "data")
    settings = StudySettings.from_config(rf.config(model, data, tasks="sst2,mrpc"), tmp_path / "w")
    settings = settings.replace(cost=dataclasses.replace(settings.cost, stage_overhead_s=0.0))
    # cost = fixed part (the report stage) + FLOPs / rate; a rate 1000x faster divides the second part by 1000
    slow, n, skipped = build.sweep_seconds(settings, 1e6)
    fast, _, _ = build.sweep_seconds(settings, 1e9)
    fixed, _, _ = build.sweep_seconds(settings, 1e18)
    assert n > 0 and slow - fixed > 1000
    assert fast - fixed == pytest.approx((slow - fixed) / 1000, rel=0.05)
    lines = build.format_estimate(settings, "h100-sxm", chips=2, utilisation=0.5)
    assert "2 x h100-sxm" in lines[-1] and f"{2 * 0.5 * 989e12:.3g} FLOP/s" in lines[-1]
    assert not (tmp_path / "w").exists(), "estimating must write nothing"


def test_reproduce_dry_run_prints_the_accelerator_estimate(tmp_path):
    model = rf.make_model(tmp_path)
    data = rf.write_data(tmp_path / "data")
    config = tmp_path / "tiny_config.py"
    config.write_text(f"import sys\nsys.path.insert(0, {str(rf.__file__.rsplit(os.sep, 1)[0])!r})\n"
                      f"import reproduce_fixtures\n\ndef get_config():\n    return reproduce_fixtures.config("
                      f"{str(model)!r}, {str(data)!r}, tasks='sst2')\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "launch.reproduce", f"--config={config}", "--dry_run",
                          f"--workdir={tmp_path / 'w'}", "--accelerator=tpu-v4", "--accelerator_chips=4"],
                         cwd=repo, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": repo})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[estimate]   this machine" in out.stdout and "4 x tpu-v4" in out.stdout, out.stdout[-2000:]


@pytest.mark.slow
def test_device_benchmark_quick_on_cpu(run_benchmark_module):
    out = run_benchmark_module("benchmarks.device", timeout=900)
    assert out["backend"] == "cpu" and out["quick"] is True
    for dtype in ("float32", "bfloat16"):
        assert out["peaks"][dtype]["measured"]["flops_per_second"] > 1e8
        assert out["peaks"][dtype]["datasheet"]["flops_per_second"] is None   # a CPU is not in the table
    rows = {(r["model"], r["dtype"]): r for r in out["results"]}
    assert set(rows) == {(m, d) for m in ("tiny-roberta", "tiny-t5") for d in ("float32", "bfloat16")}
    for row in rows.values():
        for part, flops in (("train", row["flops_per_example"]["train_step"]),
                            ("predictivity", row["flops_per_example"]["forward"])):
            r = row[part]
            assert r["examples_per_second"] > 0
            assert r["model_flops_per_second"] == pytest.approx(r["examples_per_second"] * flops)
            assert 0 < r["mfu"]["measured"] and r["mfu"]["datasheet"] is None
        assert row["train"]["loss_finite"] and row["predictivity"]["pred_in_range"]
        assert row["predictivity"]["pred_shape"] == [row["shape"]["layers"], row["shape"]["intermediate"]]
    json.dumps(out)
