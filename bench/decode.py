#!/usr/bin/env python3
"""Decode speed: r1kit's rollout engine against transformers' `generate`, same model and batch.

    python bench/decode.py [--model DIR] [--rows 256] [--prompt 64] [--new 256] [--out R.json]

Without --model it builds the random Qwen2.5-0.5B-shaped bf16 model of bench/vs_trl.py's gpu
preset. Every row samples exactly --new tokens (stop tokens masked), temperature 1. Paths:
  hf      : model.generate(do_sample=True, min_new_tokens=new), dynamic KV cache
  hf-static: the same with cache_implementation="static"
  r1kit   : r1kit.rollout.generate (lean forward, preallocated cache, CUDA graphs on CUDA),
            without sampling log-probs (as `generate`, which returns none by default)
  r1kit-eager: the same without CUDA graphs
  r1kit-compiled: r1kit with its sampling arithmetic compiled (GRPO's compile = auto on CUDA)
  r1kit-compiled-layers: the same with each decoder layer compiled inside the CUDA graphs
            (r1kit.lean.COMPILE_DECODE_LAYERS; off by default until measured here)
--agree: the compiled r1kit paths against r1kit's plain graphs, same seed, with sampling
log-probs: the share of rows whose tokens are all the same, the mean position where a row's
tokens first differ, and the largest log-prob difference before that (compiled kernels round
bf16 otherwise, so a row may take another token where two are almost equally likely).
--parts (r1kit): where r1kit's decode time goes: seconds spent capturing CUDA graphs per
call, milliseconds per replay of the longest graph alone, and per sampling of one token per row
(the exponential race over the vocabulary) alone.
Reported: milliseconds per decode step (whole call / new tokens, prefill included), and for
r1kit the fraction of the memory-bandwidth floor reached: the bytes a decode step must read
(all weights once, plus the KV cache of the positions attended to) at the copy bandwidth
measured on the same device, divided by the measured step time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_trl import build_gpu_model, make_prompts


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps: int) -> list[float]:
    fn()  # warm-up (and graph capture)
    out = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def copy_bandwidth(dev) -> float:
    """Bytes per second of a large device-to-device copy (read + write)."""
    if dev.type != "cuda":
        return float("nan")
    x = torch.empty(2 * 2**30, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    secs = timed(lambda: y.copy_(x), 5)
    return 2 * x.numel() / statistics.median(secs)


@torch.no_grad()
def parts(model, prompts, args, call) -> dict:
    """Graph captures per call, one replay alone and one sampling alone (module docstring)."""
    from r1kit import rollout

    captures: list[float] = []
    real = rollout.LeanDecoder._capture

    def timed_capture(self, b, attend):
        sync()
        t = time.perf_counter()
        out = real(self, b, attend)
        sync()
        captures.append(time.perf_counter() - t)
        return out

    rollout.LeanDecoder._capture = timed_capture
    try:
        calls = []
        for _ in range(2):
            captures.clear()
            sync()
            t = time.perf_counter()
            call()
            sync()
            calls.append({"seconds": time.perf_counter() - t, "captures": len(captures),
                          "capture_seconds": sum(captures)})
    finally:
        rollout.LeanDecoder._capture = real
    from r1kit.lean import LeanLM

    P = max(len(p) for p in prompts)
    # on a CPU (a dry run) the graph path's logic runs eagerly
    dec = rollout.LeanDecoder(LeanLM(model), True, simulate_graphs=not torch.cuda.is_available())
    dec.begin(args.rows, P + args.new)
    graph, logits = dec._capture(args.rows, P + args.new)
    reps = 100

    def replays():
        for _ in range(reps):
            dec.start.fill_(P)
            graph.replay()

    replay_ms = 1000 * statistics.median(timed(replays, 3)) / reps
    gen = torch.Generator(device=logits.device).manual_seed(0)
    sample_ms = 1000 * statistics.median(timed(lambda: [rollout.race_sample(
        logits, 1.0, gen) for _ in range(reps)], 3)) / reps
    dec.release()
    out = {"calls": calls, "replay_ms_longest": replay_ms, "race_sample_ms": sample_ms}
    print(f"parts: calls {calls}; one replay of the longest graph {replay_ms:.3f} ms, one "
          f"race sampling {sample_ms:.3f} ms", flush=True)
    return out


def agreement(plain, others: dict) -> dict:
    """Rows of each rollout in `others` against `plain` (module docstring, --agree)."""
    out = {}
    for name, ro in others.items():
        differ = ro.completion_ids != plain.completion_ids  # [rows, T]
        first = torch.where(differ.any(1), differ.int().argmax(1),
                            torch.full_like(differ[:, 0], differ.shape[1], dtype=torch.long))
        before = torch.arange(differ.shape[1], device=first.device)[None] < first[:, None]
        gap = ((ro.logprobs - plain.logprobs).abs() * before).max().item()
        out[name] = {"rows_identical": (~differ.any(1)).float().mean().item(),
                     "mean_first_difference": first.float().mean().item(),
                     "max_logprob_diff_before_it": gap}
        print(f"{name}: {100 * out[name]['rows_identical']:.1f}% of rows identical to r1kit's "
              f"plain graphs, first difference at token {out[name]['mean_first_difference']:.1f} "
              f"on average, log-probs within {gap:.4f} before it", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=64, help="(built model only) prompt tokens")
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--paths", default="hf,hf-static,r1kit-eager,r1kit")
    ap.add_argument("--parts", action="store_true", help="r1kit's decode time by part")
    ap.add_argument("--agree", action="store_true",
                    help="compiled paths' tokens and log-probs against r1kit's plain graphs")
    ap.add_argument("--length-bucket", type=int, default=None,
                    help="r1kit: cache slots per CUDA-graph length bucket (default: r1kit's)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.length_bucket:
        import r1kit.rollout

        r1kit.rollout.LENGTH_BUCKET = args.length_bucket
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from r1kit.rollout import generate

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    path = args.model
    if path is None:
        path = tempfile.mkdtemp(prefix="decode-model-")
        build_gpu_model(Path(path))
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(dev).eval()
    texts = [q for q, _ in make_prompts("gpu", args.rows)]
    prompts = [tok(t)["input_ids"] for t in texts]
    eos = model.generation_config.eos_token_id
    res = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "rows": args.rows, "new_tokens": args.new,
           "prompt_tokens": max(len(p) for p in prompts), "paths": {}}

    def hf(static: bool):
        enc = tok(texts, return_tensors="pt", padding=True).to(dev)
        extra = {"cache_implementation": "static"} if static else {}
        with torch.no_grad():
            model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                           max_new_tokens=args.new, min_new_tokens=args.new, pad_token_id=0,
                           **extra)

    def ours(graphs: bool, compiled: bool = False, layers: bool = False,
             logprobs: bool = False):
        import r1kit.lean

        r1kit.lean.COMPILE_DECODE_LAYERS = layers
        gen = torch.Generator(device=dev).manual_seed(0)
        return generate(model, prompts, group_size=1, max_new_tokens=args.new,
                        min_new_tokens=args.new, temperature=1.0, stop_ids=[eos], pad_id=0,
                        generator=gen, max_rows=args.rows, cuda_graphs=graphs,
                        logprobs=logprobs, compiled=compiled)

    runs = {"hf": lambda: hf(False), "hf-static": lambda: hf(True),
            "r1kit-eager": lambda: ours(False), "r1kit": lambda: ours(True),
            "r1kit-compiled": lambda: ours(True, True),
            "r1kit-compiled-layers": lambda: ours(True, True, True)}
    for name in args.paths.split(","):
        try:
            secs = timed(runs[name], args.reps)
        except Exception as exc:  # report a path that fails, keep measuring the others
            res["paths"][name] = {"error": repr(exc)[:500]}
            print(f"{name:12s} failed: {exc!r}"[:300], flush=True)
            continue
        ms = 1000 * statistics.median(secs) / args.new
        res["paths"][name] = {"seconds": secs, "ms_per_decode_step": ms,
                              "tokens_per_s": args.rows * args.new / statistics.median(secs)}
        print(f"{name:12s} {ms:8.2f} ms per decode step  "
              f"{res['paths'][name]['tokens_per_s']:,.0f} tokens/s", flush=True)
    if args.agree:
        res["agree"] = agreement(ours(True, logprobs=True), {
            name: ours(True, True, name.endswith("layers"), logprobs=True)
            for name in ("r1kit-compiled", "r1kit-compiled-layers")})
    if args.parts:
        res["parts"] = parts(model, prompts, args, lambda: ours(True))
    # the floor: weights once per step, plus the keys and values of the positions attended to
    cfg = model.config
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_pos = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * dtype.itemsize
    mean_positions = res["prompt_tokens"] + args.new / 2
    need = weight_bytes + args.rows * per_pos * mean_positions
    bw = copy_bandwidth(dev)
    res.update({"weight_bytes": weight_bytes, "bytes_per_step_needed": need,
                "copy_bandwidth_bytes_per_s": bw, "floor_ms_per_step": 1000 * need / bw})
    for name, r in res["paths"].items():
        if "ms_per_decode_step" in r:
            r["fraction_of_bandwidth_floor"] = res["floor_ms_per_step"] / r["ms_per_decode_step"]
    base = res["paths"].get("hf", {}).get("ms_per_decode_step")
    for name, r in res["paths"].items():
        if base and "ms_per_decode_step" in r:
            r["speedup_vs_hf"] = base / r["ms_per_decode_step"]
    print(f"floor {res['floor_ms_per_step']:.3f} ms per step ({need / 1e9:.2f} GB at "
          f"{bw / 1e12:.2f} TB/s copy bandwidth)")
    for name, r in res["paths"].items():
        if "speedup_vs_hf" in r:
            print(f"{name:12s} {r['speedup_vs_hf']:5.2f}x faster than hf, "
                  f"{100 * r['fraction_of_bandwidth_floor']:.1f}% of the bandwidth floor")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
