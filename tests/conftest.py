"""Shared fixtures: small random checkpoints built locally (no hub, no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# --set overrides for a micro tiny-world base (a few seconds to pretrain) that already writes
# the R1-Zero format often enough for rewards to vary within groups
MICRO_BASE = [
    "--set", "stages.base.steps=200", "--set", "stages.base.corpus_docs=3000",
    "--set", "stages.base.hidden_size=48", "--set", "stages.base.intermediate_size=96",
    "--set", "stages.base.num_layers=1", "--set", "stages.base.lr=1e-2",
    "--set", "stages.base.general_docs=600",
]

# a run's settings and the tiny base of MICRO_BASE's settings, for recipes of other stages
MICRO_RECIPE_HEAD = """
[run]
seed = 0
progress = false
tensorboard = false
threads = 1

[stages.base]
kind = "pretrain"
steps = 200
corpus_docs = 3000
hidden_size = 48
intermediate_size = 96
num_layers = 1
lr = 1e-2
general_docs = 600
"""

# a sample stage of 41 questions of that base, with a judge
MICRO_SAMPLE_STAGE = """
[stages.data]
kind = "sample"
model = "base"
prompts = 41
samples_per_prompt = 4
keep_per_prompt = 2
max_new_tokens = 24
filters = []
judge_model = "base"  # (the judge reads the samples the rules reject)
judge_threshold = 0.3
"""

# what differs between two runs of the same seed: wall-clock measurements
TIMING = ("step_seconds", "gen_seconds", "reward_seconds", "train_seconds", "tokens_per_s",
          "seconds")


@pytest.fixture(autouse=True)
def _empty_hub_cache(tmp_path_factory, monkeypatch):
    """Every test sees an empty Hugging Face cache of its own (a Hub id as a model is read from
    the cache: r1kit.models.cached_hub_model), not the machine's; processes it starts too."""
    import huggingface_hub.constants

    empty = tmp_path_factory.getbasetemp() / "hf-hub-empty"
    empty.mkdir(exist_ok=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))


def hub_cache_with(root: Path, repo: str, checkpoint: Path, monkeypatch,
                   kind: str = "models") -> Path:
    """A Hugging Face cache at `root` holding the directory `checkpoint` as the Hub model (or,
    `kind` "datasets", the data set) `repo`: its main revision's snapshot, as huggingface-cli
    download lays it out, made the cache every test and the processes it starts read; returns
    the snapshot's directory."""
    import shutil

    import huggingface_hub.constants

    folder = root / (f"{kind}--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = folder / "snapshots" / commit
    shutil.copytree(checkpoint, snapshot)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return snapshot


def rows_without_timings(path: Path) -> list[dict]:
    """The rows of metrics.jsonl / eval.jsonl with the timing fields left out."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in path.read_text().splitlines()]


def interrupt_at_call(monkeypatch, module, name: str, n: int):
    """Make module.name raise KeyboardInterrupt at its n-th call (an interrupted run); returns
    the real function, to put back with monkeypatch.setattr."""
    real, calls = getattr(module, name), []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(module, name, interrupted)
    return real


def count_parts(monkeypatch, module, name: str, real) -> list[int]:
    """Put `real` back as module.name, counting the problems of each call (its fourth
    argument, the examples: evaluate_questions'); returns the list the counts go to."""
    calls: list[int] = []

    def counted(*args, **kw):
        calls.append(len(args[3]))
        return real(*args, **kw)

    monkeypatch.setattr(module, name, counted)
    return calls


def write_jsonl(path: Path, rows: list) -> Path:
    """`rows` as a JSONL file at `path`."""
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def one_grpo_step_on(checkpoint: Path, out: Path, task: str, data: Path, eval_k: int = 1,
                     evaluate: bool = True, **settings) -> tuple[list[dict], list[dict]]:
    """One tiny grpo step of recipes/zero-gsm8k.toml on `checkpoint` with task `task`,
    training on `data` and (`evaluate`) evaluating on it before and after the step, with
    the stage's other `settings` (TOML values): the run's metrics and evaluation rows."""
    import json

    from r1kit.cli import main

    given = {"model": str(checkpoint), "task": task, "train_file": str(data), "steps": 1,
             "group_size": 2, "rollout_batch_size": 4, "num_minibatches": 1,
             "max_new_tokens": 8, "save_every": 0, **settings}
    if evaluate:
        given.update({"test_file": str(data), "eval.every": 1, "eval.k": eval_k})
    sets = [arg for key, value in given.items()
            for arg in ("--set", f"stages.zero.{key}={json.dumps(value)}")]
    assert main(["run", str(REPO / "recipes" / "zero-gsm8k.toml"), "--out", str(out), *sets,
                 "--set", "run.progress=false"]) == 0
    evals = out / "eval.jsonl"
    return ([json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()],
            [json.loads(line) for line in evals.read_text().splitlines()]
            if evals.exists() else [])


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_bpe_checkpoint(path: Path, vocab_size: int = 2000, seed: int = 0) -> Path:
    """A random-weight Llama with a byte-level BPE tokenizer trained on GSM8K text and a
    ChatML-style chat template: the shape of a real checkpoint, small enough for a CPU test."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rows = [json.loads(line) for line in
            (REPO / "r1kit" / "data" / "gsm8k" / "train.jsonl").read_text().splitlines()[:2000]]
    texts = [r["question"] + "\n" + r["answer"] for r in rows]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                         max_position_embeddings=1024, tie_word_embeddings=False,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bpe_checkpoint(tmp_path_factory) -> Path:
    return build_bpe_checkpoint(tmp_path_factory.mktemp("bpe") / "model")


def without_chat_template(source: Path, path: Path) -> Path:
    """A copy of the checkpoint `source` whose tokenizer has no chat template."""
    import shutil

    from r1kit.models import load_tokenizer

    shutil.copytree(source, path)
    tok = load_tokenizer(path)
    tok.chat_template = None
    for f in path.glob("chat_template.*"):
        f.unlink()
    tok.save_pretrained(path)
    return path


def readme_recipe(section: str, path: Path, checkpoint: Path) -> Path:
    """The README's TOML block under the heading `section` as a recipe at `path` (no progress
    bar, no TensorBoard), its "path/to/checkpoint" replaced by `checkpoint`."""
    block = (REPO / "README.md").read_text().split(f"### {section}", 1)[1]
    block = block.split("```toml\n", 1)[1].split("```", 1)[0]
    path.write_text("[run]\nprogress = false\ntensorboard = false\n\n"
                    + block.replace("path/to/checkpoint", str(checkpoint)))
    return path


def stops_before_any_stage(recipe, tmp_path, capsys, expected: list[str]) -> None:
    """`r1kit run recipe` exits with 2, the message holds every expected piece, no traceback,
    and no run directory was made."""
    from r1kit.cli import main

    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert all(e in err for e in expected), (expected, err)
    assert "Traceback" not in err and not out.exists()


def tiny_llama(seed: int = 1, max_positions: int = 128, eos: int = 1, pad: int = 0):
    """A random 2-layer Llama with a 40-token vocabulary (tests of the training pass)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=64,
                      max_position_embeddings=max_positions, eos_token_id=eos, pad_token_id=pad)
    return LlamaForCausalLM(cfg)
