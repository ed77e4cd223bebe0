#!/usr/bin/env python3
"""r1kit's GRPO stage against TRL's GRPOTrainer, side by side, same model, data, reward and settings.

    pip install -e ".[bench]"        # TRL and datasets: for this benchmark only
    python bench/vs_trl.py --preset cpu [--runs 3] [--dtype bfloat16] [--out results.json]
    python bench/vs_trl.py --preset gpu [--runs 1] [--precision mixed|bf16] [--out results.json]

Each side runs in a fresh subprocess (so each has its own peak memory), TRL first, then r1kit,
`--runs` times in alternation; the parent prints seconds per step (median after the warm-up
steps), completion tokens per second, peak memory and the ratio TRL / r1kit of each run.

What one step is, on both sides: sample G completions for each of Q prompts, score them, one
optimizer update over all of them (one rollout per update: TRL's num_iterations = 1 and
steps_per_generation = gradient_accumulation_steps, r1kit's num_minibatches = ppo_epochs = 1),
with a reference model (beta > 0). Completions are forced to full length (min_new_tokens =
max_new_tokens), so both sides process the same number of tokens. The step time is the wall
time from the end of one optimizer step to the end of the next (TRL: its on_step_end callback;
r1kit: its per-step metrics record), so everything between (data, logging) is counted.

Presets (the settings of TRL's published-default comparison, shared/anchors):
  cpu: random Qwen2, hidden 128, 4 layers, 4 heads (2 KV), character vocabulary (~70), fp32,
       16 prompts "a+b=" x 8 completions x 64 tokens, beta 0.04, lr 1e-5, one micro-batch of
       128, no activation checkpointing, 2 threads; reward 1 when the completion starts with
       the sum.
  gpu: random Qwen2.5-0.5B shape (494M, vocab 151,936), bf16, 16 prompts of 64 tokens x 16
       completions x 256 tokens, beta 0.001, lr 3e-6, micro-batches of 32 (TRL: 8 gradient
       accumulation steps), activation checkpointing on both sides; reward len(text) % 7 == 0.
Both sides: token-mean loss (TRL's default "dapo"), clip 0.2, temperature 1, top-p 1, AdamW
(weight decay 0), gradient clipping 1.0, advantages scaled by the group's std.

With bf16 (the gpu preset, or --dtype bfloat16) --precision says how each side keeps its
weights, each as its users get it by default:
  mixed (default): both sides update float32 weights and compute in bf16. TRL: the model loaded
       in float32 (GRPOTrainer's default for a model path) under bf16 autocast (bf16 = True);
       r1kit: bf16 weights, AdamW on float32 master copies ([run] master_weights = true).
  bf16: both sides update bf16 weights directly (TRL: model_init_kwargs dtype bfloat16; r1kit:
       master_weights = false), as bench/RESULTS.md's runs D-G did. At lr 3e-6 most of those
       updates round away (r1kit/optim.py): a speed comparison only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true"}.items():
    os.environ.setdefault(_k, _v)

PRESETS = {
    "cpu": dict(prompts=16, G=8, new=64, beta=0.04, lr=1e-5, micro=128, ckpt=False, steps=12,
                skip=2, dtype="float32", threads=2),
    "gpu": dict(prompts=16, G=16, new=256, beta=0.001, lr=3e-6, micro=32, ckpt=True, steps=6,
                skip=2, dtype="bfloat16", threads=0),
}

if os.environ.get("VS_TRL_SMALL") == "1":  # a quick CPU dry run of the gpu preset's code paths
    PRESETS["gpu"].update(prompts=2, G=4, new=8, micro=4, steps=4, skip=1, dtype="float32")


# ----- the shared world: model, prompts, reward ------------------------------------------------

def build_cpu_model(out: Path) -> None:
    """The tiny random Qwen2 with a character-level tokenizer (one id per character)."""
    import string

    import torch
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import (
        AutoModelForCausalLM,
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2Config,
    )

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    chars = (list(string.digits) + list("+-*=()") + [" "] + list(string.ascii_lowercase)
             + list(string.ascii_uppercase))
    # byte-level symbols, so a Qwen2 tokenizer class rebuilt around this vocabulary agrees
    byte_symbol = {" ": "Ġ"}
    vocab = {t: i for i, t in enumerate(specials + [byte_symbol.get(c, c) for c in chars])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}|[^\s\p{N}]+|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>", padding_side="left",
                                   model_max_length=512)
    config = Qwen2Config(vocab_size=len(fast), hidden_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=512,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         use_sliding_window=False, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=1, pad_token_id=0)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    ids = fast("12+35=")["input_ids"]
    assert ids[0] == 2 and len(ids) == 7 and fast.decode(ids[1:]) == "12+35=", ids


def build_gpu_model(out: Path) -> None:
    """A random model of Qwen2.5-0.5B's shape, bf16, with a word-level tokenizer of its size."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for w in [str(i) for i in range(10)] + ["+", "="]:
        vocab[w] = len(vocab)
    while len(vocab) < 151936:
        vocab[f"w{len(vocab)}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>", padding_side="left")
    fast.save_pretrained(out)
    small = os.environ.get("VS_TRL_SMALL") == "1"  # a CPU dry run of the gpu preset's code
    dims = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=2) if small else
            dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14))
    cfg = Qwen2Config(vocab_size=151936, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, rope_theta=1e6, bos_token_id=2, eos_token_id=1,
                      pad_token_id=0, **dims)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=1, pad_token_id=0)
    model.save_pretrained(out)


def make_prompts(preset: str, n: int) -> list[tuple[str, str]]:
    """(prompt, answer) pairs, the same on both sides."""
    rng = random.Random(42)
    if preset == "cpu":
        out = []
        for _ in range(n):
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            out.append((f"{a}+{b}=", str(a + b)))
        return out
    return [(" ".join(str(rng.randint(0, 9)) if i % 3 else f"w{rng.randint(20, 5000)}"
                      for i in range(64)), "") for _ in range(n)]


_LEADING_INT = re.compile(r"\s*(-?\d+)")


def reward_values(preset: str, completions: list[str], answers: list[str]) -> list[float]:
    if preset == "cpu":
        out = []
        for c, a in zip(completions, answers):
            m = _LEADING_INT.match(c)
            out.append(1.0 if m is not None and m.group(1) == a else 0.0)
        return out
    return [float(len(c) % 7 == 0) for c in completions]


# ----- one side in its own process ----------------------------------------------------------

def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _peak_memory_mib() -> dict:
    import torch

    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_trl(preset: str, model: Path, steps: int, precision: str = "mixed") -> dict:
    import dataclasses

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    p = PRESETS[preset]
    rows = make_prompts(preset, p["prompts"] * (steps + 2))
    data = Dataset.from_dict({"prompt": [q for q, _ in rows], "answer": [a for _, a in rows]})

    def reward(completions, answer, **kw):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return reward_values(preset, texts, answer)

    stamps: list[float] = []
    dev = _device()

    class Stamp(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps:
                stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            if dev == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    completions = p["prompts"] * p["G"]
    kwargs = dict(
        output_dir=tempfile.mkdtemp(prefix="vs-trl-"), per_device_train_batch_size=p["micro"],
        gradient_accumulation_steps=completions // p["micro"], num_generations=p["G"],
        max_completion_length=p["new"], generation_kwargs={"min_new_tokens": p["new"]},
        beta=p["beta"], learning_rate=p["lr"], temperature=1.0, top_p=1.0, epsilon=0.2,
        loss_type="dapo", max_grad_norm=1.0, weight_decay=0.0, num_iterations=1,
        bf16=p["dtype"] == "bfloat16", fp16=False, use_cpu=dev == "cpu", use_vllm=False,
        logging_steps=1, max_steps=steps, save_strategy="no", report_to="none", seed=42,
        dataloader_num_workers=0, disable_tqdm=True,
        # mixed: float32 weights under bf16 autocast, GRPOTrainer's default for a model path
        model_init_kwargs={"dtype": torch.float32 if precision == "mixed"
                           else getattr(torch, p["dtype"])})
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    # transformers 5.2x renames gradient_checkpointing to activation_checkpointing
    kwargs["activation_checkpointing" if "activation_checkpointing" in names
           else "gradient_checkpointing"] = p["ckpt"]
    config = GRPOConfig(**kwargs)
    tok = PreTrainedTokenizerFast.from_pretrained(model)
    trainer = GRPOTrainer(model=str(model), reward_funcs=reward, args=config, train_dataset=data,
                          processing_class=tok)
    trainer.add_callback(Stamp())
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    lengths = [h.get("completions/mean_length") for h in logs]
    return {"versions": {"trl": trl.__version__, "transformers": transformers.__version__},
            # steps 2..N, as on the r1kit side (stamps[0] is the first step's beginning)
            "step_seconds": [b - a for a, b in zip(stamps[1:], stamps[2:])],
            "mean_completion_length": lengths, "loss": [h.get("loss") for h in logs],
            "reward": [h.get("reward") for h in logs], **_peak_memory_mib()}


def run_r1kit(preset: str, model: Path, steps: int, prompt_sharing: str = "auto",
              compile_mode: str = "auto", logprob_chunk: int | str = "auto",
              logprob_rows: int | str = "auto", precision: str = "mixed") -> dict:
    import torch

    import r1kit
    from r1kit.config import EvalConfig, GRPOConfig
    from r1kit.optim import keeping_master_weights
    from r1kit.runlog import RunLog
    from r1kit.stages.grpo import StageContext, run_grpo
    from r1kit.tasks.base import Example

    p = PRESETS[preset]
    rows = make_prompts(preset, p["prompts"] * (steps + 2))

    class Prompts:
        name = "vs-trl"

        def train_examples(self):
            return [Example(question=q, answer=a) for q, a in rows]

        def test_examples(self, split="main"):
            return []

        def verify(self, answer, example):
            return 0.0

    def reward(completions, prompts, answer):
        return reward_values(preset, completions, answer)

    completions = p["prompts"] * p["G"]
    cfg = GRPOConfig(model=str(model), template="none", steps=steps, lr=p["lr"], beta=p["beta"],
                     clip_eps_low=0.2, temperature=1.0, top_p=1.0, group_size=p["G"],
                     rollout_batch_size=completions, num_minibatches=1, ppo_epochs=1,
                     max_new_tokens=p["new"], min_new_tokens=p["new"],
                     max_new_tokens_schedule=[], micro_batch_size=p["micro"],
                     logprob_chunk_tokens=logprob_chunk, logprob_micro_batch_size=logprob_rows,
                     aggregation="token-mean", max_grad_norm=1.0, weight_decay=0.0,
                     activation_checkpointing=p["ckpt"], ref_refresh_every=0,
                     prompt_sharing=prompt_sharing, compile=compile_mode,
                     generation_rows=completions, eval=EvalConfig(every=0))
    dev = _device()
    out = Path(tempfile.mkdtemp(prefix="vs-r1kit-"))
    log = RunLog(out, tensorboard=False)
    stamps: list[float] = []
    write = log.metrics

    def stamped(record):
        if dev == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        write(record)

    log.metrics = stamped
    ctx = StageContext(name="grpo", stage_dir=out / "grpo", run_dir=out, seed=42,
                       device=torch.device(dev), dtype=getattr(torch, p["dtype"]), log=log,
                       progress=False, print=lambda *a: None)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with keeping_master_weights(precision == "mixed"):
        run_grpo(cfg, model, ctx, task=Prompts(), reward_function=reward)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"versions": {"r1kit": r1kit.__version__},
            # steps 2..N: from the end of one step to the end of the next
            "step_seconds": [b - a for a, b in zip(stamps, stamps[1:])],
            "first_step_with_loading_s": stamps[0] - t0,
            "gen_seconds": [r["gen_seconds"] for r in records],
            "train_seconds": [r["train_seconds"] for r in records],
            "mean_completion_length": [r["response_length"] for r in records],
            "loss": [r.get("loss") for r in records], "reward": [r["reward"] for r in records],
            **_peak_memory_mib()}


def side_main(args) -> int:
    import torch

    p = PRESETS[args.preset]
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    if args.side == "trl":
        result = run_trl(args.preset, Path(args.model), args.steps, args.precision)
    else:
        import r1kit.lean

        r1kit.lean.COMPILE_DECODE_LAYERS = args.compile_decode_layers
        result = run_r1kit(args.preset, Path(args.model), args.steps, args.prompt_sharing,
                           args.compile, args.logprob_chunk, args.logprob_rows,
                           args.precision)
    result["device"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                        else f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)")
    result["torch"] = torch.__version__
    Path(args.result).write_text(json.dumps(result, indent=1))
    return 0


# ----- the parent: both sides, several runs, the table ----------------------------------------

def summarise(res: dict, skip: int, tokens_per_step: int) -> dict:
    # step_seconds[i] is step i+2's wall time (end of step i+1 to end of step i+2)
    steps = res["step_seconds"][max(0, skip - 1):]
    med = statistics.median(steps)
    peak = res.get("peak_gpu_mib") or res["peak_rss_mib"]
    return {"median_s_per_step": med, "tokens_per_s": tokens_per_step / med,
            "peak_mib": peak, "steps_timed": len(steps)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--runs", type=int, default=None, help="alternating runs (cpu 3, gpu 1)")
    ap.add_argument("--steps", type=int, default=None, help="steps per side per run")
    ap.add_argument("--skip", type=int, default=None, help="warm-up steps left out")
    ap.add_argument("--sides", default="trl,r1kit",
                    help="comma-separated: trl, r1kit, and r1kit-layers (r1kit with "
                         "--compile-decode-layers), each in its own process, in this order")
    ap.add_argument("--prompt-sharing", default="auto", choices=["auto", "on", "off"],
                    help="r1kit's prompt_sharing setting")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                    help="r1kit's compile setting (torch.compile of the training pass; auto: "
                         "on CUDA)")
    ap.add_argument("--compile-decode-layers", action="store_true",
                    help="r1kit: also compile the decoder layers inside the decode graphs "
                         "(experimental, r1kit.lean.COMPILE_DECODE_LAYERS)")
    ap.add_argument("--logprob-chunk", type=lambda v: v if v == "auto" else int(v),
                    default="auto",
                    help="r1kit's logprob_chunk_tokens (output-layer positions per chunk, or "
                         "auto: r1kit's default)")
    ap.add_argument("--logprob-rows", type=lambda v: v if v == "auto" else int(v),
                    default="auto",
                    help="r1kit's logprob_micro_batch_size (rows per no-grad pass of the "
                         "reference's log-probs, or auto: r1kit's default)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                    help="the compute dtype on both sides (the preset's: cpu float32, gpu "
                         "bfloat16; --precision says how bf16 weights are kept); bfloat16 on "
                         "a CPU with bf16 matrix instructions")
    ap.add_argument("--precision", default="mixed", choices=["mixed", "bf16"],
                    help="bf16 weights: mixed = both sides update float32 "
                         "weights (TRL: float32 model under bf16 autocast; r1kit: float32 "
                         "master copies), bf16 = both update the bf16 weights directly")
    ap.add_argument("--out", default=None, help="write every figure as JSON here")
    ap.add_argument("--side", choices=["trl", "r1kit"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    p = PRESETS[args.preset]
    if args.dtype:
        p["dtype"] = args.dtype
    args.steps = args.steps or p["steps"]
    if args.side:
        return side_main(args)
    runs = args.runs or (3 if args.preset == "cpu" else 1)
    skip = p["skip"] if args.skip is None else args.skip
    if args.steps <= skip + 1:
        ap.error(f"--steps must exceed the {skip} warm-up steps by at least 2")
    work = Path(tempfile.mkdtemp(prefix="vs-trl-"))
    model = work / "model"
    (build_cpu_model if args.preset == "cpu" else build_gpu_model)(model)
    tokens = p["prompts"] * p["G"] * p["new"]
    dtype_label = (f"{p['dtype']}, {args.precision}" if p["dtype"] != "float32" else p["dtype"])
    print(f"preset {args.preset}: {p['prompts']} prompts x {p['G']} completions x {p['new']} "
          f"tokens = {tokens} completion tokens per step; beta {p['beta']}, {dtype_label}, "
          f"micro-batch {p['micro']}, activation checkpointing {p['ckpt']}; "
          f"{args.steps} steps per side, median of steps {skip + 1}..{args.steps}", flush=True)
    sides = args.sides.split(",")
    unknown = [s for s in sides if s not in ("trl", "r1kit", "r1kit-layers")]
    if unknown:
        ap.error(f"--sides: unknown side(s) {', '.join(unknown)} (trl, r1kit, r1kit-layers)")
    results: dict = {"preset": args.preset, "settings": {**p, "precision": args.precision},
                     "runs": []}
    for r in range(runs):
        row = {}
        for side in sides:
            out = work / f"{side}-{r}.json"
            layers = args.compile_decode_layers or side == "r1kit-layers"
            cmd = [sys.executable, __file__, "--preset", args.preset,
                   "--side", "trl" if side == "trl" else "r1kit",
                   "--model", str(model), "--steps", str(args.steps), "--result", str(out),
                   "--prompt-sharing", args.prompt_sharing, "--compile", args.compile,
                   "--logprob-chunk", str(args.logprob_chunk),
                   "--logprob-rows", str(args.logprob_rows), "--precision", args.precision,
                   "--dtype", p["dtype"],
                   *(["--compile-decode-layers"] if layers else [])]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n")
                print(f"{side} failed (exit {proc.returncode})")
                return 1
            raw = json.loads(out.read_text())
            row[side] = {"summary": summarise(raw, skip, tokens), "raw": raw,
                         "process_seconds": time.perf_counter() - t}
            s = row[side]["summary"]
            print(f"run {r + 1} {side:6s} {s['median_s_per_step']:.3f} s/step  "
                  f"{s['tokens_per_s']:,.0f} tokens/s  peak {s['peak_mib']:,.0f} MiB  "
                  f"({raw['device']})", flush=True)
        for side in sides:
            if side != "trl" and "trl" in row:
                ratio = (row["trl"]["summary"]["median_s_per_step"]
                         / row[side]["summary"]["median_s_per_step"])
                row["ratio" if side == "r1kit" else f"ratio_{side}"] = ratio
                print(f"run {r + 1} TRL / {side} = {ratio:.2f}x", flush=True)
        results["runs"].append(row)
    ratios = [row["ratio"] for row in results["runs"] if "ratio" in row]
    if ratios:
        results["ratio_median"] = statistics.median(ratios)
        results["ratio_range"] = [min(ratios), max(ratios)]
        print(f"TRL / r1kit per step: median {statistics.median(ratios):.2f}x over {len(ratios)} "
              f"run(s), range {min(ratios):.2f}-{max(ratios):.2f}x")
    layer_ratios = [row["ratio_r1kit-layers"] for row in results["runs"]
                    if "ratio_r1kit-layers" in row]
    if layer_ratios:
        results["ratio_r1kit-layers_median"] = statistics.median(layer_ratios)
        print(f"TRL / r1kit-layers per step: median {statistics.median(layer_ratios):.2f}x, "
              f"range {min(layer_ratios):.2f}-{max(layer_ratios):.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
