#!/usr/bin/env python3
"""Prompt sharing in the training pass on this machine's device: the same numbers, and the time.

    python bench/sharing_check.py [--out sharing.json] [--small]

Builds a random Qwen2 of Qwen2.5-0.5B's shape (grouped heads, q/k/v biases; bf16 on CUDA,
float32 on the CPU; `--small` for a quick CPU run), then for one micro-batch of the gpu
preset's kind (2 prompts of 64 tokens x 16 completions of different lengths, the longest
256: 320 keys, 64 mod 128, where cuDNN's masked backward misbehaved in torch 2.11)
runs `completion_logprobs` with and without prompt sharing, forward and backward, and prints:
the largest log-prob and gradient differences (relative to their scale), whether every value
is finite, and the seconds of each (median of 5 after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--small", action="store_true", help="a small model (CPU dry run)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1kit.lean import LeanLM
    from r1kit.stages.grpo import completion_logprobs

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    dims = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, vocab_size=33000) if args.small else
            dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, vocab_size=151936))
    torch.manual_seed(0)
    cfg = Qwen2Config(num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, rope_theta=1e6, **dims)
    model = Qwen2ForCausalLM(cfg).to(device=dev, dtype=dtype)
    lean = LeanLM(model)
    g = torch.Generator().manual_seed(1)
    vocab = cfg.vocab_size
    prompts_2 = [torch.randint(4, vocab, (64,), generator=g).tolist() for _ in range(2)]
    # the longest completion 256: the masked attention reads 64 + 256 = 320 keys, 64 mod 128
    lengths = [256, 192, 64, 1, 100, 129, 255, 128, 63, 65, 200, 32, 16, 240, 180, 90] * 2
    completions = [torch.randint(4, vocab, (n,), generator=g).tolist() for n in lengths]
    prompts = [prompts_2[i // 16] for i in range(32)]
    width = max(lengths)
    chunk = 256 if vocab >= 32768 else 0
    weights = torch.linspace(-1, 1, 32 * width, device=dev).view(32, width)

    def run(share):
        model.zero_grad(set_to_none=True)
        lp, _ = completion_logprobs(model, prompts, completions, 1.0, width, 0,
                                    chunk_tokens=chunk, lean=lean, checkpoint_layers=True,
                                    share_prompts=share)
        (lp * weights).sum().backward()
        return lp.detach().float(), {n: p.grad.float() for n, p in model.named_parameters()}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    report = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
              "torch": torch.__version__, "dtype": str(dtype), "small": args.small}
    (lp0, g0), (lp1, g1) = run(False), run(True)
    mask = torch.zeros_like(lp0)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    report["logprob_max_abs_diff"] = float(((lp1 - lp0) * mask).abs().max())
    report["logprob_scale"] = float((lp0 * mask).abs().max())
    report["grad_max_rel_diff"] = max(float((g1[k] - g0[k]).abs().max() /
                                            g0[k].abs().max().clamp(min=1e-30)) for k in g0)
    report["finite"] = bool(torch.isfinite(lp1).all()) and all(
        bool(torch.isfinite(v).all()) for v in g1.values())
    for share in (False, True):
        times = []
        for _ in range(args.repeats):
            sync()
            t = time.perf_counter()
            run(share)
            sync()
            times.append(time.perf_counter() - t)
        report[f"seconds_{'shared' if share else 'plain'}"] = statistics.median(times)
    for k, v in report.items():
        print(f"{k}: {v}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
