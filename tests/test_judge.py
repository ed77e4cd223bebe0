"""The generative judge of rejection sampling (r1kit.rewards.judge): its verdict read from the
judge model's next-token distribution, and the sample stage's use of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from r1kit.config import SampleConfig, check_inputs, recipe_from_dict
from r1kit.errors import R1kitError
from r1kit.rewards.judge import DEFAULT_PROMPT, AnswerJudge, check_prompt, verdict_ids


def constant_judge(path: Path, tokenizer_dir: Path, says: str, positions: int = 4096) -> Path:
    """A judge model that answers `says` (yes or no) to anything: every token embeds to the
    same vector, the layers add nothing, and the output layer reads that vector as +1 for
    one word's tokens and -1 for the other's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from r1kit.models import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, tie_word_embeddings=False, max_position_embeddings=positions,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    yes, no = verdict_ids(tok)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight.fill_(1.0)
        for norm in (model.model.norm, *(m for layer in model.model.layers
                                          for m in (layer.input_layernorm,
                                                    layer.post_attention_layernorm))):
            norm.weight.fill_(1.0)
        model.lm_head.weight[yes] = 1.0 if says == "yes" else -1.0
        model.lm_head.weight[no] = -1.0 if says == "yes" else 1.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_verdict_tokens_and_the_prompts_fields(bpe_checkpoint):
    from r1kit.models import load_tokenizer

    yes, no = verdict_ids(load_tokenizer(bpe_checkpoint))
    assert yes and no and not set(yes) & set(no)
    # a character-level tokenizer: y/Y against n/N; the space both start with counts for neither
    from r1kit.models import build_tiny_tokenizer

    char = build_tiny_tokenizer(["a"], vocab_size=120)  # the printable characters, no merges
    yes, no = verdict_ids(char)
    space = char(" ", add_special_tokens=False)["input_ids"][0]
    assert space not in yes + no and {char.decode([t]) for t in yes} == {"y", "Y"}
    assert check_prompt(DEFAULT_PROMPT) is None
    assert "leaves out {reference}" in check_prompt("Q {question} A {answer}")
    assert "{gold}" in check_prompt("{question} {reference} {answer} {gold}")
    assert "not a format string" in check_prompt("{question} {reference} {answer} {")


def test_the_verdict_is_p_yes_over_yes_and_no(tmp_path, bpe_checkpoint):
    """Constant judges give ~1 and ~0; a random-weight one gives the same verdicts in a
    left-padded batch as one request at a time, and what a plain forward of its chat-framed
    request gives."""
    cpu = torch.device("cpu")
    q, ref, ans = ["What is 2 + 2?", "Name a colour."], ["4", "red"], ["four", "a tree"]
    for says, want in (("yes", 1.0), ("no", 0.0)):
        judge = AnswerJudge(constant_judge(tmp_path / says, bpe_checkpoint, says), cpu,
                            torch.float32)
        assert judge(q, ref, ans) == pytest.approx([want, want], abs=1e-6)
    # a request longer than the judge's positions is not judged (None), the others are
    short = AnswerJudge(constant_judge(tmp_path / "short", bpe_checkpoint, "yes", positions=130),
                        cpu, torch.float32)
    lengths = [len(short.tokenizer(short.text(*x), add_special_tokens=False)["input_ids"])
               for x in zip(q, ref, ["4", "x " * 60])]
    assert lengths[0] <= 130 < lengths[1]
    assert short(q, ref, ["4", "x " * 60]) == [pytest.approx(1.0, abs=1e-6), None]
    judge = AnswerJudge(bpe_checkpoint, cpu, torch.float32, batch_size=2)
    assert judge.chat and "What is 2 + 2?" in judge.text(q[0], ref[0], ans[0])
    batched = judge(q, ref, ans)
    one = [judge([a], [b], [c])[0] for a, b, c in zip(q, ref, ans)]
    assert batched == pytest.approx(one, abs=1e-5) and all(0 < v < 1 for v in batched)
    ids = judge.tokenizer(judge.text(q[1], ref[1], ans[1]), return_tensors="pt",
                          add_special_tokens=False)["input_ids"]
    probs = torch.softmax(judge.model(ids).logits[0, -1], -1)
    p_yes, p_no = probs[judge.yes].sum(), probs[judge.no].sum()
    assert one[1] == pytest.approx((p_yes / (p_yes + p_no)).item(), abs=1e-6)


def _canned(monkeypatch, texts):
    from r1kit import sampling
    from r1kit.eval.core import _Verdicts

    def canned(model, tokenizer, task, examples, prompts, **kw):
        rows = [examples[i // kw["k"]] for i in range(len(examples) * kw["k"])]
        return None, texts, _Verdicts(task).score(texts, rows)

    monkeypatch.setattr(sampling, "sample_and_verify", canned)


def test_the_sample_stage_keeps_what_the_judge_accepts(tmp_path, monkeypatch, bpe_checkpoint):
    """A reference the rules cannot check (words): the rules reject every sample; the judge
    (judge = "wrong") decides those with a final answer, and what it accepts is kept, with its
    verdict; judge = "all" lets the judge overrule the rules both ways."""
    from r1kit import sampling

    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "How many legs has a spider?",
                                "answer": "eight legs"}) + "\n")
    texts = ["<think> spiders </think> <answer> 8 </answer>",
             "<think> spiders </think> <answer> eight </answer>",
             "<think> no answer part </think>"]  # no final answer: nothing to judge
    _canned(monkeypatch, texts)
    yes = constant_judge(tmp_path / "yes", bpe_checkpoint, "yes")
    no = constant_judge(tmp_path / "no", bpe_checkpoint, "no")
    cpu = torch.device("cpu")

    def run(judge_path, **settings):
        cfg = SampleConfig(model="m", task="math", train_file=str(data), samples_per_prompt=3,
                           keep_per_prompt=3, **settings)
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        out.mkdir()
        said = []
        summary = sampling.run_sample(cfg, bpe_checkpoint, out, 0, cpu, torch.float32,
                                      log=said.append, judge_path=judge_path)
        rows = [json.loads(x) for x in (out / "data.jsonl").open()]
        return summary, rows, said

    with pytest.raises(R1kitError, match="kept no rows out of 3 samples"):
        run(None)  # the rules alone: "8" is not "eight legs"
    summary, rows, said = run(yes)
    assert (summary["judged"], summary["judge_accepted"], summary["correct"]) == (2, 2, 2)
    assert sorted(r["response"] for r in rows) == sorted(texts[:2])
    assert all(r["judge"] == pytest.approx(1.0, abs=1e-4) for r in rows)
    assert any("the judge decided 2 samples that the rules reject" in s for s in said)
    with pytest.raises(R1kitError, match="kept no rows"):
        run(no, judge="all")
    # judge = "all" decides the samples the rules accept too: a "no" judge rejects them
    data.write_text(json.dumps({"question": "What is 4 + 4?", "answer": "8"}) + "\n")
    summary, rows, _ = run(yes, judge="all")
    assert summary["judged"] == 2 and len(rows) == 2
    with pytest.raises(R1kitError, match="kept no rows"):
        run(no, judge="all")
    summary, rows, _ = run(no)  # "wrong": the rules' right answer stands, "eight" is judged
    assert (summary["judged"], summary["judge_accepted"]) == (1, 0)
    assert [r["response"] for r in rows] == texts[:1] and "judge" not in rows[0]


def test_judge_settings_are_checked_before_any_stage(tmp_path, bpe_checkpoint):
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "4"}) + "\n")

    def recipe(**settings):
        return recipe_from_dict({"stages": {
            "rm": {"kind": "reward_model", "model": str(bpe_checkpoint)},
            "rs": {"kind": "sample", "model": str(bpe_checkpoint), "task": "math",
                   "train_file": str(data), **settings}}})

    for settings, expected in [
            ({"judge": "all"}, "stages.rs.judge_model: judge settings without a judge_model"),
            ({"judge_model": "x", "judge": "some"}, "stages.rs.judge: must be wrong or all"),
            ({"judge_model": "x", "judge_prompt": "Is {answer} right?"},
             "stages.rs.judge_prompt: it leaves out {question}, {reference}"),
            ({"judge_model": "x", "judge_threshold": 1.0}, "judge_threshold: must be in"),
            ({"judge_model": "x", "judge_batch_size": 0}, "judge_batch_size: must be >= 1"),
            ({"judge_model": "x", "task": "code"}, "judged by running their tests")]:
        with pytest.raises(R1kitError, match=expected.replace("{", r"\{").replace("}", r"\}")):
            recipe(**settings)
    with pytest.raises(R1kitError, match="stages.rs.judge_model: stage 'rm' is a reward_model "
                                         "stage"):
        check_inputs(recipe(judge_model="rm"))
    with pytest.raises(R1kitError, match="stages.rs.judge_model: 'nowhere' is neither"):
        check_inputs(recipe(judge_model="nowhere"))
    check_inputs(recipe(judge_model=str(bpe_checkpoint)))
