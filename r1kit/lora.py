"""LoRA adapters (peft) for the stages that train weights (grpo, sft, reward_model): `lora_rank
> 0` in a stage trains adapters on `lora_target_modules` with every other weight frozen (a
reward model's scalar head trains whole). A stage's
checkpoints hold the adapters alone (a peft directory on the stage's input model); its final
model is the merged one (what later stages load), with the final adapters beside it in
`STAGE/adapter/`. Under FSDP2 the adapters are gathered from the shards and merged here
(merged_lora_state), where peft's own merge cannot run."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from r1kit import distributed
from r1kit.errors import R1kitError
from r1kit.models import is_adapter, quiet_loading

PEFT_PREFIX = "base_model.model."  # a peft model's names of its base model's tensors
LORA_ADAPTER = "default"  # the adapter's name in its tensors' names (peft's default)
# a module trained whole beside the adapters (a reward model's scalar head): peft's name of
# its trained copy, which peft saves under the module's own name
TRAINED_WHOLE = f".modules_to_save.{LORA_ADAPTER}."


def apply_lora(model, cfg, base: Path | None = None, task_type: str | None = None):
    """(the peft model, the model to train and sample with): LoRA adapters on
    `lora_target_modules`, every other weight frozen. peft injects the adapters into the base
    model's own modules, so the base model object computes with them and keeps its usual
    forward signature (which the rollout engine and the chunked output layer rely on).
    `base`: the directory the model came from, written absolute into the adapters'
    adapter_config.json (peft would write the path as given: relative to where r1kit ran).
    `task_type` "SEQ_CLS" (a reward model): the scalar head trains whole beside the adapters
    (peft's modules_to_save), and "all-linear" leaves it out of the adapted layers."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise R1kitError("lora_rank > 0 needs peft", 'pip install "r1kit[lora]"') from exc
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = cfg.lora_target_modules  # a list, or peft's "all-linear"
    missing = [m for m in targets if m not in names] if not isinstance(targets, str) else []
    if missing:
        raise R1kitError(f"lora_target_modules: the model has no module named {missing}",
                         "the model's linear layers include: " + ", ".join(sorted(
                             {n.rsplit('.', 1)[-1] for n, m in model.named_modules()
                              if isinstance(m, torch.nn.Linear)
                              or type(m).__name__ == "Conv1D"})))  # GPT-2's projections
    with warnings.catch_warnings():  # peft reads transformers 5's deprecated name: not ours
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        peft_model = get_peft_model(model, LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=targets if isinstance(targets, str) else list(targets),
            bias="none", task_type=task_type))
    if base is not None:
        peft_model.peft_config["default"].base_model_name_or_path = str(Path(base).resolve())
    return peft_model, peft_model.get_base_model()


def gathered_adapters(policy) -> dict:
    """A sharded LoRA policy's adapter tensors, whole, under peft's names (a collective: every
    rank calls it), never the frozen weights."""
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    return {PEFT_PREFIX + k: v for k, v in distributed.full_tensors(policy, trainable).items()}


def save_adapters(peft_model, path: Path, adapters: dict | None = None) -> None:
    """peft's save_pretrained of the adapters (`adapters`: a sharded policy's, gathered), with
    the base model seen as its own class: FSDP2's wrapper class (made by torch) would go into
    adapter_config.json's auto_mapping, which peft's loaders then refuse to import."""
    base = peft_model.get_base_model()
    cls = type(base)
    own = next(c for c in cls.__mro__ if not c.__module__.startswith("torch."))
    with quiet_loading():
        try:
            base.__class__ = own
            peft_model.save_pretrained(path, state_dict=adapters)  # None: the model's own
        finally:
            base.__class__ = cls


def load_adapters(peft_model, directory: Path, device) -> None:
    """The LoRA adapters of a checkpoint written by save_checkpoint, into `peft_model`."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = directory / "adapter_model.safetensors"
    if not path.is_file():
        raise R1kitError(f"the checkpoint {directory} has no LoRA adapters "
                         "(adapter_model.safetensors): it was saved without LoRA",
                         "resume with lora_rank = 0, or delete its checkpoints directory to "
                         "start over")
    model = peft_model.get_base_model()
    if not distributed.is_sharded(model):
        checked_adapter_load(
            lambda: set_peft_model_state_dict(peft_model, load_file(path, device=str(device))),
            directory)
        return
    # sharded: peft's loader cannot write into sharded weights; its file names each adapter
    # without the adapter's name ("default"), under the peft model's prefix, and a module
    # trained whole (a reward model's scalar head) by the module's own name
    by_saved = {PEFT_PREFIX + n.replace(TRAINED_WHOLE, ".").replace(f".{LORA_ADAPTER}.", "."): n
                for n, p in model.named_parameters() if p.requires_grad}
    saved = load_file(path, device="cpu")
    unknown = sorted(k for k in saved if k not in by_saved)
    if unknown:
        raise R1kitError(f"the checkpoint {directory} has adapter weights this model lacks: "
                         f"{unknown[:3]}", "resume with the lora_rank and lora_target_modules "
                         "it was saved with, or delete its checkpoints directory to start over")
    checked_adapter_load(lambda: distributed.load_full_state(
        model, {by_saved[k]: v for k, v in saved.items()}, strict=False), directory)


def merged_lora_state(state: dict, cfg) -> dict:
    """A LoRA-adapted model's whole state dict (peft's names: base_layer, lora_A, lora_B) as
    the plain model's: W + (lora_alpha / lora_rank) * B @ A in each adapted layer, as peft's
    merge_and_unload computes it, for weights gathered from shards (where peft's own merge
    cannot run). A reward model's scalar head, trained whole beside the adapters (peft's
    modules_to_save), takes its trained copy's place."""
    scale = cfg.lora_alpha / cfg.lora_rank
    out, used = {}, set()
    for key, value in state.items():
        if TRAINED_WHOLE in key:
            out[key.replace(TRAINED_WHOLE, ".")] = value
            used |= {key, key.replace(TRAINED_WHOLE, ".original_module.")}
            continue
        if ".base_layer." not in key:
            continue
        module, leaf = key.split(".base_layer.")
        out[f"{module}.{leaf}"] = value
        used.add(key)
        if leaf != "weight":
            continue
        a, b = (f"{module}.lora_{x}.{LORA_ADAPTER}.weight" for x in "AB")
        if a not in state or b not in state or value.dim() != 2:
            raise R1kitError(f"cannot merge the LoRA adapters of {module}: not a linear "
                             "layer's", 'use distributed = "ddp" with LoRA on this model')
        delta = state[b].float() @ state[a].float() * scale
        out[f"{module}.weight"] = (value.float() + delta).to(value.dtype)
        used |= {a, b}
    left = [k for k in state if k not in used and ".lora_" in k]
    if left:
        raise R1kitError(f"cannot merge the LoRA adapters {left[:3]}",
                         'use distributed = "ddp" with LoRA on this model')
    out.update({k: v for k, v in state.items() if k not in used and k not in out})
    return out


def _plain_lora(config: dict) -> bool:
    """Whether an adapter_config.json is a plain LoRA adapter: one rank and scale for every
    adapted linear layer, nothing else trained."""
    return (isinstance(config, dict) and config.get("peft_type") == "LORA"
            and isinstance(config.get("r"), int) and config["r"] > 0
            and not config.get("use_dora") and not config.get("rank_pattern")
            and not config.get("alpha_pattern") and not config.get("modules_to_save")
            and config.get("layers_to_transform") is None and not config.get("layers_pattern")
            and config.get("bias", "none") == "none")


def _lora_scale(config: dict) -> float:
    rank = config["r"]
    return config["lora_alpha"] / (rank ** 0.5 if config.get("use_rslora") else rank)


def flatten_stacked(adapter_dir: Path, below: Path) -> bool:
    """A stage's final adapters `adapter_dir`, trained on the model of the adapter directory
    `below` merged into its base, rewritten as one adapter on that base, so that peft loads
    them on a plain model (an adapter whose base is an adapter loaded as the untrained base).
    Two LoRA updates of a layer sum: s1 B1 A1 + s2 B2 A2 = [s1 B1, s2 B2] [A1; A2], one of rank
    r1 + r2 and scale 1 (a layer only one of them adapts: zeros in the other's block). Returns
    whether it was rewritten: it is not where `below` is not a plain LoRA adapter in
    safetensors on a whole model (the adapters then stay on the merged model, as trained)."""
    import json
    import re

    from safetensors.torch import load_file, save_file

    from r1kit.models import adapter_base

    try:
        lower = json.loads((below / "adapter_config.json").read_text())
        upper = json.loads((adapter_dir / "adapter_config.json").read_text())
        base = adapter_base(below)
        w1 = load_file(below / "adapter_model.safetensors")
        w2 = load_file(adapter_dir / "adapter_model.safetensors")
    except (OSError, ValueError, R1kitError):
        return False
    ends = (".lora_A.weight", ".lora_B.weight")
    if not (_plain_lora(lower) and _plain_lora(upper)) or not all(
            k.endswith(ends) for k in (*w1, *w2)):
        return False
    (r1, s1, w1), (r2, s2, w2) = ((c["r"], _lora_scale(c), w) for c, w in
                                  ((lower, w1), (upper, w2)))
    out = {}
    for module in sorted({k.rsplit(".lora_", 1)[0] for k in (*w1, *w2)}):
        a1, b1, a2, b2 = (w.get(f"{module}.lora_{x}.weight") for w in (w1, w2) for x in "AB")
        if (a1 is None) != (b1 is None) or (a2 is None) != (b2 is None):
            return False
        a, b = (a1, b1) if a1 is not None else (a2, b2)
        rows, cols = a.shape[1], b.shape[0]
        out[f"{module}.lora_A.weight"] = torch.cat([
            a1.float() if a1 is not None else torch.zeros(r1, rows),
            a2.float() if a2 is not None else torch.zeros(r2, rows)]).to(a.dtype)
        out[f"{module}.lora_B.weight"] = torch.cat([
            s1 * b1.float() if b1 is not None else torch.zeros(cols, r1),
            s2 * b2.float() if b2 is not None else torch.zeros(cols, r2)], dim=1).to(b.dtype)
    names = sorted({k.rsplit(".lora_", 1)[0].removeprefix(PEFT_PREFIX) for k in out})
    config = {**upper, "r": r1 + r2, "lora_alpha": r1 + r2, "use_rslora": False,
              "base_model_name_or_path": str(base.resolve()),
              # exactly the layers either adapted (peft reads a string as a full match)
              "target_modules": "(?:" + "|".join(map(re.escape, names)) + ")"}
    save_file(out, adapter_dir / "adapter_model.safetensors", metadata={"format": "pt"})
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return True


def checked_adapter_load(load, where: Path) -> None:
    """Run load() (returning missing and unexpected keys); adapters that do not fit the model
    (other LoRA settings than the checkpoint's) become an error that says so."""
    hint = ("resume with the lora_rank and lora_target_modules it was saved with, or delete "
            "its checkpoints directory to start over")
    try:
        unexpected = load().unexpected_keys
    except RuntimeError as exc:  # a shape mismatch
        raise R1kitError(f"the checkpoint {where} does not fit this model's LoRA adapters "
                         f"({str(exc).strip().splitlines()[-1].strip()})", hint) from exc
    if unexpected:
        raise R1kitError(f"the checkpoint {where} has adapter weights this model lacks: "
                         f"{sorted(unexpected)[:3]}", hint)


def save_final(lora, model, cfg, tokenizer, stage_dir: Path):
    """The end of a LoRA stage: the final adapters written to `stage_dir/adapter` (a peft
    directory), and (the model, its state dict or None) to save as the stage's plain
    checkpoint, the adapters merged into the weights (every rank calls it: gathering shards
    is a collective; the state dict is rank 0's alone)."""
    world = distributed.current()
    sharded = distributed.is_sharded(model)
    adapters = gathered_adapters(model) if sharded else None
    if world.is_main:
        save_adapters(lora, stage_dir / "adapter", adapters)
        below = Path(lora.peft_config[LORA_ADAPTER].base_model_name_or_path or "")
        if lora.peft_config[LORA_ADAPTER].task_type is None and is_adapter(below):
            flatten_stacked(stage_dir / "adapter", below)
        with quiet_loading():
            tokenizer.save_pretrained(stage_dir / "adapter")
    if not sharded:
        return lora.merge_and_unload(), None
    weights = distributed.full_state(model)
    return model, merged_lora_state(weights, cfg) if world.is_main else None
