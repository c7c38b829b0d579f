"""The outcome of grading one response, and the grading family of a dataset name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Outcome of grading one response.

    ``correct``: the extracted answer is equivalent to the gold answer. ``extracted``: the answer found
    in the response (``None`` if none was found or grading failed before extraction). ``reason``: how
    the decision was reached (``"normalized match"``, ``"numeric mismatch"``, ``"symbolic match"``,
    ``"no answer found"``, ``"timeout"``, ``"error: ..."``, ...).
    """

    correct: bool
    extracted: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"correct": self.correct, "extracted": self.extracted, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        return cls(bool(d["correct"]), d.get("extracted"), str(d.get("reason", "")))


def dataset_family(dataset: str | None) -> str:
    """Grading family of a dataset name: ``"gsm8k"`` for names starting with ``gsm``, else ``"math"``."""
    name = (dataset or "").strip().lower()
    return "gsm8k" if name.startswith("gsm") else "math"


def _short(e: BaseException) -> str:
    """A short, never-raising description of an exception (for ``"error: ..."`` reasons)."""
    try:
        return str(e)[:200]
    except Exception:
        return "?"
