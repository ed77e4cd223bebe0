#!/usr/bin/env python3
"""Sampling one token per row on the CPU: torch.multinomial against one uniform number per row
inverted through the cumulative distribution (what r1kit.rollout.sample_tokens does from
MULTINOMIAL_MAX_VOCAB entries up).

    python bench/sampling.py [--rows 128] [--vocab 73,32000,151936] [--threads 2]

Per vocabulary size: milliseconds per call of each way (median of repeated calls, float32
logits at temperature 1, no top-p, no log-probs), and which one sample_tokens takes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def timed(fn, seconds: float = 1.0) -> float:
    fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--vocab", default="73,32000,151936")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from r1kit.rollout import MULTINOMIAL_MAX_VOCAB, _inverse_cdf

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    report = {"rows": args.rows, "threads": args.threads, "vocab": {}}
    for v in (int(x) for x in args.vocab.split(",")):
        logits = torch.randn(args.rows, v)

        def multinomial(logits=logits):
            probs = torch.softmax(logits, dim=-1)
            return torch.multinomial(probs, 1, generator=gen).squeeze(-1)

        def inverse_cdf(logits=logits):
            probs = torch.softmax(logits, dim=-1)
            return _inverse_cdf(probs, torch.rand(args.rows, generator=gen, dtype=torch.float64))

        row = {"multinomial_ms": timed(multinomial), "inverse_cdf_ms": timed(inverse_cdf),
               "sample_tokens_uses": "inverse_cdf" if v >= MULTINOMIAL_MAX_VOCAB
               else "multinomial"}
        report["vocab"][v] = row
        print(f"vocab {v:7d}: multinomial {row['multinomial_ms']:9.3f} ms, inverse cdf "
              f"{row['inverse_cdf_ms']:8.3f} ms ({row['multinomial_ms'] / row['inverse_cdf_ms']:.1f}x)"
              f"; sample_tokens uses {row['sample_tokens_uses']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
