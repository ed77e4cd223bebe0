"""The real-model path: a byte-level BPE tokenizer, a chat template, GSM8K data and answer
formats, through the same RL stage as the tiny world (recipes/zero-gsm8k.toml)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file

from r1kit.cli import main
from r1kit.models import load_tokenizer
from r1kit.rewards import RuleReward
from r1kit.tasks.base import Example
from r1kit.tasks.math import MathTask


def test_bpe_tokenizer_round_trip_and_reward(bpe_checkpoint):
    tok = load_tokenizer(bpe_checkpoint)
    responses = [
        "<think>\nNatalia sold 48 clips in April and 24 in May: 48 + 24 = 72.\n</think>\n"
        "<answer>\\boxed{72}</answer>",
        "<think> 2 * 36 = 72 </think> <answer> #### 72 </answer>",
        "<think> half of 144 </think> <answer> 72.0 </answer>",
    ]
    task = MathTask("gsm8k", REPO / "r1kit" / "data" / "gsm8k" / "test.jsonl",
                    question_field="question", answer_field="final_answer")
    reward = RuleReward(task)
    example = Example(question="?", answer="72")
    for text in responses:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        decoded = tok.decode(ids, skip_special_tokens=False)
        assert decoded == text  # spaces, newlines, backslashes and braces survive
        score, parts = reward(decoded, example)
        assert parts == {"accuracy": 1.0, "format": 1.0, "hedged": 0.0}, (text, parts)
        assert score == 2.0
    wrong, parts = reward("<think> 70 </think> <answer> \\boxed{70} </answer>", example)
    assert parts["accuracy"] == 0.0 and wrong == 1.0


def test_zero_gsm8k_recipe_runs_on_a_random_checkpoint(bpe_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    before = load_file(str(bpe_checkpoint / "model.safetensors"))
    rc = main([
        "run", str(REPO / "recipes" / "zero-gsm8k.toml"), "--out", str(out),
        "--set", f"stages.zero.model={json.dumps(str(bpe_checkpoint))}",
        "--set", "stages.zero.template=\"chat\"",
        "--set", "stages.zero.prefill=\"<think>\\n\"",
        "--set", "stages.zero.steps=2",
        "--set", "stages.zero.group_size=2",
        "--set", "stages.zero.rollout_batch_size=4",
        "--set", "stages.zero.num_minibatches=2",  # the off-policy path: old log-probs
        "--set", "stages.zero.micro_batch_size=1",
        "--set", "stages.zero.max_new_tokens=12",
        "--set", "stages.zero.lr=1e-2",
        "--set", "stages.zero.save_every=0",
        "--set", "stages.zero.eval.every=2",
        "--set", "stages.zero.eval.k=2",
        "--set", "stages.zero.eval.limit=3",
        "--set", "run.progress=false",
    ])
    assert rc == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["max_new_tokens"] == 12 and m["response_length_max"] <= 12 for m in metrics)
    assert all(m["kl"] is not None and m["kl"] >= 0 for m in metrics)  # beta = 0.001: a reference
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2]
    assert evals[0]["benchmark"] == "gsm8k/main" and evals[0]["n"] == 3
    # a random model earns no reward: every group has zero variance, so no update moves it,
    # and a note says so
    assert all(m["zero_var_frac"] == 1.0 and m["reward"] == 0.0 for m in metrics)
    said = capsys.readouterr().out
    assert "no learning signal in the last 2 steps" in said
    # (its samples open with the prefill's <think>: no note of samples without tags), and
    # its random text runs to the length cap: the note says so
    assert "samples have no <think>" not in said
    assert "100% of this step's samples were cut at max_new_tokens = 12, unfinished" in said
    after = load_file(str(out / "zero" / "model.safetensors"))
    # (compared in the saved dtype: on a GPU the run loads and saves in bfloat16)
    assert all(torch.equal(before[k].to(after[k].dtype), after[k]) for k in before)
    assert (out / "figure1.png").stat().st_size > 0
    # the saved checkpoint keeps the tokenizer and its chat template
    tok = load_tokenizer(out / "zero")
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    # a stage that max_seconds stops before the note's 10 steps, every step flat: said too
    # (the stage ended with its weights unchanged and no word)
    assert main(["run", str(REPO / "recipes" / "zero-gsm8k.toml"), "--out", str(tmp_path / "t"),
                 "--set", f"stages.zero.model={json.dumps(str(bpe_checkpoint))}",
                 "--set", "stages.zero.steps=5", "--set", "stages.zero.max_seconds=0.001",
                 "--set", "stages.zero.group_size=2", "--set", "stages.zero.rollout_batch_size=4",
                 "--set", "stages.zero.max_new_tokens=4", "--set", "stages.zero.save_every=0",
                 "--set", "stages.zero.eval.every=0", "--set", "run.progress=false"]) == 0
    said = capsys.readouterr().out
    assert "max_seconds = 0.001 reached after 1 step\n" in said
    assert "no learning signal in the last 1 step:" in said


def test_update_moves_a_real_checkpoint_towards_the_rewarded_answer(bpe_checkpoint):
    """One GRPO update on chat-templated GSM8K-style responses moves the policy's preference
    towards the response with the positive advantage."""
    from r1kit.config import GRPOConfig
    from r1kit.models import load_model
    from r1kit.stages.grpo import TrainBatch, completion_logprobs, update_policy
    from r1kit.templates import render_prompt

    tok = load_tokenizer(bpe_checkpoint)
    model = load_model(bpe_checkpoint, torch.device("cpu"), torch.float32)
    prompt = tok(render_prompt("What is 48 + 24?", "chat", tok, "<think>\n"),
                 add_special_tokens=False)["input_ids"]
    good = tok(" 48 + 24 = 72 </think> <answer> \\boxed{72} </answer>")["input_ids"] + [tok.eos_token_id]
    bad = tok(" 48 + 24 = 70 </think> <answer> \\boxed{70} </answer>")["input_ids"] + [tok.eos_token_id]
    width = max(len(good), len(bad))
    mask = torch.zeros(2, width)
    mask[0, :len(good)] = 1
    mask[1, :len(bad)] = 1
    batch = TrainBatch([prompt, prompt], [good, bad], mask, torch.tensor([1.0, -1.0]), width)
    cfg = GRPOConfig(model="x", lr=1e-2, beta=0.0, num_minibatches=1, rollout_batch_size=2,
                     group_size=2, micro_batch_size=1, clip_eps_low=0.2)

    def seq_logp():
        with torch.no_grad():
            lp, _ = completion_logprobs(model, [prompt, prompt], [good, bad], 1.0, width,
                                        tok.pad_token_id)
        return (lp * mask).sum(-1)

    before = seq_logp()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    metrics = update_policy(model, None, opt, batch, cfg, tok.pad_token_id,
                            torch.Generator().manual_seed(0), lambda: cfg.lr)
    after = seq_logp()
    assert (after[0] - after[1]) > (before[0] - before[1]) + 0.1
    assert metrics["grad_norm"] > 0 and metrics["kl"] is None


def test_own_reward_function_verbatim_prompts_and_forced_length(bpe_checkpoint, tmp_path):
    """reward_function = "file.py:fn" scores the rollouts (logged as reward/custom); template
    "none" sends the question verbatim; min_new_tokens forces the length; activation
    checkpointing trains."""
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text(
        "def score(completions, prompts, answer):\n"
        "    return [float(len(c) % 2) for c in completions]\n")
    out = tmp_path / "run"
    rc = main([
        "run", str(REPO / "recipes" / "zero-gsm8k.toml"), "--out", str(out),
        "--set", f"stages.zero.model={json.dumps(str(bpe_checkpoint))}",
        "--set", f"stages.zero.reward_function={json.dumps(str(reward_file) + ':score')}",
        "--set", "stages.zero.template=\"none\"",
        "--set", "stages.zero.steps=2",
        "--set", "stages.zero.group_size=2",
        "--set", "stages.zero.rollout_batch_size=4",
        "--set", "stages.zero.num_minibatches=1",
        "--set", "stages.zero.max_new_tokens=6",
        "--set", "stages.zero.min_new_tokens=6",
        "--set", "stages.zero.activation_checkpointing=true",
        "--set", "stages.zero.eval.every=0",
        "--set", "run.progress=false",
    ])
    assert rc == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["response_length"] == 6 for m in metrics)  # forced to full length
    assert all(0.0 <= m["reward/custom"] <= 1.0 and m["accuracy"] is None for m in metrics)
    assert all(m["reward"] == m["reward/custom"] for m in metrics)


def test_reward_function_errors_are_clear(tmp_path):
    from r1kit.errors import R1kitError
    from r1kit.rewards.custom import FunctionReward, load_function
    from r1kit.tasks.base import Example

    with pytest.raises(R1kitError, match="module:function"):
        load_function("no_colon")
    with pytest.raises(R1kitError, match="no file"):
        load_function(str(tmp_path / "missing.py") + ":f")
    (tmp_path / "r.py").write_text("def f(completions, prompts, answer):\n    return [1.0]\n")
    with pytest.raises(R1kitError, match="no function 'g'"):
        load_function(str(tmp_path / "r.py") + ":g")
    fn = FunctionReward(load_function(str(tmp_path / "r.py") + ":f"))
    with pytest.raises(R1kitError, match="1 score for 2 completions"):
        fn.score(["a", "b"], [Example("q", "a")] * 2)


def test_reward_function_modules_beside_the_file_and_in_the_current_directory(tmp_path,
                                                                              monkeypatch):
    # `r1kit run` is a console script, which does not put the current directory on the import
    # path as `python -m` does: a "module:function" of the current directory must still
    # import, and a "file.py:function" may import the modules beside it
    import sys

    from r1kit.errors import R1kitError
    from r1kit.rewards.custom import load_function

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    (tmp_path / "r1kit_test_helper_mod.py").write_text("BONUS = 0.5\n")
    (tmp_path / "r1kit_test_reward_mod.py").write_text(
        "from r1kit_test_helper_mod import BONUS\n"
        "def f(completions, prompts, answer):\n    return [BONUS for _ in completions]\n")
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    monkeypatch.chdir(sub)
    fn = load_function(str(tmp_path / "r1kit_test_reward_mod.py") + ":f")
    assert fn(["a"], ["q"], ["x"]) == [0.5]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    for name in ("r1kit_test_helper_mod", "r1kit_test_reward_mod"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_function("r1kit_test_reward_mod:f")(["a", "b"], ["q"] * 2, ["x"] * 2) == [0.5] * 2
    with pytest.raises(R1kitError, match="PYTHONPATH"):
        load_function("r1kit_no_such_module_here:f")
    (tmp_path / "r1kit_test_needs_pkg.py").write_text("import r1kit_no_such_package\n")
    with pytest.raises(R1kitError, match="install 'r1kit_no_such_package'"):
        load_function("r1kit_test_needs_pkg:f")


def test_reward_function_gets_conversational_completions_after_chat_prompts():
    # as TRL: after a prompt of chat messages each completion is one assistant message, so
    # open-r1's rewards (completion[0]["content"]) work unchanged; text prompts get text
    from r1kit.rewards.custom import FunctionReward
    from r1kit.tasks.base import Example

    seen = []

    def format_reward(completions, prompts, answer, **kwargs):
        seen.append(completions)
        return [1.0 if (c[0]["content"] if isinstance(c, list) else c).startswith("<think>")
                else 0.0 for c in completions]

    chat = Example([{"role": "user", "content": "2+2?"}], "4")
    text = Example("2+2?", "4")
    import warnings

    reward = FunctionReward(format_reward)
    with warnings.catch_warnings():  # (it scores a completion: no word on their shape;
        warnings.simplefilter("error")  # one that scores none hears it, test_reliability)
        scores = reward.score(["<think>4</think>", "4"], [chat, text])
        assert [s for s, _ in scores] == [1.0, 0.0]
        assert seen == [[[{"role": "assistant", "content": "<think>4</think>"}], "4"]]
        reward.score(["<think>4</think>"], [chat])


def test_a_tokenizer_that_transformers_would_rebuild_keeps_its_own_token_ids(tmp_path):
    """A Qwen2 checkpoint whose tokenizer.json is its own (here character level) under the
    tokenizer class Qwen2Tokenizer, as real Qwen checkpoints name it: transformers 5's
    AutoTokenizer rebuilds it byte level and drops spaces, newlines and CJK; load_tokenizer
    keeps tokenizer.json's ids, and the text round-trips."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    text = "What is 7 + 3?\n计算 😀 answer is 10"
    chars = sorted(set(text + "abcdefghijklmnopqrstuvwxyz0123456789 ÜÖ.,\t="))
    vocab = {"<unk>": 0, "<eos>": 1, "<pad>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    raw.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(tmp_path)
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()),
                                  "tokenizer_class": "Qwen2Tokenizer"}))
    rebuilt = AutoTokenizer.from_pretrained(str(tmp_path))
    ids = rebuilt(text, add_special_tokens=False)["input_ids"]
    if rebuilt.decode(ids) == text:
        pytest.skip("this transformers loads the saved tokenizer as it is")
    tok = load_tokenizer(tmp_path)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == raw.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text and tok.eos_token == "<eos>" and tok.pad_token == "<pad>"


def test_a_byte_level_bpe_that_transformers_would_rebuild_keeps_its_numbers(tmp_path):
    """A byte-level BPE of its own whose only merges make a two-digit number (a small
    vocabulary's merges can be that few) under the class Qwen2Tokenizer: the rebuilt
    tokenizer splits numbers digit by digit and agrees on everything else. The check compared
    a text of one-digit numbers alone, so it kept the rebuilt tokenizer, and training used
    other ids than the checkpoint's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<eos>": 0, **{c: i + 1 for i, c in enumerate(alphabet)}}
    vocab.update({"12": len(vocab), "\u0120" + "12": len(vocab) + 1})  # " 12" (Ġ: a space)
    raw = Tokenizer(models.BPE(vocab, [("1", "2"), ("\u0120", "12")]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>").save_pretrained(tmp_path)
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()),
                                  "tokenizer_class": "Qwen2Tokenizer"}))
    text = "What is 12 + 7? 16 + 47 = 63"
    own = raw.encode(text, add_special_tokens=False).ids
    if AutoTokenizer.from_pretrained(str(tmp_path))(text, add_special_tokens=False)[
            "input_ids"] == own:
        pytest.skip("this transformers loads the saved tokenizer as it is")
    assert load_tokenizer(tmp_path)(text, add_special_tokens=False)["input_ids"] == own


def test_an_sft_prompt_too_long_for_max_length_names_the_system_turn(bpe_checkpoint):
    """Where r1kit's system instruction is what fills max_length, the error says so and how to
    drop it (a short question under a small vocabulary's long system turn)."""
    from r1kit.errors import R1kitError
    from r1kit.stages.sft import encode_rows
    from r1kit.templates import encode_prompt

    tok = load_tokenizer(bpe_checkpoint)
    with_system = len(encode_prompt("What is 2 + 3?", "chat", tok, system=True))
    without = len(encode_prompt("What is 2 + 3?", "chat", tok, system=False))
    assert without < with_system
    with pytest.raises(R1kitError, match="system_prompt") as info:
        encode_rows(tok, [("What is 2 + 3?", "5")], "chat", with_system, system=True)
    assert f"{with_system} tokens with its system turn, {without} without" in str(info.value)
    assert encode_rows(tok, [("What is 2 + 3?", "5")], "chat", with_system, system=False)


def test_a_hub_id_is_read_from_the_hugging_face_cache(bpe_checkpoint, tmp_path, monkeypatch,
                                                      capsys):
    """`model = "acme/tiny-math"` (a TRL habit) where `huggingface-cli download acme/tiny-math`
    put it: the recipe's stages, config.json and the stage's record of its inputs name the
    cached snapshot (nothing is downloaded), `r1kit eval --model` takes the id, and a peft
    adapter whose base model is named by that id loads on it. A revision not in the cache is
    refused with how to get it."""
    from conftest import hub_cache_with

    from r1kit.models import check_model_dir, load_model

    snapshot = hub_cache_with(tmp_path / "hub", "acme/tiny-math", bpe_checkpoint, monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "other").mkdir(parents=True)  # (a local folder named like the
    # organisation does not hide its models in the cache)
    assert check_model_dir("acme/tiny-math") == snapshot
    assert check_model_dir("acme/tiny-math@main") == snapshot
    out = tmp_path / "run"
    command = ["run", str(REPO / "recipes" / "zero-gsm8k.toml"), "--out", str(out),
               "--set", "stages.zero.steps=1", "--set", "stages.zero.group_size=2",
               "--set", "stages.zero.rollout_batch_size=4", "--set", "stages.zero.max_new_tokens=4",
               "--set", "stages.zero.save_every=0", "--set", "stages.zero.eval.every=0",
               "--set", "run.progress=false"]
    assert main([*command, "--set", 'stages.zero.model="acme/tiny-math"']) == 0
    said = capsys.readouterr().out
    assert f"stages.zero.model: acme/tiny-math from the Hugging Face cache: {snapshot}" in said
    assert json.loads((out / "config.json").read_text())["stages"]["zero"]["model"] == \
        str(snapshot)
    inputs = json.loads((out / "zero" / "stage.json").read_text())["inputs"]
    assert str(snapshot.resolve()) in inputs  # (its files fingerprinted: a new revision shows)
    # a newer revision downloaded since: the run names it, and how to go on with the old one
    import shutil

    newer = snapshot.parent / ("1" * 40)
    shutil.copytree(snapshot, newer)
    (snapshot.parent.parent / "refs" / "main").write_text("1" * 40)
    assert main([*command, "--set", 'stages.zero.model="acme/tiny-math"']) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings: stages.zero.model" in err
    assert (f"acme/tiny-math's revision is {'1' * 12} now, {snapshot.name[:12]} when this run "
            f"began: to go on with that one, name it acme/tiny-math@{snapshot.name}") in err
    assert main([*command, "--set", f'stages.zero.model="acme/tiny-math@{snapshot.name}"']) == 0
    assert "[zero] already done" in capsys.readouterr().out
    (snapshot.parent.parent / "refs" / "main").write_text(snapshot.name)
    # an eval stage's table names it by its id and revision
    table = tmp_path / "table.toml"
    table.write_text('[run]\nprogress = false\ntensorboard = false\n\n[stages.table]\n'
                     'kind = "eval"\nmodels = ["acme/tiny-math"]\nk = 1\nlimit = 2\n'
                     'max_new_tokens = 4\n')
    assert main(["run", str(table), "--out", str(tmp_path / "t")]) == 0
    assert f"| acme/tiny-math@{snapshot.name[:12]} |" in \
        (tmp_path / "t" / "table" / "stage_table.md").read_text()
    assert main(["eval", "--model", "acme/tiny-math", "--bench", "tiny", "--limit", "2",
                 "--k", "1", "--max-new-tokens", "4", "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["settings"]["model"] == str(snapshot)
    # TRL's adapters name their base model by its Hub id
    from peft import LoraConfig, get_peft_model

    adapter = tmp_path / "adapter"
    get_peft_model(load_model(snapshot, torch.device("cpu"), torch.float32),
                   LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(
        {**config, "base_model_name_or_path": "acme/tiny-math"}))
    assert check_model_dir(adapter) == adapter
    assert load_model(adapter, torch.device("cpu"), torch.float32) is not None
    capsys.readouterr()
    monkeypatch.chdir(out)  # (where no folder acme is: a path that exists in part is read as
    # a typo in a local path, and not said to be missing from the cache)
    assert main(["eval", "--model", "acme/tiny-math@v2", "--bench", "tiny", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "never downloads: it is not in the cache" in err
    assert "huggingface-cli download acme/tiny-math --revision v2 puts it there" in err


def test_a_data_file_in_the_hugging_face_cache(bpe_checkpoint, tmp_path, monkeypatch, capsys):
    """`train_file = "hf://datasets/acme/sums/main/train-*.jsonl"`: the shards of the data set
    that `huggingface-cli download acme/sums --repo-type dataset` put in the Hugging Face
    cache; `r1kit eval --bench`, `r1kit decontaminate` and `r1kit score` take the same form.
    One not in the cache is refused, naming how to get it."""
    from conftest import hub_cache_with, one_grpo_step_on, write_jsonl

    source = tmp_path / "sums" / "main"
    source.mkdir(parents=True)
    for shard in range(2):
        write_jsonl(source / f"train-0000{shard}-of-00002.jsonl",
                    [{"question": f"What is {i} + {shard}?", "answer": str(i + shard)}
                     for i in range(3)])
    write_jsonl(source.parent / "scored.jsonl",
                [{"completion": "<think>1+1</think> \\boxed{2}", "answer": "2"}])
    snapshot = hub_cache_with(tmp_path / "hub", "acme/sums", source.parent, monkeypatch,
                              kind="datasets")
    uri = "hf://datasets/acme/sums/main/train-*.jsonl"
    metrics, _ = one_grpo_step_on(bpe_checkpoint, tmp_path / "run", "math", uri,
                                  evaluate=False)
    assert len(metrics) == 1
    said = capsys.readouterr().out
    assert f"stages.zero.train_file: {uri} from the Hugging Face cache: {snapshot}/main/" in said
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["stages"]["zero"]["train_file"] == str(snapshot / "main" / "train-*.jsonl")
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", uri, "--k", "1",
                 "--max-new-tokens", "4", "--out", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())["results"][0]
    assert result["n"] == 6 and result["benchmark"] == str(snapshot / "main" / "train-*.jsonl")
    # r1kit decontaminate and r1kit score read such files too
    assert main(["decontaminate", "--train", uri, "--n", "3", "--bench",
                 "hf://datasets/acme/sums/main/train-00000-of-00002.jsonl"]) == 0
    said = capsys.readouterr().out
    assert f"{snapshot}/main/train-*.jsonl: 6 training rows" in said
    assert "total: 6 contaminated rows" in said  # ("what is ... ?" in every one)
    assert main(["score", "--reward", "math", "--input", "hf://datasets/acme/sums/scored.jsonl",
                 "--output", str(tmp_path / "scored.jsonl")]) == 0
    assert json.loads((tmp_path / "scored.jsonl").read_text())["reward"] == 1.0
    capsys.readouterr()
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench",
                 "hf://datasets/acme/other/x.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "the data set acme/other is not in the Hugging Face cache" in err
    assert "huggingface-cli download acme/other --repo-type dataset puts it there" in err
