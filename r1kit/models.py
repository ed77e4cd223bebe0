"""Loading and saving Hugging Face models and tokenizers; the tiny world's tokenizer and model.

Every stage hands over a real `save_pretrained` directory, so the tiny model goes through
the same code path as a real checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from pathlib import Path

import torch

from r1kit.errors import R1kitError, failed_write, hub_note, looks_like_hub_id

TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
SPECIAL_TOKENS = {"pad_token": "<|pad|>", "bos_token": "<|bos|>", "eos_token": "<|eos|>",
                  "unk_token": "<|unk|>"}
# every printable ASCII character is in the vocabulary, whatever the corpus held
ASCII = [chr(c) for c in range(32, 127)] + ["\n", "\t"]


def build_tiny_tokenizer(texts: list[str], vocab_size: int = 512):
    """A BPE tokenizer trained locally on the tiny world's corpus.

    Numbers are split from the text around them (BPE then merges frequent ones, so the tiny
    world's numbers 0-20 become single tokens, as in GPT-2-style vocabularies) and the tags
    are atomic.
    Merges may cross spaces, so the fixed template text, which opens every document, becomes
    a few tokens: prompts stay short and the tiny model trains fast. Every printable ASCII
    character has a token; any other character the corpus never showed becomes <|unk|>
    (never silently dropped).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"], fuse_unk=True))
    tags = Regex("|".join(re.escape(t) for t in TAG_TOKENS))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tags, behavior="isolated"),  # no merge reaches across a tag
        pre_tokenizers.Digits(individual_digits=False),
    ])
    tok.decoder = decoders.Fuse()
    specials = list(SPECIAL_TOKENS.values())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=ASCII,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens(TAG_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_tiny_model(vocab_size: int, hidden: int, layers: int, heads: int, intermediate: int,
                     max_positions: int, tokenizer, seed: int):
    """A randomly initialised Llama-architecture causal LM with tied embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """"auto" (CUDA when there is a GPU, else the CPU) or a torch device name that this
    machine has; anything else is an error that says what there is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise R1kitError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta, ...: not what r1kit runs on
        raise R1kitError(f"device {name!r}: r1kit runs on the CPU or CUDA GPUs",
                         "use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise R1kitError(f"device {name!r}: this machine has no CUDA GPU (or this torch "
                             f"build has no CUDA: {torch.__version__})",
                             "use device auto or cpu, or install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise R1kitError(f"device {name!r}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)", "use cuda:0 .. cuda:N-1, or auto")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise R1kitError(f"unknown dtype {name!r}", f"use auto, {', '.join(DTYPES)}")
    return DTYPES[name]


# whether checkpoints may bring their own model code (auto_map): set for a run by
# trusting_remote_code (run.trust_remote_code, `r1kit eval --trust-remote-code`)
_TRUST_REMOTE_CODE = False


@contextlib.contextmanager
def trusting_remote_code(trust: bool):
    """Within this block, checkpoints with their own model code (auto_map in config.json)
    load with transformers' trust_remote_code when `trust` is true, and are refused when not."""
    global _TRUST_REMOTE_CODE
    before, _TRUST_REMOTE_CODE = _TRUST_REMOTE_CODE, bool(trust)
    try:
        yield
    finally:
        _TRUST_REMOTE_CODE = before


# any of these makes a directory loadable by AutoTokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def cached_hub_model(ref: str) -> Path | None:
    """The directory of a Hugging Face Hub model id ("Qwen/Qwen2.5-0.5B", or with a revision:
    "Qwen/Qwen2.5-0.5B@main", a branch, tag or commit) in the Hugging Face cache, where
    `huggingface-cli download ID` or transformers put it (HF_HOME, HF_HUB_CACHE); None where
    `ref` is no such id or is not in the cache. r1kit never downloads."""
    ref = str(ref)
    # (a local folder named like the organisation does not hide the cache: only a path that
    # exists does)
    if not looks_like_hub_id(ref) or Path(ref).exists():
        return None
    repo, _, revision = ref.partition("@")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, revision=revision or None, local_files_only=True))
    except Exception:  # (not cached, a malformed id, no huggingface_hub: not found)
        return None


HF_DATA = re.compile(r"hf://datasets/([^/@]+/[^/@]+)(?:@([^/]+))?/(.+)$")


def cached_hub_data(value: str) -> str | None:
    """A data setting of the form hf://datasets/ORG/NAME[@REVISION]/PATH (PATH: a file or a
    glob of shards in the data set, e.g. main/train-*.parquet) as that path in the data set's
    snapshot in the Hugging Face cache, where `huggingface-cli download ORG/NAME --repo-type
    dataset` put it; None for any other value. An R1kitError where the data set is not in the
    cache: r1kit never downloads."""
    found = HF_DATA.match(str(value))
    if found is None:
        return None
    repo, revision, inside = found.groups()
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(repo, repo_type="dataset", revision=revision,
                                     local_files_only=True)
    except Exception:
        raise R1kitError(f"{value}: the data set {repo}"
                         + (f" at revision {revision}" if revision else "")
                         + " is not in the Hugging Face cache (r1kit never downloads)",
                         f"huggingface-cli download {repo} --repo-type dataset"
                         + (f" --revision {revision}" if revision else "")
                         + " puts it there") from None
    return str(Path(snapshot) / inside)


_SNAPSHOT = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/([0-9a-f]{40})/?$")


def hub_snapshot(path: str) -> tuple[str, str] | None:
    """(the Hub id, the commit) of a model's directory in the Hugging Face cache
    (…/models--ORG--NAME/snapshots/COMMIT); None for any other path."""
    found = _SNAPSHOT.search(str(path))
    return (f"{found[1]}/{found[2]}", found[3]) if found else None


def shown_model(ref: str) -> str:
    """A model as a table names it: a Hub id's snapshot in the Hugging Face cache as
    ORG/NAME@COMMIT (its first 12 characters), anything else as it is."""
    snapshot = hub_snapshot(ref)
    return f"{snapshot[0]}@{snapshot[1][:12]}" if snapshot else str(ref)


def check_model_dir(path: str | os.PathLike, kind: str = "causal") -> Path:
    """A clear error unless `path` is a Hugging Face checkpoint directory of a causal LM
    (`kind="causal"`) or of a reward model with a scalar head (`kind="reward"`). A Hub id in
    the Hugging Face cache is its directory there (cached_hub_model)."""
    p = Path(path)
    if not p.exists():
        p = cached_hub_model(str(path)) or p
    if p.is_file():
        raise R1kitError(f"{str(p)!r} is a file, not a model directory",
                         f"give the checkpoint's directory ({str(p.parent)!r}?)")
    if not p.is_dir():
        raise R1kitError(f"model directory {str(p)!r} does not exist{hub_note(str(path))}",
                         "give a Hugging Face checkpoint directory (in a recipe, `model` may "
                         "also name an earlier stage)")
    cfg = p / "config.json"
    if not cfg.is_file() and (p / "adapter_config.json").is_file():  # e.g. a LoRA checkpoint
        if kind != "causal":
            raise R1kitError(f"{str(p)!r} holds a LoRA adapter (peft), not a reward model",
                             "name a reward model's directory (a reward_model stage with LoRA: "
                             f"the stage's own directory, {str(p.parent)!r}?, holds the merged "
                             "model)" if p.name == "adapter" else "name a reward model's "
                             "directory")
        adapter_base(p)  # a whole checkpoint, which load_model merges the adapter into
        return p
    if not cfg.is_file() and any((p / f).exists() for f in (
            "stage.json", "inputs.json", "checkpoints")):  # a stage that has not finished
        ckpts = sorted((c for c in (p / "checkpoints").glob("step-*") if c.name[5:].isdigit()),
                       key=lambda c: int(c.name[5:]))
        raise R1kitError(f"{str(p)!r} is a stage that has not finished: it holds no model yet",
                         f"its checkpoints: {', '.join(str(c) for c in ckpts[-3:])}" if ckpts
                         else "run the same command again to finish it")
    if not cfg.is_file():
        raise R1kitError(f"{str(p)!r} has no config.json: it is not a Hugging Face checkpoint",
                         "save the model with save_pretrained() or give another directory")
    try:
        config = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise R1kitError(f"{cfg}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or not (config.get("model_type")
                                            or config.get("architectures")):
        inside = sorted(d.name for d in p.iterdir() if (d / "config.json").is_file()
                        and (kind == "reward") == _is_reward_model(d / "config.json"))
        raise R1kitError(f"{cfg} is not a model's configuration (no model_type)",
                         f"a run directory? Its checkpoints are its stage directories: "
                         f"{', '.join(str(p / d) for d in inside)}" if inside else
                         "give a Hugging Face checkpoint directory")
    if config.get("auto_map") and not _TRUST_REMOTE_CODE:
        raise R1kitError(f"{str(p)!r} needs its own model code (auto_map in config.json), which "
                         "r1kit runs only when asked to",
                         "if you trust the Python files in that directory: set "
                         "run.trust_remote_code = true (r1kit eval: --trust-remote-code)")
    if kind == "reward":
        check_scalar_head(p, config)
    archs = config.get("architectures") or []
    if kind == "reward":
        if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
            raise R1kitError(f"{str(p)!r} holds a {', '.join(archs)}, not a reward model",
                             "train one with a reward_model stage and name that stage")
        # (transformers writes id2label; a config with neither has its default of 2 labels)
        labels = (len(config["id2label"]) if isinstance(config.get("id2label"), dict)
                  else config.get("num_labels") or 2)
        if labels != 1:  # a classifier: which of its logits is the reward is not r1kit's guess
            raise R1kitError(f"{str(p)!r} is a classifier of {labels} labels, not a reward "
                             "model (r1kit's reward models score a text with one number: a scalar head)",
                             "train one with a reward_model stage (on your preference pairs or "
                             "labels), or save the classifier's head reduced to the one logit "
                             "you mean as the reward (num_labels = 1)")
    elif archs and not any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        raise R1kitError(f"{str(p)!r} holds a {', '.join(archs)}, not a causal language model")
    if kind == "causal" and not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise R1kitError(f"{str(p)!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)})",
                         "save the tokenizer next to the model (tokenizer.save_pretrained)")
    if not any(next(p.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise R1kitError(f"{str(p)!r} holds no weights ({', '.join(WEIGHT_FILES)})",
                         "the directory needs the weights save_pretrained() writes; save or "
                         "copy them again")
    return p


def adapter_base(path: str | os.PathLike) -> Path:
    """The base model of a peft adapter directory (a LoRA stage's checkpoints/step-N, or
    adapters saved by peft elsewhere), checked to be a whole causal LM checkpoint here, with
    peft installed to merge the adapter into it: `load_model` does."""
    p = Path(path)
    try:
        config = json.loads((p / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise R1kitError(f"{p / 'adapter_config.json'}: not valid JSON ({exc})") from exc
    named = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    stage = p.parent.parent if p.parent.name == "checkpoints" else None
    final = stage is not None and (stage / "config.json").is_file()
    merge = ("or merge it into its base model yourself (peft: PeftModel.from_pretrained(base, "
             "adapter).merge_and_unload(), then save_pretrained) and give that directory"
             + (f"; the stage's final model, after its last step, is {stage}, the adapter "
                f"merged" if final else ""))
    if not isinstance(named, str) or not named:
        raise R1kitError(f"{str(p)!r} holds a LoRA adapter (peft) whose adapter_config.json "
                         "names no base model (base_model_name_or_path)",
                         "set base_model_name_or_path to the base model's directory, " + merge)
    base = Path(named)
    if not base.is_absolute():  # peft writes the path as it was given: relative to where it ran
        # (or a Hub id, as TRL's adapters name their base: read from the Hugging Face cache)
        base = base if base.is_dir() else cached_hub_model(named) or p / base
    if not base.is_dir():
        raise R1kitError(f"{str(p)!r} holds a LoRA adapter (peft) on the base model {named!r}, "
                         f"which is not a directory here{hub_note(named)}",
                         "put the base model's checkpoint at that path (or set "
                         "base_model_name_or_path in adapter_config.json to where it is), "
                         + merge)
    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise R1kitError(f"{str(p)!r} holds a LoRA adapter (peft): loading it on its base "
                         "model needs peft", 'pip install "r1kit[lora]", ' + merge) from exc
    if (base / "adapter_config.json").is_file() and not (base / "config.json").is_file():
        raise R1kitError(f"{str(p)!r} holds a LoRA adapter on another adapter ({str(base)!r})",
                         merge)
    return check_model_dir(base)


# the weight files of a checkpoint (safetensors or PyTorch's, whole or in shards)
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json",
                "pytorch_model.bin.index.json")


def reward_objective(path: str | os.PathLike) -> str | None:
    """The objective (pairwise / pointwise) a reward_model stage wrote for its model, or None
    for a reward model from elsewhere."""
    try:
        return json.loads((Path(path) / "reward_model.json").read_text()).get("objective")
    except (OSError, ValueError, AttributeError):
        return None


def _is_reward_model(config_file: Path) -> bool:
    try:
        archs = json.loads(config_file.read_text()).get("architectures") or []
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in archs)


def check_scalar_head(path: str | os.PathLike, config: dict | None = None) -> None:
    """A clear error when a checkpoint's own model code (auto_map) gives no
    sequence-classification model: a reward model (or a reward_model stage's backbone) is
    loaded as one."""
    if config is None:
        config = json.loads((Path(path) / "config.json").read_text())
    auto_map = config.get("auto_map") or {}
    if auto_map and "AutoModelForSequenceClassification" not in auto_map:
        raise R1kitError(f"{str(path)!r} brings its own model code, and that code has no "
                         "scalar-head model (AutoModelForSequenceClassification in auto_map), "
                         "which a reward model needs",
                         "train the reward model from a checkpoint of an architecture that "
                         "transformers implements")


# text that a tokenizer rebuilt around a saved vocabulary would split otherwise: spaces, a
# newline, a tab, digits and numbers of several (Qwen2's own pre-tokenizer splits them one
# by one), accents, CJK, an emoji, the tags and box of a reasoning's answer
_PROBE = ("Hello world,\n  2 + 3 = 5.\tÜber 计算 😀 end. What is 12 + 7? 16 + 47 = 63, and "
          "2024 has 365 days; 1,000,000 = 10^6.\n<think>\nSo 128 x 64 = 8192.\n</think>\n"
          "The answer is \\boxed{42}.")


def _rebuilt(tok, tokenizer_file: Path) -> bool:
    """Whether `tok` gives other token ids than the checkpoint's own tokenizer.json: since
    transformers 5, AutoTokenizer rebuilds some model types' tokenizer class (Qwen2: byte
    level, its own pre-tokenizer) around the saved vocabulary, ignoring how tokenizer.json
    splits text (a character-level tokenizer loses its spaces)."""
    from tokenizers import Tokenizer

    try:
        saved = Tokenizer.from_file(str(tokenizer_file)).encode(_PROBE, add_special_tokens=False)
        return tok(_PROBE, add_special_tokens=False)["input_ids"] != saved.ids
    except Exception:  # a tokenizer.json the tokenizers library cannot read as it is: keep tok
        return False


def load_tokenizer(path: str | os.PathLike):
    """The checkpoint's tokenizer. A directory whose tokenizer_config.json names the generic
    PreTrainedTokenizerFast is loaded as exactly that. Any other is loaded with AutoTokenizer
    and, where that gives other token ids than the directory's tokenizer.json (_rebuilt: a
    Qwen2 checkpoint with a tokenizer of its own), loaded again as PreTrainedTokenizerFast:
    the ids the model was trained with."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if is_adapter(path) and not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
        path = adapter_base(path)  # an adapter saved without its tokenizer: the base's
    saved = Path(path) / "tokenizer_config.json"
    generic = False
    if saved.is_file():
        try:
            generic = json.loads(saved.read_text()).get("tokenizer_class") in (
                "PreTrainedTokenizerFast", "TokenizersBackend")
        except (json.JSONDecodeError, UnicodeDecodeError):
            generic = False
    cls = PreTrainedTokenizerFast if generic else AutoTokenizer
    try:
        tok = cls.from_pretrained(str(path), trust_remote_code=_TRUST_REMOTE_CODE)
        if not generic and (Path(path) / "tokenizer.json").is_file() and _rebuilt(
                tok, Path(path) / "tokenizer.json"):
            tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    except R1kitError:
        raise
    except Exception as exc:  # a corrupt or unreadable tokenizer file: say which, no traceback
        raise R1kitError(f"could not load the tokenizer of {str(path)!r}: "
                         f"{type(exc).__name__}: {_first_line(exc)}",
                         "check its tokenizer files (tokenizer.json, tokenizer_config.json), "
                         "and that the installed transformers / tokenizers read them (a file "
                         f"saved by a newer version may not; transformers {_version()})") from exc
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise R1kitError(f"the tokenizer of {str(path)!r} has neither an end-of-sequence "
                             "nor a padding token",
                             "set eos_token (and pad_token) in its tokenizer_config.json: "
                             "sampling stops at the end-of-sequence token")
        tok.pad_token = tok.eos_token
    return tok


@contextlib.contextmanager
def quiet_loading():
    """No weight-loading progress bars or load reports from transformers (a scalar head that
    a reward model adds to a causal LM is reported as missing, as it should be)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def save_model(model, tokenizer, path: str | os.PathLike, state_dict: dict | None = None) -> None:
    """A Hugging Face checkpoint directory: the model (safetensors) and its tokenizer.
    `state_dict`: the weights to write in place of the model's own (a sharded model's whole
    weights)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    # a model sharded with FSDP2 has a wrapper class made by torch; save_pretrained would copy
    # torch's files as the model's own code (auto_map): save as the model's own class instead
    cls = type(model)
    own = next(c for c in cls.__mro__ if not c.__module__.startswith("torch."))
    # training turns the model's cache off (r1kit's stages need none); the checkpoint keeps
    # transformers' default, so that a plain forward call returns one as the user expects
    config = getattr(model, "config", None)
    cache = getattr(config, "use_cache", None)
    with quiet_loading():
        try:
            if own is not cls and not own.__module__.startswith("transformers."):
                model.__class__ = own
            if cache is False:
                config.use_cache = True
            if state_dict is not None:
                model.save_pretrained(path, state_dict=state_dict)
            else:
                model.save_pretrained(path)
        except Exception as exc:  # (a full disk: said as Python's own writes say it)
            said = failed_write(exc, path)
            if said is None:
                raise
            raise said from exc
        finally:
            model.__class__ = cls
            if cache is False:
                config.use_cache = False
        tokenizer.save_pretrained(path)


def add_stop_token(model, token_id: int | None) -> None:
    """Add token_id to the model's generation config's eos ids, so that transformers'
    generate (and servers that read generation_config.json) stop on it too."""
    gen = getattr(model, "generation_config", None)
    if token_id is None or gen is None:
        return
    eos = gen.eos_token_id
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if token_id not in ids:
        gen.eos_token_id = [*ids, int(token_id)] if ids else int(token_id)


def disable_dropout(model) -> None:
    """Dropout off everywhere in `model`: its Dropout modules and the dropout rates that
    attention modules keep as numbers (transformers' attention passes `attention_dropout` to
    the kernel while training). In RL the policy that sampled and the policy being updated
    must compute the same probabilities: with dropout the on-policy ratio is not 1."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "attn_dropout", "dropout", "dropout_p"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    if config is not None:
        for name, value in list(vars(config).items()):
            if isinstance(value, float) and ("dropout" in name or name.endswith("_pdrop")):
                setattr(config, name, 0.0)


def checkpoint_layers(model) -> None:
    """transformers' activation checkpointing (non-reentrant) on a model: each decoder layer
    recomputed in the backward pass. transformers 5.2x renames the method; both work."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_model(path: str | os.PathLike, device: torch.device, dtype: torch.dtype,
               tokenizer=None):
    """The causal LM of a checkpoint directory (or of a peft adapter directory: its base model
    with the adapter merged); with `tokenizer`, checked to have an embedding for each of its
    tokens."""
    check_model_dir(path)
    if is_adapter(path):
        model = _merged_adapter(path, dtype)
    else:
        model = _load_whole(path, dtype)
    try:
        rows = model.get_input_embeddings().num_embeddings
    except (NotImplementedError, AttributeError):  # own model code without the accessor
        rows = None
    if tokenizer is not None and rows is not None:
        if len(tokenizer) > rows:
            raise R1kitError(f"the tokenizer of {str(path)!r} has {len(tokenizer)} tokens but "
                             f"the model embeds only {rows}",
                             "after adding tokens, call model.resize_token_embeddings("
                             "len(tokenizer)) and save the model again")
    return model.to(device)


POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length",
                 "seq_length")


def trained_positions(config) -> int | None:
    """The positions a model was trained on, from its config (an object, or config.json as a
    dict): Llama's max_position_embeddings, GPT-2's n_positions, ... ; None where it gives
    none."""
    for key in POSITION_KEYS:
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def is_adapter(path: str | os.PathLike) -> bool:
    """Whether `path` holds a peft adapter rather than a whole model."""
    p = Path(path)
    return (p / "adapter_config.json").is_file() and not (p / "config.json").is_file()


def _merged_adapter(path: str | os.PathLike, dtype: torch.dtype):
    """The base model of a peft adapter directory with the adapter merged into its weights."""
    from peft import PeftModel

    base = adapter_base(path)
    model = _load_whole(base, dtype)
    try:
        with quiet_loading(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft on transformers 5's names
            merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except (R1kitError, MemoryError):
        raise
    except Exception as exc:  # adapters that do not fit the base model, a corrupt file, ...
        raise R1kitError(f"could not load the LoRA adapter of {str(path)!r} on its base model "
                         f"{str(base)!r}: {type(exc).__name__}: "
                         f"{_first_line(exc)}", "the adapter must have been trained on that "
                         "base model (its adapter_config.json names it)") from exc
    for param in merged.parameters():  # peft loads for inference: frozen. A whole model
        param.requires_grad_(True)     # trains every weight, as from_pretrained's does
    return merged


def _load_whole(path: str | os.PathLike, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    try:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype,
                                                         trust_remote_code=_TRUST_REMOTE_CODE)
    except (R1kitError, MemoryError):
        raise
    except Exception as exc:  # missing or corrupt weight files, ...: say which, no traceback
        weights = isinstance(exc, OSError) or "safetensor" in type(exc).__name__.lower()
        shapes = "ignore_mismatched_sizes" in str(exc) or "size mismatch" in str(exc)
        raise R1kitError(f"could not load the model of {str(path)!r}: "
                         f"{type(exc).__name__}: {_first_line(exc)}",
                         "the directory needs the weights save_pretrained() writes "
                         "(model.safetensors or its shards); save or copy them again"
                         if weights else "the weights' shapes do not match config.json (e.g. "
                         "hidden_size, num_hidden_layers, vocab_size): save the model and its "
                         "config together again" if shapes else "check that the installed "
                         f"transformers ({_version()}) supports this model type and its "
                         "files") from exc
    return model


def _version() -> str:
    import transformers

    return transformers.__version__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def load_reward_model(path: str | os.PathLike, device: torch.device, dtype: torch.dtype,
                      pad_token_id: int | None):
    """A causal-LM checkpoint or a trained reward model, as a one-label scalar-head model."""
    from transformers import AutoModelForSequenceClassification

    with quiet_loading():
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=1, dtype=dtype, trust_remote_code=_TRUST_REMOTE_CODE)
    model.config.pad_token_id = pad_token_id
    return model.to(device)


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Token ids that end a response: the tokenizer's eos, the generation config's, and the
    chat template's end of turn (r1kit.templates.end_of_turn_id: what SFT with the chat
    template ends responses with)."""
    from r1kit.templates import end_of_turn_id

    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    turn = end_of_turn_id(tokenizer)
    if turn is not None:
        ids.add(turn)
    gen = getattr(model, "generation_config", None) if model is not None else None
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    if not ids and model is not None:  # (every sample would run to max_new_tokens)
        error = R1kitError("the model has no stop token (no eos_token in its tokenizer, no "
                           "eos_token_id in its generation_config.json, no end of turn in a "
                           "chat template): no sample could end before max_new_tokens",
                           "set eos_token in the model's tokenizer_config.json")
        error.same_on_every_process = True  # (read from the same files by every process)
        raise error
    return sorted(ids)
