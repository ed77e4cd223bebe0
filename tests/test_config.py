"""Tests of recipe loading and validation (r1kit.config) and of the CLI's error path.

The promise under test: a recipe mistake (unknown key, wrong type, impossible value, missing
model) stops the run with a message that names the key, before any work or any run
directory, instead of a traceback minutes or hours into training.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

import pytest
import torch

from r1kit import config as config_mod
from r1kit.config import (
    GRPOConfig,
    PretrainConfig,
    apply_override,
    load_recipe,
    parse_value,
    recipe_from_dict,
)
from r1kit.errors import R1kitError

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
ZERO_TINY = RECIPES / "zero-tiny.toml"


def _check_inputs(recipe) -> None:
    # Whether a named model/data path exists is checked either while loading or by
    # check_inputs (run by run_recipe before anything is written); accept either place.
    check = getattr(config_mod, "check_inputs", None)
    if check is not None:
        check(recipe)


def _load_and_check(overrides: list[str], path: Path = ZERO_TINY):
    recipe = load_recipe(path, overrides)
    _check_inputs(recipe)
    return recipe


def _error(overrides: list[str], path: Path = ZERO_TINY) -> str:
    with pytest.raises(R1kitError) as info:
        _load_and_check(overrides, path)
    return str(info.value)


# ----- the shipped recipes -------------------------------------------------------------------


def _recipe_files() -> list[Path]:
    return sorted(RECIPES.glob("*.toml"))


def test_there_are_recipes() -> None:
    assert _recipe_files(), f"no recipes in {RECIPES}"


@pytest.mark.parametrize("path", _recipe_files(), ids=lambda p: p.name)
def test_every_recipe_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Recipes are run from the repository root ("r1kit run recipes/x.toml"). Only loading
    # and validation are checked here: a recipe may name a checkpoint or data file that has to
    # be downloaded first, which check_inputs (not this test) reports.
    monkeypatch.chdir(REPO)
    recipe = load_recipe(path.relative_to(REPO))
    assert recipe.stages
    for name, cfg in recipe.stages.items():
        assert isinstance(cfg, tuple(config_mod.STAGE_KINDS.values())), name
        assert cfg.kind in config_mod.STAGE_KINDS, name


def test_zero_tiny_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every value written in the recipe arrives typed and equal; the rest keep their defaults.
    import tomllib

    monkeypatch.chdir(REPO)
    recipe = load_recipe("recipes/zero-tiny.toml")
    raw = tomllib.loads(Path("recipes/zero-tiny.toml").read_text())
    assert list(recipe.stages) == list(raw["stages"]) == ["base", "zero"]  # the order written
    base, zero = recipe.stages["base"], recipe.stages["zero"]
    assert isinstance(base, PretrainConfig) and isinstance(zero, GRPOConfig)
    for cfg, table in ((base, raw["stages"]["base"]), (zero, raw["stages"]["zero"])):
        for key, value in table.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    assert getattr(getattr(cfg, key), k) == v, f"{key}.{k}"
            else:
                assert getattr(cfg, key) == value, key
                assert type(getattr(cfg, key)) is type(value) or isinstance(value, int), key
    assert zero.model == "base"
    assert isinstance(zero.lr, float)
    assert zero.aggregation == "seq-mean-token-mean"  # default, not in the file
    assert zero.rollout_batch_size % zero.group_size == 0


# ----- overrides -----------------------------------------------------------------------------


def test_overrides_apply() -> None:
    recipe = load_recipe(ZERO_TINY, ["stages.zero.lr=1e-4", "stages.zero.aggregation=token-mean",
                                     "stages.zero.max_new_tokens_schedule=[[10, 128]]",
                                     "stages.zero.eval.k=2", "run.seed=7"])
    zero = recipe.stages["zero"]
    assert zero.lr == 1e-4
    assert zero.aggregation == "token-mean"  # bare text is a string
    assert zero.max_new_tokens_schedule == [[10, 128]]
    assert zero.max_new_tokens_at(9) == 96 and zero.max_new_tokens_at(10) == 128
    assert zero.eval.k == 2
    assert recipe.run.seed == 7


def test_parse_value() -> None:
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("1e-4") == 1e-4
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value('"quoted"') == "quoted"
    assert parse_value("cosine") == "cosine"
    assert parse_value("/some/path") == "/some/path"


def test_apply_override_needs_equals_sign() -> None:
    with pytest.raises(R1kitError, match="stages.zero.lr"):
        apply_override({}, "stages.zero.lr")


def test_apply_override_creates_nested_tables() -> None:
    data: dict = {"stages": {"zero": {"lr": 1.0}}}
    apply_override(data, "stages.zero.eval.k = 3")
    assert data == {"stages": {"zero": {"lr": 1.0, "eval": {"k": 3}}}}


def test_an_inline_table_sets_its_keys_and_keeps_the_others() -> None:
    """--set stages.zero.eval={k=1} changes k and keeps the recipe's other eval keys (it
    replaced the whole table, resetting them to the defaults, silently)."""
    data: dict = {"stages": {"zero": {"eval": {"every": 0, "k": 2}, "world": {"a": {"b": 1}}}}}
    apply_override(data, "stages.zero.eval={k=1}")
    apply_override(data, "stages.zero={world={a={c=2}}, lr=0.5}")
    assert data == {"stages": {"zero": {"eval": {"every": 0, "k": 1}, "lr": 0.5,
                                        "world": {"a": {"b": 1, "c": 2}}}}}
    apply_override(data, "stages.zero.eval=3")  # not a table: replaced (then refused by type)
    assert data["stages"]["zero"]["eval"] == 3


# ----- errors --------------------------------------------------------------------------------


def test_unknown_key_is_named() -> None:
    msg = _error(["stages.zero.bogus=1"])
    assert "stages.zero.bogus" in msg
    assert "unknown key" in msg


def test_typo_suggests_close_key() -> None:
    msg = _error(['stages.zero.lr_shedule="cosine"'])
    assert "stages.zero.lr_shedule" in msg
    assert "lr_schedule" in msg.split("lr_shedule", 1)[1]  # suggested, not just echoed


@pytest.mark.parametrize("setting, says", [
    ("num_generations=4", "r1kit's name for 'num_generations' is 'group_size'"),
    ("max_completion_length=64", "is 'max_new_tokens'"),
    ("learning_rate=1e-5", "is 'lr'"),
    ("gradient_accumulation_steps=4", "accumulates over a batch's micro-batches by itself"),
    ("seed=1", "'seed' is a [run] setting"),
    ("num_train_epochs=2", "is 'steps' here (a grpo stage counts rollouts"),
    ("rollout_n=8", "is 'group_size'"),
    ("max_prompt_length=512", "keeps each prompt whole"),
    ('output_dir="out"', "r1kit run RECIPE --out DIR"),
    ("logging_steps=10", "every step is a row of metrics.jsonl"),
    ("resume_from_checkpoint=true", "run the same command again (the same --out)"),
    ("peft_config={r=8}", "'peft_config' is lora_rank, with lora_alpha"),
    # TRL's semantics where they differ from r1kit's
    ("gradient_accumulation_steps=4", "num_minibatches is the number of optimizer updates"),
    ("steps_per_generation=4", "is num_minibatches, the optimizer updates per rollout"),
    ("max_steps=100", "which counts rollouts: TRL's max_steps counts optimizer updates"),
    ("max_completion_length=64", "a grpo stage that sets it keeps that cap"),
    ('loss_type="dapo"', "dapo and bnpo token-mean (TRL's default)"),
    ('scale_rewards="group"', "\"group\" (or true) is std"),
    ("sync_ref_model=true", "is 'ref_refresh_every'"),
    ("ref_model_sync_steps=64", "is 'ref_refresh_every'"),
    ("num_generations_eval=4", "k in the stage's eval table"),
    ("top_k=50", "r1kit samples with top_p alone"),
    ('lr_scheduler_type="linear"', "lr_schedule = \"linear\" with final_lr_ratio = 0"),
    # TRL's values of settings r1kit has
    ('aggregation="dapo"', "TRL's loss_type = 'dapo' is aggregation = 'token-mean'"),
    ('aggregation="dr_grpo"', "is aggregation = 'seq-mean-token-sum-norm'"),
    ('advantage_scale="group"', "TRL's scale_rewards \"group\" or true is std"),
    ("advantage_scale=false", "TRL's scale_rewards = false is advantage_scale = \"none\""),
    ("log_completions=true", "TRL's log_completions = true is log_completions = N"),
    # TRL 1.16's GRPOConfig settings without an equivalent: said so, not a near spelling
    ("delta=4.0", "'delta' is not a setting: the ratio is clipped by clip_eps_low"),
    ('generation_kwargs={}', "samples with temperature and top_p alone"),
    ('vllm_mode="colocate"', "'vllm_mode' is not needed: r1kit samples with its own engine"),
    ("use_bias_correction_kl=true", "is 'kl_ratio_correction' (TRL 1.16's default is true"),
    ('importance_sampling_level="sequence"', "is 'importance_sampling', with the same values"),
    ("num_completions_to_print=2", "is 'log_completions'"),
    ('torch_dtype="bfloat16"', "'torch_dtype' is set as dtype under [run]"),
    ('chat_template="x"', "renders prompts with the tokenizer's own chat template"),
])
def test_trl_names_point_to_r1kit_names(setting, says) -> None:
    """TRL's / open-r1's names are not spelling mistakes: the hint names r1kit's setting (a
    closest spelling would name the wrong one: num_generations → generation_rows)."""
    msg = _error([f"stages.zero.{setting}"])
    assert says in msg and "did you mean" not in msg


@pytest.mark.parametrize("setting, says", [
    ("gradient_accumulation_steps=4", "batch_size is the rows per optimizer step"),
    ("warmup_ratio=0.1", "the ratio x the stage's steps (epochs x rows / batch_size, or"),
    ('lr_scheduler_type="cosine_with_min_lr"', "decays by a cosine to lr x final_lr_ratio"),
    ("packing=true", "packs its rows without padding, each row attending to itself alone"),
    ("assistant_only_loss=true", "last assistant message alone"),
    ('eos_token="<|im_end|>"', "the token the chat template writes after an assistant"),
    ('dataset_text_field="content"', "name your column 'text'"),
    ("adam_beta2=0.999", "r1kit's name for 'adam_beta2' is 'adam_betas': [beta1, beta2]"),
    ("warmup_steps=0.03", "not a share of them (TRL's warmup_ratio)"),
    ('train_file="rows.jsonl"', "'train_file' is data, the stage's rows"),
])
def test_open_r1s_sft_names_get_what_an_sft_stage_does(setting, says) -> None:
    """TRL's and open-r1's SFT settings, in an sft stage: what it does instead (never the
    grpo stage's answer, nor a setting of another meaning)."""
    msg = _error([f"stages.dev1.{setting}"], RECIPES / "r1-tiny.toml")  # (an sft stage)
    assert says in msg and "did you mean" not in msg and "rollout" not in msg


@pytest.mark.parametrize("setting,says", [
    ("learning_rate=1e-6", "'learning_rate' is set per stage: stages.NAME.lr"),
    ("group_size=4", "'group_size' is set per stage: stages.NAME.group_size"),
])
def test_stage_settings_under_run_name_the_stage_table(setting, says) -> None:
    assert says in _error([f"run.{setting}"])


def test_reward_functions_take_no_rule_weights(tmp_path) -> None:
    fn = tmp_path / "rw.py"
    fn.write_text("def f(completions, prompts, answer):\n    return [0.0] * len(completions)\n")
    msg = _error([f'stages.zero.reward_function=["{fn}:f", "{fn}:f"]',
                  "stages.zero.reward_weights=[1.0]"])
    assert "1 weights for 2 reward functions" in msg
    msg = _error([f'stages.zero.reward_function=["{fn}:f", 3]'])
    assert "stages.zero.reward_function[1]: must be a string" in msg
    # a number where text belongs (--set KEY=123 reads a number): how to quote it
    msg = _error(["stages.zero.system_prompt=123"])
    assert "must be a string, got 123" in msg
    assert """--set stages.zero.system_prompt='"123"'""" in msg
    # rule-reward settings beside it have no effect: a note when the stage starts (not an
    # error, so that runs that set them still resume)
    from r1kit.config import unused_with_reward_function

    recipe = _load_and_check([f'stages.zero.reward_function="{fn}:f"',
                              "stages.zero.format_weight=0.5"])
    assert unused_with_reward_function(recipe.stages["zero"]) == ["format_weight"]
    assert unused_with_reward_function(_load_and_check([]).stages["zero"]) == []


def test_a_key_of_another_stage_kind_says_so() -> None:
    message = _error(["stages.base.group_size=8"])  # a grpo key in the pretrain stage
    assert "'group_size' is a setting of grpo" in message and "pretrain stage" in message


def test_override_of_an_unknown_table_names_the_override() -> None:
    message = _error(["stage.zero.steps=3"])  # `stage` for `stages`: not the recipe's mistake
    assert "--set 'stage.zero.steps=3'" in message and "'stages'" in message
    assert "zero-tiny.toml" not in message


def test_unknown_key_in_nested_table() -> None:
    msg = _error(["stages.zero.eval.kk=2"])
    assert "stages.zero.eval.kk" in msg


def test_group_size_one() -> None:
    msg = _error(["stages.zero.group_size=1", "stages.zero.rollout_batch_size=128"])
    assert "stages.zero.group_size" in msg


def test_rollout_batch_not_whole_groups() -> None:
    msg = _error(["stages.zero.rollout_batch_size=100"])  # 100 % 8 != 0
    assert "stages.zero.rollout_batch_size" in msg
    assert "group_size" in msg


def test_missing_model_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    msg = _error([f'stages.zero.model="{missing}"'])
    assert "stages.zero.model" in msg
    assert str(missing) in msg
    assert "Hugging Face Hub" not in msg


def test_a_hub_id_as_model_says_r1kit_reads_local_directories(monkeypatch, tmp_path) -> None:
    """`model = "Qwen/Qwen2.5-0.5B"` (a TRL habit): nothing is downloaded; the message says
    so and how to get the directory, and where relative paths start."""
    monkeypatch.chdir(tmp_path)
    msg = _error(['stages.zero.model="Qwen/Qwen2.5-0.5B"'], ZERO_TINY.resolve())
    assert "never downloads: it is not in the cache" in msg
    assert "huggingface-cli download Qwen/Qwen2.5-0.5B puts it there" in msg
    assert f"paths are relative to {tmp_path}" in msg
    # a data set's hub id, r1kit eval's --model, and a CSV file say so too
    msg = _error(['stages.zero.task="math"', 'stages.zero.train_file="openai/gsm8k"'],
                 ZERO_TINY.resolve())
    assert "--repo-type dataset" in msg and "stages.zero.train_file" in msg
    from r1kit.models import check_model_dir
    from r1kit.tasks.math import read_rows

    with pytest.raises(R1kitError, match="download Qwen/Qwen2.5-0.5B puts it there"):
        check_model_dir("Qwen/Qwen2.5-0.5B")
    (tmp_path / "rows.csv").write_text("question,answer\n1+1,2\n")
    with pytest.raises(R1kitError, match="reads JSONL .* and parquet .* not .csv") as info:
        read_rows(tmp_path / "rows.csv")
    assert "to_json" in info.value.hint


def test_existing_model_directory_is_accepted(tmp_path: Path) -> None:
    data = {"stages": {"zero": {"kind": "grpo", "model": str(tmp_path), "group_size": 4,
                                "rollout_batch_size": 16, "num_minibatches": 2}}}
    recipe = recipe_from_dict(data)
    with pytest.raises(R1kitError, match="no config.json"):  # a directory, not a checkpoint
        _check_inputs(recipe)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(R1kitError, match="holds no weights"):
        _check_inputs(recipe)
    (tmp_path / "model.safetensors").write_bytes(b"")  # (present: loading reads it later)
    _check_inputs(recipe)
    assert recipe.stages["zero"].model == str(tmp_path)


def test_model_from_a_later_stage_is_rejected() -> None:
    # a stage can only start from a stage that ran before it
    data = tomllib.loads(ZERO_TINY.read_text())
    reordered = {"run": data["run"],
                 "stages": {"zero": data["stages"]["zero"], "base": data["stages"]["base"]}}
    with pytest.raises(R1kitError) as info:
        _check_inputs(recipe_from_dict(copy.deepcopy(reordered)))
    assert "stages.zero.model" in str(info.value)


@pytest.mark.parametrize(
    "override,key",
    [
        ("stages.zero.lr=fast", "stages.zero.lr"),  # a string for a float
        ("stages.zero.steps=1.5", "stages.zero.steps"),  # a float for an int
        ("stages.zero.steps=true", "stages.zero.steps"),  # a bool is not an int here
        ("stages.zero.lr=true", "stages.zero.lr"),  # ... nor a float
        ("stages.zero.model=3", "stages.zero.model"),  # a number for a string
        ("stages.zero.max_new_tokens_schedule=5", "stages.zero.max_new_tokens_schedule"),
        ("run.tensorboard=1", "run.tensorboard"),  # an int for a bool
        ("stages.zero.eval=3", "stages.zero.eval"),  # a value for a table
    ],
)
def test_wrong_type_names_key(override: str, key: str) -> None:
    msg = _error([override])
    assert msg.startswith(key + ":") or f"{key}:" in msg


@pytest.mark.parametrize("override,says", [
    ("stages.zero.format=boxed", "unknown format"),
    ("stages.zero.lr=1e38", "above 1"),  # overflowed inside AdamW after the first rollout
    ("stages.zero.lr=2", "above 1"),
    ("stages.zero.beta=nan", "finite"),
    ("stages.zero.clip_eps_low=inf", "finite"),
])
def test_impossible_values_are_refused_with_their_key(override, says) -> None:
    key = override.split("=")[0]
    msg = _error([override])
    assert msg.startswith(key + ":") and says in msg


@pytest.mark.parametrize("data,says", [
    ("pairs.jsonl", 'data = "file" with train_file and test_file'),  # as an sft stage's data
    ("mine", "use tiny or file"),
])
def test_a_reward_model_stages_data_is_tiny_or_file(data, says) -> None:
    msg = _error([f"stages.helpful.data={json.dumps(data)}"], RECIPES / "r1-tiny.toml")
    assert msg.startswith("stages.helpful.data: unknown data") and says in msg, msg


def test_int_is_accepted_for_float() -> None:
    recipe = load_recipe(ZERO_TINY, ["stages.zero.lr=1"])
    assert recipe.stages["zero"].lr == 1.0 and isinstance(recipe.stages["zero"].lr, float)


def test_unknown_stage_kind() -> None:
    msg = _error(["stages.zero.kind=grpoo"])
    assert "stages.zero.kind" in msg
    assert "grpo" in msg.split("grpoo", 1)[1]  # the close kind is suggested


def test_unknown_top_level_table() -> None:
    with pytest.raises(R1kitError, match="stage"):
        recipe_from_dict({"stage": {}, "stages": {"x": {"kind": "pretrain"}}})


def test_no_stages() -> None:
    with pytest.raises(R1kitError, match="no stages"):
        recipe_from_dict({"run": {}})


def test_missing_recipe_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(R1kitError) as info:
        load_recipe(missing)
    assert str(missing) in str(info.value)


def test_invalid_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[stages.zero\nkind = 'grpo'\n")
    with pytest.raises(R1kitError, match="not valid TOML"):
        load_recipe(bad)


def test_invalid_enum_values_are_named() -> None:
    assert "stages.zero.aggregation" in _error(["stages.zero.aggregation=seq-sum"])
    assert "stages.zero.advantage_scale" in _error(["stages.zero.advantage_scale=zscore"])
    assert "stages.zero.lr_schedule" in _error(["stages.zero.lr_schedule=polynomial"])


def test_compile_is_auto_on_off_or_a_bool() -> None:
    from r1kit.lean import compile_wanted

    assert load_recipe(ZERO_TINY).stages["zero"].compile == "auto"
    for value, want in (("true", "on"), ("false", "off"), ('"on"', "on"), ('"auto"', "auto")):
        assert load_recipe(ZERO_TINY, [f"stages.zero.compile={value}"]).stages[
            "zero"].compile == want
    assert "stages.zero.compile" in _error(['stages.zero.compile="yes"'])
    assert "stages.zero.compile" in _error(["stages.zero.compile=1"])
    cpu = torch.device("cpu")
    assert not compile_wanted("auto", cpu)  # auto compiles on CUDA only
    assert compile_wanted("on", cpu) and compile_wanted(True, cpu)
    assert not compile_wanted("off", torch.device("cuda")) and not compile_wanted(False, cpu)


def test_logprob_micro_batch_size_is_auto_or_a_positive_number() -> None:
    assert load_recipe(ZERO_TINY).stages["zero"].logprob_micro_batch_size == "auto"
    key = "stages.zero.logprob_micro_batch_size"
    assert load_recipe(ZERO_TINY, [f"{key}=64"]).stages["zero"].logprob_micro_batch_size == 64
    for bad in ('"big"', "0", "-2", "1.5", "true"):
        assert key in _error([f"{key}={bad}"]), bad


def test_logprob_chunk_tokens_is_auto_or_a_number() -> None:
    from r1kit.logprobs import CHUNK_AUTO, CHUNK_AUTO_COMPILED, chunk_positions

    assert load_recipe(ZERO_TINY).stages["zero"].logprob_chunk_tokens == "auto"
    for value, want in (("512", 512), ("0", 0), ('"auto"', "auto")):
        assert load_recipe(ZERO_TINY, [f"stages.zero.logprob_chunk_tokens={value}"]).stages[
            "zero"].logprob_chunk_tokens == want
    for bad in ('"big"', "-1", "1.5"):
        assert "stages.zero.logprob_chunk_tokens" in _error(
            [f"stages.zero.logprob_chunk_tokens={bad}"])
    assert chunk_positions("auto", compiled=False) == CHUNK_AUTO == 256
    assert chunk_positions("auto", compiled=True) == CHUNK_AUTO_COMPILED == 512
    assert chunk_positions(1024, compiled=True) == 1024 and chunk_positions(0, False) == 0
    import r1kit.logprobs as logprobs  # after a failed compile: the uncompiled path's size

    logprobs.compiled_version(logprobs.logits_grad).failed.append("no compiler")
    try:
        assert chunk_positions("auto", compiled=True) == CHUNK_AUTO
    finally:
        logprobs.compiled_version.cache_clear()


# ----- GRPOConfig.max_new_tokens_at ----------------------------------------------------------


def test_default_length_schedule() -> None:
    # The paper raises the cap from 32,768 to 65,536 tokens at update 8,200 of 10,400, with 16
    # updates per rollout: r1kit's steps are rollouts, so after 512 of 650 (8,192 updates).
    cfg = GRPOConfig(model="x")
    assert cfg.steps * cfg.num_minibatches * cfg.ppo_epochs == 10400
    assert cfg.ref_refresh_every * cfg.num_minibatches == 400
    assert cfg.max_new_tokens_schedule == [[512, 65536]]
    assert cfg.max_new_tokens_at(0) == 32768
    assert cfg.max_new_tokens_at(511) == 32768
    assert cfg.max_new_tokens_at(512) == 65536
    assert cfg.max_new_tokens_at(649) == 65536


def test_length_schedule_order_does_not_matter() -> None:
    cfg = GRPOConfig(model="x", max_new_tokens=100, max_new_tokens_schedule=[[20, 300], [10, 200]])
    assert [cfg.max_new_tokens_at(s) for s in (0, 9, 10, 19, 20, 99)] == [100, 100, 200, 200,
                                                                          300, 300]


# ----- the CLI -------------------------------------------------------------------------------


def _cli_fails_cleanly(argv: list[str], out: Path, capsys: pytest.CaptureFixture,
                       expected: str) -> None:
    from r1kit.cli import main

    code = main(argv + ["--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert expected in captured.err
    assert captured.err.startswith("r1kit: error:")
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    # stopped before any work: no run directory
    assert not out.exists()


def test_cli_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the documented command line, relative recipe path included
    _cli_fails_cleanly(["run", "recipes/zero-tiny.toml", "--set", "stages.zero.bogus=1"],
                       tmp_path / "run", capsys, "stages.zero.bogus")


def test_cli_override_of_a_stage_the_recipe_lacks(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    _cli_fails_cleanly(["run", str(ZERO_TINY), "--set", "stages.zer.lr=1"], tmp_path / "run",
                       capsys, "did you mean 'zero'?")
    with pytest.raises(R1kitError, match="the recipe has no stage 'zer'"):
        load_recipe(ZERO_TINY, ["stages.zer.lr=1"])
    # a new stage given whole on the command line, kind first, is still fine
    recipe = load_recipe(ZERO_TINY, ['stages.more.models=["zero"]', 'stages.more.kind="eval"'])
    assert list(recipe.stages) == ["base", "zero", "more"]


def test_cli_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "no-such-checkpoint"
    _cli_fails_cleanly(["run", str(ZERO_TINY), "--set", f'stages.zero.model="{missing}"'],
                       tmp_path / "run", capsys, "stages.zero.model")


def test_cli_missing_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _cli_fails_cleanly(["run", str(tmp_path / "nope.toml")], tmp_path / "run", capsys,
                       "nope.toml")


def test_rl_world_must_match_the_pretrained_world(tmp_path) -> None:
    from r1kit.config import check_inputs

    recipe = load_recipe(ZERO_TINY, ["stages.base.world.max_value=30"])
    with pytest.raises(R1kitError, match=r"stages\.zero\.world"):
        check_inputs(recipe)
    check_inputs(load_recipe(ZERO_TINY, ["stages.base.world.max_value=30",
                                         "stages.zero.world.max_value=30"]))


def test_float16_training_is_refused() -> None:
    data = tomllib.loads(ZERO_TINY.read_text())
    data["run"]["dtype"] = "float16"
    with pytest.raises(R1kitError, match="float16 weights cannot be trained") as info:
        recipe_from_dict(copy.deepcopy(data))
    assert "bfloat16" in str(info.value)
    evaluation = {"run": {"dtype": "float16"},
                  "stages": {"table": {"kind": "eval", "models": ["/m"], "task": "arithmetic"}}}
    assert recipe_from_dict(evaluation).run.dtype == "float16"  # evaluation alone is fine


def test_common_slips_get_a_way_out() -> None:
    data = tomllib.loads(ZERO_TINY.read_text())
    data["stages"]["zero"].update(rollout_batch_size=8, group_size=4, num_minibatches=16)
    with pytest.raises(R1kitError, match="does not split into 16 equal") as info:
        recipe_from_dict(copy.deepcopy(data))
    assert "set num_minibatches" in info.value.hint
    sample = {"stages": {"rs": {"kind": "sample", "model": "/m", "prompts": "train.parquet"}}}
    with pytest.raises(R1kitError, match="stages.rs.prompts: must be an integer") as info:
        recipe_from_dict(sample)
    assert "come from train_file" in info.value.hint
    # a sample stage has no test_file: naming its fields did nothing
    sample = {"stages": {"rs": {"kind": "sample", "model": "/m", "test_answer_field": "sol"}}}
    with pytest.raises(R1kitError, match="stages.rs.test_answer_field: a sample stage reads "
                                         "no test_file"):
        recipe_from_dict(sample)


def test_an_eval_stage_lists_each_model_once() -> None:
    # the table has one row per model: a model listed twice was dropped without a word
    evaluation = {"stages": {"table": {"kind": "eval", "models": ["/m", "/n", "/m"]}}}
    with pytest.raises(R1kitError, match=r"stages.table.models: lists '/m' more than once"):
        recipe_from_dict(evaluation)
    # its shipped benchmarks: known names however they are written, each once
    table = {"kind": "eval", "models": ["/m"], "benchmarks": ["MATH-500", "aime_2024"]}
    assert recipe_from_dict({"stages": {"table": table}}).stages["table"].benchmarks == \
        ["MATH-500", "aime_2024"]
    for benchmarks, message in ((["math501"], "unknown benchmark 'math501'"),
                                (["math500", "MATH-500"], "lists a benchmark more than once")):
        with pytest.raises(R1kitError, match=f"stages.table.benchmarks: {message}"):
            recipe_from_dict({"stages": {"table": {**table, "benchmarks": benchmarks}}})


def test_questions_per_step_must_divide_among_torchrun_processes(monkeypatch) -> None:
    # under torchrun (WORLD_SIZE) a step's questions are split among the processes: checked
    # before any stage starts, not when the GRPO stage gets to it
    over = ["stages.zero.rollout_batch_size=24", "stages.zero.group_size=8"]
    _load_and_check(over)  # one process: fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    _load_and_check(over)  # WORLD_SIZE without RANK: not torchrun, one process
    monkeypatch.setenv("RANK", "0")
    msg = _error(over)
    assert "stages.zero.rollout_batch_size" in msg and "3 questions per step" in msg
    assert "multiple of 16" in msg
    _load_and_check(["stages.zero.rollout_batch_size=32", "stages.zero.group_size=8"])


def test_evaluation_sampling_settings_are_checked() -> None:
    """An in-run or eval-stage evaluation's temperature: >= 0, and 0 (greedy) only with
    k = 1; an eval stage's top_p in (0, 1]. A negative temperature samples the least likely
    tokens, so it is refused before any stage, as `r1kit eval` refuses it."""
    assert "stages.zero.eval.temperature" in _error(["stages.zero.eval.temperature=-0.6"])
    assert "stages.zero.eval.k" in _error(["stages.zero.eval.temperature=0"])  # k 4 greedy
    recipe = load_recipe(ZERO_TINY, ["stages.zero.eval.temperature=0", "stages.zero.eval.k=1"])
    assert recipe.stages["zero"].eval.temperature == 0
    from r1kit.config import EvalStageConfig

    for bad, key in (({"temperature": -1.0}, "temperature"), ({"top_p": 1.5}, "top_p"),
                     ({"temperature": 0.0, "k": 4}, "k")):
        with pytest.raises(R1kitError, match=f"e.{key}"):
            EvalStageConfig(models=["m"], **bad).validate("e")
    EvalStageConfig(models=["m"], temperature=0.0, k=1).validate("e")


def test_every_unknown_key_of_a_table_is_named_at_once() -> None:
    msg = _error(["stages.zero.foo_bar_baz=1", "stages.zero.grup_size=3",
                  "stages.zero.num_generations=4"])
    assert "unknown keys foo_bar_baz, grup_size, num_generations" in msg
    assert "did you mean 'group_size'" in msg and "is 'group_size'" in msg
    assert "not a setting of grpo stages" in msg and "valid keys" not in msg


def test_a_prefill_with_a_backslash_n_is_refused_and_a_shell_newline_kept() -> None:
    """--set 'stages.zero.prefill=<think>\\n' (bare text: a backslash and an n) trained on
    '<think>\\n...' silently; it is refused with the way to write a newline. A real newline
    typed in the shell stays (it was stripped); a TOML string's escape is a newline."""
    recipe = str(REPO / "recipes" / "zero-tiny.toml")
    with pytest.raises(R1kitError, match="holds a backslash and an n, not a newline") as err:
        load_recipe(recipe, ["stages.zero.prefill=<think>\\n"])
    assert "prefill=\"<think>\\n\"" in err.value.hint
    kept = load_recipe(recipe, ["stages.zero.prefill=<think>\n"]).stages["zero"].prefill
    assert kept == "<think>\n"
    toml = load_recipe(recipe, ['stages.zero.prefill="<think>\\n"']).stages["zero"].prefill
    assert toml == "<think>\n"


def test_a_glob_reads_a_data_sets_shards(tmp_path: Path, bpe_checkpoint) -> None:
    """train_file = "data/train-*.parquet" (a Hugging Face data set's shards): the shards in
    name order, each row named by its shard and line; a glob that matches nothing, or a
    directory, says so before any stage; a finished stage's shards are its inputs (one more
    shard is a change)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from r1kit.pipeline import _input_changed, stage_inputs
    from r1kit.tasks.math import read_examples

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows[:3]), data / "train-00000-of-00002.parquet")
    (data / "train-00001-of-00002.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[3:]))
    pq.write_table(pa.Table.from_pylist(rows[:1]), data / "test-00000-of-00001.parquet")
    pattern = str(data / "train-*")
    got = read_examples(pattern, "question", "answer")
    assert [e.answer for e in got] == ["1", "2", "3", "4", "5", "6"]
    (data / "train-00001-of-00002.jsonl").write_text(json.dumps(rows[3]) + "\n{\"question\": 1}\n")
    with pytest.raises(R1kitError, match=r"train-00001-of-00002.jsonl:2: no field 'answer'"):
        read_examples(pattern, "question", "answer")
    (data / "train-00001-of-00002.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[3:]))

    def recipe(train_file):
        return recipe_from_dict({"stages": {"zero": {
            "kind": "grpo", "model": str(bpe_checkpoint), "task": "math",
            "train_file": train_file, "group_size": 2, "rollout_batch_size": 4,
            "num_minibatches": 1}}})

    _check_inputs(recipe(pattern))
    with pytest.raises(R1kitError, match="stages.zero.train_file: no file matches"):
        _check_inputs(recipe(str(data / "validation-*.parquet")))
    with pytest.raises(R1kitError, match="is a directory, not a data file") as info:
        _check_inputs(recipe(str(data)))
    assert "train-*.parquet" in str(info.value)
    r = recipe(pattern)
    inputs = json.loads(json.dumps(stage_inputs(r.stages["zero"], r)))
    shards = sorted(Path(p).name for p in inputs if p.endswith(("parquet", "jsonl")))
    assert shards == ["train-00000-of-00002.parquet", "train-00001-of-00002.jsonl"]
    assert not any(_input_changed(p, fp) for p, fp in inputs.items())
    pq.write_table(pa.Table.from_pylist(rows[:1]), data / "train-00002-of-00003.parquet")
    assert _input_changed(pattern, inputs[pattern])
    # a file whose name holds glob characters is that file; a command's output inside the
    # glob it reads is refused (the next run would read it back)
    from r1kit.tasks.math import check_output_outside, read_rows

    literal = tmp_path / "data[1].jsonl"
    literal.write_text(json.dumps(rows[0]) + "\n")
    assert read_rows(literal) == [(1, rows[0])]
    _check_inputs(recipe(str(literal)))
    with pytest.raises(R1kitError, match="matches the glob --train"):
        check_output_outside(data / "train-clean.jsonl", pattern, "--train")
    check_output_outside(tmp_path / "clean.jsonl", pattern, "--train")


def test_a_value_meant_as_toml_but_broken_is_refused_not_taken_as_text() -> None:
    """An unclosed quote, list or inline table was taken as bare text, and then refused for
    something else (a prefill "holding a backslash and an n", "must be a table")."""
    for text, what in [('stages.zero.prefill="<think>\\n', "Unterminated string"),
                       ("stages.zero.eval={k=8", "inline table"),
                       ("stages.zero.max_new_tokens_schedule=[[1, 2]", "array"),
                       ("stages.zero.template='chat", "'")]:
        with pytest.raises(R1kitError, match="is not a TOML value") as err:
            apply_override({}, text)
        assert what in err.value.args[0] and text.split("=")[0] in err.value.args[0]
        assert "close its quotes" in err.value.hint
    assert parse_value("chat") == "chat"  # bare text is still a string, also where it
    for text in ("[THINK]", "[SYSTEM] Answer briefly.", "{question}", '"a" and b', r'"\d+"'):
        assert parse_value(text) == text  # opens and closes what TOML cannot read
    assert parse_value('"<think>\n"') == "<think>\n"  # a newline typed inside the quotes


def test_a_home_directory_in_a_recipes_paths_is_expanded(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    recipe = recipe_from_dict({"stages": {
        "a": {"kind": "grpo", "model": "~/ckpt", "task": "math", "train_file": "~/d.jsonl",
              "reward_function": ["~/r.py:f"]},
        "b": {"kind": "eval", "models": ["a", "~/other"], "task": "math",
              "test_file": "~"}}})
    a, b = recipe.stages["a"], recipe.stages["b"]
    assert (a.model, a.train_file) == (f"{tmp_path}/ckpt", f"{tmp_path}/d.jsonl")
    assert a.reward_function == [f"{tmp_path}/r.py:f"]
    assert b.models == ["a", f"{tmp_path}/other"] and b.test_file == str(tmp_path)
    assert a.question_field == "question"  # other settings are not paths


def test_a_directory_given_as_the_recipe_is_named_as_one(tmp_path) -> None:
    with pytest.raises(R1kitError, match="is a directory") as err:
        load_recipe(RECIPES)
    assert "zero-tiny.toml" in err.value.hint
    with pytest.raises(R1kitError, match="not found"):
        load_recipe(tmp_path / "missing.toml")


def test_a_cap_of_your_own_is_not_raised_by_the_papers_schedule() -> None:
    """The paper's schedule (32,768 raised to 65,536 at step 512) applies to the paper's cap:
    a stage that sets max_new_tokens alone keeps it (a port of TRL's max_completion_length =
    1024 jumped to 65,536 at step 512)."""
    def stage(**settings):
        return recipe_from_dict({"stages": {"rl": {"kind": "grpo", "model": "m", **settings}}}
                                ).stages["rl"]

    paper = stage()
    assert paper.max_new_tokens_at(511) == 32768 and paper.max_new_tokens_at(512) == 65536
    own = stage(max_new_tokens=1024)
    assert own.max_new_tokens_schedule == [] and own.max_new_tokens_at(600) == 1024
    both = stage(max_new_tokens=1024, max_new_tokens_schedule=[[10, 2048]])
    assert both.max_new_tokens_at(10) == 2048  # a schedule of your own
    # (--set reaches the stage's table the same way)
    zero = load_recipe(ZERO_TINY, ["stages.zero.max_new_tokens=128"]).stages["zero"]
    assert zero.max_new_tokens_at(600) == 128


def test_a_run_written_before_a_cap_kept_its_value_resumes() -> None:
    """A run whose stage set max_new_tokens alone was written with the paper's schedule
    [[512, 65536]]; now that stage resolves it to []. Where its 512 steps are never reached
    the schedule changed nothing, so the run resumes; where they are, it is a change."""
    from r1kit.pipeline import _changed_keys, _results_settings

    def run(schedule, steps=60):
        return {"run": {}, "stages": {"zero": {"kind": "grpo", "steps": steps,
                                               "max_new_tokens": 1024,
                                               "max_new_tokens_schedule": schedule}}}

    assert _changed_keys(_results_settings(run([[512, 65536]])),
                         _results_settings(run([]))) == []
    assert _changed_keys(_results_settings(run([[512, 65536]], 600)),
                         _results_settings(run([], 600))) == \
        ["stages.zero.max_new_tokens_schedule"]
    assert _changed_keys(_results_settings(run([[10, 2048]])),  # one that applies
                         _results_settings(run([]))) == ["stages.zero.max_new_tokens_schedule"]
