"""One model, one generation at a time: a bounded FIFO queue served by one worker thread.

Inference blocks (C code holding the model), so it never runs on the event loop. Requests wait
in arrival order; when ``capacity`` are already waiting, :meth:`Scheduler.submit` raises
:class:`QueueFull` (the route answers 503 with ``Retry-After``). Every job carries a cancel flag:
a job cancelled while waiting is skipped (its ``skipped`` callback runs instead, so whoever waits
on it hears of it), a running one sees the flag between tokens.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """Too many requests are already waiting for the model."""


@dataclass
class Job:
    """A unit of work for the model: ``work(cancel)`` runs on the worker thread."""

    work: Callable[[threading.Event], None]
    skipped: Callable[[], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class Scheduler:
    """Runs jobs one at a time in submission order on its own thread (started on first use)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._waiting: deque[Job] = deque()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.running: Job | None = None

    @property
    def depth(self) -> int:
        """Jobs waiting (not counting the one running)."""
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        return self.running is not None

    def submit(self, work: Callable[[threading.Event], None], skipped: Callable[[], None] | None = None) -> Job:
        """Queue ``work``; ``skipped`` runs on the worker instead when the job was cancelled while waiting."""
        job = Job(work, skipped)
        with self._lock:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) >= self.capacity:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting for the model")
            self._waiting.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="model-worker", daemon=True)
                self._thread.start()
            self._lock.notify()
        return job

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if self._closed and not self._waiting:
                    return
                job = self._waiting.popleft()
                self.running = job
            try:
                if not job.cancel.is_set():
                    job.work(job.cancel)
                elif job.skipped is not None:
                    job.skipped()
            except Exception:  # the job reports its own failures; this is a bug in it
                log.exception("model job failed")
            finally:
                self.running = None
                job.done.set()

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything and stop the worker (waits up to ``timeout`` for the running job)."""
        with self._lock:
            self._closed = True
            for job in self._waiting:
                job.cancel.set()
            if self.running is not None:
                self.running.cancel.set()
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
