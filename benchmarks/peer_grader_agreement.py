"""How often our grader agrees with a peer grader's own test expectations (Math-Verify).

Math-Verify's test suite states, for each ``(gold, pred)`` pair, whether the two are equivalent. This
script reads those parametrised cases from a local checkout of its tests (nothing of theirs is copied
into this repository), grades every ``pred`` against its ``gold`` with :func:`mathreason.grading.grade_many`
(MATH rules) and reports how many verdicts agree with the stated expectation, listing every
disagreement. The cases are read with :mod:`ast`: only literals (and f-strings formatting a ``math``
function of a literal) are evaluated; nothing in the files is executed.

Many disagreements are conventions (Math-Verify accepts ``1,22 == 1.22``, reads ``1 + 1/e`` and
``1 - 1/e`` as equal with its symbol-blind rule, etc.), so the number to watch is how it moves.

Usage::

    python benchmarks/peer_grader_agreement.py /path/to/Math-Verify/tests --out peer_grader_agreement.json
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mathreason.grading import grade_many  # noqa: E402


def _literal(node: ast.AST):
    """``ast.literal_eval`` plus f-strings whose fields are literals or ``math.<fn>(literals)``."""
    if isinstance(node, ast.JoinedStr):
        out = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value))
                continue
            value = _literal(part.value)
            spec = _literal(part.format_spec) if part.format_spec is not None else ""
            out.append(format(value, spec))
        return "".join(out)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "math"
        and callable(getattr(math, node.func.attr, None))
    ):
        return getattr(math, node.func.attr)(*[_literal(a) for a in node.args])
    if isinstance(node, (ast.Tuple, ast.List)):
        return [_literal(e) for e in node.elts]
    return ast.literal_eval(node)


def load_cases(tests: Path) -> list[dict]:
    """Every parametrised ``(gold, pred, expected)`` case in the ``test_*.py`` files under ``tests``."""
    files = sorted(tests.glob("test_*.py")) if tests.is_dir() else [tests]
    cases = []
    for f in files:
        tree = ast.parse(f.read_text(encoding="utf-8"), filename=str(f))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for dec in fn.decorator_list:
                if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize" and len(dec.args) >= 2):
                    continue
                names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
                if "gold" not in names or "pred" not in names:
                    continue
                key = "expected" if "expected" in names else "result" if "result" in names else None
                if key is None:
                    continue
                for k, row in enumerate(_literal(dec.args[1])):
                    d = dict(zip(names, row))
                    cases.append(
                        {"where": f"{f.name}::{fn.name}[{k}]", "gold": d["gold"], "pred": d["pred"], "expected": bool(d[key])}
                    )
    return cases


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tests", type=Path, help="Math-Verify's tests/ folder (or one test file)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    cases = load_cases(args.tests)
    t = time.perf_counter()
    verdicts = grade_many([c["pred"] for c in cases], [c["gold"] for c in cases], "math", workers=args.workers, timeout=args.timeout)
    elapsed = time.perf_counter() - t
    disagree = [
        {**c, "ours": v.correct, "extracted": v.extracted, "reason": v.reason, "gold": c["gold"][:300], "pred": c["pred"][-300:]}
        for c, v in zip(cases, verdicts)
        if v.correct != c["expected"]
    ]
    report = {
        "benchmark": "peer_grader_agreement",
        "cases": len(cases),
        "agree": len(cases) - len(disagree),
        "agreement": round((len(cases) - len(disagree)) / max(1, len(cases)), 4),
        "we_accept_they_reject": sum(d["ours"] for d in disagree),
        "we_reject_they_accept": sum(not d["ours"] for d in disagree),
        "disagreements": disagree,
        "seconds": round(elapsed, 1),
    }
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
