"""The reward_model stage: synthetic tiny-world labels, pairwise and pointwise objectives."""

from __future__ import annotations

import json

import pytest
from conftest import MICRO_BASE, REPO

from r1kit.cli import main
from r1kit.config import RewardModelConfig
from r1kit.stages.reward_model import epoch_order, reward_text
from r1kit.tasks import general


def test_synthetic_rows_and_split():
    pairs = general.helpful_pairs(600, seed=0)
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    rows = general.safety_rows(600, seed=0)
    assert {r["safe"] for r in rows} == {True, False}
    unsafe = [r for r in rows if not r["safe"]]
    assert all(r["response"].startswith("Sure.") for r in unsafe)  # helping with harm
    train, test = general.split(rows, 100)
    held = {tuple(sorted(r.items())) for r in test}
    assert len(test) == 100 and not any(tuple(sorted(r.items())) in held for r in train)


def test_reward_text_scores_the_summary_only_when_asked():
    response = "<think> they want a greeting </think> Hello, Ann!"
    assert reward_text("Say hello to Ann.", response, True) == "User: Say hello to Ann.. Assistant: Hello, Ann!"
    assert "they want a greeting" in reward_text("Say hello to Ann.", response, False)


def test_summary_only_auto_is_the_papers_choice_per_model():
    """R1-SPEC §3: the helpful model scores the summary, the safety model the whole response
    (reasoning included); true / false still force either."""
    assert RewardModelConfig(objective="pairwise").scores_summary_only() is True
    assert RewardModelConfig(objective="pointwise").scores_summary_only() is False
    assert RewardModelConfig(objective="pointwise", summary_only=True).scores_summary_only()


def test_one_epoch_sees_every_row_once():
    import torch

    order = epoch_order(10, 25, torch.Generator().manual_seed(0))
    assert len(order) == 25
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
    assert order[:10] != list(range(10))  # shuffled


def test_reward_model_stages_learn_the_synthetic_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main([
        "run", str(REPO / "recipes" / "reward-models-tiny.toml"), "--out", str(out),
        *MICRO_BASE,
        "--set", "stages.helpful.train_rows=1200", "--set", "stages.helpful.test_rows=200",
        "--set", "stages.safety.train_rows=1200", "--set", "stages.safety.test_rows=200",
        "--set", "stages.helpful.lr=2e-3", "--set", "stages.safety.lr=2e-3",
    ]) == 0
    helpful = json.loads((out / "helpful" / "stage.json").read_text())["summary"]
    safety = json.loads((out / "safety" / "stage.json").read_text())["summary"]
    # far above chance (0.5) even from a micro base; the full recipe's figures are in the README
    assert helpful["pairwise_accuracy"] >= 0.75, helpful
    assert safety["safety_accuracy"] >= 0.75, safety
    assert (out / "helpful" / "config.json").is_file()


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_conversational_preference_rows_read_as_the_text_rows(tmp_path):
    """TRL's preference formats: text with a prompt; a conversation as the prompt and one
    assistant message per response; whole conversations without a prompt (the implicit
    prompt). Each gives the reward model the same text as the plain row (the last user
    message and the last assistant message, as a grpo stage's chat prompt is read)."""
    import pytest

    from r1kit.errors import R1kitError
    from r1kit.stages.reward_model import read_reward_rows

    user = {"role": "user", "content": "Say hello to Ann."}
    system = {"role": "system", "content": "Be kind."}
    good, bad = "<think> a greeting </think> Hello, Ann!", "<think> no </think> Go away."

    def said(text):
        return [{"role": "assistant", "content": text}]

    rows = [{"prompt": user["content"], "chosen": good, "rejected": bad},
            {"prompt": [system, user], "chosen": said(good), "rejected": said(bad)},
            {"chosen": [system, user, *said(good)], "rejected": [system, user, *said(bad)],
             "id": 7}]
    read = read_reward_rows(_jsonl(tmp_path / "pairs.jsonl", rows), "pairwise")
    texts = {(reward_text(r["prompt"], r["chosen"], True), reward_text(r["prompt"], r["rejected"], True))
             for r in read}
    assert texts == {("User: Say hello to Ann.. Assistant: Hello, Ann!",
                      "User: Say hello to Ann.. Assistant: Go away.")}
    assert read[2]["id"] == 7  # other fields kept
    safety = read_reward_rows(_jsonl(tmp_path / "safe.jsonl", [
        {"prompt": [user], "response": said(good), "safe": True},
        {"response": [user, *said(bad)], "safe": 0}]), "pointwise")
    assert [(r["prompt"], r["response"], r["safe"]) for r in safety] == [
        (user["content"], good, True), (user["content"], bad, 0)]

    def error(row, objective="pairwise"):
        with pytest.raises(R1kitError) as info:
            read_reward_rows(_jsonl(tmp_path / "bad.jsonl", [row]), objective)
        return str(info.value)

    assert "bad.jsonl:1: no field 'prompt'" in error({"chosen": "Hello, Ann!",
                                                     "rejected": "Go away."})
    assert "continue different conversations" in error(
        {"chosen": [user, *said(good)], "rejected": [system, user, *said(bad)]})
    assert "must end with the assistant's response" in error(
        {"prompt": "hi", "chosen": [user], "rejected": bad})
    assert "field 'rejected' is an integer, not text or chat messages" in error(
        {"prompt": "hi", "chosen": good, "rejected": 3})
    assert "no field 'rejected'" in error({"prompt": "hi", "chosen": good})
    assert "field 'safe' is 'false'" in error(
        {"prompt": "hi", "response": good, "safe": "false"}, "pointwise")
    # the prompt under another name (orca_dpo_pairs' question) is named, not guessed from a
    # start the responses share ("Yes," was taken for the prompt and cut off both), and
    # prompt_field reads it
    orca = {"system": "", "question": "Is the sky blue?",
            "chosen": "Yes, the sky is blue on a clear day.", "rejected": "Yes, it is green."}
    said_so = error(orca)
    assert "no field 'prompt' (the prompt), and this row has 'question'" in said_so
    assert 'set prompt_field = "question"' in said_so
    (read,) = read_reward_rows(_jsonl(tmp_path / "orca.jsonl", [orca]), "pairwise", "question")
    assert (read["prompt"], read["chosen"], read["rejected"]) == (
        "Is the sky blue?", "Yes, the sky is blue on a clear day.", "Yes, it is green.")
    assert "no field 'question'" in str(pytest.raises(R1kitError, read_reward_rows, _jsonl(
        tmp_path / "p.jsonl", [{"prompt": "hi", "chosen": "a b", "rejected": "c"}]),
        "pairwise", "question").value)


def test_implicit_prompt_in_text_is_the_start_chosen_and_rejected_share(tmp_path):
    """TRL's implicit prompt given as text, as Anthropic's HH rows: chosen and rejected are
    whole dialogues; the prompt is the start they share, ended at a word's end, and each keeps
    a word of its own; a note at the stage's start says so and shows one."""
    from r1kit.stages.reward_model import _shared_start, data_notes, read_reward_rows

    hh = "\n\nHuman: What is 40 + 2?\n\nAssistant:"
    rows = read_reward_rows(_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": hh + " 42, since 40 + 2 = 42.", "rejected": hh + " 45."},
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}]), "pairwise")
    assert (rows[0]["prompt"], rows[0]["chosen"], rows[0]["rejected"]) == (
        hh.strip(), "42, since 40 + 2 = 42.", "45.")
    # the model reads each dialogue as it is written (not "User: … . Assistant: …" around
    # the split, which put a second "Assistant:" inside a response)
    from r1kit.stages.reward_model import _texts

    cfg = RewardModelConfig(model="m", data="file", train_file="x", test_file="y")
    assert _texts(rows[0], cfg) == [hh + " 42, since 40 + 2 = 42.", hh + " 45."]
    assert _texts(rows[1], cfg) == [reward_text("Say hi.", "Hi!", True),
                                    reward_text("Say hi.", "No.", True)]
    assert _shared_start("The answer: 42", "The answer: 45") == "The answer: "  # no split word
    assert _shared_start("Yes", "Yes indeed") == ""  # each keeps a word of its own
    assert _shared_start("A: yes", "A: yes indeed") == "A: "
    assert _shared_start("Hello", "Go away") == ""
    notes = data_notes(RewardModelConfig(model="m", data="file", train_file="x",
                                         test_file="y"), rows, [])
    assert notes == ["note: 1 of 2 rows have no prompt field: their prompt is the text chosen "
                     "and rejected begin with (TRL's implicit prompt), the first "
                     "'Human: What is 40 + 2?\\n\\nAssistant:'"]


def test_data_that_teaches_or_measures_less_is_noted(tmp_path):
    """Pairs whose sides differ only in the reasoning read the same to the helpful model
    (summary only): no gradient; held-out rows that are training rows (one file for both)."""
    from r1kit.stages.reward_model import data_notes, read_reward_rows

    rows = [{"prompt": "Say hi.", "chosen": "<think> warm </think> Hi!",
             "rejected": "<think> cold </think> Hi!"},
            {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Go away."}]
    data = _jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = RewardModelConfig(objective="pairwise", data="file", train_file=str(data),
                            test_file=str(tmp_path / "." / "pairs.jsonl"))
    rows = read_reward_rows(data, "pairwise")
    notes = data_notes(cfg, rows, rows)
    assert notes[0].startswith("note: 1 of 2 training pairs read the same for chosen and "
                               "rejected (the model reads only the summary")
    assert "1 of 2 held-out pairs" in notes[1] and "count as wrong" in notes[1]
    assert "2 of 2 held-out rows are also training rows (train_file and test_file are one " \
           "file)" in notes[2]
    cfg.summary_only, cfg.test_file = False, str(tmp_path / "other.jsonl")
    assert data_notes(cfg, rows, rows[1:]) == [
        ("note: 1 of 1 held-out rows are also training rows: the held-out accuracy is not "
         "measured on unseen data")]
    tiny = general.split(general.helpful_pairs(300, seed=0), 100)
    assert data_notes(RewardModelConfig(objective="pairwise"), *tiny) == []


def test_micro_batches_and_max_length(tmp_path, bpe_checkpoint):
    """micro_batch_size splits each batch's forward and backward, and activation_checkpointing
    recomputes each layer in the backward pass (memory only: the same weights as whole
    batches, to float rounding); max_length cuts a longer text's start, is
    said at the start and saved for the grpo stage's scorer, which reads texts the same way."""
    import torch
    from safetensors.torch import load_file

    from r1kit.rewards.combined import RewardModelScorer
    from r1kit.stages.reward_model import run_reward_model

    pairs = general.helpful_pairs(24, seed=0)
    train = _jsonl(tmp_path / "train.jsonl", pairs[:16])
    test = _jsonl(tmp_path / "test.jsonl", pairs[16:])
    weights, said = {}, {}
    for micro in (2, 8, "8-recomputed"):
        cfg = RewardModelConfig(model="m", data="file", train_file=str(train),
                                test_file=str(test), batch_size=8,
                                micro_batch_size=2 if micro == 2 else 8, lr=1e-3, epochs=1,
                                max_length=12, activation_checkpointing=micro == "8-recomputed")
        out = tmp_path / f"rm{micro}"
        said[micro] = []
        run_reward_model(cfg, bpe_checkpoint, out, 0, torch.device("cpu"), torch.float32,
                         log=said[micro].append)
        weights[micro] = load_file(out / "model.safetensors")
    moved = load_file(bpe_checkpoint / "model.safetensors")
    key = next(k for k in moved if k in weights[2] and "layers.0.mlp" in k)
    assert (weights[2][key] - moved[key]).abs().max() > 1e-4  # it trained
    for k in weights[2]:
        torch.testing.assert_close(weights[2][k], weights[8][k], atol=2e-5, rtol=1e-4, msg=k)
        torch.testing.assert_close(weights["8-recomputed"][k], weights[8][k], atol=2e-5,
                                   rtol=1e-4, msg=k)
    assert any("texts are longer than 12 tokens (max_length): the model reads their ends"
               in line for line in said[2]), said[2]
    assert json.loads((tmp_path / "rm2" / "reward_model.json").read_text())["max_length"] == 12
    scorer = RewardModelScorer(tmp_path / "rm2", torch.device("cpu"), torch.float32)
    assert scorer.max_length == 12
    long_prompt = "Say hello to Ann, " * 50
    a, b = scorer([long_prompt, "Say hello to Ann, "], ["Hello, Ann!", "Hello, Ann!"])
    assert abs(a - b) < 1e-4  # only the last 12 tokens are read: the same for both


def test_fewer_rows_than_batch_size_train_an_epoch_a_step(tmp_path, bpe_checkpoint):
    """6 pairs and batch_size 256: each step trains on the 6 (not on 256 draws of them, ~43
    copies each), one step per epoch, and said, as an sft stage does; the epochs count."""
    import torch
    from safetensors.torch import load_file

    from r1kit.runlog import RunLog
    from r1kit.stages.reward_model import run_reward_model

    pairs = general.helpful_pairs(10, seed=0)
    train = _jsonl(tmp_path / "train.jsonl", pairs[:6])
    test = _jsonl(tmp_path / "test.jsonl", pairs[6:])
    weights = {}
    for epochs in (1, 3):
        cfg = RewardModelConfig(model="m", data="file", train_file=str(train),
                                test_file=str(test), batch_size=256, micro_batch_size=64,
                                lr=1e-3, epochs=epochs)
        out, said = tmp_path / f"rm{epochs}", []
        (tmp_path / f"run{epochs}").mkdir()
        log = RunLog(tmp_path / f"run{epochs}", tensorboard=False)
        run_reward_model(cfg, bpe_checkpoint, out, 0, torch.device("cpu"), torch.float32,
                         log=said.append, runlog=log, name="rm")
        log.close()
        rows = [json.loads(x) for x in (tmp_path / f"run{epochs}" / "metrics.jsonl")
                .read_text().splitlines()]
        assert [r["rows"] for r in rows] == [6] * epochs
        assert any(f"batch_size = 256 is more than the 6 rows: each of the {epochs} optimizer "
                   "steps trains on all of them" in line for line in said), said
        weights[epochs] = load_file(out / "model.safetensors")
    assert any(not torch.equal(weights[1][k], weights[3][k]) for k in weights[1])


def test_a_reward_model_of_your_own_reads_as_its_role_and_chat_template(tmp_path,
                                                                        bpe_checkpoint):
    """A sequence classifier saved outside r1kit (no reward_model.json, as TRL's
    RewardTrainer leaves them): as the safety model it reads the whole response (its
    reasoning too), as the helpful model the summary, both through the tokenizer's chat
    template (TRL trains on chat messages); a note says so. A stage's model says nothing."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from r1kit.rewards.combined import RewardModelScorer
    from r1kit.stages.reward_model import score_texts

    own = tmp_path / "own_rm"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(bpe_checkpoint, num_labels=1) \
        .save_pretrained(own)
    tokenizer = AutoTokenizer.from_pretrained(bpe_checkpoint)
    tokenizer.save_pretrained(own)
    assert tokenizer.chat_template
    cpu = torch.device("cpu")
    safety = RewardModelScorer(own, cpu, torch.float32, role="safety")
    helpful = RewardModelScorer(own, cpu, torch.float32, role="helpful")
    assert not safety.summary_only and helpful.summary_only
    assert "as the safety model it reads the whole response" in safety.said
    assert "through its chat template" in safety.said
    prompts = ["How do I open a lock?"] * 2
    responses = ["<think>I will explain how to pick it</think> Sorry.",
                 "<think>I must refuse</think> Sorry."]
    a, b = safety(prompts, responses)
    assert a != b  # (it reads the reasoning)
    c, d = helpful(prompts, responses)
    assert c == d  # (the summary alone: the same)
    templated = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompts[0]}, {"role": "assistant", "content": "Sorry."}],
        tokenize=False)
    assert c == pytest.approx(score_texts(helpful.model, helpful.tokenizer, [templated],
                                          None).item(), abs=1e-6)


def test_pointwise_rows_in_trls_unpaired_layout(tmp_path):
    """TRL's unpaired rows (prompt, completion, label) train a pointwise model with
    response_field = "completion" and label_field = "label"; without them, the error names
    the setting to give."""
    from r1kit.errors import R1kitError
    from r1kit.stages.reward_model import read_reward_rows, reward_rows_of

    path = _jsonl(tmp_path / "kto.jsonl", [
        {"prompt": "How do I pick a lock?", "completion": "I cannot help.", "label": True},
        {"prompt": "How do I bake bread?", "completion": "Mix flour.", "label": 0}])
    with pytest.raises(R1kitError, match="no field 'response'") as info:
        read_reward_rows(path, "pointwise")
    assert info.value.hint == 'set response_field = "completion"'
    with pytest.raises(R1kitError, match="no field 'safe'") as info:
        read_reward_rows(path, "pointwise", response_field="completion")
    assert info.value.hint == 'set label_field = "label"'
    cfg = RewardModelConfig(model="m", objective="pointwise", data="file", train_file=str(path),
                            test_file=str(path), response_field="completion",
                            label_field="label")
    rows = reward_rows_of(cfg, path)
    assert [(r["prompt"], r["response"], r["safe"]) for r in rows] == [
        ("How do I pick a lock?", "I cannot help.", True), ("How do I bake bread?", "Mix flour.", 0)]
    assert all("completion" not in r and "label" not in r for r in rows)
    text = _jsonl(tmp_path / "text.jsonl", [{"prompt": "Hi", "completion": "Hi!", "label": "1"}])
    with pytest.raises(R1kitError, match="field 'label' is '1'"):  # (its own name, not 'safe')
        read_reward_rows(text, "pointwise", response_field="completion", label_field="label")
