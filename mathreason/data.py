"""Problems for the math pipeline: one record type and loaders for GSM8K, MATH, MATH-500 and D_syn.

* :class:`Problem` is the record every stage passes around: id, question, reference solution, gold
  final answer, source, grading family (``dataset``), optional MATH level and subject, free ``meta``.
* Loaders read the local copies under :func:`default_data_dir` (``$STEPCREDIT_DATA``, default
  ``<repo>/../shared/data``) when present, else the Hugging Face hub (``datasets.load_dataset``), or
  any local jsonl given as ``path``. Nothing here downloads anything unless the hub is asked for.
* Malformed input raises :class:`DataError` naming the file, the 1-based line and the field. With
  ``skip_malformed=True`` bad rows are skipped instead, and counted: the returned list is a
  :class:`ProblemList` whose ``skipped`` holds one message per skipped row (also logged as a warning).
* Prompt templates live in :mod:`mathreason.prompts` and are re-exported here.

Importing this module is light (no ``datasets``/``transformers``; ``datasets`` is imported only for a
hub load).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

from mathreason.grading import dataset_family, extract_answer, last_boxed
from mathreason.prompts import PROMPT_TEMPLATES, PromptTemplate, get_prompt_template, register_prompt_template
from shared.runio import write_jsonl_atomic

__all__ = [
    "DATA_ENV",
    "default_data_dir",
    "Problem",
    "ProblemList",
    "DataError",
    "load_gsm8k",
    "load_math",
    "load_math500",
    "load_jsonl_problems",
    "load_problems",
    "save_problems_jsonl",
    "strip_calculator_annotations",
    "PromptTemplate",
    "PROMPT_TEMPLATES",
    "get_prompt_template",
    "register_prompt_template",
    "GSM8K_HUB_ID",
    "MATH_HUB_IDS",
    "MATH500_HUB_ID",
]

logger = logging.getLogger(__name__)

DATA_ENV = "STEPCREDIT_DATA"
_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

GSM8K_HUB_ID = ("openai/gsm8k", "main")
"""Hub dataset id and config of GSM8K (splits ``train``/``test``; fields ``question``, ``answer``)."""
MATH_HUB_IDS = ("EleutherAI/hendrycks_math", "DigitalLearningGmbH/MATH-lighteval")
"""Hub ids tried in order for the full 12.5k MATH (fields ``problem``, ``solution``, ``level``, ``type``)."""
_MATH_SUBJECT_CONFIGS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
MATH500_HUB_ID = "HuggingFaceH4/MATH-500"
"""Hub id of MATH-500 (PRM800K's test split; one split ``test`` with an ``answer`` field)."""

_LOCAL_FILES = {
    ("gsm8k", "train"): "gsm8k/train.jsonl",
    ("gsm8k", "test"): "gsm8k/test.jsonl",
    ("gsm8k", "test_socratic"): "gsm8k/test_socratic.jsonl",
    ("math", "train"): "math/hendrycks_MATH_train.jsonl",
    ("math", "test"): "math/hendrycks_MATH_test.jsonl",
    ("math500", "test"): "math/prm800k_math_splits_test.jsonl",
}


def default_data_dir() -> pathlib.Path:
    """``$STEPCREDIT_DATA`` if set, else ``<repo>/../shared/data`` (it need not exist)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return _REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Problem:
    """One math problem with its reference solution and gold final answer."""

    id: str
    """Stable identifier (MATH: the ``unique_id`` such as ``test/algebra/1.json``; GSM8K: ``gsm8k/<split>/<row>``)."""
    question: str
    solution: str
    """Reference solution (GSM8K: as released, calculator annotations and the ``#### N`` line included)."""
    answer: str
    """Gold final answer (GSM8K: the text after ``####``; MATH: the last ``\\boxed{}`` of the solution)."""
    source: str
    """Where it came from: ``gsm8k``, ``math``, ``math500``, ``synthetic``, ..."""
    dataset: str
    """Grading family: ``gsm8k`` or ``math`` (chooses answer extraction and prompt defaults)."""
    level: str | None = None
    """MATH difficulty ``"1"``..``"5"`` (``"?"`` where the release says ``Level ?``)."""
    subject: str | None = None
    """MATH subject as released (``Algebra``, ``Counting & Probability``, ...)."""
    meta: dict = field(default_factory=dict)
    """Anything else (the raw level string, a MATH-500 answer that differs from the last box, ...)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Problem":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class ProblemList(list):
    """A list of :class:`Problem` that also reports what the loader skipped."""

    def __init__(self, items: Iterable[Problem] = (), *, path: str | None = None, skipped: list[str] | None = None):
        super().__init__(items)
        self.path = path
        """The file (or hub id) the problems were read from."""
        self.skipped: list[str] = list(skipped or [])
        """One ``file:line: field ...: reason`` message per malformed row that was skipped."""


class DataError(ValueError):
    """Malformed input; the message names the file, the 1-based line and the field."""

    def __init__(self, path: str | os.PathLike, line: int | None, field: str | None, message: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field {field!r}" if field else "record"
        super().__init__(f"{where}: {what}: {message}")


# --------------------------------------------------------------------------------------------------
# Reading rows
# --------------------------------------------------------------------------------------------------


def _iter_jsonl(path: pathlib.Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON)`` for every non-blank line; bad JSON raises :class:`DataError`."""
    try:
        fh = open(path, "r", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, None, None, "file not found") from None
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue  # blank lines are not records
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, DataError(path, lineno, None, f"invalid JSON ({e.msg} at column {e.colno})")


def _need_str(row: dict, key: str, path, lineno, *, allow_empty: bool = False) -> str:
    if key not in row:
        raise DataError(path, lineno, key, "missing")
    val = row[key]
    if not isinstance(val, str):
        raise DataError(path, lineno, key, f"expected a string, got {type(val).__name__}")
    if not allow_empty and not val.strip():
        raise DataError(path, lineno, key, "empty")
    return val


def _opt_str(row: dict, key: str, path, lineno) -> str | None:
    val = row.get(key)
    if val is None:
        return None
    if isinstance(val, bool) or not isinstance(val, (str, int, float)):
        raise DataError(path, lineno, key, f"expected a string, got {type(val).__name__}")
    return str(val)


_LEVEL_RE = re.compile(r"(?:level\s*)?(\d+|\?)", re.I)


def _norm_level(raw: Any, path, lineno) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise DataError(path, lineno, "level", f"expected 'Level N' or an integer, got {raw!r}")
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, str):
        m = _LEVEL_RE.fullmatch(raw.strip())
        if m:
            return m.group(1)
    raise DataError(path, lineno, "level", f"expected 'Level N' or an integer, got {raw!r}")


def _gsm8k_row(row: Any, path, lineno: int, idx: int, split: str, source: str) -> Problem:
    if not isinstance(row, dict):
        raise DataError(path, lineno, None, f"expected a JSON object, got {type(row).__name__}")
    question = _need_str(row, "question", path, lineno)
    answer_text = _need_str(row, "answer", path, lineno)
    if "####" not in answer_text:
        raise DataError(path, lineno, "answer", "no '####' line with the final answer")
    gold = answer_text.rsplit("####", 1)[1].strip()
    if not gold:
        raise DataError(path, lineno, "answer", "empty final answer after '####'")
    pid = _opt_str(row, "id", path, lineno) or f"{source}/{split}/{idx}"
    return Problem(id=pid, question=question, solution=answer_text, answer=gold, source=source, dataset="gsm8k")


def _math_row(row: Any, path, lineno: int, idx: int, split: str, source: str) -> Problem:
    if not isinstance(row, dict):
        raise DataError(path, lineno, None, f"expected a JSON object, got {type(row).__name__}")
    question = _need_str(row, "problem", path, lineno)
    solution = _need_str(row, "solution", path, lineno)
    boxed = last_boxed(solution)
    given = _opt_str(row, "answer", path, lineno)
    meta: dict = {}
    if given is not None and given.strip():
        answer = given.strip()
        if boxed is not None and boxed != answer:
            meta["boxed_answer"] = boxed
    elif boxed is not None and boxed.strip():
        answer = boxed
    elif boxed is not None:
        raise DataError(path, lineno, "solution", "the last \\boxed{} is empty (and there is no 'answer' field)")
    else:
        raise DataError(path, lineno, "solution", "no \\boxed{...} final answer (and no 'answer' field)")
    raw_level = row.get("level")
    level = _norm_level(raw_level, path, lineno)
    if raw_level is not None:
        meta["level_raw"] = raw_level
    subject = _opt_str(row, "subject", path, lineno) or _opt_str(row, "type", path, lineno)
    pid = _opt_str(row, "unique_id", path, lineno) or _opt_str(row, "id", path, lineno) or f"{source}/{split}/{idx}"
    return Problem(
        id=pid, question=question, solution=solution, answer=answer, source=source, dataset="math",
        level=level, subject=subject, meta=meta,
    )


def _synthetic_row(row: Any, path, lineno: int, idx: int, dataset: str | None, source: str, stem: str) -> Problem:
    """D_syn rows: ``question`` (or ``problem``), ``solution``, optional ``answer``, ``id``, ``level``,
    ``subject``, ``meta``, ``source``, ``dataset``. A GSM8K-style row (``answer`` holding the
    solution with a ``####`` line and no ``solution``) is also accepted."""
    if not isinstance(row, dict):
        raise DataError(path, lineno, None, f"expected a JSON object, got {type(row).__name__}")
    qkey = "question" if "question" in row else "problem" if "problem" in row else "question"
    question = _need_str(row, qkey, path, lineno)
    family = dataset or row.get("dataset")
    if family is None:
        raise DataError(path, lineno, "dataset", "missing: pass dataset='gsm8k' or 'math', or store it in each row")
    if not isinstance(family, str):
        raise DataError(path, lineno, "dataset", f"expected a string, got {type(family).__name__}")
    family = dataset_family(family)
    if "solution" not in row and isinstance(row.get("answer"), str) and "####" in row["answer"]:
        solution = row["answer"]
        answer = solution.rsplit("####", 1)[1].strip()
        if not answer:
            raise DataError(path, lineno, "answer", "empty final answer after '####'")
    else:
        solution = _need_str(row, "solution", path, lineno)
        answer = _opt_str(row, "answer", path, lineno)
        if answer is None or not answer.strip():
            if "answer" in row and answer is not None:
                raise DataError(path, lineno, "answer", "empty")
            answer = extract_answer(solution, family, allow_bare=False)
            if answer is None or not answer.strip():
                raise DataError(path, lineno, "answer", "missing, and no final answer could be extracted from 'solution'")
        answer = answer.strip()
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError(path, lineno, "meta", f"expected an object, got {type(meta).__name__}")
    row_source = _opt_str(row, "source", path, lineno) or source
    pid = _opt_str(row, "id", path, lineno) or f"{row_source}/{stem}/{idx}"
    return Problem(
        id=pid, question=question, solution=solution, answer=answer, source=row_source, dataset=family,
        level=_norm_level(row.get("level"), path, lineno),
        subject=_opt_str(row, "subject", path, lineno) or _opt_str(row, "type", path, lineno),
        meta=dict(meta),
    )


def _load_rows(path: pathlib.Path, convert, *, skip_malformed: bool, check_unique_ids: bool = True) -> ProblemList:
    out = ProblemList(path=str(path))
    seen: dict[str, int] = {}
    idx = 0
    for lineno, row in _iter_jsonl(path):
        try:
            if isinstance(row, DataError):
                raise row
            prob = convert(row, path, lineno, idx)
            if check_unique_ids:
                if prob.id in seen:
                    raise DataError(path, lineno, "id", f"duplicate id {prob.id!r} (first on line {seen[prob.id]})")
                seen[prob.id] = lineno
        except DataError as e:
            if not skip_malformed:
                raise
            out.skipped.append(str(e))
            continue
        finally:
            idx += 1
        out.append(prob)
    if out.skipped:
        logger.warning("%s: skipped %d malformed row(s); first: %s", path, len(out.skipped), out.skipped[0])
    return out


def _local(kind: str, split: str) -> pathlib.Path | None:
    rel = _LOCAL_FILES.get((kind, split))
    if rel is None:
        return None
    p = default_data_dir() / rel
    return p if p.is_file() else None


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def strip_calculator_annotations(text: str) -> str:
    """Remove GSM8K calculator annotations: ``"9 * 2 = $<<9*2=18>>18"`` -> ``"9 * 2 = $18"``."""
    return re.sub(r"<<[^<>]*>>", "", text)


def _from_hub_rows(rows: Iterable[dict], convert, label: str, *, skip_malformed: bool) -> ProblemList:
    out = ProblemList(path=label)
    for idx, row in enumerate(rows):
        try:
            out.append(convert(dict(row), label, idx + 1, idx))
        except DataError as e:
            if not skip_malformed:
                raise
            out.skipped.append(str(e))
    if out.skipped:
        logger.warning("%s: skipped %d malformed row(s); first: %s", label, len(out.skipped), out.skipped[0])
    return out


def _hub_load(hub_id: str, config: str | None, split: str):
    try:
        import datasets  # noqa: PLC0415 - heavy, only for hub loads
    except ImportError as e:  # pragma: no cover - datasets is in the `math` extra
        raise RuntimeError("loading from the Hugging Face hub needs `datasets` (pip install '.[math]')") from e
    return datasets.load_dataset(hub_id, config, split=split)


def load_gsm8k(split: str = "test", path: str | os.PathLike | None = None, *, skip_malformed: bool = False) -> list[Problem]:
    """GSM8K ``split`` (``train``/``test``): from ``path`` (jsonl with ``question``/``answer``), else the
    local copy under :func:`default_data_dir`, else the hub (``openai/gsm8k``, config ``main``).

    Ids are ``gsm8k/<split>/<0-based row>``; the gold answer is the text after the last ``####``.
    """
    convert = lambda row, p, lineno, idx: _gsm8k_row(row, p, lineno, idx, split, "gsm8k")  # noqa: E731
    local = pathlib.Path(path) if path is not None else _local("gsm8k", split)
    if local is not None:
        return _load_rows(local, convert, skip_malformed=skip_malformed)
    hub_id, config = GSM8K_HUB_ID
    rows = _hub_load(hub_id, config, split)
    return _from_hub_rows(rows, convert, f"hf://{hub_id}/{config}/{split}", skip_malformed=skip_malformed)


def load_math(
    split: str = "test",
    path: str | os.PathLike | None = None,
    *,
    skip_malformed: bool = False,
    hub_id: str | None = None,
) -> list[Problem]:
    """The full MATH ``split`` (``train`` 7500 / ``test`` 5000): from ``path`` (jsonl with ``problem``,
    ``solution`` and optionally ``level``, ``type``/``subject``, ``unique_id``, ``answer``), else the local
    copy, else the hub (``hub_id`` or the first of :data:`MATH_HUB_IDS` that loads).

    The gold answer is the ``answer`` field when present, else the last ``\\boxed{}`` of the solution.
    The released train split has two rows whose only ``\\boxed{}`` is empty (lines 5530 and 5532,
    ``train/number_theory/7115.json`` and ``7117.json``): loading it raises :class:`DataError` unless
    ``skip_malformed=True`` (7498 problems then).
    """
    convert = lambda row, p, lineno, idx: _math_row(row, p, lineno, idx, split, "math")  # noqa: E731
    local = pathlib.Path(path) if path is not None else _local("math", split)
    if local is not None:
        return _load_rows(local, convert, skip_malformed=skip_malformed)
    errors = []
    for hid in (hub_id,) if hub_id else MATH_HUB_IDS:
        try:
            if hid == "EleutherAI/hendrycks_math":
                rows: list[dict] = []
                for cfg in _MATH_SUBJECT_CONFIGS:
                    rows.extend(_hub_load(hid, cfg, split))
            else:
                rows = list(_hub_load(hid, None, split))
        except Exception as e:  # try the next mirror
            errors.append(f"{hid}: {type(e).__name__}: {e}")
            continue
        return _from_hub_rows(rows, convert, f"hf://{hid}/{split}", skip_malformed=skip_malformed)
    raise RuntimeError(f"MATH {split!r}: no local copy under {default_data_dir()} and no hub mirror loaded: " + "; ".join(errors))


def load_math500(path: str | os.PathLike | None = None, *, skip_malformed: bool = False) -> list[Problem]:
    """MATH-500 (PRM800K's test split): from ``path``, else the local copy, else ``HuggingFaceH4/MATH-500``."""
    convert = lambda row, p, lineno, idx: _math_row(row, p, lineno, idx, "test", "math500")  # noqa: E731
    local = pathlib.Path(path) if path is not None else _local("math500", "test")
    if local is not None:
        return _load_rows(local, convert, skip_malformed=skip_malformed)
    rows = _hub_load(MATH500_HUB_ID, None, "test")
    return _from_hub_rows(rows, convert, f"hf://{MATH500_HUB_ID}/test", skip_malformed=skip_malformed)


def load_jsonl_problems(
    path: str | os.PathLike,
    *,
    dataset: str | None,
    source: str = "synthetic",
    skip_malformed: bool = False,
) -> list[Problem]:
    """Problems from a jsonl file, e.g. D_syn: ``question`` (or ``problem``), ``solution``, optional
    ``answer`` (extracted from the solution with :func:`mathreason.grading.extract_answer` when absent),
    optional ``id``, ``level``, ``subject``, ``meta``, ``source``, ``dataset``. Files written by
    :func:`save_problems_jsonl` load back unchanged.

    ``dataset`` is the grading family (``gsm8k``/``math``); ``None`` means every row must carry it.
    Ids default to ``<source>/<file stem>/<0-based row>``; duplicate ids are an error.
    """
    p = pathlib.Path(path)
    stem = p.stem
    convert = lambda row, pp, lineno, idx: _synthetic_row(row, pp, lineno, idx, dataset, source, stem)  # noqa: E731
    return _load_rows(p, convert, skip_malformed=skip_malformed)


_NAMES = {"gsm8k": "gsm8k", "math": "math", "math500": "math500", "math-500": "math500", "math_500": "math500"}


def load_problems(name_or_path: str, split: str | None = None, **kw) -> list[Problem]:
    """Dispatcher for configs: ``"gsm8k"``, ``"math"``, ``"math500"`` (optionally ``"name:split"``), or a
    path to a ``.jsonl`` file (read with :func:`load_jsonl_problems`; pass ``dataset=`` unless the rows
    carry it). Extra keywords go to the loader (``skip_malformed``, ``path``, ``dataset``, ``source``)."""
    name = str(name_or_path)
    base, _, split_in_name = name.partition(":")
    key = _NAMES.get(base.strip().lower())
    if key is not None and not name.endswith(".jsonl"):
        split = split or split_in_name or "test"
        if key == "gsm8k":
            return load_gsm8k(split, **kw)
        if key == "math":
            return load_math(split, **kw)
        if split != "test":
            raise ValueError(f"MATH-500 has only a 'test' split, not {split!r}")
        return load_math500(**kw)
    p = pathlib.Path(name).expanduser()
    if p.suffix == ".jsonl" or p.is_file():
        if not p.is_file():
            raise DataError(p, None, None, "file not found")
        dataset = kw.pop("dataset", None)
        if dataset is None:
            dataset = _guess_family(p)
        return load_jsonl_problems(p, dataset=dataset, **kw)
    raise ValueError(f"unknown problem set {name_or_path!r}: use gsm8k, math, math500 or a path to a .jsonl file")


def _guess_family(p: pathlib.Path) -> str | None:
    """The grading family of a jsonl file whose rows do not say: GSM8K-style rows (an ``answer`` with
    ``####``) are ``gsm8k``, MATH-style rows (``problem``/``solution`` with ``\\boxed``) are ``math``;
    otherwise ``None`` (then every row must carry ``dataset``)."""
    for _, row in _iter_jsonl(p):
        if not isinstance(row, dict) or "dataset" in row:
            return None
        if isinstance(row.get("answer"), str) and "####" in row["answer"] and "solution" not in row:
            return "gsm8k"
        if isinstance(row.get("solution"), str) and "\\boxed" in row["solution"]:
            return "math"
        return None
    return None


def save_problems_jsonl(problems: Iterable[Problem], path: str | os.PathLike) -> None:
    """Write problems as jsonl (every field), atomically: a crash leaves the old file or the new one."""
    write_jsonl_atomic(path, (prob.to_dict() for prob in problems))
