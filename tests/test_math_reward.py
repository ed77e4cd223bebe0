"""Tests of the math accuracy reward and its worker-pool verifier (r1kit.rewards.math).

The verifier is the one place where a policy's output runs through a symbolic algebra
system, so besides the answer rules (equivalent forms, hedging, answers hidden in the
reasoning) these tests pin the failure behaviour: an answer that would keep sympy busy for
minutes costs one sample within the deadline, a crashing worker costs one sample, and
neither stops the batch or the verifier; and none of it relies on signals, so it works
from a non-main thread.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from r1kit.errors import R1kitError
from r1kit.rewards.math import (
    MathVerifier,
    boxed_answers,
    math_reward,
    math_rewards,
    normalize_answer,
)
from r1kit.rewards.rule import answer_region, extract_answer

# 9^(9^(9^9)): sympy evaluates the integer power tower eagerly; measured with math-verify 0.9
# and its own timeouts off, it was still computing after 60 s (the exponent alone has
# ~370 million digits). math-verify's signal.alarm timeout is unusable off the main thread.
PATHOLOGICAL = "9^{9^{9^{9}}}"


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(workers=2) as v:
        yield v


def wrap(answer_part: str, think: str = "some reasoning") -> str:
    return f"<think>{think}</think><answer>{answer_part}</answer>"


# ----- normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("025", "25"),  # leading zeros of an integer
        ("-007", "-7"),
        ("00.5", "0.5"),
        ("0.5", "0.5"),  # the zero before a decimal point stays
        ("0", "0"),
        ("100", "100"),  # zeros after a digit are significant
        ("1,005", "1,005"),  # ... and after a thousands comma
        ("1{,}005", "1{,}005"),
        ("1.05", "1.05"),  # ... and after a decimal point
        ("27.0", "27"),  # trailing zeros of a decimal
        ("27.000", "27"),
        ("2.50", "2.5"),
        ("0.0", "0"),
        ("25.", "25"),  # a sentence's full stop
        ("\\dfrac{3}{4}", "\\frac{3}{4}"),
        ("\\tfrac12", "\\frac12"),
        ("\\frac 1 2", "\\frac12"),
        ("\\pi r", "\\pi r"),  # the space after a control word before a letter is kept
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("1\\,000", "1000"),
        ("$3$", "3"),
        ("  42 ", "42"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


# ----- the answer part ------------------------------------------------------------------------


def test_boxed_answers() -> None:
    assert boxed_answers("\\boxed{1} and \\fbox{\\frac{1}{2}} then \\boxed{{3}}") == [
        "1", "\\frac{1}{2}", "{3}"]
    assert boxed_answers("no box") == []
    assert boxed_answers("\\boxed{1} \\boxed{unclosed") == ["1"]


@pytest.mark.parametrize(
    "completion",
    [
        wrap("\\boxed{1} or \\boxed{2}"),
        wrap("plain 7"),
        "<think>\\boxed{3}</think> so \\boxed{4} and \\boxed{5}",
        "<think>a</think><answer>\\boxed{1}</answer><answer>\\boxed{2}</answer>",
        "<answer>\\boxed{8}</answer>",
        "<think>unterminated \\boxed{3}",
        "no tags \\boxed{9}",
    ],
)
def test_answer_region_agrees_with_extract_answer(completion: str) -> None:
    # math.py mirrors rule.extract_answer's region rule to find *every* box; the final
    # answer must be the same one extract_answer picks.
    region = answer_region(completion)
    if region is None:
        assert extract_answer(completion) is None
        return
    boxes = boxed_answers(region)
    expected = boxes[-1].strip() if boxes else region.strip()
    assert extract_answer(completion) == (expected or None)


# ----- equivalence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer,reference",
    [
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac{3}{4}", "3/4"),
        ("3/4", "\\dfrac{3}{4}"),
        ("025", "25"),
        ("25", "025"),
        ("27.0", "27"),
        ("27", "27.0"),
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
        ("1,000", "1000"),
    ],
)
def test_equivalent_forms_score_1(verifier: MathVerifier, answer: str, reference: str) -> None:
    [result] = verifier.verify_batch([(answer, reference)])
    assert result == result.__class__(True, False, None, result.seconds)
    score, parts = math_reward(wrap(f"\\boxed{{{answer}}}"), reference, verifier)
    assert score == 1.0 and parts["accuracy"] == 1.0


@pytest.mark.parametrize(
    "answer,reference",
    [("3", "4"), ("0.5", "0.05"), ("1,005", "15"), ("\\frac{1}{3}", "0.3"), ("x+1", "x")],
)
def test_different_values_score_0(verifier: MathVerifier, answer: str, reference: str) -> None:
    [result] = verifier.verify_batch([(answer, reference)])
    assert not result.correct and not result.timed_out and result.error is None
    assert math_reward(wrap(f"\\boxed{{{answer}}}"), reference, verifier)[0] == 0.0


# ----- the reward's rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion,score,hedged",
    [
        (wrap("\\boxed{4}"), 1.0, 0.0),
        (wrap("4"), 1.0, 0.0),  # no box: the answer tag's content
        ("<think>x</think> so it is \\boxed{4}.", 1.0, 0.0),  # no answer tag: after </think>
        (wrap("\\boxed{3} or \\boxed{4}"), 0.0, 1.0),  # hedging, even with the right last box
        (wrap("\\boxed{4} or maybe \\boxed{3}"), 0.0, 1.0),
        # another value in words inside the box (math-verify leaves \text out: it read "4")
        (wrap("\\boxed{4 \\text{ (or 3)}}"), 0.0, 1.0),
        (wrap("\\boxed{4 \\; \\text{(maybe 5)}}"), 0.0, 1.0),
        (wrap("\\boxed{4 \\text{ cm}}"), 1.0, 0.0),  # a unit is no hedge
        (wrap("\\boxed{4 \\text{ (base 10)}}"), 1.0, 0.0),  # a number without doubt
        (wrap("\\boxed{4 \\text{ (or }3\\text{)}}"), 0.0, 1.0),  # the doubt in text, 3 not
        (wrap("\\boxed{4 \\text{(or} 3)}"), 0.0, 1.0),
        (wrap("\\boxed{4}, i.e. \\boxed{4}"), 1.0, 0.0),  # the same answer twice is fine
        (wrap("\\boxed{4.0} = \\boxed{004}"), 1.0, 0.0),  # equal after normalisation
        (wrap("\\boxed{\\frac{8}{2}} = \\boxed{4}"), 1.0, 0.0),  # equivalent by math-verify
        ("<think>the answer is \\boxed{4}</think>", 0.0, 0.0),  # only inside the reasoning
        ("<think>so <answer>4</answer></think>", 0.0, 0.0),
        ("<think>so \\boxed{4}", 0.0, 0.0),  # unterminated reasoning
        ("<think>\\boxed{3} \\boxed{5}</think><answer>\\boxed{4}</answer>", 1.0, 0.0),
        ("4", 0.0, 0.0),  # nothing marks a final answer
        (wrap(""), 0.0, 0.0),
    ],
)
def test_math_reward_rules(verifier: MathVerifier, completion: str, score: float,
                           hedged: float) -> None:
    got, parts = math_reward(completion, "4", verifier)
    assert got == score
    assert parts == {"accuracy": score, "timeout": 0.0, "hedged": hedged, "error": 0.0}


def test_one_box_per_part_of_a_multi_part_reference(verifier: MathVerifier) -> None:
    """MATH-500 has references such as "1,-2" and "3, 5, 7": a response that boxes each part
    on its own is that answer, not a hedge; the same boxes against a one-part reference, or
    the wrong parts, are still a hedge (0)."""
    from r1kit.rewards.answers import _parts

    cases = [
        (wrap("The solutions are $\\boxed{1}$ and $\\boxed{-2}$."), "1,-2", 1.0, 0.0),
        (wrap("\\boxed{3}, \\boxed{5}, \\boxed{7}"), "3, 5, 7", 1.0, 0.0),
        (wrap("\\boxed{1} and \\boxed{2}"), "1,-2", 0.0, 1.0),  # a wrong part
        (wrap("\\boxed{3}, \\boxed{5}"), "3, 5, 7", 0.0, 1.0),  # a part missing
        (wrap("\\boxed{2} or \\boxed{3}"), "3", 0.0, 1.0),  # one answer: a hedge
        (wrap("\\boxed{1} or \\boxed{000}"), "1,000", 0.0, 1.0),  # a number, not 2 parts
        # both roots joined by a word in \\text: the answer, where the reference has both
        (wrap("\\boxed{x = 3 \\text{ or } x = -3}"), "\\pm 3", 1.0, 0.0),
        (wrap("\\boxed{x=1 \\text{ or } x=-2}"), "1,-2", 1.0, 0.0),
    ]
    got = math_rewards([c for c, *_ in cases], [r for _, r, *_ in cases], verifier)
    for (completion, reference, score, hedged), (s, parts) in zip(cases, got):
        assert (s, parts["hedged"]) == (score, hedged), (completion, reference)
    assert [_parts(x) for x in ("1,-2", "3, 5, 7", "1,000", "(1, 2)", "[0, 1)", "7")] == \
        [2, 3, 1, 1, 1, 1]
    # LaTeX thousands separators (MATH-500's) are one number, not parts
    assert [_parts(x) for x in ("10,\\!080", "\\$32,\\!348", "11,\\! 111", "1{,}000")] == \
        [1, 1, 1, 1]
    split = math_rewards([wrap("\\boxed{10} and \\boxed{080}")], ["10,\\!080"], verifier)
    assert split[0][0] == 0.0 and split[0][1]["hedged"] == 1.0


def test_math_rewards_batch_matches_single(verifier: MathVerifier) -> None:
    completions = [wrap("\\boxed{1/2}"), wrap("\\boxed{2} \\boxed{3}"), "<think>4</think>",
                   wrap("\\boxed{0.25}")]
    answers = ["0.5", "3", "4", "\\frac14"]
    batch = math_rewards(completions, answers, verifier)
    assert batch == [math_reward(c, a, verifier) for c, a in zip(completions, answers)]
    assert [s for s, _ in batch] == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        math_rewards(completions, answers[:2], verifier)


# ----- deadlines, crashes, threads ------------------------------------------------------------


def test_pathological_answer_times_out_and_verifier_survives(verifier: MathVerifier) -> None:
    before = set(verifier.worker_pids())
    start = time.monotonic()
    results = verifier.verify_batch([(PATHOLOGICAL, "1"), ("\\frac{1}{2}", "0.5")], timeout=1.0)
    elapsed = time.monotonic() - start
    assert results[0].timed_out and not results[0].correct and results[0].error is None
    assert 1.0 <= results[0].seconds < 1.5  # killed at the deadline, not when sympy gives up
    assert results[1].correct and not results[1].timed_out
    assert elapsed < 3.0
    assert len(set(verifier.worker_pids()) - before) == 1  # the stuck worker was replaced
    # the next batch is served normally
    assert [r.correct for r in verifier.verify_batch([("3", "3"), ("3", "4")])] == [True, False]
    score, parts = math_reward(wrap(f"\\boxed{{{PATHOLOGICAL}}}"), "1", verifier, timeout=0.5)
    assert score == 0.0 and parts == {"accuracy": 0.0, "timeout": 1.0, "hedged": 0.0,
                                      "error": 0.0}


def test_verify_batch_from_a_non_main_thread(verifier: MathVerifier) -> None:
    # math-verify's own timeouts raise "signal only works in main thread" here.
    out: list = []
    thread = threading.Thread(target=lambda: out.append(verifier.verify_batch(
        [("\\dfrac{3}{4}", "0.75"), (PATHOLOGICAL, "1"), ("2", "3")], timeout=0.5)))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    [results] = out
    assert [(r.correct, r.timed_out) for r in results] == [(True, False), (False, True),
                                                           (False, False)]


def test_worker_killed_mid_check_costs_one_sample() -> None:
    with MathVerifier(workers=1) as v:
        v.verify_batch([("1", "1")])  # the worker is up
        [pid] = v.worker_pids()
        killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
        killer.start()
        results = v.verify_batch([(PATHOLOGICAL, "1"), ("0.5", "1/2"), ("7", "8")], timeout=30)
        killer.join()
        assert not results[0].correct and not results[0].timed_out
        assert "SIGKILL" in results[0].error
        assert results[0].seconds < 5
        assert [(r.correct, r.error) for r in results[1:]] == [(True, None), (False, None)]
        assert v.worker_pids() != [pid]


CRASHY = '''
import os, signal

def check(answer, reference):
    if answer == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if answer == "raise":
        raise RuntimeError("boom")
    if answer == "exit":
        os._exit(3)
    return answer == reference
'''


def test_crashing_checks_cost_one_sample_each(tmp_path, monkeypatch) -> None:
    (tmp_path / "crashy_check.py").write_text(CRASHY)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with MathVerifier(workers=2, check="crashy_check:check") as v:
        pairs = [("a", "a"), ("segfault", "x"), ("b", "b"), ("raise", "x"), ("c", "d"),
                 ("exit", "x"), ("e", "e")]
        results = v.verify_batch(pairs, timeout=10)
        assert [r.correct for r in results] == [True, False, True, False, False, False, True]
        assert "SIGSEGV" in results[1].error
        assert results[3].error == "RuntimeError: boom"
        assert "exit code 3" in results[5].error
        assert all(r.error is None for r in results[::2])
        assert not any(r.timed_out for r in results)
        assert [r.correct for r in v.verify_batch([("z", "z")])] == [True]


def test_worker_that_cannot_start_is_an_error() -> None:
    with (MathVerifier(workers=1, check="no_such_module_r1kit:check") as v,
          pytest.raises(R1kitError, match="failed to start")):
        v.verify_batch([("1", "1")])


def test_closed_verifier_refuses_work_and_leaves_no_workers() -> None:
    v = MathVerifier(workers=1)
    v.verify_batch([("1", "1")])
    [pid] = v.worker_pids()
    v.close()
    with pytest.raises(RuntimeError):
        v.verify_batch([("1", "1")])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_math_task_verify_uses_the_pool() -> None:
    from r1kit.tasks.math import math_equal

    assert math_equal("025", "25") and math_equal("\\dfrac{3}{4}", "0.75")
    assert not math_equal("26", "25")
    assert not math_equal(PATHOLOGICAL, "1", timeout=0.5)


def test_references_written_as_sentences(verifier: MathVerifier) -> None:
    """A reference written as a sentence with one number ("The answer is 10.") is read as
    math-verify reads the sentence: normalizing had taken its spaces, and every answer to it
    scored 0. A reference sentence with several numbers takes none of them; an answer
    written as a sentence is not read so ("It is not 42." is no answer 42)."""
    cases = [(wrap("\\boxed{10}"), "The answer is 10.", 1.0),
             (wrap("\\boxed{3}"), "The answer is 10.", 0.0),
             (wrap("\\boxed{3}"), "She has 10 apples and 3 pears", 0.0),
             (wrap("It is not 42."), "42", 0.0),
             (wrap("The answer is forty-one or 42."), "42", 0.0),
             (wrap("the grader must accept this as 42"), "42", 0.0)]
    got = math_rewards([c for c, *_ in cases], [r for _, r, _ in cases], verifier)
    assert [s for s, _ in got] == [s for *_, s in cases]
