"""Checkpoints that bring their own model code (auto_map in config.json): refused unless the
user trusts them (run.trust_remote_code, `r1kit eval --trust-remote-code`), then trained and
evaluated through their own forward, never r1kit's lean path."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import stops_before_any_stage

from r1kit.cli import main

CONFIG_CODE = '''from transformers import LlamaConfig


class DoubledConfig(LlamaConfig):
    model_type = "llama"  # claims to be a Llama: only its class tells it apart
'''

MODEL_CODE = '''from transformers import LlamaForCausalLM

from .configuration_doubled import DoubledConfig


class DoubledForCausalLM(LlamaForCausalLM):
    """A Llama whose logits are doubled: a forward that r1kit's Llama path would not compute."""

    config_class = DoubledConfig

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if out.logits is not None:
            out.logits = out.logits * 2.0
        return out
'''


@pytest.fixture
def own_code_checkpoint(tmp_path, bpe_checkpoint):
    path = tmp_path / "doubled"
    shutil.copytree(bpe_checkpoint, path)
    (path / "configuration_doubled.py").write_text(CONFIG_CODE)
    (path / "modeling_doubled.py").write_text(MODEL_CODE)
    config = json.loads((path / "config.json").read_text())
    config.update(architectures=["DoubledForCausalLM"],
                  auto_map={"AutoConfig": "configuration_doubled.DoubledConfig",
                            "AutoModelForCausalLM": "modeling_doubled.DoubledForCausalLM"})
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_own_code_is_refused_unless_trusted(own_code_checkpoint, tmp_path, capsys):
    assert main(["eval", "--model", str(own_code_checkpoint), "--bench", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "own model code" in err and "trust_remote_code" in err and "Traceback" not in err
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[stages.zero]\nkind = "grpo"\nmodel = "{own_code_checkpoint}"\n'
                      'task = "gsm8k"\n')
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    assert "run.trust_remote_code = true" in capsys.readouterr().err and not out.exists()

    out_json = tmp_path / "eval.json"
    assert main(["eval", "--model", str(own_code_checkpoint), "--bench", "gsm8k",
                 "--trust-remote-code", "--limit", "2", "--k", "2", "--max-new-tokens", "4",
                 "--out", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["results"][0]["n"] == 2


def test_trusted_own_code_trains_through_its_own_forward(own_code_checkpoint, tmp_path):
    from transformers import LlamaForCausalLM

    from r1kit.lean import LeanLM
    from r1kit.models import load_model, trusting_remote_code

    with trusting_remote_code(True):
        model = load_model(own_code_checkpoint, torch.device("cpu"), torch.float32)
    assert type(model).__name__ == "DoubledForCausalLM"
    assert "outside transformers" in LeanLM.unsupported(model)
    assert LeanLM.unsupported(model, decoding=True)  # nor the lean decoder

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?",
                                        "response": f"<think>{i}+1</think> {i + 1}"}) + "\n"
                            for i in range(8)))
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        "[run]\ntrust_remote_code = true\nprogress = false\ntensorboard = false\n\n"
        f'[stages.sft]\nkind = "sft"\nmodel = "{own_code_checkpoint}"\ndata = "{data}"\n'
        'template = "none"\nepochs = 2\nbatch_size = 4\nmicro_batch_size = 2\nlr = 1e-3\n\n'
        '[stages.zero]\nkind = "grpo"\nmodel = "sft"\ntask = "gsm8k"\ntemplate = "chat"\n'
        'steps = 1\ngroup_size = 2\nrollout_batch_size = 4\nnum_minibatches = 1\n'
        'micro_batch_size = 2\n'
        'max_new_tokens = 6\nsave_every = 0\n[stages.zero.eval]\nevery = 0\n')
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    sft = json.loads((out / "sft" / "stage.json").read_text())["summary"]
    assert sft["final_loss"] < sft["first_loss"]  # learning, through the doubled forward
    # each stage's checkpoint keeps the code, and loads again as the same class
    for stage in ("sft", "zero"):
        assert (out / stage / "modeling_doubled.py").is_file()
    with trusting_remote_code(True):
        trained = load_model(out / "sft", torch.device("cpu"), torch.float32)
    assert type(trained).__name__ == "DoubledForCausalLM"
    # its logits are twice those of a plain Llama with the same weights
    plain = LlamaForCausalLM.from_pretrained(str(out / "sft"))
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        torch.testing.assert_close(trained(ids).logits, 2 * plain(ids).logits)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m.get("stage", "zero") == "zero"][-1:] == [1]


def test_a_sharded_own_code_model_saves_its_own_code(own_code_checkpoint, tmp_path):
    """FSDP2 swaps the model's class for a wrapper made in torch's module; the checkpoint
    must carry the model's own code files and auto_map, not torch's."""
    from torch.distributed.fsdp import FSDPModule

    from r1kit.models import load_model, load_tokenizer, save_model, trusting_remote_code

    with trusting_remote_code(True):
        model = load_model(own_code_checkpoint, torch.device("cpu"), torch.float32)
        own = type(model)
        wrapper = type(f"FSDP{own.__name__}", (FSDPModule, own),
                       {"__module__": "torch.distributed.fsdp._fully_shard._fully_shard"})
        model.__class__ = wrapper
        save_model(model, load_tokenizer(own_code_checkpoint), tmp_path / "saved",
                   state_dict=model.state_dict())
        assert type(model) is wrapper  # restored after saving
        saved = json.loads((tmp_path / "saved" / "config.json").read_text())
        assert saved["auto_map"]["AutoModelForCausalLM"] == "modeling_doubled.DoubledForCausalLM"
        assert sorted(p.name for p in (tmp_path / "saved").glob("*.py")) == [
            "configuration_doubled.py", "modeling_doubled.py"]
        assert type(load_model(tmp_path / "saved", torch.device("cpu"),
                               torch.float32)).__name__ == "DoubledForCausalLM"


def test_own_code_reward_models_and_broken_inputs_stop_before_any_stage(
        own_code_checkpoint, bpe_checkpoint, tmp_path, capsys):
    """A reward_model stage on own code without a scalar-head class, a reward model with own
    code not trusted, a tokenizer that does not load, a model that is an eval stage: each
    named before any stage runs."""
    rows = tmp_path / "rm.jsonl"
    rows.write_text('{"prompt": "p", "response": "r", "safe": true}\n')
    sft_rows = tmp_path / "sft.jsonl"
    sft_rows.write_text('{"prompt": "p", "response": "r"}\n')
    broken = tmp_path / "broken"
    shutil.copytree(bpe_checkpoint, broken)
    (broken / "tokenizer.json").write_text("{not json")
    sft = f'[stages.sft]\nkind = "sft"\nmodel = "{bpe_checkpoint}"\ndata = "{sft_rows}"\n'
    cases = [
        (('[run]\ntrust_remote_code = true\n[stages.rm]\nkind = "reward_model"\n'
          f'model = "{own_code_checkpoint}"\nobjective = "pointwise"\ndata = "file"\n'
          f'train_file = "{rows}"\ntest_file = "{rows}"\n'), ["AutoModelForSequenceClassification"]),
        ((f'{sft}[stages.table]\nkind = "eval"\nmodels = ["sft"]\n'
          f'helpful_model = "{own_code_checkpoint}"\n'), ["own model code", "trust_remote_code"]),
        ((f'[stages.sft]\nkind = "sft"\nmodel = "{broken}"\ndata = "{sft_rows}"\n'
          'template = "chat"\n'), ["stages.sft.template", "does not load"]),
        ((f'{sft}[stages.table]\nkind = "eval"\nmodels = ["sft"]\n[stages.again]\n'
          f'kind = "sft"\nmodel = "table"\ndata = "{sft_rows}"\n'),
         ["stages.again.model", "writes no model"]),
    ]
    for text, expected in cases:
        recipe = tmp_path / "r.toml"
        recipe.write_text(text)
        stops_before_any_stage(recipe, tmp_path, capsys, expected)
