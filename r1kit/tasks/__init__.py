"""Tasks: data plus the verifier that both RL rewards and evaluation use."""

from __future__ import annotations

from pathlib import Path

from r1kit.tasks.base import Example, Task

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def make_task(cfg, seed: int) -> Task:
    """The task a GRPO stage config names (`task`, `train_file`, `world`, ...)."""
    if cfg.task == "arithmetic":
        from r1kit.tasks.arithmetic import ArithmeticTask

        return ArithmeticTask(cfg.world, seed=seed)
    from r1kit.tasks.math import MathTask

    if cfg.task == "gsm8k":
        return MathTask(
            name="gsm8k",
            train_file=cfg.train_file or DATA_DIR / "gsm8k" / "train.jsonl",
            test_file=getattr(cfg, "test_file", "") or DATA_DIR / "gsm8k" / "test.jsonl",
            question_field="question",
            answer_field="final_answer",
        )
    return MathTask(name=Path(cfg.train_file).stem, train_file=cfg.train_file,
                    test_file=getattr(cfg, "test_file", "") or None,
                    question_field=cfg.question_field,
                    answer_field=cfg.answer_field)


__all__ = ["Example", "Task", "make_task", "DATA_DIR"]
