"""Tasks: data plus the verifier that both RL rewards and evaluation use."""

from __future__ import annotations

from pathlib import Path

from r1kit.tasks.base import Example, Task

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def make_task(cfg, seed: int) -> Task:
    """The task a GRPO stage config names (`task`, `train_file`, `world`, ...), reading
    responses without tags whole where the stage's `read_untagged` says so."""
    task = _make_task(cfg, seed)
    if getattr(cfg, "read_untagged", False):
        task.read_untagged = True  # r1kit.rewards.answers.reads_untagged
    return task


def _make_task(cfg, seed: int) -> Task:
    if cfg.task == "arithmetic":
        from r1kit.tasks.arithmetic import ArithmeticTask

        return ArithmeticTask(cfg.world, seed=seed)
    if cfg.task == "code":
        from r1kit.tasks.code import CodeTask

        return CodeTask(cfg.train_file, getattr(cfg, "test_file", "") or None,
                        question_field=cfg.question_field,
                        instruction=getattr(cfg, "code_instruction", "r1kit"),
                        timeout=getattr(cfg, "code_timeout", None),
                        max_cases=getattr(cfg, "code_max_cases", 0))
    test_fields = (getattr(cfg, "test_question_field", "") or cfg.question_field,
                   getattr(cfg, "test_answer_field", "") or cfg.answer_field)
    if cfg.task == "prompts":
        from r1kit.tasks.prompts import PromptTask

        # the type of a row without one: the reward model the stage has (none for a reward
        # function alone, which scores every row)
        helpful, safety = getattr(cfg, "helpful_model", ""), getattr(cfg, "safety_model", "")
        default = (None if getattr(cfg, "reward_function", "") and not (helpful or safety)
                   else "safety" if safety and not helpful else "helpful")
        return PromptTask(cfg.train_file, cfg.question_field, default, seed, cfg.answer_field,
                          test_file=getattr(cfg, "test_file", "") or None,
                          test_fields=test_fields)
    if cfg.task == "choice":
        from r1kit.tasks.choice import ChoiceTask

        return ChoiceTask(cfg.train_file, getattr(cfg, "test_file", "") or None,
                          question_field=cfg.question_field, answer_field=cfg.answer_field,
                          choices_field=cfg.choices_field, test_fields=test_fields)
    from r1kit.tasks.math import MathTask

    if cfg.task == "gsm8k":
        return MathTask(
            name="gsm8k",
            train_file=cfg.train_file or DATA_DIR / "gsm8k" / "train.jsonl",
            test_file=getattr(cfg, "test_file", "") or DATA_DIR / "gsm8k" / "test.jsonl",
            question_field="question",
            answer_field="final_answer",
            fields_hint="task = 'gsm8k' reads the shipped format (question, final_answer); for "
                        "other files use task = 'math' with question_field / answer_field",
        )
    # named after the held-out file where there is one: evaluations are on it
    named = getattr(cfg, "test_file", "") or cfg.train_file
    return MathTask(name=Path(named).stem, train_file=cfg.train_file,
                    test_file=getattr(cfg, "test_file", "") or None,
                    question_field=cfg.question_field,
                    answer_field=cfg.answer_field,
                    test_fields=test_fields)


__all__ = ["Example", "Task", "make_task", "DATA_DIR"]
