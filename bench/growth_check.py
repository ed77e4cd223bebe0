#!/usr/bin/env python3
"""Sampling's cache growth on the CUDA-graph path: the same samples with the cache starting
small and doubling (graphs dropped and captured again after each growth) as with room for
every token from the start.

    python bench/growth_check.py [--out growth.json]

A random fp32 Qwen2 (4 layers) samples 8 prompts × 4 completions of up to 200 tokens with
seeded per-group draws, once with r1kit.rollout.FIRST_WIDTH = 8 (growths to 16, 32, ... 200)
and once with FIRST_WIDTH = 4096 (no growth). Prints the growths, the graphs captured, and
whether tokens, stops and log-probs agree. Without CUDA it runs the graph path's logic
eagerly (as the tests do).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    args = ap.parse_args(argv)

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1kit import rollout
    from r1kit.lean import KVCache, LeanLM
    from r1kit.rollout import LeanDecoder, _generate_lean

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=512, hidden_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=256,
                      max_position_embeddings=1024, eos_token_id=1, pad_token_id=0)
    model = Qwen2ForCausalLM(cfg).to(device).eval()
    with torch.no_grad():  # stops at many lengths, some rows running to the end
        model.lm_head.weight[1] += 0.35
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, 512, (int(n),), generator=gen).tolist()
               for n in torch.randint(3, 12, (8,), generator=gen)]
    seeds = list(range(100, 108))
    grown: list[int] = []
    real_grow = KVCache.grow
    KVCache.grow = lambda self, n, used, rows: grown.append(n) or real_grow(self, n, used, rows)
    out = {"device": torch.cuda.get_device_name() if cuda else "cpu (graph logic, eager)"}
    runs = []
    for first in (8, 4096):
        rollout.FIRST_WIDTH = first
        grown.clear()
        dec = LeanDecoder(LeanLM(model), cuda_graphs=True, simulate_graphs=not cuda)
        captured: list[tuple[int, int]] = []
        real_capture = dec._capture
        dec._capture = (lambda b, a, log=captured, capture=real_capture:
                        log.append((b, a)) or capture(b, a))
        t0 = time.perf_counter()
        ids, mask, logps, stopped = _generate_lean(
            dec, prompts, 4, args.max_new_tokens, 0, 1.0, 1.0, [1], 0, None, device, seeds)
        if cuda:
            torch.cuda.synchronize()
        runs.append((ids, mask, logps, stopped))
        out[f"first_width_{first}"] = {"grown_to": list(grown), "graphs": len(captured),
                                       "seconds": time.perf_counter() - t0,
                                       "lengths": sorted(set(mask.sum(-1).tolist()))[-3:]}
    (a, ma, la, sa), (b, mb, lb, sb) = runs
    out["same_tokens"] = bool(torch.equal(a, b) and torch.equal(ma, mb))
    out["same_stops"] = bool(torch.equal(sa, sb))
    out["max_logprob_diff"] = float((la - lb).abs().max())
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
    ok = out["same_tokens"] and out["same_stops"] and out["first_width_8"]["grown_to"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
