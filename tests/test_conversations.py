"""Prompts given as chat messages (TRL's conversational format) in math, SFT and benchmark
data: rendered through the chat template, checked before any stage, refused without one."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import readme_recipe, stops_before_any_stage, without_chat_template

from r1kit.cli import main
from r1kit.errors import R1kitError
from r1kit.models import load_tokenizer
from r1kit.templates import R1_ZERO_SYSTEM, check_messages, prompt_text, render_prompt

CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "What is 70 + 2?"}]


def test_render_prompt_takes_messages_as_they_are(bpe_checkpoint):
    tok = load_tokenizer(bpe_checkpoint)
    text = render_prompt(CONVERSATION, "chat", tok, prefill="<think>\n")
    expected = tok.apply_chat_template([{"role": "system", "content": R1_ZERO_SYSTEM},
                                        *CONVERSATION], tokenize=False,
                                       add_generation_prompt=True) + "<think>\n"
    assert text == expected  # r1kit's instruction first: the messages bring no system turn
    own = [{"role": "system", "content": "Answer briefly."}, *CONVERSATION]
    text = render_prompt(own, "chat", tok)
    assert "Answer briefly." in text and R1_ZERO_SYSTEM not in text
    assert text.count("What is 70 + 2?") == 1 and "Hello." in text
    for template in ("r1-zero", "none"):
        with pytest.raises(R1kitError, match="needs template = 'chat'"):
            render_prompt(CONVERSATION, template, tok)
    # a template without a system turn: the system text goes before the first user message
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}"
        "{% endif %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>")
    text = render_prompt(own, "chat", tok)
    assert text.startswith("<user>Answer briefly.\n\nHi\n<assistant>Hello.\n<user>What is 70")
    assert prompt_text(CONVERSATION) == "What is 70 + 2?" and prompt_text("q") == "q"
    # a template that refuses the conversation even without a system turn: an R1kitError
    tok.chat_template = (
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}{{ m['content'] }}"
        "{% endfor %}")
    with pytest.raises(R1kitError, match="chat template refuses this prompt"):
        render_prompt([{"role": "assistant", "content": "x"}, *CONVERSATION], "chat", tok)


def test_a_final_assistant_message_is_continued(bpe_checkpoint):
    """As TRL does: the response continues a conversation's last assistant message."""
    tok = load_tokenizer(bpe_checkpoint)
    started = [*CONVERSATION, {"role": "assistant", "content": "<think>\n70"}]
    text = render_prompt(started, "chat", tok)
    assert text.endswith("<think>\n70") and text.count("<|im_start|>assistant") == 2
    assert text == tok.apply_chat_template([{"role": "system", "content": R1_ZERO_SYSTEM},
                                            *started], tokenize=False,
                                           continue_final_message=True)
    with pytest.raises(R1kitError, match="prefill '<think>\\\\n' would go after"):
        render_prompt(started, "chat", tok, prefill="<think>\n")
    # a template that rewrites assistant text (keeps what follows </think>, as R1's do)
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}"
        "{{ m['content'].split('</think>')[-1] }}{% else %}{{ m['content'] }}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(R1kitError, match="chat template refuses this prompt"):
        render_prompt([*CONVERSATION, {"role": "assistant", "content": "<think>70</think> 7"}],
                      "chat", tok)


def test_malformed_conversations_are_named():
    assert check_messages(CONVERSATION, "x") == CONVERSATION
    for value, expected in [([], "non-empty list"),
                            ([{"role": "robot", "content": "hi"}], "message 1 is not"),
                            ([{"role": "user", "content": 3}], "message 1 is not"),
                            ([{"role": "system", "content": "s"}], "no user message"),
                            ([*CONVERSATION, {"role": "system", "content": "s"}],
                             "ends with a system message")]:
        with pytest.raises(R1kitError, match=expected):
            check_messages(value, "rows.jsonl:4: field 'prompt'")


def _math_rows(path, n=8):
    path.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": str(i + 1)})
        + "\n" for i in range(n)))
    return path


def test_conversational_math_and_sft_data_train_and_evaluate(bpe_checkpoint, tmp_path, capsys):
    math = _math_rows(tmp_path / "math.jsonl")
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
        "completion": [{"role": "assistant", "content": f"<think>{i}+1</think> {i + 1}"}]})
        + "\n" for i in range(8)))
    grpo = ('[stages.zero]\nkind = "grpo"\nmodel = "sft"\ntask = "math"\n'
            f'train_file = "{math}"\ntest_file = "{math}"\nquestion_field = "prompt"\n'
            'steps = 1\ngroup_size = 2\nrollout_batch_size = 4\nnum_minibatches = 1\n'
            'micro_batch_size = 2\nmax_new_tokens = 6\nsave_every = 0\neval.every = 0\n')
    head = ('[run]\nprogress = false\ntensorboard = false\n\n[stages.sft]\nkind = "sft"\n'
            f'model = "{bpe_checkpoint}"\ndata = "{sft}"\nresponse_field = "completion"\n'
            'epochs = 2\nbatch_size = 4\nmicro_batch_size = 2\nlr = 1e-3\n')
    recipe = tmp_path / "r.toml"
    # without template = "chat": stopped before any stage, naming the stage and the file
    for stage, text in [("sft", head + '\n' + grpo + 'template = "chat"\n'),
                        ("zero", head + 'template = "chat"\n\n' + grpo)]:
        recipe.write_text(text)
        out = tmp_path / "refused"
        assert main(["run", str(recipe), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"stages.{stage}.template" in err and "chat messages" in err, err
        assert not out.exists()

    recipe.write_text(head + 'template = "chat"\n\n' + grpo + 'template = "chat"\n')
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    said = "".join(capsys.readouterr())  # r1kit's instruction joins them: said, as TRL does not
    assert "training prompts are conversations without a system turn" in said
    summary = json.loads((out / "sft" / "stage.json").read_text())["summary"]
    assert summary["rows"] == 8 and summary["final_loss"] < summary["first_loss"]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("step") == 1 and "reward" in m for m in metrics)

    # the same file as a benchmark of your own: the instruction joins the last user message
    result = tmp_path / "eval.json"
    assert main(["eval", "--model", str(out / "zero"), "--bench", str(math),
                 "--question-field", "prompt", "--limit", "2", "--k", "2", "--math-instruction",
                 "--max-new-tokens", "4", "--out", str(result)]) == 0
    sample = json.loads(result.read_text())["results"][0]["samples"][0]
    assert sample["question"][-1]["content"].startswith("What is 0 + 1?")
    assert "\\boxed{}" in sample["question"][-1]["content"]


def test_other_readers_of_prompts_take_conversations(tmp_path, bpe_checkpoint, capsys):
    """General prompts, a sample stage's rows read by SFT, task = "gsm8k" with own files, the
    language reward of `r1kit score`, `decontaminate --fields`, `eval --template r1-zero`."""
    from r1kit.config import GRPOConfig
    from r1kit.decontaminate import find_contaminated, ngrams
    from r1kit.stages.grpo import general_examples

    general = tmp_path / "general.jsonl"
    general.write_text(json.dumps({"prompt": CONVERSATION, "type": "helpful"}) + "\n"
                       + json.dumps({"prompt": "Write a poem.", "type": "safety"}) + "\n")
    cfg = GRPOConfig(general_share=0.5, general_data=str(general))
    first, second = general_examples(cfg, 0)
    assert first.question == CONVERSATION and second.question == "Write a poem."
    general.write_text(json.dumps({"prompt": 7, "type": "helpful"}) + "\n")
    with pytest.raises(R1kitError, match="general.jsonl:1: field 'prompt' is an integer"):
        general_examples(cfg, 0)

    math = _math_rows(tmp_path / "math.jsonl")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": CONVERSATION, "final_answer": "72"}) + "\n")
    sample = (f'[stages.rs]\nkind = "sample"\nmodel = "{bpe_checkpoint}"\ntask = "math"\n'
              f'train_file = "{math}"\nquestion_field = "prompt"\ntemplate = "chat"\n'
              '[stages.sft]\nkind = "sft"\nmodel = "rs"\ndata = "rs"\n')
    recipe = tmp_path / "r.toml"
    for text, expected in [
            (sample.replace('model = "rs"', f'model = "{bpe_checkpoint}"'),
             ["stages.sft.template", "stage 'rs' writes prompts as chat messages"]),
            ((f'[stages.zero]\nkind = "grpo"\nmodel = "{bpe_checkpoint}"\ntask = "gsm8k"\n'
              f'test_file = "{gsm}"\n'), ["stages.zero.template", "gsm.jsonl"])]:
        recipe.write_text(text)
        stops_before_any_stage(recipe, tmp_path, capsys, expected)

    rows = tmp_path / "score.jsonl"
    rows.write_text(json.dumps({"completion": "<think>eight plus two</think><answer>10</answer>",
                                "target": "prompt", "prompt": CONVERSATION}) + "\n")
    assert main(["score", "--reward", "language", "--input", str(rows)]) == 0
    assert json.loads(capsys.readouterr().out)["reward"] == 1.0  # English, as its user turn

    problem = "Natalia sold clips to 48 of her friends in April and then half as many in May"
    grams = {"gsm8k": ngrams(problem)}
    convo = [{"prompt": [{"role": "user", "content": problem}]}]
    assert [h["index"] for h in find_contaminated(convo, grams, fields=["prompt"])] == [0]

    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", str(math),
                 "--question-field", "prompt", "--template", "r1-zero"]) == 2
    err = capsys.readouterr().err
    assert "chat messages" in err and "--template chat" in err


def test_conversation_examples_hash_and_auto_template_without_one(bpe_checkpoint, tmp_path,
                                                                   capsys):
    from r1kit.tasks.base import Example

    a, b = Example(question=CONVERSATION, answer="72"), Example(question=list(CONVERSATION),
                                                                answer="72")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    plain = without_chat_template(bpe_checkpoint, tmp_path / "plain")
    math = _math_rows(tmp_path / "math.jsonl")
    assert main(["eval", "--model", str(plain), "--bench", str(math),
                 "--question-field", "prompt"]) == 2
    err = capsys.readouterr().err
    assert "chat messages" in err and "no chat template" in err and "Traceback" not in err


R1_DISTILL_TEMPLATE = (  # the shape of DeepSeek-R1's distilled models' template: it opens
    # the reasoning itself after the assistant tag
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<|User|>{{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}")


def test_prompts_for_a_released_reasoning_model(bpe_checkpoint, tmp_path, capsys, monkeypatch):
    """A chat template that already ends with the prefill gets it once, not twice; `r1kit eval`
    prompts with no system turn by default (the paper's setting for its released models), and
    with r1kit's instruction under --system-prompt."""
    tok = load_tokenizer(bpe_checkpoint)
    tok.chat_template = R1_DISTILL_TEMPLATE
    text = render_prompt("What is 1 + 1?", "chat", tok, "<think>\n", system=False)
    assert text == "<|User|>What is 1 + 1?<|Assistant|><think>\n"
    assert render_prompt("What is 1 + 1?", "chat", tok, "<think>", system=False) == text
    assert render_prompt("x", "chat", tok, "<think>\n").startswith(R1_ZERO_SYSTEM)

    model = tmp_path / "distill"
    shutil.copytree(bpe_checkpoint, model)
    tok.save_pretrained(model)
    import r1kit.eval.cli as eval_cli

    rendered = []

    def recording(question, template, tokenizer, prefill="", system=True):
        rendered.append(render_prompt(question, template, tokenizer, prefill, system))
        return tokenizer(rendered[-1], add_special_tokens=False)["input_ids"]

    monkeypatch.setattr(eval_cli, "encode_prompt", recording)
    for extra, system in (([], False), (["--system-prompt"], True)):
        rendered.clear()
        out = tmp_path / f"eval-{system}.json"
        assert main(["eval", "--model", str(model), "--bench", "gsm8k", "--limit", "2",
                     "--k", "1", "--max-new-tokens", "4", "--out", str(out), *extra]) == 0
        saved = json.loads(out.read_text())
        assert saved["settings"]["system_prompt"] == (R1_ZERO_SYSTEM if system else False)
        assert saved["settings"]["prefill"] == "<think>\n"
        assert rendered and all(p.startswith(R1_ZERO_SYSTEM) == system for p in rendered)
        assert all(p.endswith("<|Assistant|><think>\n") for p in rendered)


def test_the_system_turn_is_a_setting(bpe_checkpoint):
    """system_prompt: "r1kit" (r1kit's reasoning instruction, the default), "" (none) or
    your own text, for a conversation that brings no system turn of its own."""
    tok = load_tokenizer(bpe_checkpoint)
    question = [{"role": "user", "content": "What is 70 + 2?"}]
    assert R1_ZERO_SYSTEM in render_prompt(question, "chat", tok, system="r1kit")
    assert render_prompt(question, "chat", tok, system="") == render_prompt(
        question, "chat", tok, system=False)
    assert R1_ZERO_SYSTEM not in render_prompt(question, "chat", tok, system="")
    own = render_prompt(question, "chat", tok, system="Answer in one line.")
    assert "Answer in one line." in own and R1_ZERO_SYSTEM not in own
    brought = [{"role": "system", "content": "Be brief."}, *question]
    assert "Answer in one line." not in render_prompt(brought, "chat", tok,
                                                      system="Answer in one line.")


def test_sft_on_whole_conversations_trains_the_last_assistant_message(bpe_checkpoint, tmp_path):
    """TRL's and open-r1's SFT format: each row's conversation in "messages", ending with the
    assistant's answer: the messages before it are the prompt (through the chat template,
    with the stage's system_prompt), the answer is trained on; malformed rows are named."""
    from r1kit.config import SFTConfig
    from r1kit.stages.sft import encode_rows, read_sft_rows

    data = tmp_path / "messages.jsonl"
    turns = [*CONVERSATION, {"role": "assistant", "content": "<think>70+2</think> 72"}]
    data.write_text(json.dumps({"messages": turns}) + "\n")
    cfg = SFTConfig(model="m", data=str(data), template="chat", system_prompt="")
    rows = read_sft_rows(data, cfg)
    assert rows == [(CONVERSATION, "<think>70+2</think> 72")]
    tok = load_tokenizer(bpe_checkpoint)
    (prompt, response), = encode_rows(tok, rows, "chat", 512, system=cfg.system_prompt)
    assert tok.decode(prompt) == render_prompt(CONVERSATION, "chat", tok, system=False)
    assert response[-1] == tok.eos_token_id
    assert tok.decode(response[:-1]).strip() == "<think>70+2</think> 72"
    # the default system_prompt gives r1kit's instruction to prompts without a system turn:
    # said at the stage's start (a conversation with its own is not counted)
    said: list[str] = []
    own = [{"role": "system", "content": "Be brief."}, *CONVERSATION]
    encode_rows(tok, [*rows, (own, "72"), ("What is 1 + 1?", "2")], "chat", 512, said.append,
                system="r1kit")
    assert said == ["2 of 3 prompts bring no system turn: they are trained under r1kit's "
                    "reasoning instruction as one (system_prompt = \"r1kit\"; \"\" for none, "
                    "or your own text); it asks for an <answer> tag, which 2 of their "
                    "responses do not have: TRL and open-r1 train the conversations as they "
                    "are (system_prompt = \"\")"]
    said.clear()  # (responses in the instruction's format: no word on tags)
    encode_rows(tok, [(CONVERSATION, "<think>70+2</think> <answer>72</answer>")], "chat", 512,
                said.append, system="r1kit")
    assert said == ["1 of 1 prompts bring no system turn: they are trained under r1kit's "
                    "reasoning instruction as one (system_prompt = \"r1kit\"; \"\" for none, "
                    "or your own text)"]
    said.clear()
    encode_rows(tok, rows, "chat", 512, said.append, system="")
    assert said == []
    # ultrachat's layout: a text prompt beside the conversation
    data.write_text(json.dumps({"prompt": "Hi", "prompt_id": "x", "messages": turns}) + "\n")
    assert read_sft_rows(data, cfg) == rows
    data.write_text(json.dumps({"messages": [{"role": "system", "content": "s"},
                                             {"role": "assistant", "content": "72"}]}) + "\n")
    with pytest.raises(R1kitError, match="messages.jsonl:1: field 'messages': the "
                                         "conversation has no user message"):
        read_sft_rows(data, cfg)
    data.write_text(json.dumps({"body": "72"}) + "\n")
    with pytest.raises(R1kitError, match="no field 'prompt'") as err:
        read_sft_rows(data, cfg)
    assert "'messages'" in err.value.hint and "its fields are body" in err.value.hint
    data.write_text(json.dumps({"prompt": "1+1=", "completion": "2"}) + "\n")  # TRL's
    assert read_sft_rows(data, cfg) == [("1+1=", "2")]  # (read as it is)
    with pytest.raises(R1kitError, match="no field 'answer'") as err:  # (another name: said)
        read_sft_rows(data, SFTConfig(model="m", data=str(data), response_field="answer"))
    assert 'set response_field = "completion"' in err.value.hint
    assert read_sft_rows(data, SFTConfig(model="m", data=str(data), response_field="completion")
                         ) == [("1+1=", "2")]
    # conversations that have no assistant's message to train on say so (not "no field
    # 'prompt'")
    for messages, expected in [(CONVERSATION, "ends with a 'user' message, not the assistant's"),
                               ("hello", "field 'messages' is a text, not a list"),
                               ([], "an empty conversation"),
                               ([{"role": "assistant", "content": "72"}],
                                "the assistant's message alone")]:
        data.write_text(json.dumps({"messages": messages}) + "\n")
        with pytest.raises(R1kitError, match=f"messages.jsonl:1: .*{expected}"):
            read_sft_rows(data, cfg)


def test_sft_trains_trl_text_rows_whole_and_never_across_packed_rows(bpe_checkpoint,
                                                                     tmp_path):
    """TRL's language-modeling rows ({"text": ...}): the whole text is trained on, verbatim
    whatever the template (a note says so), ended with eos. A row without a prompt or a bos
    (a text row, or an empty prompt with template "none") starts with a token nothing
    predicts: packed after another row, it is not trained as the continuation of that row."""
    from r1kit.config import SFTConfig
    from r1kit.stages.pretrain import packed_batch
    from r1kit.stages.sft import encode_rows, read_sft_rows

    data = tmp_path / "text.jsonl"
    texts = ["Question: 2+2? Answer: 4", "The sky is blue."]
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = SFTConfig(model="m", data=str(data))
    assert read_sft_rows(data, cfg) == [(None, t) for t in texts]
    tok = load_tokenizer(bpe_checkpoint)
    said = []
    rows = encode_rows(tok, read_sft_rows(data, cfg), "r1-zero", 512, said.append)
    assert said == ["2 of 2 rows are plain text (field 'text'): trained on whole, as they are, "
                    "without the 'r1-zero' template"]
    for (p, r), text in zip(rows, texts):
        assert r[-1] == tok.eos_token_id
        whole = tok(text, add_special_tokens=True)["input_ids"]
        # every token of the text is trained on but one with nothing before it to predict it
        assert p + r[:-1] == whole and len(p) == 1
    # packed one after the other, no label sits on a row's first position
    ids, _, labels = packed_batch(rows, tok.pad_token_id, 64)
    assert ids.shape[0] == 1 and (labels != -100).sum() == sum(len(r) for _, r in rows)
    second = len(rows[0][0]) + len(rows[0][1])
    assert labels[0, second] == -100 and labels[0, second + 1] != -100
    # an empty prompt with template "none" is read the same way
    empty = encode_rows(tok, [("", texts[1])], "none", 512)
    assert empty == [rows[1]]
    # with the chat template the text still ends with eos, not the template's end of turn
    tok.eos_token = "<|endoftext|>"  # (a base model's eos, as Qwen2.5's: not <|im_end|>)
    (_, chat), = encode_rows(tok, [(None, texts[1])], "chat", 512)
    assert chat[-1] == tok.eos_token_id
    (_, turn), = encode_rows(tok, [("Hi", texts[1])], "chat", 512)
    assert tok.convert_ids_to_tokens(turn[-1]) == "<|im_end|>"
    with pytest.raises(R1kitError, match="every row of the SFT data is empty"):
        encode_rows(tok, [("", "")], "none", 512)
    tok.eos_token = "<|im_end|>"
    # and the stage trains on them
    recipe = tmp_path / "text.toml"
    recipe.write_text(f'[run]\nprogress = false\ntensorboard = false\n[stages.sft]\n'
                      f'kind = "sft"\nmodel = "{bpe_checkpoint}"\ndata = "{data}"\n'
                      'epochs = 30\nbatch_size = 2\nlr = 3e-3\n')
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "sft" / "sft.json").read_text())
    assert summary["final_loss"] < 0.5 * summary["first_loss"]


def test_sft_reads_trl_prompt_completion_rows_and_fewer_rows_than_a_batch(bpe_checkpoint,
                                                                          tmp_path, capsys):
    """TRL's prompt-completion rows are read without response_field; a data set of fewer rows
    than batch_size trains `epochs` steps, each on all of its rows (not ceil(epochs x rows /
    batch_size) steps: 1 here); AdamW's betas are the stage's adam_betas."""
    import torch

    from r1kit.config import SFTConfig
    from r1kit.stages.sft import read_sft_rows

    data = tmp_path / "pc.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i}+1?", "completion": str(i + 1)})
                            + "\n" for i in range(3)))
    assert read_sft_rows(data, SFTConfig(model="m", data=str(data))) == [
        (f"What is {i}+1?", str(i + 1)) for i in range(3)]
    betas = []
    real = torch.optim.AdamW.__init__

    def spy(self, params, *args, **kwargs):
        betas.append(kwargs.get("betas"))
        real(self, params, *args, **kwargs)

    recipe = tmp_path / "pc.toml"
    recipe.write_text(f'[run]\nprogress = false\ntensorboard = false\n[stages.sft]\n'
                      f'kind = "sft"\nmodel = "{bpe_checkpoint}"\ndata = "{data}"\n'
                      'epochs = 5\nlr = 1e-3\nadam_betas = [0.8, 0.9]\n')
    torch.optim.AdamW.__init__ = spy
    try:
        assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    finally:
        torch.optim.AdamW.__init__ = real
    summary = json.loads((tmp_path / "run" / "sft" / "sft.json").read_text())
    assert summary["steps"] == 5 and summary["rows"] == 3
    said = capsys.readouterr().out
    assert "batch_size = 128 is more than the 3 rows" in said
    # (the default template, though the checkpoint has a chat template: said; not for a
    # sample stage's data, whose prompts an RL stage asked in that template)
    assert "3 of 3 text prompts are trained in r1kit's R1-Zero template" in said
    from r1kit.stages.sft import encode_rows

    for own in (True, False):
        notes: list[str] = []
        encode_rows(load_tokenizer(bpe_checkpoint), [("What is 1+1?", "2")], "r1-zero", 512,
                    notes.append, own_data=own)
        assert any("R1-Zero template" in m for m in notes) == own
    assert (0.8, 0.9) in betas


def test_sft_under_a_template_that_opens_the_reasoning_trains_one_think(bpe_checkpoint):
    """DeepSeek-R1-Distill's and open-r1's chat templates end the assistant's opening with
    "<think>\\n": an R1 trace that starts with <think> is trained from after it (not a
    second <think>), said once; under a template that does not open it, the response keeps
    its own."""
    from r1kit.stages.sft import encode_rows

    tok = load_tokenizer(bpe_checkpoint)
    trace = "<think>\n2+2=4\n</think>\n\nThe answer is 4."
    conversation = [{"role": "user", "content": "What is 2+2?"}]
    plain = encode_rows(tok, [(conversation, trace)], "chat", 512, system="")
    tok.chat_template = tok.chat_template.replace(
        "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>\n{% endif %}")
    said: list[str] = []
    (p, r), _ = encode_rows(tok, [(conversation, trace), (conversation, "4")], "chat", 512,
                            said.append, system="")
    assert tok.decode(p).endswith("assistant\n<think>\n")
    assert tok.decode(r) == "2+2=4\n</think>\n\nThe answer is 4.<|im_end|>"
    assert tok.decode(p + r) == tok.decode(plain[0][0] + plain[0][1])  # (the same text)
    assert said == ["1 of 2 responses open with <think>, which the model's chat template "
                    "already writes at the start of the assistant's turn: they are trained "
                    "from after it (one <think>, as the model will see it when it answers)"]


def test_a_template_that_opens_the_reasoning_is_written_back_in_front_of_responses(
        bpe_checkpoint):
    """Under a chat template whose assistant turn opens with "<think>\\n", the responses
    that rewards read and samples keep begin with it whatever the prefill ("" or "<think>"),
    as they do under a plain template with prefill "<think>\\n" (one opening, its newline
    kept); other templates write back the prefill alone."""
    import torch

    from r1kit.eval.core import decode_responses
    from r1kit.templates import response_prefill, template_opening

    tok = load_tokenizer(bpe_checkpoint)
    assert template_opening(tok) == "" and response_prefill(tok, "chat", "<think>\n") == \
        "<think>\n"
    assert response_prefill(tok, "r1-zero", "x") == "x"
    tok.chat_template = tok.chat_template.replace(
        "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>\n{% endif %}")
    assert template_opening(tok) == "<think>\n"
    assert [response_prefill(tok, "chat", p) for p in ("", "<think>", "<think>\n", "So")] == \
        ["<think>\n", "<think>\n", "<think>\n", "<think>\nSo"]
    assert response_prefill(tok, "r1-zero", "") == ""
    ids = tok("2+2=4\n</think>\n\n4", add_special_tokens=False)["input_ids"]
    (text,) = decode_responses(tok, torch.tensor([ids]), torch.ones(1, len(ids)), [],
                               response_prefill(tok, "chat", ""))
    assert text == "<think>\n2+2=4\n</think>\n\n4"


def test_sft_reads_sharegpt_conversations(tmp_path):
    """ShareGPT's layout, as OpenThoughts and Bespoke-Stratos write their R1 traces:
    `conversations` of {"from", "value"} turns (human / gpt, or user / assistant) and a
    `system` field; read as the same conversation in `messages`."""
    from r1kit.config import SFTConfig
    from r1kit.stages.sft import read_sft_rows

    data = tmp_path / "sharegpt.jsonl"
    data.write_text(json.dumps({"system": "Think first.", "conversations": [
        {"from": "user", "value": "What is 70 + 2?"},
        {"from": "assistant", "value": "<think>70+2</think> 72"}]}) + "\n" + json.dumps(
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
        + "\n")
    cfg = SFTConfig(model="m", data=str(data), template="chat")
    assert read_sft_rows(data, cfg) == [
        ([{"role": "system", "content": "Think first."},
          {"role": "user", "content": "What is 70 + 2?"}], "<think>70+2</think> 72"),
        ([{"role": "user", "content": "Hi"}], "Hello")]
    data.write_text(json.dumps({"conversations": [{"from": "human", "value": "Hi"}]}) + "\n")
    with pytest.raises(R1kitError, match="ends with a 'user' message, not the assistant's"):
        read_sft_rows(data, cfg)


def test_chat_sft_ends_responses_with_the_templates_end_of_turn(bpe_checkpoint, tmp_path):
    """A base model whose eos is not its chat template's end of turn (Qwen2.5's base models:
    <|endoftext|> against ChatML's <|im_end|>). SFT with template = "chat" ends each response
    with <|im_end|>, as the template writes it (TRL's SFT trains the rendered conversation);
    sampling stops on it; the SFT stage's checkpoint lists it in generation_config.json. With
    template = "none" a response ends with eos, as before."""
    from r1kit.models import stop_token_ids
    from r1kit.stages.sft import encode_rows
    from r1kit.templates import end_of_turn_id

    base = tmp_path / "base"
    shutil.copytree(bpe_checkpoint, base)
    tok = load_tokenizer(base)
    tok.eos_token = "<|endoftext|>"
    tok.save_pretrained(base)
    tok = load_tokenizer(base)
    for name in ("config.json", "generation_config.json"):  # the model's eos too
        conf = json.loads((base / name).read_text())
        conf["eos_token_id"] = tok.eos_token_id
        (base / name).write_text(json.dumps(conf))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id != im_end and end_of_turn_id(tok) == im_end
    (_, chat), = encode_rows(tok, [("What is 70 + 2?", "72")], "chat", 512)
    (_, plain), = encode_rows(tok, [("What is 70 + 2?", "72")], "none", 512)
    assert chat[-1] == im_end and plain[-1] == tok.eos_token_id
    assert tok.decode(chat[:-1]) == tok.decode(plain[:-1]) == "72"
    assert set(stop_token_ids(tok)) == {tok.eos_token_id, im_end}

    # Llama 3's and Gemma's kinds of template; none where no special token follows
    other = load_tokenizer(base)
    other.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<end_of_turn>"]})
    other.chat_template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
                           "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}")
    assert end_of_turn_id(other) == other.convert_tokens_to_ids("<|eot_id|>")
    other.chat_template = ("{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
                           "{{ m['content'] }}<end_of_turn>\n{% endfor %}")
    assert end_of_turn_id(other) == other.convert_tokens_to_ids("<end_of_turn>")
    other.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert end_of_turn_id(other) is None
    other.chat_template = None
    assert end_of_turn_id(other) is None

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?",
                                        "response": f"<think>{i}+1</think> {i + 1}"}) + "\n"
                            for i in range(4)))
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nprogress = false\ntensorboard = false\n\n[stages.sft]\n'
                      f'kind = "sft"\nmodel = "{base}"\ndata = "{data}"\ntemplate = "chat"\n'
                      'epochs = 1\nbatch_size = 4\nmicro_batch_size = 2\nlr = 1e-3\n')
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    gen = json.loads((tmp_path / "run" / "sft" / "generation_config.json").read_text())
    eos = gen["eos_token_id"]
    assert im_end in (eos if isinstance(eos, list) else [eos])


def test_the_format_check_reads_a_continued_assistant_message(tmp_path):
    """A prompt whose conversation ends with the assistant's "<think>\\n" (the response
    continues it): the format check reads the response after that message, so a response
    that closes the reasoning and summarises has R1's format (it scored 0 on every sample:
    the opening tag was in the prompt). Opening it again is two tags: 0."""
    from r1kit.rewards.combined import CombinedReward
    from r1kit.rewards.rule import RuleReward
    from r1kit.tasks.base import Example
    from r1kit.tasks.math import MathTask

    path = tmp_path / "m.jsonl"
    path.write_text('{"question": "q", "answer": "4"}\n')
    task = MathTask("m", path)
    continued = Example(question=[{"role": "user", "content": "What is 2 + 2?"},
                                  {"role": "assistant", "content": "<think>\n"}], answer="4")
    plain = Example(question="What is 2 + 2?", answer="4")
    closes = "2 + 2 = 4\n</think>\nThe answer is \\boxed{4}."
    reopens = "<think>2 + 2 = 4\n</think>\nThe answer is \\boxed{4}."
    scored = CombinedReward(task, format_style="think").score(
        [closes, reopens, closes], [continued, continued, plain])
    assert [p["format"] for _, p in scored] == [1.0, 0.0, 0.0]
    assert [p["accuracy"] for _, p in scored] == [1.0, 1.0, 1.0]
    rule = RuleReward(task, format_style="think")
    assert rule(closes, continued)[1]["format"] == 1.0 and rule(closes, plain)[1]["format"] == 0.0


def test_a_prefill_after_a_continued_assistant_message_is_refused_before_any_stage(
        tmp_path, bpe_checkpoint):
    """It was found when the grpo stage encoded its first prompt, after the stages before it
    had run."""
    from r1kit.config import check_inputs, recipe_from_dict

    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": [{"role": "user", "content": "What is 2 + 2?"},
                                             {"role": "assistant", "content": "<think>\n"}],
                                "answer": "4"}) + "\n")
    stages = {"rl": {"kind": "grpo", "model": str(bpe_checkpoint), "task": "math",
                     "train_file": str(data), "template": "chat", "prefill": "<think>\n"}}
    with pytest.raises(R1kitError, match="stages.rl.prefill: .*end with an assistant message"):
        check_inputs(recipe_from_dict({"stages": stages}))
    stages["rl"]["prefill"] = ""
    check_inputs(recipe_from_dict({"stages": stages}))


def test_the_readmes_open_r1_sft_stage_runs(tmp_path, monkeypatch, capsys, bpe_checkpoint):
    """The README's stage for open-r1's SFT data (rows of `messages`, parquet shards) runs as
    written, with paths of this test's own, 8 rows in batches of 4, a larger lr and a short
    max_length, and trains on the traces: its loss falls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "s1K-1.1").mkdir(parents=True)
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"<think>\n{i} + {i} = {2 * i}\n"
                                                           f"</think>\n\n\\boxed{{{2 * i}}}"}]}
            for i in range(8)]
    for shard in range(2):
        pq.write_table(pa.Table.from_pylist(rows[shard::2]),
                       tmp_path / "data" / "s1K-1.1" / f"train-0000{shard}-of-00002.parquet")
    recipe = readme_recipe("Coming from open-r1's SFT", tmp_path / "open-r1.toml",
                           bpe_checkpoint)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--set", "stages.distill.batch_size=4", "--set", "stages.distill.warmup_steps=1",
                 "--set", "stages.distill.lr=3e-3", "--set", "stages.distill.max_length=96",
                 "--set", "stages.distill.activation_checkpointing=false"]) == 0
    config = json.loads((out / "config.json").read_text())["stages"]["distill"]
    assert (config["adam_betas"], config["final_lr_ratio"], config["system_prompt"]) == \
        ([0.9, 0.999], 0.1, "")
    # the data set's directory instead of its shards: the glob to give, before any stage
    whole = tmp_path / "dir.toml"
    whole.write_text(recipe.read_text().replace('"data/s1K-1.1/train-*.parquet"',
                                                '"data/s1K-1.1"'))
    (tmp_path / "again").mkdir()
    stops_before_any_stage(whole, tmp_path / "again", capsys, [
        "stages.distill.data", "is a directory, not a data file",
        "data/s1K-1.1/train-*.parquet"])
    summary = json.loads((out / "distill" / "sft.json").read_text())
    assert summary["rows"] == 8 and summary["steps"] == 30  # (15 epochs of 8 rows, 4 a step)
    assert summary["final_loss"] < 0.7 * summary["first_loss"]


def test_prompts_that_end_with_the_worked_answer_are_refused_before_any_stage(
        tmp_path, bpe_checkpoint, capsys):
    """open-r1's `messages` (the user's problem, then the assistant's worked solution) named
    as a grpo stage's question_field: every prompt continued the solution, shown its answer,
    with no word. Prompts whose assistant message opens the reasoning still run."""
    from r1kit.config import check_inputs, recipe_from_dict

    def rows(assistant: str):
        data = tmp_path / "messages.jsonl"
        data.write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": f"What is {a} + 47?"},
            {"role": "assistant", "content": assistant.format(a + 47)}], "answer": str(a + 47)})
            + "\n" for a in range(4)))
        return data

    stages = {"rl": {"kind": "grpo", "model": str(bpe_checkpoint), "task": "math",
                     "train_file": str(rows("<think>adding</think> \\boxed{{{}}}")),
                     "question_field": "messages", "template": "chat", "prefill": ""}}
    with pytest.raises(R1kitError, match="stages.rl.question_field: .*messages.jsonl: 4 of 4 "
                       "prompts end with an assistant message that already holds a final "
                       "answer") as err:
        check_inputs(recipe_from_dict({"stages": stages}))
    assert 'question_field = "problem"' in err.value.hint
    # r1kit eval --bench FILE reads it the same way
    assert main(["eval", "--model", str(bpe_checkpoint), "--bench", stages["rl"]["train_file"],
                 "--question-field", "messages", "--k", "1", "--max-new-tokens", "2"]) == 2
    assert "messages.jsonl: 4 of 4 prompts end with an assistant message" in \
        capsys.readouterr().err
    stages["rl"]["train_file"] = str(rows("<think>\nFirst, {} is"))  # a reasoning opened
    check_inputs(recipe_from_dict({"stages": stages}))
