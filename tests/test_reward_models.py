"""The reward_model stage: synthetic tiny-world labels, pairwise and pointwise objectives."""

from __future__ import annotations

import json

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
