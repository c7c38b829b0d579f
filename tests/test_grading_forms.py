"""Answer forms the grader reads since issue 13: trigonometric functions of degrees, numbers and money
in words, units of one dimension, stacks of powers, and the multi-answer forms of long model outputs
(runs of boxes, sets in bare braces, escaped dollars, reference texts as golds, "or" between tuples,
named left sides). Each family has positives and the negatives that must stay wrong.

The comparator runs in this process (:func:`mathreason.grading.grade_in_process`, math-verify as the
symbolic leaf, no worker); the last test checks that the worker path gives the same verdicts."""

from __future__ import annotations

import time

import pytest

from mathreason.grading import Clock, Deadline, Verdict, compare, extract_answer, grade_in_process, grade_many, no_symbolic
from mathreason.grading.quantities import rewrite_quantity, unit_of, words_to_int
from mathreason.grading.symbolic import math_verify_equal

# (dataset, gold, response)
EQUIVALENT = [
    # trigonometric functions of degree arguments
    ("math", r"\frac{1}{2}", r"\boxed{\sin 30^\circ}"),
    ("math", r"\sin 30^{\circ}", r"\boxed{\frac12}"),
    ("math", r"\cos 60^\circ", "\\boxed{\\sin 30\u00b0}"),
    ("math", "1", r"\boxed{\tan 45^\circ}"),
    ("math", "0.5", r"\boxed{\sin(30^\circ)}"),
    ("math", r"\frac{1}{2}", r"\boxed{\sin^2 45^\circ}"),
    ("math", r"\frac{\sqrt{3}}{2}", r"\boxed{\cos 30^{\circ}}"),
    ("math", "1", r"\boxed{2\sin 30^\circ}"),
    ("math", r"\frac{1}{2}", r"\boxed{\sin{30^\circ}}"),
    ("math", r"\sqrt{3}", r"\boxed{\tan 60 ^ \circ}"),
    ("math", "1", r"\boxed{\sin 30^\circ + \cos 60^\circ}"),
    ("math", r"\frac{1}{2}", r"\boxed{\sin(45^\circ - 15^\circ)}"),
    ("math", r"30^\circ", "30"),  # a bare angle keeps its unit dropped
    # numbers written as words
    ("math", "12", r"\boxed{\text{twelve}}"),
    ("math", "12", "twelve"),
    ("math", "21", r"\boxed{\text{Twenty-one}}"),
    ("math", "305", r"\boxed{\text{three hundred and five}}"),
    ("math", "1200", r"\boxed{\text{one thousand two hundred}}"),
    ("math", "-5", r"\boxed{\text{minus five}}"),
    ("math", r"\text{four}", "4"),
    ("math", "7", r"\boxed{\text{seven cm}}"),
    ("math", "12", r"\boxed{\text{twelve apples}}"),
    ("math", r"12\%", r"\boxed{\text{twelve percent}}"),
    ("gsm8k", "12", "She has twelve left.\nThe answer is twelve."),
    ("gsm8k", "40", "#### forty"),
    # money in words
    ("math", "8.50", r"\boxed{8 \text{ dollars and } 50 \text{ cents}}"),
    ("math", r"\$8.50", r"\boxed{\$8 \text{ and } 50 \text{ cents}}"),
    ("math", "8.5", r"\boxed{\text{eight dollars and fifty cents}}"),
    ("math", r"\$12.05", "12 dollars and 5 cents"),
    ("math", r"\$0.80", r"\boxed{80\text{ cents}}"),
    ("gsm8k", "8.5", "So she gets 8 dollars and 50 cents.\nThe answer is 8 dollars and 50 cents."),
    ("gsm8k", "3.25", "The answer is $3 and 25 cents."),
    # units of one dimension
    ("math", r"1\text{ km}", r"\boxed{1000\text{ m}}"),
    ("math", r"5\text{ m}", r"\boxed{500\text{ cm}}"),
    ("math", r"2 \text{ hours}", r"\boxed{120 \text{ minutes}}"),
    ("math", r"90\text{ min}", r"\boxed{1.5\text{ hours}}"),
    ("math", r"1\text{ ft}^2", r"\boxed{144\text{ in}^2}"),
    ("math", r"3 \text{ square feet}", r"\boxed{432 \text{ square inches}}"),
    ("math", r"1\text{ yard}", r"\boxed{3\text{ feet}}"),
    ("math", r"2\text{ kg}", r"\boxed{2000\text{ g}}"),
    ("math", r"1.5\text{ L}", r"\boxed{1500\text{ mL}}"),
    ("math", r"5\text{ feet }3\text{ inches}", r"\boxed{63\text{ inches}}"),
    ("math", r"1\text{ day}", r"\boxed{24\text{ hours}}"),
    ("math", r"1\text{ L}", r"\boxed{1000\text{ cm}^3}"),
    ("math", r"t = 2\text{ hours}", r"\boxed{120\text{ minutes}}"),  # the unit of a named value
    ("math", r"5\text{ cm}", "5"),  # one side without a unit: the unit is dropped as before
    # stacks of powers small enough to evaluate
    ("math", "512", r"\boxed{2^{3^2}}"),
    ("math", "2^9", r"\boxed{2^{3^{2}}}"),
    ("math", "65536", r"\boxed{2^{2^{2^{2}}}}"),
    ("math", "81", r"\boxed{3^{2^2}}"),
    ("math", r"10^{10^{1}}", r"\boxed{10000000000}"),
    ("math", "513", r"\boxed{2^{3^2}+1}"),
    ("math", "-512", r"\boxed{(-2)^{3^{2}}}"),
    ("math", "2560", r"\boxed{5 \cdot 2^{3^2}}"),
    ("math", "x^{16}", r"\boxed{x^{2^{2^{2}}}}"),
    # runs of boxes: \quad \text{and} \quad, \) \(, named items
    ("math", "(2, 5), (7, 1)", r"so $\boxed{(2, 5)} \quad \text{and} \quad \boxed{(7, 1)}$"),
    ("math", "a = 4, b = 9", r"$$\boxed{a = 4} \qquad \text{and} \qquad \boxed{b = 9}$$"),
    ("math", r"\frac{1}{3}, -2", r"the roots are \[ \boxed{-2} \quad \text{and} \quad \boxed{\frac{1}{3}}. \]"),
    ("math", r"\(\boxed{3}\) and \(\boxed{-4}\).", r"$\boxed{-4, 3}$"),
    ("math", "p = x^2 + 1, q = 2x - 3", r"\( p = \boxed{x^2+1} \) and \( q = \boxed{2x-3} \)"),
    ("math", "5, 6", r"\(\boxed{5}\), \(\boxed{6}\)"),
    ("math", "5, 6", r"\[\boxed{5}\] \[\boxed{6}\]"),
    ("math", "1, 2", r"\boxed{x=1} \\ \boxed{x=2}"),
    ("math", "1, 2", r"\boxed{1}\quad\textbf{and}\quad\boxed{2}"),
    ("math", "(3, -1)", r"$x = \boxed{3}$ \quad \text{and} \quad $y = \boxed{-1}$"),
    ("math", r"\(1\) and \(-2\)", r"\boxed{-2, 1}"),
    # sets in bare braces
    ("math", "2, 3, 5", r"$${2, 3, 5}$$"),
    ("math", r"\{5, 3, 2\}", r"\boxed{{2,3,5}}"),
    ("math", r"\pm 7", r"${-7, 7}$"),
    ("math", r"$${4,8,9}$$", r"\boxed{9} and \boxed{8} and \boxed{4}"),
    ("math", r"{4,8,9}", r"\boxed{4},\boxed{8},\boxed{9}"),
    ("math", r"{-3, 3}", r"\boxed{\pm 3}"),
    ("math", r"{(1,2), (3,4)}", r"\boxed{(3,4)} \quad \text{and} \quad \boxed{(1,2)}"),
    # an escaped dollar inside a math span
    ("math", "18.9", r"The answer is $\$18.90$."),
    ("math", "1000", r"The answer is $\$1{,}000$."),
    ("math", r"\frac{7}{3}", r"Answer $ \frac{1}{2} \$ = \frac{7}{3} $"),
    ("gsm8k", "18.9", r"The answer is $\$18.90$."),
    # a gold given as a reference text
    ("math", "Work... Final Answer: The final answer is $41\\%$. I hope it is correct. Note: more text follows", r"\boxed{41\%}"),
    ("math", r"We compute the sum, so the answer is $\frac{3}{4}$. Some closing remarks.", "0.75"),
    ("gsm8k", "Adding gives 40 + 2.\nThe answer is 42.", "#### 42"),
    # "or" between tuples without spaces
    ("math", "(1,2)or(3,4)", r"\boxed{(3,4), (1,2)}"),
    ("math", "[0,1]or[2,3]", r"\boxed{[2,3],[0,1]}"),
    # names with multi-letter subscripts (and ratios of names) on the left of "="
    ("math", "S_{ABC}:S=2:5", r"\boxed{2:5}"),
    ("math", "x_{max}=7", r"\boxed{7}"),
    ("math", "V_{cone}:V_{cyl}=1:3", r"\boxed{1:3}"),
    ("math", r"v_{\text{max}}=5", r"\boxed{5}"),
    ("math", r"T_{\mathrm{total}} = 12", r"\boxed{12}"),
    ("math", r"S_{\triangle ABC} = 6", r"\boxed{6}"),
    ("math", r"\alpha_{1} = 3, \alpha_{2} = 5", r"\boxed{5, 3}"),
    ("math", r"x_{1}=2,\quadx_{2}=-3", r"\boxed{2} \quad \text{and} \quad \boxed{-3}"),
]

NOT_EQUIVALENT = [
    ("math", r"\frac{1}{2}", r"\boxed{\sin 30}"),  # radians
    ("math", r"\sin 30", r"\boxed{\sin 30^\circ}"),
    ("math", r"\frac{1}{2}", r"\boxed{\cos 30^\circ}"),
    ("math", r"\frac{\sqrt{3}}{2}", r"\boxed{\sin 30^\circ}"),
    ("math", "1", r"\boxed{\tan 45}"),
    ("math", "13", r"\boxed{\text{twelve}}"),
    ("math", "12", r"\boxed{\text{one two}}"),
    ("math", "201", r"\boxed{\text{twenty one}}"),
    ("math", r"\frac{1}{2}", r"\boxed{\text{one half}}"),
    ("math", "12", r"\boxed{\text{a dozen}}"),
    ("math", "1", r"\boxed{\text{one half}}"),
    ("math", "2", r"\boxed{\text{two dozen}}"),
    ("math", "3", r"\boxed{\text{three squared}}"),
    ("gsm8k", "13", "The answer is twelve."),
    ("math", "8.05", r"\boxed{8 \text{ dollars and } 50 \text{ cents}}"),
    ("math", "58", r"\boxed{8 \text{ dollars and } 50 \text{ cents}}"),
    ("math", "8.5", r"\boxed{8 \text{ dollars and } 5 \text{ cents}}"),
    ("math", r"\$50", r"\boxed{50\text{ cents}}"),
    ("gsm8k", "8", "The answer is 8 dollars and 50 cents."),
    ("math", r"1\text{ km}", r"\boxed{1\text{ m}}"),
    ("math", r"2\text{ hours}", r"\boxed{2\text{ minutes}}"),
    ("math", r"5\text{ m}", r"\boxed{50\text{ cm}}"),
    ("math", r"1\text{ ft}^2", r"\boxed{12\text{ in}^2}"),
    ("math", r"1\text{ km}", r"\boxed{1000}"),  # a unitless number is not converted
    ("math", r"t = 2\text{ hours}", r"\boxed{2\text{ minutes}}"),
    ("math", "64", r"\boxed{2^{3^2}}"),  # 2^(3^2), not (2^3)^2
    ("math", "512", r"\boxed{(2^3)^2}"),
    ("math", "2^8", r"\boxed{2^{3^2}}"),
    ("math", "512", r"\boxed{2^{3^2}+1}"),
    ("math", "512", r"\boxed{(-2)^{3^{2}}}"),
    ("math", "4", r"\boxed{2^{2^{2^{2^{2^{2}}}}}}"),  # too big to evaluate: still refused, still bounded
    ("math", "(2, 5), (7, 1)", r"$\boxed{(2, 5)} \quad \text{and} \quad \boxed{(7, 2)}$"),
    ("math", "1, 2", r"\boxed{1} because we then check the other case, where \boxed{2}"),
    ("math", "a = 4, b = 9", r"\boxed{a = 4} \quad \text{and} \quad \boxed{b = 8}"),
    ("math", r"\(\boxed{3}\) and \(\boxed{-4}\).", r"$\boxed{-4, 4}$"),
    ("math", "(3, -1)", r"\boxed{-1} \quad \text{and} \quad \boxed{3}"),  # a point is ordered
    ("math", "2, 3, 5", r"${2, 3}$"),
    ("math", r"\pm 7", r"${7}$"),
    ("math", r"\pm 7", r"${-7, 8}$"),
    ("math", "{-3, 3}", r"\boxed{3}"),
    ("math", "(1, 3)", r"\boxed{{1, 3, 5}}"),
    ("math", r"$${4,8,9}$$", r"\boxed{9} and \boxed{8}"),
    ("math", "18.09", r"The answer is $\$18.90$."),
    ("math", "Work... Final Answer: The final answer is $41\\%$. I hope it is correct.", r"\boxed{14\%}"),
    ("math", "(1,2)or(3,4)", r"\boxed{(3,4), (1,3)}"),
    ("math", "(1,2)or(3,4)", r"\boxed{(1,2)}"),
    ("math", "S_{ABC}:S=2:5", r"\boxed{5:2}"),
    ("math", "x_{max}=7", r"\boxed{8}"),
    ("math", r"S_{\triangle ABC} = 6", r"\boxed{7}"),
    ("math", r"\(1\) and \(-2\)", r"\boxed{-1, 2}"),
    ("math", "2x+z=1", r"\boxed{1}"),  # an equation, not a name, on the left
]


@pytest.mark.parametrize("dataset, gold, response", EQUIVALENT)
def test_equivalent_forms(dataset, gold, response):
    v = grade_in_process(response, gold, dataset, leaf=math_verify_equal)
    assert v.correct, v


@pytest.mark.parametrize("dataset, gold, response", NOT_EQUIVALENT)
def test_not_equivalent_forms(dataset, gold, response):
    v = grade_in_process(response, gold, dataset, leaf=math_verify_equal)
    assert not v.correct, v


def test_extraction_of_escaped_dollars_and_box_runs():
    assert extract_answer(r"The answer is $\$18.90$.", "math") == r"\$18.90"
    assert extract_answer(r"The answer is \(\$5 \text{ and more}\).", "math") == r"\$5 \text{ and more}"
    assert extract_answer(r"Answer $ \frac{1}{2} \$ = \frac{7}{3} $", "math") == r"\frac{1}{2} \$ = \frac{7}{3}"
    assert extract_answer(r"The answer is $\\$ 5 $", "math") == "\\\\"  # \\ is a line break: the $ after it closes
    assert extract_answer("The answer is eight dollars and fifty cents.", "gsm8k") == "8.5"


def test_words_units_and_quantities():
    assert [words_to_int(t) for t in ("zero", "twelve", "ninety-nine", "one hundred and one", "two million three")] == [
        0, 12, 99, 101, 2_000_003,
    ]
    assert [words_to_int(t) for t in ("one two", "twenty twenty", "hundred", "and", "one half", "eleventy", "")] == [None] * 7
    assert unit_of("km") == unit_of(r"\text{ kilometers}") and unit_of("km")[0] == "length"
    assert unit_of(r"\text{ cm}^2")[0] == "area" and unit_of("cubic cm") == unit_of("mL")
    assert unit_of("apples") is None and unit_of("kg^2") is None
    assert rewrite_quantity("2 hours 30 minutes") == "2.5 hours"
    assert rewrite_quantity("5 feet 3 inches") == "5.25 feet"
    assert rewrite_quantity("8 dollars and 150 cents") is None  # the smaller unit must stay below the larger
    assert rewrite_quantity("3 hours and 20 minutes") == r"\frac{10}{3} hours"
    assert rewrite_quantity(r"\text{two lines}") == "2 lines" and rewrite_quantity("1, 2 and 3") is None
    assert rewrite_quantity("one half") is None and rewrite_quantity("two dozen") is None


def test_pure_comparator_needs_no_worker():
    """compare and grade_in_process run the whole policy in this process; the leaf is only asked what
    the deterministic paths cannot decide, and a spent clock stops the comparison."""
    asked = []

    def leaf(g, p):
        asked.append((g, p))
        return g == "x+1" and p == "1+x"

    assert compare("1, -2", "-2, 1") == (True, "list match")
    assert compare(r"1\text{ km}", r"1000\text{ m}") == (True, "numeric match (units converted)")
    assert compare("x+1", "1+x") == (False, "symbolic mismatch")  # the default leaf decides nothing
    assert no_symbolic("x", "x") is False
    assert compare("x+1", "1+x", leaf=leaf) == (True, "symbolic match") and asked == [("x+1", "1+x")]
    assert grade_in_process(r"so \boxed{2^{3^2}}", "512", "math", leaf=leaf) == Verdict(True, "2^{3^2}", "numeric match")
    assert len(asked) == 1
    with pytest.raises(Deadline):
        grade_in_process(r"\boxed{x+1}", "1+x", "math", leaf=leaf, clock=Clock(time.monotonic() - 1))


def test_worker_path_agrees_on_the_new_forms():
    cases = EQUIVALENT + NOT_EQUIVALENT
    batch = grade_many([c[2] for c in cases], [c[1] for c in cases], [c[0] for c in cases], workers=2, chunksize=8)
    assert [v.correct for v in batch] == [c in EQUIVALENT for c in cases], [
        (c, v) for c, v in zip(cases, batch) if v.correct != (c in EQUIVALENT)
    ]
