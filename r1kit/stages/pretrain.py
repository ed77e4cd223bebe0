"""The pretrain stage: the tiny world's base model, trained from scratch on its corpus.

It builds a tokenizer and a randomly initialised Llama-architecture model, trains it on the
corpus of worked solutions and general requests (loss on response tokens only; prompts give
context), and saves a
real Hugging Face checkpoint. The result is cached by its settings under R1KIT_CACHE
(default ~/.cache/r1kit), so a second run of a tiny recipe reuses the same base model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from r1kit.config import PretrainConfig
from r1kit.models import build_tiny_model, build_tiny_tokenizer, save_model
from r1kit.packing import pack
from r1kit.tasks import general
from r1kit.tasks.arithmetic import ArithmeticTask
from r1kit.templates import render_prompt

# Part of the cache key: bump it whenever the corpus, tokenizer or model code changes what a
# given config produces, so that no stale base model is reused.
BASE_VERSION = 3


def cache_dir() -> Path:
    return Path(os.environ.get("R1KIT_CACHE", Path.home() / ".cache" / "r1kit"))


def cosine_lr(step: int, total: int, peak: float, warmup: int, final_ratio: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to `final_ratio * peak` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def linear_lr(step: int, total: int, peak: float, warmup: int, final_ratio: float) -> float:
    """Linear warm-up to `peak`, then linear decay towards `final_ratio * peak` at `total`
    (transformers' linear schedule, TRL's default, with final_ratio 0)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (1 - (1 - final_ratio) * progress)


def encode_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """Tokenize prompt and response separately (as the RL stage does) and end with eos."""
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    responses = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p, r + [eos]) for p, r in zip(prompts, responses)]


def packed_batch(batch: list[tuple[list[int], list[int]]], pad_id: int, capacity: int,
                 one_per_row: bool = False):
    """Packed input ids, position ids and labels (-100 on prompts and padding)."""
    packed = pack([p + r for p, r in batch], capacity, pad_id, one_per_row)
    labels = torch.full_like(packed.input_ids, -100)
    for (p, r), (row, start, n) in zip(batch, packed.spans):
        labels[row, start + len(p):start + n] = torch.tensor(r)
    return packed.input_ids, packed.position_ids, labels


def run_pretrain(cfg: PretrainConfig, out_dir: Path, seed: int, log=print) -> dict:
    """Produce the base checkpoint in `out_dir` (from the cache when it holds one)."""
    key = hashlib.sha256(json.dumps({"cfg": asdict(cfg), "seed": seed, "v": BASE_VERSION},
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    cached = cache_dir() / f"tiny-base-{key}"
    if cfg.use_cache and (cached / "config.json").is_file():
        log(f"pretrain: reusing cached base model {cached}")
        shutil.copytree(cached, out_dir, dirs_exist_ok=True)
        return {**json.loads((cached / "pretrain.json").read_text()), "cached": str(cached)}

    torch.manual_seed(seed)
    task = ArithmeticTask(cfg.world, seed=seed)
    pairs = task.corpus(cfg.corpus_docs, seed=seed)
    pairs += [(render_prompt(q, "r1-zero"), r) for q, r in general.corpus(cfg.general_docs, seed)]
    random.Random(f"corpus-order-{seed}").shuffle(pairs)
    tokenizer = build_tiny_tokenizer([p + r for p, r in pairs[:5000]], cfg.vocab_size)
    model = build_tiny_model(len(tokenizer), cfg.hidden_size, cfg.num_layers, cfg.num_heads,
                             cfg.intermediate_size, cfg.max_positions, tokenizer, seed)
    n_params = sum(p.numel() for p in model.parameters())
    data = encode_pairs(tokenizer, pairs)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    log(f"pretrain: a tiny base model from scratch ({n_params / 1e6:.3g}M parameters, "
        f"{len(data)} documents, {cfg.steps} steps; a line every {max(1, cfg.steps // 10)})"
        + (f", then cached in {cached}" if cfg.use_cache else ""))
    model.train()
    t0, losses = time.time(), []
    for step in range(cfg.steps):
        idx = torch.randint(len(data), (cfg.batch_size,), generator=gen).tolist()
        ids, pos, labels = packed_batch([data[i] for i in idx], tokenizer.pad_token_id,
                                        cfg.max_positions)
        lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.final_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = model(input_ids=ids, position_ids=pos, labels=labels, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % max(1, cfg.steps // 10) == 0:
            log(f"pretrain step {step + 1}/{cfg.steps} loss {sum(losses[-50:]) / len(losses[-50:]):.4f} "
                f"({time.time() - t0:.0f}s)")
    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_model(model, tokenizer, out_dir)
    info = {"params": n_params, "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "seconds": time.time() - t0, "docs": len(data), "vocab": len(tokenizer)}
    (out_dir / "pretrain.json").write_text(json.dumps(info, indent=2))
    if cfg.use_cache:
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        shutil.copytree(out_dir, tmp, dirs_exist_ok=True)
        os.replace(tmp, cached) if not cached.exists() else shutil.rmtree(tmp)
    return info
