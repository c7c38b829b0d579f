"""Worker processes, parent side: start, talk to, kill and reuse sandboxed grading workers."""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from mathreason.grading.compare import Clock, Deadline
from mathreason.grading.sandbox import _on_alarm, _run_with_alarm, _SoftTimeout
from mathreason.grading.symbolic import math_verify_equal

WORKER_GRACE_S = 1.0
"""Extra seconds a worker gets past the soft timeout before it is killed."""
_WORKER_STARTUP_S = 180.0
"""Longest wait for a fresh worker process to import sympy/math-verify (the CI machine is slow)."""
WORKER_MODULE = "mathreason.grading.worker"
"""A worker process runs ``python -m`` this module."""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
"""The folder holding this ``mathreason`` package: a worker imports the same code as its parent."""


class WorkerDied(Exception):
    """The worker process exited or closed its pipes."""


class Worker:
    """One grading worker process speaking JSON lines over pipes (parent side)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.update(
            OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        # the worker must import this very package (not another install of it): its folder goes first
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT] + paths)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self.owner_pid = os.getpid()
        self.fd = self.proc.stdout.fileno()
        self.buf = b""
        self.outbuf = b""
        self.item_started = 0.0
        try:
            line = self.readline(time.monotonic() + _WORKER_STARTUP_S)
        except WorkerDied:
            line = None
        if line is None or not json.loads(line).get("ready"):
            self.kill()
            raise RuntimeError("grading worker failed to start")
        os.set_blocking(self.proc.stdin.fileno(), False)

    def alive(self) -> bool:
        """Running, and started by this process (a forked child must not share its parent's pipes)."""
        return self.owner_pid == os.getpid() and self.proc.poll() is None

    def kill(self) -> None:
        if self.owner_pid != os.getpid():
            return  # inherited through fork: the parent owns it
        try:
            self.proc.kill()
        except Exception:
            pass
        try:
            self.proc.wait(timeout=5)
        except Exception:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass

    def pop_line(self) -> bytes | None:
        nl = self.buf.find(b"\n")
        if nl < 0:
            return None
        line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
        return line

    def read_some(self) -> None:
        data = os.read(self.fd, 1 << 16)
        if not data:
            raise WorkerDied(f"worker exited with code {self.proc.poll()}")
        self.buf += data

    def readline(self, deadline: float) -> bytes | None:
        """Next line, or ``None`` at the deadline; raises :class:`WorkerDied` on EOF."""
        while True:
            line = self.pop_line()
            if line is not None:
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                self.read_some()

    def queue(self, obj: dict) -> None:
        self.outbuf += (json.dumps(obj) + "\n").encode()

    def flush_some(self) -> None:
        if not self.outbuf:
            return
        try:
            n = os.write(self.proc.stdin.fileno(), self.outbuf[: 1 << 16])
        except BlockingIOError:
            return
        except (BrokenPipeError, OSError) as e:
            raise WorkerDied(f"worker pipe closed: {e}") from e
        self.outbuf = self.outbuf[n:]

    def call(self, obj: dict, deadline: float) -> dict | None:
        """Send one request and wait for its answer; ``None`` at the deadline (the worker is then
        killed by the caller)."""
        self.queue(obj)
        while self.outbuf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            _, w, _ = select.select([], [self.proc.stdin.fileno()], [], remaining)
            if w:
                self.flush_some()
        line = self.readline(deadline)
        return None if line is None else json.loads(line)


_single_lock = threading.Lock()
_single: Worker | None = None
_pool: list[Worker] = []
_pool_lock = threading.Lock()
_req_counter = 0


def _get_single() -> Worker:
    global _single
    if _single is None or not _single.alive():
        if _single is not None:
            _single.kill()  # reaps a dead worker; a no-op for one inherited through fork
        _single = Worker()
    return _single


def current_worker() -> Worker | None:
    """The worker process that :func:`mathreason.grading.grade` uses in this process (``None`` before the
    first symbolic comparison, or after :func:`shutdown_workers`)."""
    return _single


def shutdown_workers() -> None:
    """Stop every grading worker process this process started (they also stop when it exits)."""
    global _single
    with _single_lock:
        if _single is not None:
            _single.kill()
            _single = None
    with _pool_lock:
        while _pool:
            _pool.pop().kill()


atexit.register(shutdown_workers)


def _leaf_via_worker(clock: Clock) -> Callable[[str, str], bool]:
    def leaf(g: str, p: str) -> bool:
        global _single, _req_counter
        with _single_lock:
            t0 = time.monotonic()
            try:
                worker = _get_single()
            except Exception as e:  # cannot start processes here: fall back to an in-process timer
                return _leaf_in_process(g, p, clock.deadline, e)
            clock.deadline += time.monotonic() - t0  # starting a worker is not comparison time
            deadline = clock.deadline
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Deadline()
            _req_counter += 1
            try:
                out = worker.call({"id": _req_counter, "op": "sym", "args": [g, p], "timeout": remaining}, deadline + WORKER_GRACE_S)
            except WorkerDied:
                worker.kill()
                _single = None
                raise RuntimeError("grading worker died")
            if out is None:
                worker.kill()
                _single = None
                raise Deadline()
        if out.get("result") is None:
            if out.get("reason") == "timeout":
                raise Deadline()
            raise RuntimeError(out.get("reason") or out.get("error") or "worker error")
        return bool(out["result"])

    return leaf


def _leaf_in_process(g: str, p: str, deadline: float, why: Exception) -> bool:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"no grading worker ({why}) and not in the main thread")
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        return bool(_run_with_alarm(lambda: math_verify_equal(g, p), max(0.01, deadline - time.monotonic())))
    except _SoftTimeout:
        raise Deadline()
    finally:
        signal.signal(signal.SIGALRM, old)
