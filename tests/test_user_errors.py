"""What a user's own checkpoint or data can get wrong, said as an error (or a note), not a
traceback or a silent loss: corrupt files, a tokenizer larger than the model's embedding,
SFT rows longer than max_length, a tokenizer without an end-of-sequence token; and the run's
figure, which plots the RL stages' evaluations only."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from r1kit.errors import R1kitError
from r1kit.models import load_model, load_tokenizer


@pytest.fixture()
def checkpoint(bpe_checkpoint, tmp_path):
    return shutil.copytree(bpe_checkpoint, tmp_path / "model")


def test_corrupt_tokenizer_file_is_an_error_naming_it(checkpoint):
    (checkpoint / "tokenizer.json").write_text("{ not json")
    with pytest.raises(R1kitError, match="could not load the tokenizer") as info:
        load_tokenizer(checkpoint)
    assert str(checkpoint) in str(info.value) and "tokenizer.json" in str(info.value)


def test_corrupt_or_missing_weights_are_an_error_naming_them(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(b"garbage")
    with pytest.raises(R1kitError, match="could not load the model of") as info:
        load_model(checkpoint, torch.device("cpu"), torch.float32)
    assert "model.safetensors or its shards" in str(info.value)  # the weights' hint
    weights.unlink()  # none at all: found by the directory check (before any stage)
    with pytest.raises(R1kitError, match="holds no weights"):
        load_model(checkpoint, torch.device("cpu"), torch.float32)
    weights.write_bytes(b"garbage")
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "model_type": "qwen99",
                                                        "architectures": ["Qwen99ForCausalLM"]}))
    with pytest.raises(R1kitError, match="could not load the model of") as info:
        load_model(checkpoint, torch.device("cpu"), torch.float32)
    assert "supports this model type" in str(info.value)  # not the weights' fault


def test_tokenizer_larger_than_the_embedding_is_found_at_load(checkpoint):
    tok = load_tokenizer(checkpoint)
    load_model(checkpoint, torch.device("cpu"), torch.float32, tok)  # as saved: fine
    tok.add_tokens([f"<extra_{i}>" for i in range(5)])
    with pytest.raises(R1kitError, match="resize_token_embeddings") as info:
        load_model(checkpoint, torch.device("cpu"), torch.float32, tok)
    assert f"has {len(tok)} tokens" in str(info.value)


def test_tokenizer_larger_than_the_embedding_is_found_before_any_stage(checkpoint, tmp_path):
    """A directory named by a later stage: found before the stages before it run."""
    tok = load_tokenizer(checkpoint)
    recipe = ('[stages.base]\nkind = "pretrain"\nsteps = 1\n'
              f'[stages.rl]\nkind = "grpo"\nmodel = "{checkpoint}"\n')
    from r1kit.config import check_inputs, load_recipe

    (tmp_path / "ok.toml").write_text(recipe)
    check_inputs(load_recipe(tmp_path / "ok.toml"))  # as saved: fine
    tok.add_tokens([f"<extra_{i}>" for i in range(5)])
    tok.save_pretrained(checkpoint)
    error = _recipe_error(tmp_path, recipe)
    assert f"stages.rl.model: the tokenizer of '{checkpoint}' has {len(tok)} tokens but its " \
        "model embeds only" in error and "resize_token_embeddings" in error


def test_cli_says_which_weights_cannot_be_read(checkpoint, capsys):
    from r1kit.cli import main

    (checkpoint / "model.safetensors").write_bytes(b"garbage")
    assert main(["eval", "--model", str(checkpoint), "--bench", "gsm8k", "--limit", "1",
                 "--k", "1", "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert "could not load the model of" in err and "save_pretrained" in err
    assert "Traceback" not in err
    assert "free disk space" not in err


def test_sft_rows_longer_than_max_length_are_cut_or_left_out(bpe_checkpoint):
    from r1kit.stages.sft import encode_rows

    tok = load_tokenizer(bpe_checkpoint)
    short_q, long_q = "What is 2 + 3?", "Count the apples. " * 40
    answer = "First add two and three, which gives five. The answer is 5."
    p_short = len(tok(short_q)["input_ids"])
    p_long = len(tok(long_q)["input_ids"])
    n_answer = len(tok(answer, add_special_tokens=False)["input_ids"]) + 1  # + eos
    limit = p_short + n_answer - 3  # the short row loses the end of its response
    assert p_long >= limit
    notes = []
    out = encode_rows(tok, [(short_q, answer), (long_q, answer), (short_q, "5")], "none",
                      limit, notes.append)
    assert len(out) == 2  # the long prompt's row is left out: nothing of it to train on
    (p1, r1), (_, r2) = out
    assert p1 == tok(short_q)["input_ids"] and len(p1) + len(r1) == limit
    assert r1 == (tok(answer, add_special_tokens=False)["input_ids"])[:limit - p_short]
    assert r2[-1] == tok.eos_token_id  # the row that fits keeps its end
    assert notes and "1 of 3 rows cut" in notes[0] and "1 left out" in notes[0]
    with pytest.raises(R1kitError, match="raise max_length"):
        encode_rows(tok, [(long_q, answer)], "none", limit)
    notes.clear()  # an empty response trains only the end token: said, not refused
    out = encode_rows(tok, [(short_q, answer), (short_q, " "), (short_q, "")], "none", 512,
                      notes.append)
    assert len(out) == 3 and out[2][1] == [tok.eos_token_id]
    assert notes == ["2 of 3 rows have an empty response: they teach the model to stop at once "
                     "after their prompts"]


def test_sft_needs_an_end_of_sequence_token(bpe_checkpoint):
    from r1kit.stages.sft import encode_rows

    tok = load_tokenizer(bpe_checkpoint)
    tok.eos_token = None
    with pytest.raises(R1kitError, match="no end-of-sequence token"):
        encode_rows(tok, [("q", "a")], "none", 64)


def test_sampling_needs_a_stop_token(bpe_checkpoint, tmp_path, capsys, monkeypatch):
    """A model with no stop token at all (no eos in its tokenizer or generation config, no
    chat template's end of turn) is refused where it would sample: every sample would run to
    max_new_tokens, and the stage advised raising it."""
    from conftest import without_chat_template

    from r1kit.cli import main

    model = without_chat_template(bpe_checkpoint, tmp_path / "model")
    tok = load_tokenizer(model)
    tok.eos_token = None
    tok.save_pretrained(model)
    for name in ("config.json", "generation_config.json"):
        conf = json.loads((model / name).read_text())
        conf["eos_token_id"] = None
        (model / name).write_text(json.dumps(conf))
    assert main(["eval", "--model", str(model), "--bench", "gsm8k", "--limit", "1", "--k", "1",
                 "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert "the model has no stop token" in err and "set eos_token" in err
    # under torchrun every process meets it alike: the machine's first one says it
    import socket

    from r1kit import distributed

    monkeypatch.setattr(distributed, "_world", distributed.World(rank=1, world_size=2))
    monkeypatch.setattr(distributed, "launched", lambda: False)
    monkeypatch.setattr(distributed, "init", lambda device: device)
    monkeypatch.setattr(distributed, "gather_lists",
                        lambda items: [(socket.gethostname(), "0", None)] + items)
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    assert main(["eval", "--model", str(model), "--bench", "gsm8k", "--limit", "1", "--k", "1",
                 "--max-new-tokens", "2"]) == 2
    assert capsys.readouterr().err == ""


def test_figure1_plots_the_rl_stages_only(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    from r1kit.plots import plot_figure1

    row = {"benchmark": "arithmetic/main", "pass@1": 0.5, "cons@4": 0.6, "k": 4,
           "mean_tokens": 20.0}
    table = [{**row, "stage": "table", "step": 0, "model": m} for m in ("base", "zero")]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in table))
    assert plot_figure1(tmp_path) is None  # an eval stage's table alone: no RL curve

    labels = []
    plot = Axes.plot

    def recording(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording)
    rl = [{**row, "stage": "zero", "step": s} for s in (0, 10)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rl + table))
    assert plot_figure1(tmp_path).is_file()
    assert labels and all(label.startswith("zero") for label in labels), labels


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes"),
])
def test_cli_says_what_to_lower_when_memory_runs_out(error, tmp_path, monkeypatch, capsys):
    import r1kit.pipeline
    from r1kit.cli import main

    def no_memory(*a, **kw):
        raise error

    monkeypatch.setattr(r1kit.pipeline, "run_recipe", no_memory)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.base]\nkind = "pretrain"\n')
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "out of memory" in err and "micro_batch_size" in err and "Traceback" not in err

    def other(*a, **kw):
        raise RuntimeError("a bug")

    monkeypatch.setattr(r1kit.pipeline, "run_recipe", other)
    with pytest.raises(RuntimeError, match="a bug"):  # other errors keep their traceback
        main(["run", str(recipe), "--out", str(tmp_path / "run")])


def test_a_lora_adapter_directory_is_named_as_one(tmp_path, checkpoint):
    from r1kit.models import check_model_dir, load_tokenizer

    stage = tmp_path / "zero"
    shutil.copytree(checkpoint, stage)  # the stage's final model, merged
    step = stage / "checkpoints" / "step-4"
    step.mkdir(parents=True)
    (step / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    with pytest.raises(R1kitError, match="holds a LoRA adapter .* names no base model") as err:
        check_model_dir(step)
    assert str(stage) in err.value.hint
    assert "merge_and_unload" in err.value.hint and "after its last step" in err.value.hint
    gone = tmp_path / "gone"
    (step / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(gone)}))
    with pytest.raises(R1kitError, match="on the base model .* not a directory here") as err:
        check_model_dir(step)
    (step / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "Org/M"}))
    with pytest.raises(R1kitError, match="'Org/M'.*never downloads: it is not in the cache"):
        check_model_dir(step)
    # on a base model that is here, the adapter is a model to load (tokenizer: the base's)
    (step / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path":
                                                          str(checkpoint)}))
    assert check_model_dir(step) == step
    assert load_tokenizer(step).get_vocab() == load_tokenizer(checkpoint).get_vocab()
    with pytest.raises(R1kitError, match="not a reward model"):
        check_model_dir(step, "reward")
    (stage / "config.json").unlink()  # no final model yet: how to merge it
    (step / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    with pytest.raises(R1kitError, match="holds a LoRA adapter") as err:
        check_model_dir(step)
    assert "merge_and_unload" in err.value.hint and str(stage) not in err.value.hint
    (stage / "stage.json").write_text('{"kind": "grpo", "status": "running"}')
    with pytest.raises(R1kitError, match="a stage that has not finished") as err:
        check_model_dir(stage)  # the stage directory itself: its checkpoints are named
    assert str(step) in err.value.hint


def test_errors_under_torchrun_name_the_rank(tmp_path, monkeypatch, capsys):
    from r1kit.cli import main

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", str(tmp_path / "gone.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("r1kit (rank 1): error: recipe") and err.count("\n") == 2
    # a recipe's error is said by each machine's first process alone (the others: same files)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(["run", str(tmp_path / "gone.toml")]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "2")  # the second machine's first process
    assert main(["run", str(tmp_path / "gone.toml")]) == 2
    assert capsys.readouterr().err.startswith("r1kit (rank 2): error: recipe")
    # so is an error in the files it names, found before any stage (a missing train file)
    import r1kit.distributed

    monkeypatch.setattr(r1kit.distributed, "init", lambda device: device)  # (no group here)
    # two processes meeting the same error (gathered over the group under torchrun)
    monkeypatch.setattr(r1kit.distributed, "_world", r1kit.distributed.World(1, 2, 1))
    monkeypatch.setattr(r1kit.distributed, "gather_lists",  # and local rank 0 beside it
                        lambda items: [(host, "0", error) for host, _, error in items] + items)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.base]\nkind = "pretrain"\n[stages.zero]\nkind = "grpo"\n'
                      'model = "base"\ntask = "math"\n'
                      f'train_file = "{tmp_path / "gone.jsonl"}"\n')
    for local, said in (("1", False), ("0", True)):
        monkeypatch.setenv("LOCAL_RANK", local)
        assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert ("stages.zero.train_file: file" in err) == said, err
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["run", str(tmp_path / "gone.toml")]) == 2
    assert capsys.readouterr().err.startswith("r1kit: error: recipe")


def test_a_bad_eval_command_under_torchrun_is_said_once_per_machine(tmp_path, monkeypatch,
                                                                    capsys):
    """r1kit eval runs under torchrun (each process its share of the problems), but a command
    whose model or files are wrong is found before the processes join, by every one of them:
    said by each machine's first process. r1kit score is refused under torchrun."""
    from r1kit.cli import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["eval", "--model", str(tmp_path), "--bench", "gsm8k"]) == 2
    assert "config.json" in capsys.readouterr().err  # (not a checkpoint directory)
    assert main(["score", "--reward", "math", "--input", "x.jsonl"]) == 2
    assert "runs in one process, not under torchrun" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "1")  # said once per machine, by its first process
    monkeypatch.setenv("LOCAL_RANK", "1")
    for command in (["eval", "--model", str(tmp_path), "--bench", "gsm8k"],
                    ["score", "--reward", "math", "--input", "x.jsonl"]):
        assert main(command) == 2
        assert capsys.readouterr().err == ""


def test_prompts_that_are_empty_or_messages_as_json_text_are_named(tmp_path):
    from r1kit.config import SFTConfig
    from r1kit.stages.sft import read_sft_rows
    from r1kit.tasks.math import read_examples

    messages = json.dumps([{"role": "user", "content": "What is 1 + 1?"}])
    data = tmp_path / "d.jsonl"
    for question, expected in [(messages, "field .question. holds chat messages written as a JSON"),
                               ("  ", "field 'question' is empty")]:
        data.write_text(json.dumps({"question": "ok", "answer": "1"}) + "\n"
                        + json.dumps({"question": question, "answer": "2"}) + "\n")
        with pytest.raises(R1kitError, match=f"d.jsonl:2: {expected}"):
            read_examples(data, "question", "answer")
    data.write_text(json.dumps({"question": "[1, 2] + [3]", "answer": "2"}) + "\n")
    assert read_examples(data, "question", "answer")[0].question == "[1, 2] + [3]"
    # one row without its answer: that row is named, not the field names (the rows before
    # have it); the first row without it: the file's fields are listed; a null: a fix line
    for rows, expected, hint in [
            ([{"question": "a", "answer": "1"}, {"question": "b"}], "d.jsonl:2: no field 'answer'",
             "the rows before it have 'answer': fill it in or drop this row"),
            ([{"question": "b"}], "d.jsonl:1: no field 'answer'",
             "its fields are question; set question_field / answer_field"),
            # TRL's and open-r1's names: said to be the likely ones
            ([{"prompt": "b", "solution": "1"}], "d.jsonl:1: no field 'question'",
             "its fields are prompt, solution ('prompt' looks like the question); set"),
            ([{"question": "b", "answer": None}], "d.jsonl:1: field 'answer' is null",
             "fill it in or drop the rows without one"),
            # question_field naming an id column: the model would be asked "8"
            ([{"id": 8, "problem": "1 + 1?", "answer": "2"}],
             r"d.jsonl:1: field 'id' is a number \(8\), not a question",
             "its fields are id, problem, answer; set question_field"),
            ([{"id": "1 + 1?", "answer": "2"}, {"id": 17, "answer": "3"}],
             r"d.jsonl:2: field 'id' is a number \(17\)",
             "the rows before it have text there")]:
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(R1kitError, match=expected) as info:
            read_examples(data, "id" if "id" in rows[0] else "question", "answer")
        assert info.value.hint.startswith(hint), info.value.hint
    data.write_text(json.dumps({"prompt": messages, "response": "2"}) + "\n")
    with pytest.raises(R1kitError, match="JSON string"):
        read_sft_rows(data, SFTConfig(model="m", data=str(data)))
    data.write_text(json.dumps({"prompt": "", "response": "plain text"}) + "\n")
    assert read_sft_rows(data, SFTConfig(model="m", data=str(data))) == [("", "plain text")]


def _recipe_error(tmp_path, text: str) -> str:
    """The R1kitError that loading and checking this recipe raises (before any stage)."""
    from r1kit.config import check_inputs, load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    with pytest.raises(R1kitError) as err:
        check_inputs(load_recipe(recipe))
    return str(err.value)


RM_STAGES = ('[stages.base]\nkind = "pretrain"\nsteps = 1\n'
             '[stages.helpful]\nkind = "reward_model"\nmodel = "base"\nobjective = "pairwise"\n'
             '[stages.safety]\nkind = "reward_model"\nmodel = "base"\nobjective = "pointwise"\n')


def test_stage_kinds_and_checkpoints_are_checked_before_any_stage(tmp_path, checkpoint):
    """Found before any stage runs (not after the stages before): a reward model where a
    language model is needed, a reward model of the wrong objective, a directory without
    weights, the tiny world's helpers on data of your own, impossible counts."""
    grpo = '[stages.rl]\nkind = "grpo"\n'
    assert "is a reward_model stage: it writes a reward model" in _recipe_error(
        tmp_path, RM_STAGES + grpo + 'model = "helpful"\n')
    assert "is a reward_model stage: it writes a reward model" in _recipe_error(
        tmp_path, RM_STAGES + '[stages.table]\nkind = "eval"\nmodels = ["base", "safety"]\n')
    assert "trains a pointwise reward model; the helpful reward takes a pairwise" in (
        _recipe_error(tmp_path, RM_STAGES + grpo + 'model = "base"\nhelpful_model = "safety"\n'
                      'safety_model = "safety"\ngeneral_share = 0.5\n'))
    assert "is a pretrain stage, not a reward_model stage" in _recipe_error(
        tmp_path, RM_STAGES + grpo + 'model = "base"\nhelpful_model = "helpful"\n'
        'safety_model = "base"\ngeneral_share = 0.5\n')
    for f in checkpoint.glob("*.safetensors"):
        f.unlink()
    assert "holds no weights" in _recipe_error(
        tmp_path, f'[stages.rl]\nkind = "grpo"\nmodel = "{checkpoint}"\n')
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n')
    sample = (f'[stages.rs]\nkind = "sample"\nmodel = "{checkpoint}"\ntask = "math"\n'
              f'train_file = "{data}"\n')
    assert "rewrite = true has a built-in rewriter only" in _recipe_error(
        tmp_path, sample + "rewrite = true\n")
    assert "general_rows adds the tiny world's" in _recipe_error(
        tmp_path, sample + "general_rows = 5\n")
    assert "3 kept of samples_per_prompt = 2" in _recipe_error(
        tmp_path, sample + "samples_per_prompt = 2\nkeep_per_prompt = 3\n")
    assert "limit and every must be >= 0" in _recipe_error(
        tmp_path, grpo + f'model = "{checkpoint}"\neval.limit = -1\n')
    msg = _recipe_error(tmp_path, '[stages.table]\nkind = "eval"\nmodels = ["nowhere"]\n')
    assert "--set stages.table.models='[\"/path/to/checkpoint\"]'" in msg


def test_an_interrupted_run_with_from_says_to_rerun_without_it(tmp_path, monkeypatch, capsys):
    """--from starts its stage over, checkpoints included: after an interruption, the way to
    resume is the run without --from, and the message says so (it said "the same command")."""
    from conftest import REPO

    from r1kit import pipeline
    from r1kit.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_recipe", interrupted)
    recipe = str(REPO / "recipes" / "zero-tiny.toml")
    assert main(["run", recipe, "--out", str(tmp_path / "r"), "--from", "zero"]) == 130
    err = capsys.readouterr().err
    assert "run the command again without --from" in err and "--from zero would start" in err
    assert main(["run", recipe, "--out", str(tmp_path / "r")]) == 130
    assert "run the same command again" in capsys.readouterr().err


def test_from_a_later_stage_in_a_directory_without_a_run_is_refused(tmp_path):
    """--from a later stage with a new (or mistyped) --out ran every stage from the start,
    without a word; the first stage's --from is the same as none."""
    from r1kit.config import load_recipe
    from r1kit.pipeline import run_recipe

    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text('[stages.base]\nkind = "pretrain"\n'
                           '[stages.rl]\nkind = "grpo"\nmodel = "base"\n')
    with pytest.raises(R1kitError, match="--from rl: .*typo holds no run, so the stages before "
                                         "'rl' would run again") as err:
        run_recipe(load_recipe(recipe_file), tmp_path / "typo", from_stage="rl",
                   print_fn=lambda *_: None)
    assert "give --out the run directory that holds them" in err.value.hint
    assert not (tmp_path / "typo").exists()


def test_out_that_is_not_a_run_directory_is_refused(tmp_path, checkpoint):
    """--out at a model checkpoint would have overwritten its config.json with the run's
    settings; a config.json that is empty or not a run's gave a traceback."""
    from r1kit.config import load_recipe
    from r1kit.pipeline import run_recipe

    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text(f'[stages.rl]\nkind = "grpo"\nmodel = "{checkpoint}"\n')
    recipe = load_recipe(recipe_file)
    other = tmp_path / "other_model"
    shutil.copytree(checkpoint, other)
    before = (other / "config.json").read_text()
    with pytest.raises(R1kitError, match="is a model checkpoint .* would overwrite it"):
        run_recipe(recipe, other, print_fn=lambda *_: None)
    assert (other / "config.json").read_text() == before
    (other / "config.json").unlink()  # weights without a config: still a model's files
    with pytest.raises(R1kitError, match="holds a model's files"):
        run_recipe(recipe, other, print_fn=lambda *_: None)
    for text, expected in [("", "is not valid JSON"), ("[1, 2]", "is not an r1kit run's"),
                           ('{"run": {}}', "is not an r1kit run's")]:
        out = tmp_path / f"out{len(text)}"
        out.mkdir()
        (out / "config.json").write_text(text)
        with pytest.raises(R1kitError, match=expected) as err:
            run_recipe(recipe, out, print_fn=lambda *_: None)
        assert "give --out a new directory" in err.value.hint


def test_version(capsys):
    from r1kit import __version__
    from r1kit.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"r1kit {__version__}\n"


def test_warnings_are_one_line(monkeypatch):
    """Under the command line a warning is one line: r1kit's own without the line of r1kit's
    code that warned, another's with its file and line (Python printed both, and the source
    line)."""
    import warnings

    from r1kit import cli

    during = []
    monkeypatch.setattr(cli, "_main", lambda args: during.append(warnings.formatwarning) or 0)
    before = warnings.formatwarning
    assert cli.main(["report", "x"]) == 0
    assert during == [cli._format_warning] and warnings.formatwarning is before
    own = cli._format_warning("an own warning", UserWarning, cli.__file__, 1)
    theirs = cli._format_warning("a user's warning", UserWarning, "/home/me/rewards.py", 16)
    assert own == "r1kit: warning: an own warning\n"
    assert theirs == "r1kit: warning: a user's warning (/home/me/rewards.py:16)\n"


def _gpt2(tmp_path, bpe_checkpoint, positions: int):
    """A random GPT-2 (a table of learned positions: n_positions) with the BPE tokenizer."""
    import shutil

    from transformers import GPT2Config, GPT2LMHeadModel

    from r1kit.models import load_tokenizer

    model_dir = tmp_path / "gpt2"
    tok = load_tokenizer(bpe_checkpoint)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=positions, n_embd=32,
                               n_layer=1, n_head=2, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)).save_pretrained(model_dir)
    for f in bpe_checkpoint.glob("*token*"):
        shutil.copy(f, model_dir / f.name)
    return model_dir


def test_long_training_prompts_are_found_before_any_sampling(tmp_path, bpe_checkpoint):
    """A training question too long for max_new_tokens within the model's positions: an error
    before the stage's first evaluation where the model cannot go past them (GPT-2), naming
    the question; a note where it was trained on fewer (a rotary model). It was found at the
    first rollout, after the step-0 evaluation (hours on a real benchmark)."""
    from r1kit.config import recipe_from_dict
    from r1kit.pipeline import run_recipe

    data = tmp_path / "q.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(8)]
    rows[5]["question"] = "Add these numbers: " + " + ".join(["7"] * 60) + "."
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def stage(model, **more):
        return {"run": {"progress": False, "tensorboard": False}, "stages": {"rl": {
            "kind": "grpo", "model": str(model), "task": "math", "train_file": str(data),
            "test_file": str(data), "template": "none", "steps": 1, "group_size": 2,
            "rollout_batch_size": 4, "num_minibatches": 1, "micro_batch_size": 4, **more}}}

    gpt2 = _gpt2(tmp_path, bpe_checkpoint, 64)
    with pytest.raises(R1kitError, match=r"1 of 8 training questions take more than 48 prompt "
                                         r"tokens, which with max_new_tokens = 16 reach "
                                         r"past the 64 positions this model has "
                                         r"\(the first: question 6, \d+ tokens: 'Add these") as err:
        # (a schedule from step 0 replaces max_new_tokens: 16 is the cap, not 60)
        run_recipe(recipe_from_dict(stage(gpt2, max_new_tokens=60,
                                          max_new_tokens_schedule=[[0, 16]])), tmp_path / "a",
                   print_fn=lambda *_: None)
    assert "lower max_new_tokens" in err.value.hint
    assert not (tmp_path / "a" / "eval.jsonl").exists()  # before any evaluation
    printed = []
    run_recipe(recipe_from_dict(stage(bpe_checkpoint, max_new_tokens=1000,
                                      max_new_tokens_schedule=[], eval={"every": 0})),
               tmp_path / "b", print_fn=printed.append)
    assert any("note: 1 of 8 training questions take more than 24 prompt tokens" in line
               and "positions this model was trained on" in line for line in printed), printed


def test_sft_rows_stop_at_the_models_trained_positions(tmp_path, bpe_checkpoint):
    """SFT rows longer than the positions a model was trained on (GPT-2's n_positions) are cut
    there, with a note: it failed with IndexError in the position table (and a rotary model
    trained past its positions without a word)."""
    from r1kit.config import recipe_from_dict
    from r1kit.pipeline import run_recipe

    model_dir = _gpt2(tmp_path, bpe_checkpoint, 32)
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?",
                                        "response": "Let me add them. " * 20 + f"{2 * i}"}) + "\n"
                            for i in range(4)))
    recipe = recipe_from_dict({"run": {"progress": False, "tensorboard": False}, "stages": {
        "sft": {"kind": "sft", "model": str(model_dir), "data": str(data), "template": "none",
                "epochs": 1, "batch_size": 2, "micro_batch_size": 2}}})
    printed = []
    summaries = run_recipe(recipe, tmp_path / "run", print_fn=printed.append)
    assert summaries["sft"]["rows"] == 4
    assert any("the model's 32 positions, below max_length = 32768: 4 of 4 rows cut" in line
               for line in printed), printed
    # prompts that alone fill the positions: said plainly, with the r1-zero template's share
    from r1kit.models import load_tokenizer
    from r1kit.stages.sft import encode_rows

    with pytest.raises(R1kitError, match=r"every prompt of the SFT data takes 20 tokens or more "
                                         r"\(the model's 20 positions, below max_length") as err:
        encode_rows(load_tokenizer(bpe_checkpoint), [("1+1=", "2")], "r1-zero", 20,
                    cap="the model's 20 positions, below max_length = 32768")
    assert "with template 'r1-zero' the shortest prompt takes" in err.value.hint
    assert 'template = "none" gives the prompts as they are' in err.value.hint


def test_eval_and_score_name_their_options_not_recipe_settings(tmp_path, bpe_checkpoint,
                                                               capsys):
    """A message written for recipes ("use template = 'r1-zero'") says the command's option
    under r1kit eval and r1kit score ("use --template r1-zero")."""
    from conftest import without_chat_template

    from r1kit.cli import main

    plain = without_chat_template(bpe_checkpoint, tmp_path / "plain")
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "4"}) + "\n")
    assert main(["eval", "--model", str(plain), "--bench", str(data), "--template", "chat",
                 "--k", "1", "--max-new-tokens", "2"]) == 2
    said = capsys.readouterr()
    said = said.out + said.err
    assert "--template chat needs a tokenizer with a chat template" in said
    assert "use --template r1-zero" in said and "template = " not in said
    rows = tmp_path / "c.jsonl"
    rows.write_text(json.dumps({"completion": "4", "answer": "4"}) + "\n")
    assert main(["score", "--reward", "no_such_module_r1kit:fn", "--input", str(rows)]) == 2
    said = capsys.readouterr()
    said = said.out + said.err
    assert "give the file instead, --reward path/to/file.py:function" in said
    from r1kit.cli import _in_options

    assert _in_options("set prefill = '<think>\n', question_field = \"my q\" or "
                       "prefill = ''", "eval") == \
        "set --prefill '<think>\n', --question-field 'my q' or --prefill ''"  # a shell's
    assert _in_options("template = 'chat'", "run") == "template = 'chat'"  # recipes: as is


@pytest.mark.parametrize("flags", [["--temperature", "nan"], ["--temperature", "inf"],
                                   ["--top-p", "nan"], ["--temperature", "-1"]])
def test_eval_refuses_sampling_settings_that_are_not_numbers_it_can_use(flags, capsys):
    """A NaN temperature failed deep in sampling with a traceback; it is refused first."""
    from r1kit.cli import main

    assert main(["eval", "--model", "nowhere", "--bench", "tiny", *flags]) == 2
    assert "--temperature must be a finite number >= 0" in capsys.readouterr().err
