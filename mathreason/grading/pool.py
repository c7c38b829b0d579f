"""Grading entry points: :func:`grade` (one response) and :func:`grade_many` (a batch over a pool of
worker processes with per-item deadlines)."""

from __future__ import annotations

import json
import os
import selectors
import time
from collections import deque
from typing import Callable, Sequence

from mathreason.grading.compare import Clock, Deadline, grade_in_process
from mathreason.grading.extraction import _safe_extract
from mathreason.grading.supervisor import WORKER_GRACE_S, Worker, WorkerDied, _leaf_via_worker, _pool, _pool_lock
from mathreason.grading.verdict import Verdict, _short


def grade(response: str, gold: str, dataset: str, *, timeout: float = 5.0) -> Verdict:
    """Grade one response against a gold answer. Never raises.

    Args:
        response: a whole solution or a bare answer.
        gold: the gold answer: bare LaTeX (no ``$`` needed), a boxed answer, or a reference solution.
        dataset: ``"gsm8k"`` or ``"math"`` (any name starting with ``gsm`` grades like GSM8K).
        timeout: seconds allowed for the comparison (the worker start-up, once per process, is not
            counted). Past it the verdict is ``Verdict(False, extracted, "timeout")``.
    """
    extracted = None
    try:
        if not isinstance(response, str) or not isinstance(gold, str):
            return Verdict(False, None, "error: response and gold must be strings")
        clock = Clock(time.monotonic() + float(timeout))
        return grade_in_process(response, gold, dataset, leaf=_leaf_via_worker(clock), clock=clock)
    except Deadline:
        return Verdict(False, _safe_extract(response, dataset), "timeout")
    except BaseException as e:  # noqa: BLE001 - a verdict never raises
        if isinstance(e, KeyboardInterrupt):
            raise
        return Verdict(False, extracted if extracted is not None else _safe_extract(response, dataset), f"error: {type(e).__name__}: {_short(e)}")


def default_workers() -> int:
    """Number of worker processes :func:`grade_many` starts by default: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except Exception:
        return max(1, os.cpu_count() or 1)


def grade_many(
    responses: Sequence[str],
    golds: Sequence[str],
    dataset: str | Sequence[str],
    *,
    workers: int | None = None,
    timeout: float = 5.0,
    chunksize: int = 16,
    progress: bool = False,
) -> list[Verdict]:
    """Grade many responses over worker processes; the order of the inputs is preserved.

    Each item has ``timeout`` seconds inside its worker (a soft timer), and the worker is killed and
    replaced if it overruns that by more than a grace second; only that item is lost
    (``Verdict(False, extracted, "timeout")``). A worker that dies yields ``"error: ..."`` for its
    current item and the rest of its queue is re-sent to another worker. ``workers=None`` uses one
    worker per available CPU; ``workers=0`` grades the items one by one with :func:`grade` (cheap paths in
    this process, the symbolic leaf in the single worker; for debugging). Workers stay alive between
    calls (see :func:`shutdown_workers`).
    """
    n = len(responses)
    if len(golds) != n:
        raise ValueError(f"grade_many: {n} responses but {len(golds)} golds")
    datasets = [dataset] * n if isinstance(dataset, str) else list(dataset)
    if len(datasets) != n:
        raise ValueError(f"grade_many: {n} responses but {len(datasets)} dataset names")
    if n == 0:
        return []
    if workers == 0:
        return [_grade_in_process_safe(r, g, d, timeout) for r, g, d in zip(responses, golds, datasets)]
    results: list[Verdict | None] = [None] * n
    todo: list[int] = []
    for i in range(n):
        if not isinstance(responses[i], str) or not isinstance(golds[i], str):
            results[i] = Verdict(False, None, "error: response and gold must be strings")
        else:
            todo.append(i)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415

            bar = tqdm(total=n, desc="grading", initial=n - len(todo))
        except Exception:
            bar = None
    requests = [
        {"id": i, "op": "grade", "args": [responses[i], golds[i], str(datasets[i])], "timeout": float(timeout)}
        for i in todo
    ]
    nworkers = max(1, min(workers or default_workers(), (len(todo) + chunksize - 1) // max(1, chunksize)))

    def on_result(req: dict, msg: dict | None, failure: str | None) -> None:
        i = req["id"]
        if msg is not None and isinstance(msg.get("verdict"), dict):
            results[i] = Verdict.from_dict(msg["verdict"])
        else:
            why = failure or (msg or {}).get("error") or "no verdict"
            reason = "timeout" if why == "timeout" else (why if why.startswith("error") else f"error: {why}")
            results[i] = Verdict(False, _safe_extract(responses[i], datasets[i]), reason)
        if bar is not None:
            bar.update(1)

    try:
        if requests:
            run_pool(requests, nworkers, timeout + WORKER_GRACE_S, on_result, chunksize=chunksize)
        for i in range(n):  # only when no worker process could be started at all
            if results[i] is None:
                results[i] = _grade_in_process_safe(responses[i], golds[i], datasets[i], timeout)
    finally:
        if bar is not None:
            bar.close()
    return [r if r is not None else Verdict(False, None, "error: not graded") for r in results]


def run_pool(
    requests: list[dict],
    nworkers: int,
    hard_timeout: float,
    on_result: Callable[[dict, dict | None, str | None], None],
    *,
    chunksize: int = 16,
) -> None:
    """Run ``requests`` (worker protocol messages with unique ``id``) over ``nworkers`` worker processes.

    ``on_result(request, reply, None)`` is called once per request with the worker's reply, or
    ``on_result(request, None, failure)`` when the request ran past ``hard_timeout`` seconds
    (``failure == "timeout"``) or its worker died (``"error: ..."``). A worker is busy with the first
    request of its queue from the moment the previous reply arrived (or the queue was filled); a
    killed or dead worker is replaced and the rest of its queue is sent again. Requests left when no
    worker can be started are reported as ``"error: no grading worker"``.
    """
    pending: deque[dict] = deque(requests)
    left = [len(requests)]
    done: set = set()

    def report(req: dict, msg: dict | None, failure: str | None) -> None:
        if req["id"] in done:
            return
        done.add(req["id"])
        left[0] -= 1
        on_result(req, msg, failure)

    with _pool_lock:
        live: list[Worker] = []
        while _pool and len(live) < nworkers:
            w = _pool.pop()
            if w.alive() and not w.buf and not w.outbuf:
                live.append(w)
            else:
                w.kill()
        while len(live) < nworkers:
            try:
                live.append(Worker())
            except Exception:
                break
        sel = selectors.DefaultSelector()
        max_inflight = max(1, chunksize) * 2
        inflight: dict[int, deque[dict]] = {}

        def register(w: Worker) -> None:
            inflight[id(w)] = deque()
            sel.register(w.fd, selectors.EVENT_READ, w)

        def replace(w: Worker, failure: str) -> None:
            try:
                sel.unregister(w.fd)
            except Exception:
                pass
            w.kill()
            q = inflight.pop(id(w), deque())
            if q:
                report(q.popleft(), None, failure)
                for req in reversed(q):
                    pending.appendleft(req)
            live.remove(w)
            if pending or any(inflight.values()):
                try:
                    nw = Worker()
                except Exception:
                    return
                live.append(nw)
                register(nw)

        for w in live:
            register(w)
        try:
            while left[0] > 0 and live:
                now = time.monotonic()
                for w in list(live):
                    q = inflight[id(w)]
                    if len(q) < chunksize and pending:
                        if not q:
                            w.item_started = now
                        while pending and len(q) < max_inflight:
                            req = pending.popleft()
                            q.append(req)
                            w.queue(req)
                    try:
                        w.flush_some()
                    except WorkerDied as e:
                        replace(w, f"error: {e}")
                busy = [w for w in live if inflight.get(id(w))]
                if not busy:
                    if not pending:
                        break
                    continue
                wait = min(w.item_started + hard_timeout for w in busy) - time.monotonic()
                if any(w.outbuf for w in busy):
                    wait = min(wait, 0.02)
                for key, _ in sel.select(timeout=max(0.0, wait)):
                    w = key.data
                    if w not in live:
                        continue
                    try:
                        w.read_some()
                    except WorkerDied as e:
                        replace(w, f"error: {e}")
                        continue
                    q = inflight[id(w)]
                    while True:
                        line = w.pop_line()
                        if line is None:
                            break
                        try:
                            msg = json.loads(line)
                        except ValueError:
                            continue
                        if q and msg.get("id") == q[0]["id"]:
                            report(q.popleft(), msg, None)
                            w.item_started = time.monotonic()
                        elif q and msg.get("id") is None and msg.get("error"):
                            report(q.popleft(), None, f"error: {msg['error']}")
                            w.item_started = time.monotonic()
                now = time.monotonic()
                for w in list(live):
                    if inflight.get(id(w)) and now - w.item_started > hard_timeout:
                        replace(w, "timeout")
        finally:
            sel.close()
            for w in live:
                if w.alive() and not inflight.get(id(w)) and not w.outbuf and not w.buf:
                    _pool.append(w)
                else:
                    w.kill()
    for req in list(pending):
        report(req, None, "error: no grading worker")


def _grade_in_process_safe(response, gold, dataset, timeout) -> Verdict:
    """:func:`grade` of one item, with the type check of :func:`grade_many`."""
    if not isinstance(response, str) or not isinstance(gold, str):
        return Verdict(False, None, "error: response and gold must be strings")
    return grade(response, gold, dataset, timeout=timeout)
