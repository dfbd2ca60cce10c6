"""Peak memory of the predictivity stage, each measurement in a fresh process.

`measure(side, ...)` starts `python -m benchmarks.memory ...` (this file), which builds the model, runs ONE
predictivity pass over `examples` examples (half TRAIN, half DEV), and prints its own peak resident set as
JSON: `VmHWM` of /proc/self/status, the high-water mark of this process's address space since its exec.
(Not `getrusage(RUSAGE_SELF).ru_maxrss`: on Linux a child's ru_maxrss starts from its PARENT's resident set
at fork time, so every child of a big benchmark process reports the parent's size; it is recorded as
`ru_maxrss_bytes` for comparison.) The child also reports its resident set just before the pass, so the
figures separate the fixed cost (runtime, weights) from what the pass itself adds. The reference child imports torch (and transformers) and no jax;
ours imports jax and no torch.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _vm_kib(field: str) -> int:
    """A /proc/self/status field in KiB (VmRSS: now, VmHWM: peak); 0 where /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def start(side: str, model: str, examples: int, *, folder: str | None, prompt_len: int, text_len: int,
          batch_size: int, seed: int, threads: int, attention: str | None = None, lengths: str = "full",
          max_text_tokens: int = 128, data: str | None = None) -> dict:
    """Starts the child that measures one predictivity pass (side: "reference" | "ours"); see finish().
    lengths "real" needs `data`: the encoded splits written by realdata.save_encoded (the child takes the first
    examples/2 of each and batches them as its side does)."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--side", side, "--model", model,
           "--examples", str(examples), "--prompt_len", str(prompt_len), "--text_len", str(text_len),
           "--batch_size", str(batch_size), "--seed", str(seed), "--threads", str(threads),
           "--lengths", lengths, "--max_text_tokens", str(max_text_tokens)]
    if folder is not None:
        cmd += ["--folder", str(folder)]
    if data is not None:
        cmd += ["--data", str(data)]
    if attention is not None:
        cmd += ["--attention", attention]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=root)
    return dict(proc=proc, cmd=cmd, t0=time.perf_counter(), what=f"{side}, {model}, {examples} examples")


def finish(handle: dict, timeout_s: float = 3600.0) -> dict:
    """Waits for a started child; returns its JSON (peak_rss_bytes, rss_before_pass_bytes, pass_s, ...)."""
    proc = handle["proc"]
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"memory measurement ({handle['what']}) exceeded {timeout_s} s") from None
    # The child reports its own peak (see the module docstring; RUSAGE_CHILDREN in the parent would be a
    # maximum over ALL children so far, and includes the parent's size at fork).
    if proc.returncode != 0:
        raise RuntimeError(f"memory child ({' '.join(handle['cmd'])}) failed with exit code {proc.returncode}:\n"
                           f"{err.decode(errors='replace')[-4000:]}")
    lines = [l for l in out.decode().splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"memory child printed no result:\n{out.decode()[-2000:]}\n{err.decode()[-2000:]}")
    result = json.loads(lines[-1])
    result["wall_s"] = time.perf_counter() - handle["t0"]
    return result


def measure(side: str, model: str, examples: int, **kw) -> dict:
    """Peak RSS (bytes) of a fresh process running one predictivity pass; arguments as start()."""
    return finish(start(side, model, examples, **kw))


def _child(args) -> dict:
    # Threads first: before torch / jax start their pools.
    from benchmarks import run as bench_run
    bench_run.configure_threads(args.threads)
    import resource

    import benchmarks as B
    workload = B.Workload(model=args.model, prompt_len=args.prompt_len, text_len=args.text_len,
                          batch_size=args.batch_size, examples=args.examples, seed=args.seed, lengths=args.lengths,
                          max_text_tokens=args.max_text_tokens)
    if workload.lengths == "real" and args.data is None:
        raise ValueError("--lengths real needs --data (the encoded splits: realdata.save_encoded)")
    if args.side == "reference":
        from benchmarks.torch_reference import Reference, build_model
        model = build_model(args.model, args.seed, attention=args.attention)
        side = Reference(model, workload.prompt_len)
        vocab, emb = model.vocab_size, model.word_embeddings.weight.detach().numpy()
    elif args.side == "ours":
        from benchmarks import ours
        if args.folder is None:
            raise ValueError("--side ours needs --folder (the checkpoint folder both sides share)")
        loaded = ours.load(args.folder)
        side = ours.for_model(args.model, loaded, workload.prompt_len)
        vocab, emb = loaded.config.vocab_size, ours.word_embeddings(loaded)
    else:
        raise ValueError(f"--side must be 'reference' or 'ours', got {args.side!r}")
    prompt = B.initial_prompt(emb, workload.prompt_len, workload.seed)
    if workload.lengths == "full":
        train, dev = B.predictivity_batches(workload, vocab)
    else:   # each side batches the same examples its own way (benchmarks/realdata.py)
        from benchmarks import realdata
        enc = [realdata.load_encoded(args.data, split, workload.examples // 2) for split in ("train", "dev")]
        if args.side == "reference":
            train, dev = (realdata.reference_batches(e, workload.batch_size, workload.max_text_tokens) for e in enc)
        else:
            train, dev = (realdata.ours_predictivity_batches(e, workload.batch_size, side.mesh, enc) for e in enc)
    before = _vm_kib("VmRSS")
    t = time.perf_counter()
    out = side.predictivity(prompt, train, dev)
    seconds = time.perf_counter() - t
    peak = _vm_kib("VmHWM")
    return dict(side=args.side, model=args.model, examples=args.examples,
                rss_before_pass_bytes=before * 1024,
                peak_rss_bytes=(peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
                peak_source="VmHWM" if peak else "ru_maxrss",
                ru_maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                pass_s=seconds, mean_predictivity=float(out["predictivity"].mean()))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="one predictivity pass in this process; prints its peak RSS as JSON")
    p.add_argument("--side", required=True, choices=("reference", "ours"))
    p.add_argument("--model", required=True)
    p.add_argument("--folder", default=None)
    p.add_argument("--examples", type=int, required=True)
    p.add_argument("--prompt_len", type=int, required=True)
    p.add_argument("--text_len", type=int, required=True)
    p.add_argument("--batch_size", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--attention", default=None, help="the reference's attention implementation")
    p.add_argument("--lengths", default="full", choices=("real", "full"))
    p.add_argument("--max_text_tokens", type=int, default=128)
    p.add_argument("--data", default=None, help="lengths real: the .npz of realdata.save_encoded")
    print(json.dumps(_child(p.parse_args(argv))), flush=True)


if __name__ == "__main__":
    main()
