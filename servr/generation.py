"""A generation as the routes see it: queued, run on the worker thread, streamed back as events.

The worker side walks the engine's tokens, cuts the text at the first stop string (holding back
text that may be the start of one), and posts events to the request's event loop. The async
side reads them; leaving the read early (client gone) sets the job's cancel flag, which the
engine checks between tokens, so the model is free again within a token or two.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Union

from servr.engines.base import Engine, PromptProgress, SamplingParams, TokenLogprob
from servr.errors import APIError
from servr.metrics import ServerMetrics
from servr.scheduler import QueueFull, Scheduler

log = logging.getLogger(__name__)
request_log = logging.getLogger("servr.requests")  # one line per generation; boot/serve shows it


@dataclass(frozen=True)
class Delta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # stop | length | cancelled
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: APIError


@dataclass(frozen=True)
class Progress:
    """Prompt processing has come this far (only for streams that asked for it)."""

    progress: PromptProgress


Event = Union[Delta, Finished, Failed, Progress]


class StopMatcher:
    """Cuts streamed text at the first stop string; holds back a tail that may begin one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to send now, whether a stop string was found)."""
        if not self.stops:
            return text, False
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i != -1]
        if hits:
            self._held = ""
            return buf[: min(hits)], True
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:k]):
                    keep = max(keep, k)
                    break
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def _internal(exc: Exception) -> Failed:
    return Failed(APIError(500, f"generation failed ({type(exc).__name__}: {exc}); retrying will not help",
                           type="server_error", code="internal_error", headers={"x-should-retry": "false"}))


def run_generation(engine: Engine, prompt: list[int], params: SamplingParams, stops: list[str],
                   cancel: threading.Event, emit: Callable[[Event], None], *, progress: bool = False) -> None:
    """Worker side: generate and post events; every outcome ends with exactly one Finished or Failed.

    ``progress``: post :class:`Progress` events while the prompt is processed (engines that can).
    Each generation that starts is logged as one line on ``servr.requests``.
    """
    started = time.perf_counter()
    try:
        if progress and engine.reports_progress:
            gen = engine.generate(prompt, params, cancel, progress=lambda p: emit(Progress(p)))  # type: ignore[call-arg]
        else:
            gen = engine.generate(prompt, params, cancel)
    except ValueError as exc:
        emit(Failed(APIError(400, str(exc))))
        return
    except Exception as exc:  # a failure inside the engine: report it, keep serving
        log.exception("generation failed to start")
        emit(_internal(exc))
        return
    matcher = StopMatcher(stops)
    finish = None
    first: float | None = None
    try:
        for step in gen.steps:
            if first is None:
                first = time.perf_counter()
            text, stopped = matcher.push(step.text)
            if text or step.logprob is not None:
                emit(Delta(text, (step.logprob,) if step.logprob is not None else ()))
            if stopped:
                finish = "stop"
                break
    except Exception as exc:
        log.exception("generation failed")
        emit(_internal(exc))
        return
    finally:
        gen.steps.close()  # type: ignore[attr-defined]
    if finish is None:
        rest = matcher.flush()
        if rest:
            emit(Delta(rest))
        finish = gen.finish_reason
    _log_request(gen, finish, started, first, time.perf_counter())
    emit(Finished(finish, gen.prompt_tokens, gen.cached_tokens, gen.completion_tokens))


def _log_request(gen: Any, finish: str, started: float, first: float | None, ended: float) -> None:
    """``prompt 2950 tokens (2900 cached, 50 processed at 81.2 t/s), 120 generated at 22.4 t/s, finish stop``."""
    if not request_log.isEnabledFor(logging.INFO):
        return
    processed = gen.prompt_tokens - gen.cached_tokens
    prompt_s = (first if first is not None else ended) - started
    decode_s = ended - first if first is not None else 0.0
    line = (f"prompt {gen.prompt_tokens} tokens ({gen.cached_tokens} cached, {processed} processed"
            + (f" at {processed / prompt_s:.1f} t/s" if prompt_s > 0 and processed else "") + f" in {prompt_s:.2f} s), "
            f"{gen.completion_tokens} generated"
            + (f" at {(gen.completion_tokens - 1) / decode_s:.1f} t/s" if decode_s > 0 and gen.completion_tokens > 1 else "")
            + f", finish {finish}")
    drafted = getattr(gen, "drafted", 0)
    if drafted:
        line += f", lookup {getattr(gen, 'accepted', 0)}/{drafted} drafted tokens accepted"
    request_log.info(line)


@dataclass
class GenerationStream:
    """One queued generation, read from the event loop with ``async for``."""

    scheduler: Scheduler
    engine: Engine
    prompt: list[int]
    params: SamplingParams
    stops: list[str]
    metrics: ServerMetrics
    progress: bool = False  # post Progress events while the prompt is processed
    arrived: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    _queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    _cancel: threading.Event | None = None
    _over: bool = False  # the generation ended (Finished or Failed read) or was abandoned

    def submit(self) -> None:
        """Queue the generation; a full queue is a 503 with ``Retry-After``."""
        loop = asyncio.get_running_loop()
        queue = self._queue
        started: list[float] = []

        def emit(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the loop is gone (server stopping): nobody is listening
                if self._cancel is not None:
                    self._cancel.set()

        def work(cancel: threading.Event) -> None:
            started.append(time.perf_counter())
            self.metrics.queue_wait.observe(started[0] - self.arrived)
            run_generation(self.engine, self.prompt, self.params, self.stops, cancel, emit, progress=self.progress)

        def skipped() -> None:  # cancelled while waiting: the reader still gets its one Finished
            emit(Finished("cancelled", len(self.prompt), 0, 0))

        try:
            job = self.scheduler.submit(work, skipped)
        except QueueFull as exc:
            raise APIError(503, f"The server is busy: {exc}. Retry after a few seconds.", type="server_error",
                           code="server_busy", headers={"Retry-After": "2"}) from None
        self._cancel = job.cancel

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def abandon(self) -> None:
        """Nobody will read the rest: cancel the generation and count it, unless it already ended.

        Safe to call any number of times. The route calls it after the response, whatever happened,
        because a body generator that never started never runs its own clean-up.
        """
        if self._over:
            return
        self._over = True
        self.metrics.cancelled.inc()  # counted before the worker can see the flag and free the model
        self.cancel()

    async def events(self) -> AsyncIterator[Event]:
        """Events until Finished or Failed; stopping the iteration early cancels the generation."""
        try:
            while True:
                event = await self._queue.get()
                if isinstance(event, Delta) and self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                    self.metrics.ttft.observe(self.first_token_at - self.arrived)
                if isinstance(event, (Finished, Failed)):
                    self._over = True
                if isinstance(event, Finished):
                    self._record(event)
                yield event
                if self._over:
                    return
        finally:
            self.abandon()

    def _record(self, event: Finished) -> None:
        if event.finish_reason == "cancelled":  # a non-streaming client that left (see watch_disconnect)
            self.metrics.cancelled.inc()
        self.metrics.prompt_tokens.inc(event.prompt_tokens)
        self.metrics.cached_tokens.inc(event.cached_tokens)
        self.metrics.completion_tokens.inc(event.completion_tokens)
        if self.first_token_at is not None and event.completion_tokens > 1:
            elapsed = time.perf_counter() - self.first_token_at
            if elapsed > 0:
                self.metrics.decode_rate.observe((event.completion_tokens - 1) / elapsed)


@dataclass(frozen=True)
class Collected:
    """A whole answer: its text, its logprobs and how it finished."""

    text: str
    logprobs: list[TokenLogprob]
    finished: Finished


async def collect(stream: GenerationStream) -> Collected:
    """Read ``stream`` to its end; a failed generation raises its ``APIError``."""
    pieces: list[str] = []
    logprobs: list[TokenLogprob] = []
    async for event in stream.events():
        if isinstance(event, Delta):
            pieces.append(event.text)
            logprobs.extend(event.logprobs)
        elif isinstance(event, Failed):
            raise event.error
        elif isinstance(event, Finished):
            return Collected("".join(pieces), logprobs, event)
    raise RuntimeError("the generation ended without Finished or Failed")  # events() always ends with one


async def watch_disconnect(receive: Callable[[], object], stream: GenerationStream) -> None:
    """Cancel ``stream`` when the client of a non-streaming request goes away."""
    while True:
        message = await receive()  # type: ignore[misc]
        if isinstance(message, dict) and message.get("type") == "http.disconnect":
            stream.cancel()
            return
