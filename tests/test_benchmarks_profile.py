"""Keeps benchmarks/profile.py working: its HLO reading on a known program, and the --quick run end to end."""
import jax
import jax.numpy as jnp
import pytest

from benchmarks import profile


def test_parse_hlo_finds_the_matmul_its_flops_and_its_op_path():
    def f(a, b):
        return jnp.tanh(a @ b) + 1.0

    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    parsed = profile.parse_hlo(jax.jit(f).lower(a, b).compile().as_text())
    mm = [v for v in parsed.values() if v["matmul"]]
    assert len(mm) == 1, parsed
    assert mm[0]["flops"] == 2 * 8 * 4 * 16
    assert mm[0]["label"].endswith("dot_general"), mm[0]
    assert not any(v["matmul"] for k, v in parsed.items() if "tanh" in v["label"])


def test_op_label_folds_layers_and_marks_the_gradient():
    assert profile.op_label("jit(f)/vmap(jvp(EncoderModel))/layers_9/ffn/wi/dot_general") == \
        "layers_*/ffn/wi/dot_general"
    assert profile.op_label("jit(f)/vmap(transpose(jvp(EncoderModel)))/layers_10/attention/exp") == \
        "backward: layers_*/attention/exp"


def test_quick_profile_writes_every_phase(run_benchmark_module):
    res = run_benchmark_module("benchmarks.profile", timeout=600)
    assert set(res["phases"]) == {"forward", "statistics", "train_step"}
    for name, ph in res["phases"].items():
        assert ph["wall_s_per_call"] > 0 and ph["op_ms_per_call"] > 0 and ph["groups"], name
        assert sum(g["share"] for g in ph["groups"]) <= 1 + 1e-9
        assert ph["unmatched_share"] < 0.5, (name, ph["unmatched_share"])
    fwd = res["phases"]["forward"]
    assert 0 < fwd["matmul_share"] <= 1
    labels = {g["op"] for g in fwd["groups"] if g["matmul"]}
    assert any("ffn/wi" in label for label in labels), labels
    assert res["phases"]["statistics"]["matmul_share"] == 0


def test_bad_sizes_are_refused():
    with pytest.raises(SystemExit, match="--batch_size must be at least 1"):
        profile.parse_args(["--output", "x.json", "--batch_size", "0"])


def test_parse_hlo_reads_long_parameter_lists_and_joined_modules():
    """An ENTRY with more than five parameters carries `/*index=5*/` comments (an "=" before its "{"), and two
    modules joined in one text may both name their entry `main.3`: neither may hide an instruction."""
    from benchmarks import profile
    module = ("HloModule jit_{name}\n\n"
              "%fused_computation (param_0: f32[2]) -> f32[2] {{\n"
              "  ROOT %add.0 = f32[2]{{0}} add(f32[2]{{0}} %param_0, f32[2]{{0}} %param_0)\n}}\n\n"
              "ENTRY %main.3 (a: f32[2], b: f32[2], c: f32[2], d: f32[2], e: f32[2], /*index=5*/f: f32[2]) -> f32[2] {{\n"
              "  ROOT %{name}_fusion = f32[2]{{0}} fusion(f32[2]{{0}} %a), kind=kLoop, calls=%fused_computation, "
              "metadata={{op_name=\"jit(f)/{name}\"}}\n}}\n")
    parsed = profile.parse_hlo(module.format(name="first") + "\n" + module.format(name="second"))
    assert {"first_fusion", "second_fusion"} <= set(parsed)
