"""A Task is data plus its verifier. RL rewards and evaluation call the same `verify`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Example:
    # the user's question, without any template: text, or a conversation of chat messages
    # ([{"role": ..., "content": ...}], r1kit.templates) for template = "chat"
    question: str | list[dict] = field(hash=False)  # (a list is not hashable)
    answer: str  # the reference answer, as text
    level: int | None = None  # difficulty 1-5 where the data has one
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Task(Protocol):
    name: str

    def train_examples(self) -> list[Example]: ...

    def test_examples(self) -> list[Example]: ...

    def verify(self, answer: str, example: Example) -> float:
        """Score an extracted final answer against the example: 1.0 right, 0.0 wrong."""
        ...
