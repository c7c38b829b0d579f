"""A grading worker process: ``python -m mathreason.grading.worker``.

It reads JSON requests from stdin and writes one JSON reply per line to stdout (see
:mod:`mathreason.grading.supervisor` for the parent side). It imports and warms math-verify, arms the
sandbox, then answers ``grade``/``sym`` requests under a soft timer; diagnostics ops (``ping``, ``stats``,
``sandbox_selftest``, ``sleep``, ``exit``) exist for the tests of the supervisor."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time

from mathreason.grading.compare import Clock, Deadline, grade_in_process
from mathreason.grading.extraction import _safe_extract
from mathreason.grading.sandbox import _SANDBOX, _on_alarm, _run_with_alarm, _sandbox_hook, _SoftTimeout
from mathreason.grading.symbolic import math_verify_equal
from mathreason.grading.verdict import Verdict, _short

_WORKER_MEMORY_BYTES = 4 << 30
"""Address-space limit of a worker process (a runaway expansion fails with MemoryError instead)."""


def _worker_handle(req: dict) -> dict:
    refused_before = _SANDBOX["refused"]
    out = _worker_handle_op(req)
    if _SANDBOX["refused"] != refused_before and req.get("op") in ("sym", "grade"):
        # the sandbox stopped something while this item was graded: fail closed and say so
        why = f"sandbox refused {_SANDBOX['last']}"
        if "verdict" in out:
            out["verdict"] = dict(out["verdict"], correct=False, reason=f"error: {why}")
        else:
            out = {"id": out.get("id"), "result": None, "reason": f"error: {why}"}
    return out


def _worker_handle_op(req: dict) -> dict:
    op = req.get("op")
    timeout = float(req.get("timeout") or 0)
    if op == "sym":
        g, p = req["args"]
        try:
            res = _run_with_alarm(lambda: math_verify_equal(g, p), timeout)
            return {"id": req["id"], "result": bool(res)}
        except _SoftTimeout:
            return {"id": req["id"], "result": None, "reason": "timeout"}
        except BaseException as e:  # noqa: BLE001 - everything becomes a verdict
            return {"id": req["id"], "result": None, "reason": f"error: {type(e).__name__}"}
    if op == "grade":
        response, gold, dataset = req["args"]
        clock = Clock(time.monotonic() + timeout if timeout > 0 else None)
        try:
            v = _run_with_alarm(lambda: grade_in_process(response, gold, dataset, leaf=math_verify_equal, clock=clock), timeout)
        except (_SoftTimeout, Deadline):
            v = Verdict(False, _safe_extract(response, dataset), "timeout")
        except BaseException as e:  # noqa: BLE001
            v = Verdict(False, _safe_extract(response, dataset), f"error: {type(e).__name__}: {_short(e)}")
        return {"id": req["id"], "verdict": v.to_dict()}
    if op == "ping":
        return {"id": req.get("id"), "pong": True}
    if op == "stats":
        return {"id": req.get("id"), "sandbox": dict(_SANDBOX)}
    if op == "sandbox_selftest":  # diagnostics: show that the sandbox refuses eval and file writes
        out = {}
        for name, fn in (("eval", lambda: eval("1 + 1")), ("write", lambda: open(req["path"], "w").close())):
            try:
                fn()
                out[name] = "allowed"
            except (RuntimeError, PermissionError) as e:
                out[name] = f"refused: {e}"
        return {"id": req.get("id"), "selftest": out}
    if op == "sleep":  # diagnostics: a worker that stops answering (tests of the supervisor)
        time.sleep(float(req.get("seconds", 0)))
        return {"id": req.get("id"), "slept": True}
    if op == "exit":  # diagnostics: a worker that dies mid-queue
        os._exit(int(req.get("code", 3)))
    return {"id": req.get("id"), "error": f"unknown op {op!r}"}


def _worker_main() -> None:  # pragma: no cover - runs in a subprocess
    """Entry point of a grading worker: JSON requests on stdin, one JSON result per line on stdout."""
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the protocol stream
    sys.stdout = sys.stderr
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY_BYTES, _WORKER_MEMORY_BYTES))
    except Exception:
        pass
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.disable(logging.WARNING)
    sys.addaudithook(_sandbox_hook)
    for g, p in (("\\frac{1}{2}", "0.5"), ("x^{2}-1", "(x-1)(x+1)"), ("[0,1)", "(0,1]"), ("\\{1,2\\}", "\\{2,1\\}")):
        math_verify_equal(g, p)  # import and warm math-verify before saying ready
    _SANDBOX["armed"] = True
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            out = _worker_handle(req)
        except BaseException as e:  # noqa: BLE001
            out = {"id": None, "error": f"{type(e).__name__}: {_short(e)}"}
        proto.write(json.dumps(out) + "\n")


if __name__ == "__main__":  # pragma: no cover - runs in a subprocess
    _worker_main()
