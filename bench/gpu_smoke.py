"""A few R1-Zero steps of recipes/zero-gsm8k.toml on a random model of Qwen2.5-0.5B's shape.

No weights are downloaded: the model is random (Llama architecture with Qwen2.5-0.5B's sizes:
hidden 896, 24 layers, 14 heads, 2 KV heads, vocab 151,936) and the tokenizer is a byte-level
BPE trained on GSM8K text. It checks that the real-model path runs on a GPU in bf16 and prints
seconds per step and peak memory.

    python bench/gpu_smoke.py --out /tmp/smoke [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    args = ap.parse_args()

    from conftest import build_bpe_checkpoint
    from transformers import LlamaConfig, LlamaForCausalLM

    from r1kit.cli import main as r1kit_main

    ckpt = build_bpe_checkpoint(args.out / "tok")
    config = LlamaConfig(vocab_size=151936, hidden_size=896, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         rope_theta=1_000_000.0, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model_dir = args.out / "model"
    model.save_pretrained(model_dir)
    for f in ckpt.iterdir():  # the tokenizer files
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            (model_dir / f.name).write_bytes(f.read_bytes())
    del model
    run = args.out / "run"
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    t0 = time.time()
    rc = r1kit_main([
        "run", str(REPO / "recipes" / "zero-gsm8k.toml"), "--out", str(run),
        "--set", f"stages.zero.model={json.dumps(str(model_dir))}",
        "--set", f"stages.zero.steps={args.steps}",
        "--set", f"stages.zero.group_size={args.group}",
        "--set", f"stages.zero.rollout_batch_size={args.questions * args.group}",
        "--set", f"stages.zero.max_new_tokens={args.max_new_tokens}",
        "--set", "stages.zero.eval.every=0", "--set", "stages.zero.save_every=0",
        "--set", "run.progress=false",
    ])
    total = time.time() - t0
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        print(json.dumps({k: m[k] for k in ("step", "reward", "response_length", "step_seconds",
                                            "gen_seconds", "train_seconds", "tokens_per_s")}))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(json.dumps({"rc": rc, "device": device, "total_seconds": total,
                      "peak_gib": peak, "transformers": __import__("transformers").__version__,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
