"""Fuzzing the grader with random and adversarial strings: it never raises, never runs past its
timeout and never executes anything.

Two layers:

* in-process (hypothesis): extraction, normalisation, number parsing, the symbolic pre-screen and the
  whole comparison logic with the symbolic leaf replaced by a recorder, under an audit hook that
  fails the test if anything compiles or executes code from a string, starts a process or writes a
  file while the grader runs. Default: 5 strategies x 400 examples; ``STEPCREDIT_FUZZ_EXAMPLES=2000``
  gives the 10,000-example run.
* through the real worker processes (sympy/math-verify, sandboxed): a seeded stream of the same
  kinds of strings through ``grade_many`` and ``grade``. Default 300 strings;
  ``STEPCREDIT_FUZZ_WORKER_N=10000`` for the full run.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mathreason import grading
from mathreason.grading import Verdict, extract_answer, grade, grade_many, normalize_answer, parse_number

EXAMPLES = int(os.environ.get("STEPCREDIT_FUZZ_EXAMPLES", "400"))
WORKER_N = int(os.environ.get("STEPCREDIT_FUZZ_WORKER_N", "300"))
PER_CALL_S = 2.0
"""Bound on one in-process call (the cheap paths are linear; typical calls take well under 10 ms)."""

# --------------------------------------------------------------------------------------------------
# audit hook: nothing may compile/execute strings, spawn processes or write files while grading
# --------------------------------------------------------------------------------------------------

_WATCH = threading.local()
_EVENTS: list[str] = []
_BAD_EVENTS = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "os.fork", "socket.connect"}


def _hook(event, args):
    if not getattr(_WATCH, "on", False):
        return
    if event == "compile" and str(args[1]).startswith("<"):
        _EVENTS.append(f"compile {str(args[0])[:80]!r}")
    elif event == "exec" and getattr(args[0], "co_filename", "").startswith("<"):
        _EVENTS.append("exec of a code object compiled from a string")
    elif event in _BAD_EVENTS:
        _EVENTS.append(event)
    elif event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        _EVENTS.append(f"open {args[0]!r} for writing")


sys.addaudithook(_hook)


def _watched(fn, *args):
    """Run ``fn(*args)`` with the audit hook on; it must not raise and must finish in time."""
    _EVENTS.clear()
    _WATCH.on = True
    t = time.perf_counter()
    try:
        out = fn(*args)
    finally:
        _WATCH.on = False
    elapsed = time.perf_counter() - t
    assert not _EVENTS, _EVENTS
    assert elapsed < PER_CALL_S, (elapsed, [str(a)[:200] for a in args])
    return out


class _RecordingLeaf:
    """Stands in for sympy in the in-process layer: records what would be sent to a worker."""

    def __init__(self):
        self.calls = 0

    def __call__(self, gold: str, pred: str) -> bool:
        self.calls += 1
        assert isinstance(gold, str) and isinstance(pred, str)
        # whatever reaches sympy has passed the pre-screen
        assert grading.symbolic_risk(gold) is None and grading.symbolic_risk(pred) is None
        return False


def _everything(response: str, gold: str, dataset: str) -> None:
    extract_answer(response, dataset)
    normalize_answer(response)
    parse_number(response)
    grading.symbolic_risk(response)
    v = grading.grade_in_process(response, gold, dataset, leaf=_RecordingLeaf())
    assert isinstance(v, Verdict)
    grading.grade_in_process(gold, response, dataset, leaf=_RecordingLeaf())


# --------------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------------

_PAYLOADS = [
    "__import__('os').system('touch {m}')",
    "exec(\"open('{m}','w')\")",
    "eval(\"__import__('os').system('touch {m}')\")",
    "(lambda: __import__('pathlib').Path('{m}').touch())()",
    "__builtins__.__dict__['exec']('import os')",
    "().__class__.__bases__[0].__subclasses__()",
    "Symbol('x').__class__.__init__.__globals__",
    "$(touch {m})",
    "`touch {m}`",
    "{{{{7*7}}}}",
    "%s%s%n",
]
_TOKENS = [
    "\\boxed{", "\\fbox{", "}", "{", "\\{", "\\}", "\\frac", "\\dfrac", "\\sqrt", "^", "_", "$", "$$", "\\[", "\\]",
    "\\(", "\\)", "\\left(", "\\right)", "(", ")", "[", "]", ",", "\\text{", "\\mbox{", "=", "####", "The answer is ",
    "answer: ", "\\%", "%", "!", "\\begin{pmatrix}", "\\end{pmatrix}", "\\begin{align}", "\\end{align}", "&", "\\\\",
    "e", "E", "x", "y", "i", "\\pi", "\\infty", "\\cup", "\\in", ".", "-", "+", "*", "/", "\\cdot", "\\times", " ", "\n",
    "1", "2", "0", "9", "10", "1,000", "3.14", "1e9", "\\circ", "^\\circ", "\\$", "\\!", "\\,", "and", "\\text{ and }",
    "\\int", "\\sum", "\\lim", "\\log", "\\sin", "\\binom", "\\mathbf{", "\\operatorname{", "'", '"', "\\", "\x00", "\u2212",
    "π", "√", "×", "🙂", "(A)", "\\text{(B)}", "Monday",
    "twelve", "hundred", " dollars", " cents", " km", " m", "\\text{ hours}", "\\quad", "or", "_{ABC}", ":", "°",
]

random_text = st.text(max_size=400)
latexish = st.lists(st.sampled_from(_TOKENS), max_size=80).map("".join)
deep_nesting = st.builds(
    lambda n, m, open_, close, core: open_ * n + core + close * m,
    st.integers(0, 4000),
    st.integers(0, 4000),
    st.sampled_from(["{", "\\boxed{", "(", "\\frac{", "\\sqrt{", "^{", "[", "\\left(", "$"]),
    st.sampled_from(["}", ")", "]", "\\right)", "$", "}{"]),
    st.sampled_from(["1", "x", "", "\\frac12", "9^{9^{9}}"]),
)
huge_numbers = st.one_of(
    st.builds(lambda k, d: "10^{" * k + d + "}" * k, st.integers(1, 60), st.text("0123456789", min_size=1, max_size=12)),
    st.builds(lambda a, b: f"{a}^{{{b}}}", st.integers(2, 10**6), st.integers(10**4, 10**12)),
    st.builds(lambda n: "9" * n, st.integers(1, 20000)),
    st.builds(lambda n, e: f"1.{'5' * n}e{e}", st.integers(0, 3000), st.integers(-10**9, 10**9)),
    st.builds(lambda n: ",".join(["123"] * n), st.integers(1, 4000)),
    st.builds(lambda n: f"({n})!", st.integers(1, 10**9)),
    st.builds(lambda n: f"{n}!", st.integers(1, 10**9)),
    st.builds(lambda a, b: f"\\binom{{{a}}}{{{b}}}", st.integers(0, 10**12), st.integers(0, 10**6)),
    st.builds(lambda k: "(" * k + "2" + ")^{2}" * k, st.integers(1, 40)),
)
payloads = st.builds(
    lambda p, wrap: wrap.format(p.format(m="/tmp/stepcredit_fuzz_marker")),
    st.sampled_from(_PAYLOADS),
    st.sampled_from(["{}", "\\boxed{{{}}}", "The answer is {}", "#### {}", "$ {} $", "x = {}", "\\text{{{}}}", "\\frac{{{}}}{{2}}"]),
)
_GOLDS = st.sampled_from(["1", "\\frac{1}{2}", "x+1", "(1,2]", "\\{1,2\\}", "\\text{(A)}", "1,000", "-3", "2\\sqrt{2}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"])
_DATASETS = st.sampled_from(["math", "gsm8k"])

_SETTINGS = dict(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@settings(**_SETTINGS)
@given(s=random_text, gold=_GOLDS, ds=_DATASETS)
def test_fuzz_random_text(s, gold, ds):
    _watched(_everything, s, gold, ds)


@settings(**_SETTINGS)
@given(s=latexish, gold=st.one_of(_GOLDS, latexish), ds=_DATASETS)
def test_fuzz_latexish(s, gold, ds):
    _watched(_everything, s, gold, ds)


@settings(**_SETTINGS)
@given(s=deep_nesting, gold=_GOLDS, ds=_DATASETS)
def test_fuzz_deep_nesting(s, gold, ds):
    _watched(_everything, s, gold, ds)


@settings(**_SETTINGS)
@given(s=huge_numbers, gold=st.one_of(_GOLDS, huge_numbers), ds=_DATASETS)
def test_fuzz_huge_numbers(s, gold, ds):
    _watched(_everything, s, gold, ds)
    _watched(_everything, "\\boxed{" + s + "}", gold, ds)


@settings(**_SETTINGS)
@given(s=payloads, gold=st.one_of(_GOLDS, payloads), ds=_DATASETS)
def test_fuzz_payloads(s, gold, ds):
    _watched(_everything, s, gold, ds)
    assert not os.path.exists("/tmp/stepcredit_fuzz_marker")


# --------------------------------------------------------------------------------------------------
# through the real (sandboxed) workers
# --------------------------------------------------------------------------------------------------


_WRAPS = [
    lambda s: s,
    lambda s: "\\boxed{" + s + "}",
    lambda s: "The answer is " + s + ".",
    lambda s: "Work...\n#### " + s,
    lambda s: "So $x = \\boxed{" + s + "}$ and \\boxed{" + s + "}",
]


def adversarial_strings(n: int, seed: int, marker: str) -> list[str]:
    """A seeded stream of random and adversarial strings (the same families as the strategies)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            s = "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 300)))
        elif kind == 1:
            s = "".join(rng.choice(_TOKENS) for _ in range(rng.randrange(0, 60)))
        elif kind == 2:
            a, b = rng.randrange(0, 3000), rng.randrange(0, 3000)
            s = rng.choice(["{", "\\boxed{", "(", "\\frac{", "^{", "\\sqrt{"]) * a + rng.choice(["1", "x", "9^{9^{9}}"]) + rng.choice(["}", ")"]) * b
        elif kind == 3:
            s = rng.choice(
                [
                    "10^{" * rng.randrange(1, 40) + "7" + "}" * rng.randrange(1, 40),
                    f"{rng.randrange(2, 99)}^{{{rng.randrange(10**4, 10**15)}}}",
                    "9" * rng.randrange(1, 50000),
                    f"1.{'3' * rng.randrange(0, 2000)}e{rng.randrange(-10**9, 10**9)}",
                    f"({rng.randrange(10**3, 10**9)})!",
                    f"(10^{{{rng.randrange(2, 20000)}}})^{{{rng.randrange(2, 20000)}}}",
                    f"\\binom{{{rng.randrange(10**5, 10**12)}}}{{{rng.randrange(10**3, 10**6)}}}",
                    "(" * 30 + "x+1" + ")^{9}" * 30,
                    "(a+b+c+d+e+f+g+1)^{" + str(rng.randrange(20, 60)) + "}",
                ]
            )
        elif kind == 4:
            s = rng.choice(_PAYLOADS).format(m=marker)
        else:  # plausible answers, some equivalent to the gold
            s = rng.choice(["\\frac{1}{2}", "0.5", "x+1", "1+x", "(1, 2]", "\\{2,1\\}", "A", "1000", "\\sqrt{8}", "2\\sqrt2", "-3", "1,000"])
        out.append(rng.choice(_WRAPS)(s))
    return out


def test_fuzz_through_workers(tmp_path):
    marker = str(tmp_path / "pwned")
    responses = adversarial_strings(WORKER_N, seed=0, marker=marker)
    golds_pool = ["1", "\\frac{1}{2}", "x+1", "(1,2]", "\\{1,2\\}", "\\text{(A)}", "1000", "-3", "2\\sqrt{2}", "(a+b+c+d+e+f+g+2)^{40}"]
    rng = random.Random(1)
    golds = [rng.choice(golds_pool) if i % 3 else responses[(i * 7919) % len(responses)] for i in range(len(responses))]
    datasets = ["math" if i % 4 else "gsm8k" for i in range(len(responses))]
    timeout = 2.0
    t = time.perf_counter()
    verdicts = grade_many(responses, golds, datasets, workers=2, timeout=timeout, chunksize=8)
    elapsed = time.perf_counter() - t
    assert len(verdicts) == len(responses) and all(isinstance(v, Verdict) for v in verdicts)
    assert not any("sandbox" in v.reason for v in verdicts), [v for v in verdicts if "sandbox" in v.reason][:3]
    assert not any(v.reason.startswith("error") for v in verdicts), [v for v in verdicts if v.reason.startswith("error")][:3]
    # the bound: no item holds a worker longer than timeout + grace, so the batch is bounded too
    n_timeouts = sum(v.reason == "timeout" for v in verdicts)
    assert elapsed < (len(responses) / 2) * 0.5 + (n_timeouts + 2) * (timeout + grading.WORKER_GRACE_S + 2.0)
    # one-at-a-time grade() calls on a sample: each finishes within its timeout (plus the kill grace)
    for r, g in list(zip(responses, golds))[:: max(1, len(responses) // 60)]:
        t = time.perf_counter()
        v = grade(r, g, "math", timeout=timeout)
        assert isinstance(v, Verdict)
        assert time.perf_counter() - t < timeout + grading.WORKER_GRACE_S + 1.0
    assert not os.path.exists(marker)
    print(f"\nfuzz through workers: {len(responses)} strings in {elapsed:.1f}s, {n_timeouts} timeouts, "
          f"{sum(v.correct for v in verdicts)} correct")
