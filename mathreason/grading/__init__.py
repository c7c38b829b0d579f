"""Final-answer extraction and equivalence grading for GSM8K and MATH.

A wrong verdict silently turns a positive into a negative (or the reverse) for every later stage, so
this module is deliberately conservative and fully bounded:

* :func:`extract_answer` finds the final answer of a response or reference solution: the last
  ``\\boxed{...}``/``\\fbox{...}`` (nested braces, escaped braces), then ``#### ...``, then
  "The (final) answer is ...", then, for GSM8K only, the last number. For MATH a short one-line
  response with none of these markers is taken as a bare answer.
* :func:`grade` compares the extracted answer with the gold answer. Cheap deterministic paths come
  first (string normalisation, exact rational arithmetic on numbers, structural comparison of lists,
  sets, tuples, intervals and matrices, text answers); only what they cannot decide goes to
  math-verify (latex2sympy + sympy), and that always runs in a separate worker process with a soft
  timer inside it and a hard kill from outside, so a pathological answer costs at most the timeout.
  Model output never reaches ``eval``, ``sympify`` of a raw string or sympy's ``parse_expr``: the
  symbolic leaf uses math-verify with LaTeX extraction only (an ANTLR grammar), with latex2sympy's
  number parsing replaced by direct construction, inside an audit-hook sandbox that refuses
  compiling strings, processes, sockets and file writes.
* :func:`grade_many` grades large batches over a pool of worker processes with a per-item deadline;
  a worker that hangs or dies is replaced and only its current item is lost.

Equivalence policy (also in ``docs/grading.md``):

* Numbers are compared exactly as rationals: ``0.5 == 1/2 == \\frac12 == \\dfrac{1}{2}``,
  ``18.90 == 18.9``, ``1,000 == 1000 == \\$1,000.00``, ``2\\frac{1}{2} == 5/2`` (a digit string directly
  followed by ``\\frac{int}{int}`` is a mixed number), ``1.5e3 == 1.5\\times10^{3} == 1500``. A decimal
  literal matches a non-terminating fraction only to 6 significant places (``0.333333 == 1/3``;
  ``0.33 != 1/3``); two terminating numbers must be equal exactly.
* Percent is a unit: ``10\\% == 10``; when a percent sign is present on either side, ``10\\% == 0.1``
  is also accepted; without one, ``10 != 0.1``.
* Units, currency and degrees are dropped: ``5\\text{ cm} == 5``, ``\\$18.90 == 18.9``,
  ``30^\\circ == 30``, ``5 apples == 5``. When both answers name units of one dimension (length, area,
  volume, mass, time, money) they are converted: ``1 km == 1000 m``, ``2 hours == 120 minutes``,
  ``80 cents == \\$0.80``, and ``1 km != 1 m``. An amount in two units is one number
  (``8 dollars and 50 cents == 8.50``, ``5 feet 3 inches == 63 inches``).
* Inside a trigonometric function a degree is an angle: ``\\sin 30^\\circ == 1/2`` (``\\sin 30`` is in
  radians); a bare ``30^\\circ`` is still the number 30.
* Numbers written as words are numbers: ``\\text{twelve} == 12``, ``three hundred and five == 305``
  (fractions in words, ``one half``, are not read).
* A stack of integer powers small enough to evaluate is its value: ``2^{3^2} == 512 == 2^9``.
* ``x = 3 == 3`` and ``x \\in [0,1] == [0,1]`` (a left side that is a name, ``x``, ``a_{37}``,
  ``S_{ABC}``, or a ratio of names ``V_1:V_2``, is dropped when the other side has none).
* Unbracketed comma lists are unordered (``1, -2 == -2, 1``); so are ``\\{...\\}`` sets, sets in bare
  braces (``{2, 3, 5}``) and ``\\cup`` unions. ``or``/``and`` between items separate them, also
  without spaces (``(1,2)or(3,4)``). Tuples, intervals and matrices are ordered and bracket-exact (``(1,2] != (1,2)``);
  a vector matrix matches the same tuple, a point ``(1, 2)`` the bare list ``1, 2``, an interval the
  equivalent inequality (``(1,2] == 1 < x \\le 2``), and one ``\\pm`` makes a two-element list.
* Text answers (``\\text{Monday}``, ``(A)``, ``\\text{(C)}``) compare case-insensitively on letters,
  digits and ``:``; a text answer never matches a non-text answer. When the gold is a bare choice
  letter A-E, a prediction that starts with a choice marker followed by a value
  (``\\textbf{(C)}\\ 12``, ``(C) 12``) is judged by its letter (a second choice in it never matches).
* A standalone ``i`` is the imaginary unit (``i^2 == -1``, ``e^{i\\pi} == -1``) unless either answer
  uses ``i`` as an index (``a_i``, ``\\sum_{i=1}``, ``i \\le n``); math-verify itself reads ``i`` as a
  plain symbol, so the symbolic leaf compares again with ``i`` replaced by sympy's ``I``.
* A gold may be a reference text: its final answer is read as from a response (a box, ``####``, or the
  last "the answer is ..."). An escaped ``\\$`` inside a math span does not end the span.
* In a response with several boxes the last one counts; when the gold is a list (or a set, or a point)
  and the response ends with a run of adjacent boxes (``\\boxed{-2} and \\boxed{1}``,
  ``\\boxed{(2,5)} \\quad \\text{and} \\quad \\boxed{(7,1)}``,
  ``\\( x = \\boxed{3} \\) and \\( y = \\boxed{4} \\)``) the run is read as that list.

The package, one module per idea: :mod:`~mathreason.grading.extraction` (boxes, "####", "the answer
is"), :mod:`~mathreason.grading.normalization` (canonical strings), :mod:`~mathreason.grading.numbers`
(exact rationals), :mod:`~mathreason.grading.structures` (lists, sets, intervals, tuples, matrices),
:mod:`~mathreason.grading.compare` (the pure in-process comparator, :func:`compare` and
:func:`grade_in_process` with an injectable symbolic leaf), :mod:`~mathreason.grading.symbolic`
(math-verify), :mod:`~mathreason.grading.sandbox` and :mod:`~mathreason.grading.worker` (the worker
process, ``python -m mathreason.grading.worker``), :mod:`~mathreason.grading.supervisor` (its parent
side) and :mod:`~mathreason.grading.pool` (:func:`grade`, :func:`grade_many`).
"""

from __future__ import annotations

from mathreason.grading.compare import (
    MAX_SYMBOLIC_CHARS,
    Clock,
    Deadline,
    compare,
    grade_in_process,
    no_symbolic,
    symbolic_risk,
)
from mathreason.grading.extraction import boxed_contents, extract_answer, last_boxed
from mathreason.grading.normalization import MAX_ANSWER_CHARS, normalize_answer, parse_number
from mathreason.grading.pool import default_workers, grade, grade_many
from mathreason.grading.supervisor import WORKER_GRACE_S, current_worker, shutdown_workers
from mathreason.grading.verdict import Verdict, dataset_family

__all__ = [
    "GRADER_VERSION",
    "Verdict",
    "extract_answer",
    "grade",
    "grade_many",
    "last_boxed",
    "boxed_contents",
    "normalize_answer",
    "parse_number",
    "dataset_family",
    "shutdown_workers",
    "compare",
    "grade_in_process",
    "no_symbolic",
    "symbolic_risk",
    "Clock",
    "Deadline",
    "current_worker",
    "default_workers",
    "MAX_ANSWER_CHARS",
    "MAX_SYMBOLIC_CHARS",
    "WORKER_GRACE_S",
]

GRADER_VERSION = "2026.12.2"
"""Changes whenever a verdict can change. Stage keys include it, so a grading fix re-grades stored samples
instead of reusing a stale ``graded.jsonl``."""
