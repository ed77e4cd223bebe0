"""Peak memory of the training pass's log-probs: full logits against the chunked output layer.

    python bench/logprob_memory.py [--vocab 151936] [--rows 8] [--prompt 32] [--completion 224]
    python bench/logprob_memory.py --sft   # SFT's loss (r1kit.stages.sft.sft_loss) instead

A random-weight Llama with a Qwen2.5-sized vocabulary (hidden 64, 2 layers, so that the output
layer dominates), one forward and backward of `completion_logprobs` per mode, each in a fresh
process; prints the peak resident memory (ru_maxrss) above the process's baseline and the
seconds taken. Runs on CPU or, with --device cuda, reports torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(args) -> dict:
    sys.path.insert(0, str(REPO))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from r1kit.stages.grpo import completion_logprobs

    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                      max_position_embeddings=4096, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(device)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, args.vocab, (args.prompt,), generator=g).tolist()
               for _ in range(args.rows)]
    completions = [torch.randint(0, args.vocab, (args.completion,), generator=g).tolist()
                   for _ in range(args.rows)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.time()
    if args.sft:  # the rows packed as SFT packs them, loss on the completion tokens
        from r1kit.stages.pretrain import packed_batch
        from r1kit.stages.sft import sft_loss

        rows = list(zip(prompts, completions))
        ids, pos, labels = packed_batch(rows, 0, args.prompt + args.completion)
        loss = sft_loss(model, ids.to(device), pos.to(device), labels, 1, args.chunk)
        loss.backward()
        logp = -loss.detach()
    else:
        logp, entropy = completion_logprobs(model, prompts, completions, 1.0, args.completion,
                                            0, with_entropy=True, chunk_tokens=args.chunk)
        logp.sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"chunk": args.chunk, "peak_mib": peak, "seconds": time.time() - t0,
            "logp_sum": logp.sum().item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--completion", type=int, default=224)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sft", action="store_true", help="SFT's loss instead of GRPO's log-probs")
    ap.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.chunk is not None:
        print(json.dumps(child(args)))
        return
    tokens = args.rows * args.completion
    print(f"{args.rows} sequences x ({args.prompt} + {args.completion}) tokens, vocab "
          f"{args.vocab}: full float32 logits of the completions alone would be "
          f"{tokens * args.vocab * 4 / 2**20:.0f} MiB")
    for chunk in (0, 1024, 256, 64):
        out = subprocess.run([sys.executable, __file__, "--chunk", str(chunk),
                              *sys.argv[1:]], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        label = "full logits" if chunk == 0 else f"chunks of {chunk}"
        print(f"{label:>15}: peak {r['peak_mib']:8.0f} MiB above baseline, "
              f"{r['seconds']:.2f} s forward+backward, sum of log-probs {r['logp_sum']:.3f}")


if __name__ == "__main__":
    main()
