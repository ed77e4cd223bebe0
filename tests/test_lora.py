"""LoRA (peft) in the grpo, sft and reward_model stages: only the adapters train, the stage
saves merged weights."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import MICRO_BASE, REPO
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from r1kit.cli import main
from r1kit.config import GRPOConfig
from r1kit.errors import R1kitError
from r1kit.lora import apply_lora, load_adapters
from r1kit.models import load_model
from r1kit.stages.grpo import save_checkpoint

pytest.importorskip("peft")


def test_lora_grpo_trains_adapters_and_saves_a_plain_merged_checkpoint(tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(REPO / "recipes" / "zero-tiny.toml"), "--out", "run", *MICRO_BASE,
                 "--set", "run.progress=false", "--set", "stages.zero.steps=3",
                 "--set", "stages.zero.save_every=2",
                 "--set", "stages.zero.rollout_batch_size=32", "--set", "stages.zero.eval.every=0",
                 "--set", "stages.zero.lora_rank=4", "--set", "stages.zero.lr=1e-2",
                 "--set", 'stages.zero.lora_target_modules=["q_proj", "v_proj"]']) == 0
    base = load_file(out / "base" / "model.safetensors")
    tuned = load_file(out / "zero" / "model.safetensors")
    assert tuned.keys() == base.keys()  # a plain checkpoint: no adapter weights left
    # training turned the cache off; the checkpoint keeps transformers' default
    assert json.loads((out / "zero" / "config.json").read_text())["use_cache"] is True
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    # the step checkpoint's adapters name their base model absolute, though the run
    # directory was given relative: loadable with peft from anywhere
    adapter = json.loads((out / "zero/checkpoints/step-2/adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str((out / "base").resolve())

    # a step checkpoint loads as its base model with the adapters merged: W + alpha / r * B A
    step = out / "zero/checkpoints/step-2"
    model = load_model(step, torch.device("cpu"), torch.float32)
    assert all(p.requires_grad for p in model.parameters())  # trainable, as any loaded model
    merged = model.state_dict()
    lora = load_file(step / "adapter_model.safetensors")
    scale = adapter["lora_alpha"] / adapter["r"]
    assert set(base) <= merged.keys()  # (and a tied lm_head.weight)
    for key in changed:
        module = "base_model.model." + key.removesuffix(".weight")
        delta = lora[f"{module}.lora_B.weight"] @ lora[f"{module}.lora_A.weight"] * scale
        assert delta.abs().max() > 0
        torch.testing.assert_close(merged[key], base[key] + delta)
    assert all(torch.equal(merged[k], base[k]) for k in base if k not in changed)
    # and r1kit eval takes it, prompting as the stage did
    assert main(["eval", "--model", str(step), "--bench", "tiny", "--limit", "2", "--k", "1",
                 "--max-new-tokens", "4"]) == 0
    assert "prompts as stage 'zero' trained this model" in capsys.readouterr().out
    # the final adapters beside the merged model: merged, they are the stage's final weights
    final = load_model(out / "zero" / "adapter", torch.device("cpu"), torch.float32).state_dict()
    for key in base:
        torch.testing.assert_close(final[key], tuned[key], msg=key)
    # and prompted as the stage trained it, as its step checkpoints are
    assert main(["eval", "--model", str(out / "zero" / "adapter"), "--bench", "tiny", "--limit",
                 "2", "--k", "1", "--max-new-tokens", "4"]) == 0
    assert "prompts as stage 'zero' trained this model" in capsys.readouterr().out


def test_merging_gathered_lora_weights_is_peft_merge(tmp_path):
    """Under fsdp the adapters are merged into weights gathered from the shards
    (merged_lora_state), where peft's merge_and_unload cannot run: the same weights as peft's
    merge, with a bias, under the plain model's names; a LoRA tensor it cannot merge is an
    error, not a silent drop."""
    from r1kit.lora import merged_lora_state

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, attention_bias=True))
    plain_names = set(model.state_dict())
    cfg = GRPOConfig(lora_rank=4, lora_alpha=8.0, lora_target_modules=["q_proj", "down_proj"])
    peft_model, policy = apply_lora(model, cfg)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_()  # peft starts B at zero: a merge would change nothing
    adapted = {k: v.clone() for k, v in policy.state_dict().items()}
    merged = merged_lora_state(adapted, cfg)
    want = peft_model.merge_and_unload().state_dict()
    assert merged.keys() == want.keys() == plain_names
    for k in want:
        torch.testing.assert_close(merged[k], want[k], msg=k)
    q = "model.layers.0.self_attn.q_proj"
    assert (merged[q + ".bias"] == want[q + ".bias"]).all()
    broken = {k: v for k, v in adapted.items() if "down_proj.lora_A" not in k}
    with pytest.raises(R1kitError, match="cannot merge the LoRA adapters of "
                                         "model.layers.0.mlp.down_proj"):
        merged_lora_state(broken, cfg)


def test_all_linear_adapts_every_linear_layer_but_the_output(tmp_path):
    """lora_target_modules = "all-linear" (peft's, as TRL users write it): adapters on every
    projection, none on lm_head; other text is refused with the recipe's key."""
    from conftest import REPO

    from r1kit.config import load_recipe

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64))
    recipe = str(REPO / "recipes" / "zero-tiny.toml")
    cfg = load_recipe(recipe, ["stages.zero.lora_rank=4",
                               'stages.zero.lora_target_modules="all-linear"']).stages["zero"]
    _, policy = apply_lora(model, cfg)
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in policy.named_parameters()
               if "lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                       "down_proj"}
    assert not any("lm_head" in n and "lora" in n for n, _ in policy.named_parameters())
    with pytest.raises(R1kitError, match="lora_target_modules: 'all' is not a list"):
        load_recipe(recipe, ['stages.zero.lora_target_modules="all"'])


def test_lora_targets_the_model_lacks_are_found_before_any_stage(tmp_path, bpe_checkpoint):
    """A name the model does not have, found as the recipe is checked (it was found as the
    stage started, after the stages before it had run), through a stage's chain of models."""
    from r1kit.config import check_inputs, load_recipe

    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "1+1=", "response": "2"}\n')
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[stages.sft]\nkind = "sft"\nmodel = "{bpe_checkpoint}"\n'
                      f'data = "{data}"\n'
                      '[stages.rl]\nkind = "grpo"\nmodel = "sft"\nlora_rank = 4\n'
                      'lora_target_modules = ["q_proj", "c_attn"]\n')
    with pytest.raises(R1kitError, match=r"stages.rl.lora_target_modules: the model has no "
                                         r"module named \['c_attn'\]") as err:
        check_inputs(load_recipe(recipe))
    assert "q_proj" in err.value.hint and "all-linear" in err.value.hint
    # a reward model's layers: its scalar head in place of the output layer
    recipe.write_text(f'[stages.rm]\nkind = "reward_model"\nmodel = "{bpe_checkpoint}"\n'
                      'lora_rank = 4\nlora_target_modules = ["q_proj", "lm_head"]\n')
    with pytest.raises(R1kitError, match=r"stages.rm.lora_target_modules: the model has no "
                                         r"module named \['lm_head'\]") as err:
        check_inputs(load_recipe(recipe))
    assert "score" in err.value.hint and "lm_head" not in err.value.hint


def _lora_model(rank: int, targets=("q_proj", "v_proj")):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64))
    cfg = GRPOConfig(lora_rank=rank, lora_target_modules=list(targets))
    return apply_lora(model, cfg)


def test_lora_checkpoint_round_trip_and_mismatched_settings(tmp_path):
    """save_checkpoint writes the adapters (not the model) and load_adapters reads them back
    exactly; adapters saved with other LoRA settings, or a checkpoint saved without LoRA, stop
    the resume with a message that says why."""
    peft_model, policy = _lora_model(4)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if p.requires_grad:
                p.normal_()
    ref = copy.deepcopy(policy)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad])
    tok = _tokenizer()
    ckpt = save_checkpoint(tmp_path, 3, policy, tok, opt, ref, {"step": 3}, 2, lora=peft_model)
    assert (ckpt / "adapter_config.json").is_file() and not (ckpt / "model.safetensors").exists()
    saved_ref = torch.load(ckpt / "trainer_state.pt", weights_only=True)["ref"]
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert set(saved_ref) == trainable and all("lora_" in n for n in trainable)

    fresh_peft, fresh = _lora_model(4)
    load_adapters(fresh_peft, ckpt, "cpu")
    a, b = policy.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # and peft itself loads the checkpoint onto the input model, with the same outputs
    from peft import PeftModel

    torch.manual_seed(0)
    base = LlamaForCausalLM(fresh.config)
    loaded = PeftModel.from_pretrained(base, ckpt).eval()
    ids = torch.tensor([[3, 5, 7, 9]])
    torch.testing.assert_close(loaded(ids).logits, policy.eval()(ids).logits)

    with pytest.raises(R1kitError, match="does not fit this model's LoRA adapters"):
        load_adapters(_lora_model(8)[0], ckpt, "cpu")  # another rank
    with pytest.raises(R1kitError, match="adapter weights this model lacks"):
        load_adapters(_lora_model(4, ("q_proj",))[0], ckpt, "cpu")  # fewer target modules
    plain = save_checkpoint(tmp_path / "plain", 1, ref, tok, opt, None, {"step": 1}, 2)
    with pytest.raises(R1kitError, match="saved without LoRA"):
        load_adapters(_lora_model(4)[0], plain, "cpu")


def _tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(40)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "t0")))


def test_lora_sft_trains_adapters_learns_and_resumes_exactly(tmp_path, monkeypatch,
                                                             bpe_checkpoint):
    """An sft stage with lora_rank: only the adapted layers' weights change, the loss falls,
    checkpoints hold the adapters alone, an interrupted stage resumes from one to the weights
    and logged losses of an uninterrupted run, and the final adapters merged are the stage's
    final model."""
    from conftest import interrupt_at_call, rows_without_timings

    import r1kit.stages.sft as sft
    from r1kit.config import recipe_from_dict
    from r1kit.pipeline import run_recipe

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + 2?",
                                        "response": f"<think>{i}+2</think> {i + 2}"}) + "\n"
                            for i in range(12)))

    def recipe():
        return recipe_from_dict({"run": {"progress": False, "tensorboard": False}, "stages": {
            "sft": {"kind": "sft", "model": str(bpe_checkpoint), "data": str(data),
                    "epochs": 4, "batch_size": 4, "micro_batch_size": 2, "lr": 1e-2,
                    "save_every": 4, "template": "none", "lora_rank": 4,
                    "lora_target_modules": ["q_proj", "v_proj", "down_proj"]}}})

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_recipe(recipe(), whole, print_fn=lambda *_: None)
    base = load_file(bpe_checkpoint / "model.safetensors")
    tuned = load_file(whole / "sft" / "model.safetensors")
    assert tuned.keys() == base.keys()  # a plain checkpoint: no adapter weights left
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight", "down_proj.weight"))
                           for k in changed)
    losses = [r["loss"] for r in rows_without_timings(whole / "metrics.jsonl")]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3  # learned
    step = whole / "sft" / "checkpoints" / "step-8"
    assert (step / "adapter_config.json").is_file() and not (step / "model.safetensors").exists()
    final = load_model(whole / "sft" / "adapter", torch.device("cpu"),
                       torch.float32).state_dict()
    for key in base:
        torch.testing.assert_close(final[key], tuned[key], msg=key)

    real = interrupt_at_call(monkeypatch, sft, "sft_loss", 11)  # step six: 2 micro-batches a step
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe(), resumed, print_fn=lambda *_: None)
    monkeypatch.setattr(sft, "sft_loss", real)
    printed = []
    run_recipe(recipe(), resumed, print_fn=printed.append)
    assert any("resuming from" in line and "step-4" in line for line in printed)
    assert rows_without_timings(resumed / "metrics.jsonl") == \
        rows_without_timings(whole / "metrics.jsonl")
    again = load_file(resumed / "sft" / "model.safetensors")
    assert all(torch.equal(again[k], tuned[k]) for k in tuned)


def test_lora_reward_models_learn_with_the_backbone_frozen(tmp_path, monkeypatch):
    """A reward_model stage with lora_rank > 0 trains adapters and the scalar head (a new
    layer: it cannot stay frozen); the backbone's other weights stay as they were; the stage
    saves the merged model, which the grpo stage's scorer loads, and its adapters."""
    from r1kit.rewards.combined import RewardModelScorer

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main([
        "run", str(REPO / "recipes" / "reward-models-tiny.toml"), "--out", str(out),
        *MICRO_BASE, "--set", "run.progress=false",
        *[arg for stage in ("helpful", "safety") for arg in (
            "--set", f"stages.{stage}.train_rows=1200", "--set", f"stages.{stage}.test_rows=200",
            "--set", f"stages.{stage}.lr=5e-3", "--set", f"stages.{stage}.lora_rank=8")],
    ]) == 0
    base = load_file(next((tmp_path / "cache").rglob("model.safetensors")))
    for stage, metric in (("helpful", "pairwise_accuracy"), ("safety", "safety_accuracy")):
        summary = json.loads((out / stage / "stage.json").read_text())["summary"]
        assert summary[metric] >= 0.75, (stage, summary)  # chance: 0.5
        merged = load_file(out / stage / "model.safetensors")
        assert "score.weight" in merged and (out / stage / "adapter" / "adapter_config.json"
                                             ).is_file()
        frozen = [k for k in base if "proj" not in k and k in merged]
        assert frozen and all(torch.equal(base[k], merged[k]) for k in frozen)
        adapted = [k for k in base if "proj" in k]
        assert adapted and all(not torch.equal(base[k], merged[k]) for k in adapted)
    scorer = RewardModelScorer(out / "helpful", torch.device("cpu"), torch.float32)
    assert len(scorer(["Say hello to Ann."], ["Hello, Ann!"])) == 1


def test_a_lora_stage_on_an_adapter_writes_one_adapter_on_the_plain_base(tmp_path,
                                                                           bpe_checkpoint):
    """A LoRA stage whose model is an adapter directory (an earlier LoRA stage's checkpoint)
    trains adapters on that adapter merged into its base. Its adapter/ named the adapter
    directory as its base, and peft loaded it as the untrained base model; now adapter/ is
    one adapter (rank r1 + r2) on the plain base, which plain peft merges into the stage's
    final weights, layers adapted by either stage alone included."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from r1kit.config import recipe_from_dict
    from r1kit.pipeline import run_recipe

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + 2?",
                                        "response": f"<think>{i}+2</think> {i + 2}"}) + "\n"
                            for i in range(8)))

    def stage(model, rank, targets):
        return {"kind": "sft", "model": str(model), "data": str(data), "epochs": 2,
                "batch_size": 4, "lr": 1e-2, "save_every": 2, "template": "none",
                "lora_rank": rank, "lora_alpha": 16, "lora_target_modules": targets}

    def run(out, model, rank, targets):
        run_recipe(recipe_from_dict({"run": {"progress": False, "tensorboard": False},
                                     "stages": {"sft": stage(model, rank, targets)}}),
                   out, print_fn=lambda *_: None)

    run(tmp_path / "first", bpe_checkpoint, 4, ["q_proj", "v_proj"])
    below = tmp_path / "first" / "sft" / "checkpoints" / "step-2"  # adapters alone
    run(tmp_path / "second", below, 2, ["v_proj", "down_proj"])
    adapter = tmp_path / "second" / "sft" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(bpe_checkpoint.resolve())
    assert (config["r"], config["lora_alpha"]) == (6, 6)

    base = AutoModelForCausalLM.from_pretrained(bpe_checkpoint, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload().state_dict()
    final = load_file(tmp_path / "second" / "sft" / "model.safetensors")
    plain = load_file(bpe_checkpoint / "model.safetensors")
    for key, value in final.items():
        torch.testing.assert_close(merged[key], value, msg=key)
    changed = {k.split(".")[-2] for k in final if not torch.equal(final[k], plain[k])}
    assert changed == {"q_proj", "v_proj", "down_proj"}  # both stages' layers
    ours = load_model(adapter, torch.device("cpu"), torch.float32).state_dict()  # (r1kit eval)
    for key, value in final.items():
        torch.testing.assert_close(ours[key], value, msg=key)
