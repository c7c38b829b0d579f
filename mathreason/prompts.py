"""Named, versioned prompt templates, so every run records exactly which prompt it used.

A template is immutable and identified by ``name`` (which ends in ``-v<version>``); changing a prompt
means registering a new version, never editing an old one. :attr:`PromptTemplate.fingerprint` hashes
everything that affects :meth:`PromptTemplate.render`, and :meth:`PromptTemplate.to_dict` is what a run
writes into its resolved config.

Built-in templates:

* ``plain-v1``: the question and a newline (for models fine-tuned on ``question + "\\n" + solution``).
* ``gsm8k-zeroshot-v2`` / ``gsm8k-fewshot-v2`` (the GSM8K defaults): one step per line, ending with a
  final line ``#### N``, the format of GSM8K's reference solutions and therefore of the SFT targets.
* ``math-zeroshot-v1`` / ``math-fewshot-v1``: step by step, final answer in ``\\boxed{}`` (as in MATH's
  reference solutions).
* ``gsm8k-zeroshot-v1`` / ``gsm8k-fewshot-v1``: superseded (they ask for "The answer is N." while the SFT
  targets end in ``#### N``); kept registered so that old runs stay reproducible, refused by the pipeline.

Answer formats. Each dataset has exactly one final-answer format (:data:`ANSWER_FORMATS`): the prompt asks
for it, the SFT targets are written in it (:meth:`AnswerFormat.ensure` appends a final line to a D_syn
solution that lacks one), and :func:`mathreason.grading.extract_answer` reads it. A template names the
format it asks for (``answer_format``); the pipeline refuses a template whose format is not the dataset's.

The few-shot exemplars were written for this project (they are not copied from a benchmark) and each
of them is graded correct by :mod:`mathreason.grading` (a test checks this).
"""

from __future__ import annotations

import hashlib
import re
import json
from dataclasses import dataclass, field

__all__ = [
    "ANSWER_FORMATS",
    "AnswerFormat",
    "PromptTemplate",
    "PROMPT_TEMPLATES",
    "answer_format",
    "get_prompt_template",
    "register_prompt_template",
]


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt format: ``template`` with the placeholders ``{question}`` and (optionally) ``{fewshot}``.

    Placeholders are substituted literally (not with ``str.format``), so LaTeX braces in questions and
    templates need no escaping.
    """

    name: str
    """Unique name, conventionally ``<family>-<style>-v<version>``."""
    version: int
    """Version number; a changed prompt is a new version under a new name."""
    template: str
    """The prompt text with ``{question}`` (required) and ``{fewshot}`` (optional)."""
    dataset: str = "any"
    """Answer style the prompt asks for: ``gsm8k`` ("The answer is N."), ``math`` (``\\boxed{}``) or ``any``."""
    fewshot: tuple[tuple[str, str], ...] = ()
    """Exemplars as ``(question, solution)`` pairs, rendered with ``fewshot_format``."""
    fewshot_format: str = "Question: {question}\nAnswer: {solution}\n\n"
    """How one exemplar is written into ``{fewshot}``."""
    description: str = ""
    """One line on what the template is for."""
    stop: tuple[str, ...] = field(default=())
    """Stop strings that end a completion for this prompt (e.g. the next exemplar's ``Question:``)."""
    answer_format: str = ""
    """Name of the :class:`AnswerFormat` the prompt asks for (``""``: none in particular)."""

    def __post_init__(self) -> None:
        if "{question}" not in self.template:
            raise ValueError(f"prompt template {self.name!r}: template must contain '{{question}}'")
        if self.fewshot and "{fewshot}" not in self.template:
            raise ValueError(f"prompt template {self.name!r}: has exemplars but no '{{fewshot}}' placeholder")

    def render_fewshot(self) -> str:
        return "".join(
            self.fewshot_format.replace("{question}", q).replace("{solution}", s) for q, s in self.fewshot
        )

    def render(self, question: str) -> str:
        """The prompt for ``question``."""
        return self.template.replace("{fewshot}", self.render_fewshot()).replace("{question}", question)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "dataset": self.dataset,
            "template": self.template,
            "fewshot": [list(x) for x in self.fewshot],
            "fewshot_format": self.fewshot_format,
            "stop": list(self.stop),
            "fingerprint": self.fingerprint,
        }

    @property
    def fingerprint(self) -> str:
        """First 16 hex digits of the sha256 of everything that affects :meth:`render` and ``stop``."""
        payload = json.dumps(
            [self.name, self.version, self.template, [list(x) for x in self.fewshot], self.fewshot_format, list(self.stop)],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class AnswerFormat:
    """How a solution states its final answer, for one dataset."""

    name: str
    dataset: str
    instruction: str
    """The sentence of the prompt that asks for the format."""
    marker: re.Pattern
    """Matches a solution that already states its final answer in this format."""
    final_line: str
    """Template of the line appended by :meth:`ensure`; ``{answer}`` is replaced by the answer."""

    def has_final_answer(self, solution: str) -> bool:
        return self.marker.search(solution) is not None

    def ensure(self, solution: str, answer: str) -> str:
        """``solution`` unchanged when it already states its answer in this format, else with a final line added."""
        if self.has_final_answer(solution):
            return solution
        return solution.rstrip() + "\n" + self.final_line.replace("{answer}", answer)


ANSWER_FORMATS: dict[str, AnswerFormat] = {
    "gsm8k": AnswerFormat(
        name="gsm8k-hashes",
        dataset="gsm8k",
        instruction='Solve the problem step by step, writing one step per line. End with a final line of the form "#### N" where N is the final number.',
        marker=re.compile(r"(?m)^####[ \t]*\S"),
        final_line="#### {answer}",
    ),
    "math": AnswerFormat(
        name="math-boxed",
        dataset="math",
        instruction="Solve the problem step by step. Put your final answer within \\boxed{}.",
        marker=re.compile(r"\\(?:boxed|fbox)\s*\{"),
        final_line="The final answer is $\\boxed{{answer}}$.",
    ),
}
"""The one final-answer format of each dataset (prompt, SFT targets and grader agree on it)."""


def answer_format(dataset: str) -> AnswerFormat:
    """The :class:`AnswerFormat` of ``gsm8k`` or ``math`` (``KeyError`` naming the known ones otherwise)."""
    key = dataset.strip().lower()
    key = "gsm8k" if key.startswith("gsm") else key
    try:
        return ANSWER_FORMATS[key]
    except KeyError:
        raise KeyError(f"no answer format for dataset {dataset!r}; known: {', '.join(ANSWER_FORMATS)}") from None


_GSM8K_INSTRUCTION = (
    'Solve the problem step by step, writing one step per line. '
    'End with a final line of the form "The answer is N." where N is the final number.'
)
_MATH_INSTRUCTION = ANSWER_FORMATS["math"].instruction
_GSM8K_V2_INSTRUCTION = ANSWER_FORMATS["gsm8k"].instruction

_GSM8K_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "A baker makes 24 muffins and packs them in boxes of 4. He sells each box for $6. "
        "How much money does he make if he sells every box?",
        "The baker fills 24 / 4 = 6 boxes.\nSelling 6 boxes at $6 each gives 6 * 6 = 36 dollars.\nThe answer is 36.",
    ),
    (
        "Tom has 3 times as many marbles as Sara. Sara has 12 marbles. Tom gives away 10 of his marbles. "
        "How many marbles does Tom have now?",
        "Tom starts with 3 * 12 = 36 marbles.\nAfter giving away 10 he has 36 - 10 = 26 marbles.\nThe answer is 26.",
    ),
    (
        "A train travels at 60 miles per hour for 2.5 hours and then at 40 miles per hour for 1 hour. "
        "How many miles does it travel in total?",
        "In the first part it travels 60 * 2.5 = 150 miles.\nIn the second part it travels 40 * 1 = 40 miles.\n"
        "In total it travels 150 + 40 = 190 miles.\nThe answer is 190.",
    ),
    (
        "Maria buys 5 notebooks at $2.50 each and a pen for $1.75. She pays with a $20 bill. "
        "How much change does she get?",
        "The notebooks cost 5 * 2.50 = 12.50 dollars.\nWith the pen she spends 12.50 + 1.75 = 14.25 dollars.\n"
        "Her change is 20 - 14.25 = 5.75 dollars.\nThe answer is 5.75.",
    ),
)

_GSM8K_V2_EXEMPLARS: tuple[tuple[str, str], ...] = tuple(
    (q, sol.rsplit("\nThe answer is ", 1)[0] + "\n#### " + sol.rsplit("\nThe answer is ", 1)[1].rstrip("."))
    for q, sol in _GSM8K_EXEMPLARS
)
"""The same exemplars, ending in the ``#### N`` line of the GSM8K answer format."""

_MATH_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "What is the sum of all solutions of $x^2 - 5x + 6 = 0$?",
        "Factor: $x^2 - 5x + 6 = (x-2)(x-3)$, so the solutions are $x = 2$ and $x = 3$.\n"
        "Their sum is $2 + 3 = 5$.\nThe final answer is $\\boxed{5}$.",
    ),
    (
        "Simplify $\\frac{12}{18}$.",
        "The greatest common divisor of $12$ and $18$ is $6$.\n"
        "Dividing numerator and denominator by $6$ gives $\\frac{12}{18} = \\frac{2}{3}$.\n"
        "The final answer is $\\boxed{\\frac{2}{3}}$.",
    ),
    (
        "How many positive divisors does $36$ have?",
        "We have $36 = 2^2 \\cdot 3^2$.\nA divisor is $2^a 3^b$ with $0 \\le a, b \\le 2$, so there are "
        "$(2+1)(2+1) = 9$ of them.\nThe final answer is $\\boxed{9}$.",
    ),
    (
        "For which real $x$ is $2x + 3 > 7$? Give your answer in interval notation.",
        "Subtracting $3$ gives $2x > 4$.\nDividing by $2$ gives $x > 2$.\n"
        "In interval notation this is $(2, \\infty)$.\nThe final answer is $\\boxed{(2, \\infty)}$.",
    ),
)

PROMPT_TEMPLATES: dict[str, PromptTemplate] = {}


def register_prompt_template(template: PromptTemplate) -> PromptTemplate:
    """Add a template to :data:`PROMPT_TEMPLATES`; re-registering a different one under a taken name fails."""
    old = PROMPT_TEMPLATES.get(template.name)
    if old is not None and old != template:
        raise ValueError(f"prompt template {template.name!r} already exists with different content; register a new version")
    PROMPT_TEMPLATES[template.name] = template
    return template


def get_prompt_template(name: str) -> PromptTemplate:
    """The registered template called ``name`` (``KeyError`` listing the known names otherwise)."""
    try:
        return PROMPT_TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown prompt template {name!r}; known: {', '.join(sorted(PROMPT_TEMPLATES))}") from None


register_prompt_template(
    PromptTemplate(
        name="plain-v1",
        version=1,
        template="{question}\n",
        description="The bare question and a newline, for models fine-tuned on question + '\\n' + solution.",
    )
)
register_prompt_template(
    PromptTemplate(
        name="gsm8k-zeroshot-v1",
        version=1,
        dataset="gsm8k",
        template="Question: {question}\n" + _GSM8K_INSTRUCTION + "\n",
        description="Superseded by gsm8k-zeroshot-v2: asks for 'The answer is N.', which the SFT targets do not use.",
        stop=("\nQuestion:",),
        answer_format="the-answer-is",
    )
)
register_prompt_template(
    PromptTemplate(
        name="gsm8k-fewshot-v1",
        version=1,
        dataset="gsm8k",
        template=_GSM8K_INSTRUCTION + "\n\n{fewshot}Question: {question}\nAnswer:",
        fewshot=_GSM8K_EXEMPLARS,
        description="Superseded by gsm8k-fewshot-v2 (asks for 'The answer is N.').",
        stop=("\nQuestion:",),
        answer_format="the-answer-is",
    )
)
register_prompt_template(
    PromptTemplate(
        name="gsm8k-zeroshot-v2",
        version=2,
        dataset="gsm8k",
        template="Question: {question}\n" + _GSM8K_V2_INSTRUCTION + "\n",
        description="Zero-shot GSM8K: one step per line, final line '#### N' (the format of the SFT targets).",
        stop=("\nQuestion:",),
        answer_format="gsm8k-hashes",
    )
)
register_prompt_template(
    PromptTemplate(
        name="gsm8k-fewshot-v2",
        version=2,
        dataset="gsm8k",
        template=_GSM8K_V2_INSTRUCTION + "\n\n{fewshot}Question: {question}\nAnswer:",
        fewshot=_GSM8K_V2_EXEMPLARS,
        description="4-shot GSM8K ending in '#### N' (exemplars written for this project).",
        stop=("\nQuestion:",),
        answer_format="gsm8k-hashes",
    )
)
register_prompt_template(
    PromptTemplate(
        name="math-zeroshot-v1",
        version=1,
        dataset="math",
        template="Problem: {question}\n" + _MATH_INSTRUCTION + "\n",
        description="Zero-shot MATH: step by step, final answer in \\boxed{}.",
        stop=("\nProblem:",),
        answer_format="math-boxed",
    )
)
register_prompt_template(
    PromptTemplate(
        name="math-fewshot-v1",
        version=1,
        dataset="math",
        template=_MATH_INSTRUCTION + "\n\n{fewshot}Problem: {question}\nSolution:",
        fewshot=_MATH_EXEMPLARS,
        fewshot_format="Problem: {question}\nSolution: {solution}\n\n",
        description="4-shot MATH in the zero-shot format (exemplars written for this project).",
        stop=("\nProblem:",),
        answer_format="math-boxed",
    )
)
