#!/usr/bin/env python3
"""The matrix products of one step of bench/vs_trl.py's cpu preset, and nothing else.

    python bench/cpu_floor.py [--repeats 5] [--dtype bfloat16]

A step of the cpu preset (16 prompts x 8 completions x 64 tokens, the tiny random Qwen2 in
fp32, beta > 0) needs these matrix products whatever the framework: the policy's forward and
backward and the reference model's forward over every token of the 128 sequences, and the
64 decode steps of sampling (128 rows each, attention over the cache so far). This script
runs exactly those products back to back on preallocated tensors (2 threads, as the preset)
and prints the fastest of --repeats passes: a step cannot take less time on this machine,
so TRL's seconds per step divided by this figure bounds the ratio any implementation can
reach against TRL. It also prints the CPU's best rate (a large square product) and how long
the step's products would take even at that rate. Layer shapes are read from the preset's
model; prompt lengths are the preset's own prompts. --dtype bfloat16: the products in bf16
(vs_trl.py --dtype bfloat16; fast on CPUs with bf16 matrix instructions).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch
    import vs_trl
    from transformers import AutoConfig, PreTrainedTokenizerFast

    p = vs_trl.PRESETS["cpu"]
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(p["threads"])
    model_dir = Path(tempfile.mkdtemp(prefix="cpu-floor-"))
    vs_trl.build_cpu_model(model_dir)
    cfg = AutoConfig.from_pretrained(model_dir)
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    prompts = [len(tok(q)["input_ids"]) for q, _ in vs_trl.make_prompts("cpu", p["prompts"])]
    G, new = p["G"], p["new"]
    rows = len(prompts) * G
    lengths = [n + new for n in prompts for _ in range(G)]
    tokens = sum(lengths)  # every token of every sequence, no padding
    H, inter, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    d = H // nh
    layers = cfg.num_hidden_layers
    # (in, out) of each linear layer of a decoder layer: q|k|v, o, gate, up, down
    linears = [(H, (nh + 2 * nkv) * d), (nh * d, H), (H, inter), (H, inter), (inter, H)]

    def forward_products(m: int):
        """[m, in] x [in, out] per linear layer of every decoder layer."""
        return [(m, i, o) for _ in range(layers) for i, o in linears]

    def backward_products(m: int):
        """The input gradient [m, out] x [out, in] and the weight gradient [out, m] x [m, in]."""
        return [s for _ in range(layers) for i, o in linears for s in ((m, o, i), (o, m, i))]

    L = max(lengths)
    mm = (forward_products(tokens)  # policy forward
          + backward_products(tokens)  # policy backward
          + forward_products(tokens)  # reference forward
          + [(rows * new, H, V)] * 2 + [(rows * new, V, H), (V, rows * new, H)])  # output layer
    # attention per layer and (row, head): scores and weighted values, over the causal half
    # (keys up to the query); the backward pass makes two products per forward product
    half = (L + 1) // 2
    pair = [(rows * nh, L, d, half), (rows * nh, L, half, d)]
    attn = pair * 3 * layers + pair * layers  # policy forward + backward, reference forward
    # decode: the prompts' prefill is left out (a few tokens); each step's products at 128 rows
    decode = [s for t in range(new) for s in forward_products(rows)] + [(rows, H, V)] * new
    decode_attn = [s for t in range(new) for _ in range(layers)
                   for s in ((rows * nh, 1, d, min(prompts) + t + 1),
                             (rows * nh, 1, min(prompts) + t + 1, d))]

    def make(shapes, batched=False):
        out = []
        for s in shapes:
            if batched:
                b, m, k, n = s
                out.append((torch.randn(b, m, k, dtype=dtype), torch.randn(b, k, n, dtype=dtype),
                            torch.empty(b, m, n, dtype=dtype)))
            else:
                m, k, n = s
                out.append((torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype),
                            torch.empty(m, n, dtype=dtype)))
        return out

    parts = {"training (policy forward + backward, reference forward)": (mm, attn),
             "sampling (64 decode steps of 128 rows)": (decode, decode_attn)}
    report = {"tokens_per_step": tokens, "rows": rows, "threads": torch.get_num_threads(),
              "dtype": args.dtype, "parts": {}}
    total = 0.0
    for name, (plain, batched) in parts.items():
        flops = sum(2 * m * k * n for m, k, n in plain) + sum(2 * b * m * k * n
                                                              for b, m, k, n in batched)
        # one set of tensors per distinct shape, made before the clock starts
        tensors = {s: make([s])[0] for s in set(plain)}
        tensors.update({s: make([s], batched=True)[0] for s in set(batched)})
        seconds = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            for s in plain:
                a, b, o = tensors[s]
                torch.mm(a, b, out=o)
            for s in batched:
                a, b, o = tensors[s]
                torch.bmm(a, b, out=o)
            seconds = min(seconds, time.perf_counter() - t)
        total += seconds
        report["parts"][name] = {"seconds": seconds, "gflop": flops / 1e9,
                                 "gflop_per_s": flops / 1e9 / seconds if seconds else None}
        print(f"{name}: {flops / 1e9:.1f} GFLOP in {seconds:.3f} s "
              f"({flops / 1e9 / seconds:.0f} GFLOP/s)")
    report["floor_seconds_per_step"] = total
    print(f"matrix products alone ({args.dtype}): {total:.3f} s per step ({tokens} tokens, "
          f"{rows} sequences)")
    # the CPU's best rate: a large square product, which no shape of this model beats
    n = 2048
    a, b, o = (torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype),
               torch.empty(n, n, dtype=dtype))
    torch.mm(a, b, out=o)
    best = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=o)
        best = min(best, time.perf_counter() - t)
    peak = 2 * n ** 3 / 1e9 / best
    all_flops = sum(p["gflop"] for p in report["parts"].values())
    report["peak_gflop_per_s"] = peak
    report["at_peak_seconds_per_step"] = all_flops / peak
    print(f"this CPU's best rate ({n} x {n} x {n} product): {peak:.0f} GFLOP/s; the step's "
          f"{all_flops:.1f} GFLOP at that rate: {all_flops / peak:.3f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
