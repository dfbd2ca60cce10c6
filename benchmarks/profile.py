"""Where our time goes: XLA's own per-op timings of the benchmark's compiled functions, grouped by model op.

    python -m benchmarks.profile --model roberta-base-random --output PROFILE.json
    python -m benchmarks.profile --model minilm --text_len 48 --output PROFILE.json
    python -m benchmarks.profile --quick --output PROFILE.json          # tiny model (the smoke test)

Three phases, each profiled alone on one batch shape (prompt + `text_len` tokens, every row real):
  forward:     the predictivity pass's capturing forward (benchmarks/ours.py: stages/predictivity.make_forward)
  statistics:  the streaming updates it feeds (eq. 2 baseline sums on TRAIN, eq. 3 counts on DEV)
  train_step:  one prompt-tuning step (forward, gradient w.r.t. the prompt, AdamW)
Each phase runs `--repeats` times under jax.profiler.trace after a warm-up call; the XLA CPU runtime records
every executed op (fusion, dot, copy, ...) by its HLO instruction name, which is looked up in the phase's
compiled HLO: the instruction's JAX op path (e.g. `layers_*/ffn/wi/dot_general`, layer indices folded, the
gradient pass marked `backward:`) and whether it is a matrix multiplication (a dot, or a fusion around one,
such as XLA's YNNPACK dot fusions). The JSON lists, per phase, the wall time per call, the summed op time per
call (ops on the two cores can overlap, so it can exceed the wall time), the matmul share of the op time and
the op groups by time; the matmul groups also carry their GFLOP/s (from the dots' shapes). The PyTorch side
is not profiled: its forward is timed in benchmarks/run.py.
"""
from __future__ import annotations

import argparse
import collections
import glob
import re
import statistics
import sys
import tempfile
import time

# Runtime bookkeeping, not op work: the executor's own spans (matched anywhere in the name), the thread pool's
# region markers and the zero-length "end:" markers of asynchronous ops.
SKIPPED_EVENTS = ("end: ", "ThreadpoolListener")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_SHAPE = re.compile(r"[a-z]+\d*\[([\d,]*)\]")


def _dims(text: str) -> list[int]:
    m = _SHAPE.search(text)
    return [int(d) for d in m.group(1).split(",") if d] if m else []


def _dot_flops(line: str, shapes: dict) -> int:
    """2 * output elements * contracted size of one HLO `dot` line."""
    out = _dims(line.split("=", 1)[1])
    args = re.search(r"\bdot\(([^)]*)\)", line)
    contract = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
    if not (args and contract):
        return 0
    lhs = args.group(1).split(",")[0].strip()
    lhs_dims = _dims(lhs) or shapes.get(lhs.split()[-1].lstrip("%"), [])
    k = 1
    for i in contract.group(1).split(","):
        if i and int(i) < len(lhs_dims):
            k *= lhs_dims[int(i)]
    n = 1
    for d in out:
        n *= d
    return 2 * n * k


def op_label(op_name: str) -> str:
    """JAX op path -> group label: layer indices folded, jit/vmap wrappers dropped, the gradient pass marked."""
    backward = "transpose(" in op_name
    parts = [p for p in op_name.split("/") if "(" not in p]
    label = re.sub(r"(layers|block)_\d+", r"\1_*", "/".join(parts)) or op_name
    return ("backward: " if backward else "") + label


def parse_hlo(text: str) -> dict:
    """Compiled HLO text -> {instruction name: {"label", "matmul", "flops"}} for every instruction that calls a
    fused computation or is a dot (the units the CPU runtime executes and the profiler names). Several modules
    joined in one text are parsed module by module: their computations may share names (two ENTRY `main.N`)."""
    modules = re.split(r"(?m)^(?=HloModule )", text)
    if sum(1 for m in modules if m.startswith("HloModule ")) > 1:
        return {name: info for module in modules if module.strip() for name, info in parse_hlo(module).items()}
    computations: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = _COMPUTATION.match(line)
        # a header has no "=" before its "{" once the /*index=5*/ comments of long parameter lists are dropped
        if m and "=" not in re.sub(r"/\*.*?\*/", "", line).split("{")[0]:
            current = m.group(1)
            computations[current] = []
        elif current is not None:
            if line.strip() == "}":
                current = None
            else:
                computations[current].append(line)
    shapes = {}
    for lines in computations.values():
        for line in lines:
            m = _INSTRUCTION.match(line)
            if m:
                shapes[m.group(1)] = _dims(m.group(2))
    meta = lambda line: (re.search(r'op_name="([^"]*)"', line) or [None, ""])[1]
    # Instructions inside fused computations run as part of their fusion, never alone.
    fused = {m.group(1) for lines in computations.values() for line in lines if re.search(r"\bfusion\(", line)
             for m in [re.search(r"calls=%?([\w.\-]+)", line)] if m}
    out = {}
    for comp, lines in computations.items():
        if comp in fused:
            continue
        for line in lines:
            m = _INSTRUCTION.match(line)
            if not m:
                continue
            name, rest = m.groups()
            called = re.search(r"calls=%?([\w.\-]+)", rest)
            body = computations.get(called.group(1), []) if called else []
            dots = [l for l in body if re.search(r"\bdot\(", l)]
            if re.search(r"\bdot\(", rest):
                dots = [line]
            if not (called or dots):
                continue
            label = op_label(meta(dots[0]) if dots and meta(dots[0]) else meta(line) or name)
            out[name] = dict(label=label, matmul=bool(dots), flops=sum(_dot_flops(l, shapes) for l in dots))
    return out


def op_times(trace_dir: str) -> dict[str, int]:
    """Summed duration (ns) per XLA op name in a jax.profiler trace (the runtime's worker threads)."""
    import jax

    files = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    if not files:
        raise RuntimeError(f"jax.profiler wrote no trace under {trace_dir}")
    data = jax.profiler.ProfileData.from_file(files[0])
    times: dict[str, int] = collections.Counter()
    for plane in data.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            for ev in line.events:
                if ev.name.startswith(SKIPPED_EVENTS) or "ThunkExecutor" in ev.name or "Await" in ev.name:
                    continue
                times[ev.name] += int(ev.duration_ns)
    return times


def profile_phase(fn, hlo_text: str, repeats: int, top: int) -> dict:
    """Profiles `fn` (already warmed up): wall time per call and the op groups by time."""
    import jax

    instructions = parse_hlo(hlo_text)
    walls = []
    with tempfile.TemporaryDirectory(prefix="skn_profile_") as d:
        with jax.profiler.trace(d):
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                walls.append(time.perf_counter() - t)
        times = op_times(d)
    groups: dict[tuple, list] = collections.defaultdict(lambda: [0, 0, 0])
    unmatched = 0
    for name, ns in times.items():
        info = instructions.get(name)
        if info is None:
            base = re.sub(r"\.\d+$", "", name)
            info = dict(label=f"(other) {base}", matmul=base in ("dot", "ynn_fusion"), flops=0)
            unmatched += ns
        g = groups[(info["label"], info["matmul"])]
        g[0] += ns
        g[1] += info["flops"]
        g[2] += 1
    total = sum(g[0] for g in groups.values()) or 1
    matmul = sum(g[0] for (label, mm), g in groups.items() if mm)
    rows = []
    for (label, mm), (ns, flops, count) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        row = dict(op=label, matmul=mm, ms_per_call=ns / repeats / 1e6, share=ns / total, ops_per_call=count)
        if mm and flops:
            # FLOPs per call / ns per call = GFLOP/s; ops that overlap on the cores each count their full span
            row["gflops"] = flops * repeats / ns
        rows.append(row)
    return dict(wall_s_per_call=statistics.median(walls), op_ms_per_call=total / repeats / 1e6,
                matmul_share=matmul / total, unmatched_share=unmatched / total, repeats=repeats, groups=rows[:top],
                groups_left_out=max(0, len(rows) - top))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="JSON file to write")
    p.add_argument("--model", default="roberta-base-random",
                   choices=("minilm", "roberta-base-random", "tiny-roberta-random", "tiny-bert-random"))
    p.add_argument("--quick", action="store_true", help="tiny-roberta-random, small batch (the smoke test)")
    p.add_argument("--text_len", type=int, default=48, help="text tokens per row (the benchmark's tweets: 32-64)")
    p.add_argument("--prompt_len", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=32, help="predictivity batch (forward, statistics)")
    p.add_argument("--train_batch_size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top", type=int, default=25, help="op groups listed per phase")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.text_len, args.prompt_len = "tiny-roberta-random", 8, 4
        args.batch_size, args.train_batch_size, args.repeats = 4, 4, 2
    for key in ("text_len", "prompt_len", "batch_size", "train_batch_size", "repeats", "top"):
        if getattr(args, key) < 1:
            raise SystemExit(f"--{key} must be at least 1, got {getattr(args, key)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax
    import numpy as np

    import benchmarks as B
    from benchmarks import ours as ours_mod
    from benchmarks.realdata import model_inputs
    from benchmarks.torch_reference import build_model
    from skillneurons_jax import io
    from skillneurons_jax import parallel
    from skillneurons_jax.neurons import predictivity as stats

    tmodel = build_model(args.model, args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="skn_profile_model_")
    ours = ours_mod.for_model(args.model, ours_mod.load(ours_mod.checkpoint_folder(args.model, tmodel, tmp.name)),
                              args.prompt_len)
    prompt = B.initial_prompt(tmodel.word_embeddings.weight.detach().numpy(), args.prompt_len, args.seed)
    rng = np.random.default_rng(args.seed)

    def batch(rows):
        return dict(input_ids=rng.integers(5, min(1000, tmodel.vocab_size), (rows, args.text_len)).astype(np.int32),
                    attention_mask=np.ones((rows, args.text_len), np.int32),
                    labels=(np.arange(rows) % 2).astype(np.int32), example_mask=np.ones(rows, bool))

    prompts = ours._prompts(prompt)
    dev = parallel.shard_batch(model_inputs(batch(args.batch_size)), ours.mesh)
    fwd_args = (ours.params, prompts, dev)
    forward = lambda: jax.block_until_ready(ours.capture_forward(*fwd_args))
    acts = forward()[1]["encoder"]
    state0 = stats.init_baseline(stats.block_state_shape(acts))
    unrolled = stats._unrolled(acts)
    acc0 = stats.init_accuracy(state0.total)   # any threshold of the right shape: the counts' cost is the same
    stat_calls = [(stats._update_baseline, (state0, acts, dev["example_mask"], None)),
                  (stats._update_accuracy, (acc0, acts, dev["labels"], dev["example_mask"], None))]
    statistics_fn = lambda: jax.block_until_ready([f(*a, unrolled=unrolled) for f, a in stat_calls])
    statistics_hlo = "\n".join(f.lower(*a, unrolled=unrolled).compile().as_text() for f, a in stat_calls)

    step, _ = ours.make_train_step(prompt)
    train_batch = batch(args.train_batch_size)
    step(train_batch)
    train_hlo = step.compiled_text(train_batch)

    phases = {"forward": (forward, ours.capture_forward.lower(*fwd_args).compile().as_text()),
              "statistics": (statistics_fn, statistics_hlo),
              "train_step": (lambda: step(train_batch), train_hlo)}
    result = dict(model=args.model, prompt_len=args.prompt_len, text_len=args.text_len,
                  batch_size=args.batch_size, train_batch_size=args.train_batch_size,
                  layers=tmodel.num_layers, hidden=tmodel.hidden, intermediate=tmodel.intermediate, phases={})
    for name, (fn, hlo) in phases.items():
        fn()  # warm-up (compiled already; first-call effects stay out of the trace)
        result["phases"][name] = profile_phase(fn, hlo, args.repeats, args.top)
    result["versions"] = io.package_versions()
    result["command"] = " ".join(["python", "-m", "benchmarks.profile"] + list(argv or sys.argv[1:]))
    io.atomic_write_json(args.output, result)
    for name, ph in result["phases"].items():
        print(f"{name}: {ph['wall_s_per_call'] * 1e3:.1f} ms per call, op time {ph['op_ms_per_call']:.1f} ms, "
              f"matmuls {100 * ph['matmul_share']:.1f} %")
        for g in ph["groups"][:12]:
            rate = f" {g['gflops']:.0f} GFLOP/s" if "gflops" in g else ""
            print(f"  {g['ms_per_call']:9.1f} ms {100 * g['share']:5.1f} %  {'[mm] ' if g['matmul'] else ''}"
                  f"{g['op']}{rate}")
    tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
