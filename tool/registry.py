"""The tool registry: what the model is offered, and how its calls are checked and run.

Tools come from two places: registered once (the built-in tools) and providers asked before
every model call (promoted skills), so a tool that appears on disk is offered on the next step.
A call is looked up among the tools *offered for that step*, its arguments are validated
against the tool's JSON schema, and it runs in a worker thread with a timeout, so a tool that
hangs cannot hang the loop. Every expected failure becomes an error :class:`ToolResult` with a
hint for the model; only a bug in the program raises.

Python cannot kill a thread, so stopping a call is the tool's part of the contract: a tool whose
callable takes a keyword argument ``cancel`` gets a :class:`threading.Event` of its own for each
call, set when the person interrupts the run (Ctrl-C) or when the call overruns its timeout. It
must then stop promptly (the code tools kill their whole sandbox) and may return a result saying
so, which the registry reports as interrupted. A tool without ``cancel`` that is interrupted or
overruns is abandoned (daemon thread) and reported as such.
"""

from __future__ import annotations

import inspect
import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import jsonschema
from jsonschema import Draft202012Validator

from core.errors import ToolArgumentError, ToolError, UnknownToolError
from core.messages import ToolCall
from core.tokens import CHARS_PER_TOKEN
from core.tools import Tool, ToolProvider, ToolResult


INTERRUPTED = "interrupted by the person before the tool finished"
#: how long an interrupted tool that takes ``cancel`` gets to stop and report what it did
STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class Outcome:
    """One executed call: its result and how long it took."""

    call: ToolCall
    result: ToolResult
    duration_s: float
    #: "" (ran and succeeded), "format" (unreadable, unknown tool, bad arguments: never ran),
    #: "failed" (the tool reported an error), "timeout", "interrupted"
    failure: str = ""

    @property
    def interrupted(self) -> bool:
        return self.failure == "interrupted"


def clip_text(text: str, max_tokens: int, *, hint: str | None = None) -> str:
    """``text`` cut to about ``max_tokens``: head and tail kept, a note in the middle.

    Cuts fall on line ends when the lines are short enough, so the model sees whole lines and
    the note can say which line numbers were left out.
    """
    budget = int(max_tokens * CHARS_PER_TOKEN)
    if len(text) <= budget:
        return text
    # the note takes room too (about 250 characters): the clipped text stays within max_tokens
    budget = max(budget - 260, budget // 2)
    lines = text.splitlines(keepends=True)
    head_chars = int(budget * 0.6)
    tail_chars = budget - head_chars
    head, used = [], 0
    for line in lines:
        if used + len(line) > head_chars:
            break
        head.append(line)
        used += len(line)
    tail, used = [], 0
    for line in reversed(lines[len(head):]):
        if used + len(line) > tail_chars:
            break
        tail.append(line)
        used += len(line)
    tail.reverse()
    omitted_lines = len(lines) - len(head) - len(tail)
    how = hint or "ask for a smaller part (for a file: read_file with a line range; for a search: a narrower pattern)"
    if head or tail:
        first = len(head) + 1
        last = len(lines) - len(tail)
        kept = "".join(head)
        if kept and not kept.endswith("\n"):
            kept += "\n"
        note = (f"[... lines {first}-{last} of {len(lines)} left out ({omitted_lines} lines, "
                f"{len(text) - len(''.join(head)) - len(''.join(tail))} characters) to fit the context; "
                f"to see them, {how} ...]\n")
        return kept + note + "".join(tail)
    # one long line (minified JSON, a log without newlines): cut by characters
    omitted = len(text) - head_chars - tail_chars
    return (text[:head_chars] + f"\n[... {omitted} characters left out to fit the context; to see them, {how} ...]\n"
            + text[len(text) - tail_chars:])


def signature(tool: Tool) -> str:
    """A one-line reminder of a tool's arguments: ``read_file(path: string, start_line?: integer)``."""
    props = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or ())
    parts = []
    for name, spec in props.items():
        kind = spec.get("type", "any") if isinstance(spec, Mapping) else "any"
        if isinstance(kind, list):
            kind = "|".join(map(str, kind))
        if isinstance(spec, Mapping) and "enum" in spec:
            kind = "|".join(json.dumps(v) for v in spec["enum"])
        parts.append(f"{name}{'' if name in required else '?'}: {kind}")
    return f"{tool.name}({', '.join(parts)})"


def _where(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return f"at '{path}': " if path else ""


def _coerce(arguments: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level strings that plainly mean a number or boolean the schema asks for, converted.

    Small models often write ``"start_line": "10"``; refusing that costs a whole step and
    teaches nothing. Anything not unambiguous is left for the validator to report.
    """
    props = schema.get("properties") or {}
    out = dict(arguments)
    for key, value in arguments.items():
        spec = props.get(key)
        if not isinstance(value, str) or not isinstance(spec, Mapping):
            continue
        kind = spec.get("type")
        text = value.strip()
        try:
            if kind == "integer" and text.lstrip("+-").isdigit():
                out[key] = int(text)
            elif kind == "number":
                number = float(text)
                if math.isfinite(number):
                    out[key] = number
            elif kind == "boolean" and text.lower() in ("true", "false"):
                out[key] = text.lower() == "true"
        except ValueError:
            pass
    return out


class ToolRegistry:
    """Registered tools plus dynamic providers; validates and runs calls."""

    def __init__(self, *, default_timeout_s: float = 120.0, result_tokens: int = 2000, max_workers: int = 4) -> None:
        self.default_timeout_s = default_timeout_s
        self.result_tokens = result_tokens
        self.max_workers = max(1, max_workers)
        self._tools: dict[str, Tool] = {}
        self._providers: list[ToolProvider] = []
        self._validators: dict[str, Draft202012Validator] = {}
        self._lock = threading.Lock()
        #: provider failures seen (reported once each through ``on_notice``)
        self.on_notice: Callable[[str], None] | None = None
        self._noticed: set[str] = set()

    # --- what is offered ---------------------------------------------------------------------

    def register(self, tool: Tool) -> None:
        """Add a tool; a second tool with the same name is a bug and raises ``ValueError``."""
        _check_tool(tool)
        with self._lock:
            if tool.name in self._tools:
                raise ValueError(f"a tool named {tool.name!r} is already registered")
            self._tools[tool.name] = tool

    def register_all(self, tools: Iterable[Tool]) -> None:
        for tool in tools:
            self.register(tool)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._tools.pop(name, None)

    def add_provider(self, provider: ToolProvider) -> None:
        """Add a source of tools asked before every model call (``provider.tools()``)."""
        with self._lock:
            self._providers.append(provider)

    def registered_names(self) -> set[str]:
        """The names of the registered tools (not the providers'): names a skill may not take."""
        with self._lock:
            return set(self._tools)

    def tools(self, task: str | None = None) -> list[Tool]:
        """The tools to offer for the next model call: registered ones first, then providers'.

        With ``task`` (the person's current request), a provider that has ``tools_for(task)`` is
        asked that instead, so it can offer what is relevant (the skill loader with many skills).
        A provider's tool whose name is taken is skipped (registered tools win), and a provider
        that raises is skipped: a broken skill folder must not stop the agent.
        """
        with self._lock:
            offered = dict(self._tools)
            providers = list(self._providers)
        for provider in providers:
            try:
                choose = getattr(provider, "tools_for", None) if task is not None else None
                found = list(choose(task) if choose is not None else provider.tools())
            except Exception as exc:  # a provider is someone else's code on someone else's files
                self._notice(f"tool provider {type(provider).__name__} failed: {exc}")
                continue
            for tool in found:
                if tool.name in offered:
                    self._notice(f"tool {tool.name!r} from {tool.source} ignored: the name is taken")
                    continue
                offered[tool.name] = tool
        return list(offered.values())

    def _notice(self, message: str) -> None:
        if message in self._noticed:
            return
        self._noticed.add(message)
        if self.on_notice is not None:
            self.on_notice(message)

    # --- checking a call ---------------------------------------------------------------------

    def lookup(self, name: str, offered: Sequence[Tool] | None = None) -> Tool:
        """The tool called ``name`` among ``offered`` (default: :meth:`tools`)."""
        pool = self.tools() if offered is None else offered
        for tool in pool:
            if tool.name == name:
                return tool
        names = ", ".join(sorted(t.name for t in pool)) or "none"
        raise UnknownToolError(f"there is no tool named {name!r}", hint=f"the tools you can call are: {names}")

    def validate(self, tool: Tool, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments, checked against the tool's schema; raises :class:`ToolArgumentError`."""
        args = _coerce(arguments, tool.parameters)
        validator = self._validator(tool)
        errors = sorted(validator.iter_errors(args), key=lambda e: (list(e.absolute_path), e.message))
        if not errors:
            return args
        lines = [f"{_where(e)}{_explain(e)}" for e in errors[:3]]
        if len(errors) > 3:
            lines.append(f"(and {len(errors) - 3} more)")
        raise ToolArgumentError(f"invalid arguments for {tool.name}: " + "; ".join(lines),
                                hint=f"call it as {signature(tool)}")

    def _validator(self, tool: Tool) -> Draft202012Validator:
        # keyed by the schema's text: providers may build new Tool objects each step
        key = json.dumps(tool.parameters, sort_keys=True, default=str)
        with self._lock:
            found = self._validators.get(key)
            if found is None:
                found = Draft202012Validator(dict(tool.parameters))
                self._validators[key] = found
        return found

    # --- running calls -----------------------------------------------------------------------

    def execute(self, call: ToolCall, offered: Sequence[Tool] | None = None, *,
                cancel: threading.Event | None = None, timeout_s: float | None = None) -> Outcome:
        """Run one call; every expected failure comes back as an error result."""
        start = time.monotonic()
        try:
            tool, args = self.prepare(call, offered)
        except (ToolArgumentError, UnknownToolError, ToolError) as exc:
            return Outcome(call, ToolResult.error(exc.message, exc.hint), time.monotonic() - start, "format")
        return self._run(call, tool, args, cancel, timeout_s, start)

    def prepare(self, call: ToolCall, offered: Sequence[Tool] | None = None) -> tuple[Tool, dict[str, Any]]:
        """The tool and validated arguments for ``call``; raises a :class:`ModelFacingError`."""
        if call.error:
            hint = None
            pool = self.tools() if offered is None else offered
            known = next((t for t in pool if t.name == call.name), None)
            if known is not None:
                hint = f"call it as {signature(known)} with the arguments as a JSON object"
            raise ToolArgumentError(f"the call{' of ' + call.name if call.name else ''} could not be read: "
                                    f"{call.error}", hint=hint)
        tool = self.lookup(call.name, offered)
        return tool, self.validate(tool, call.arguments)

    def execute_many(self, calls: Sequence[ToolCall], offered: Sequence[Tool] | None = None, *,
                     cancel: threading.Event | None = None,
                     on_start: Callable[[ToolCall], None] | None = None,
                     on_end: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Run the calls of one model reply, in order; runs of read-only calls go concurrently.

        ``on_start``/``on_end`` are called from this thread, in call order. Once ``cancel`` is
        set, the calls not started yet get an "interrupted" result without running.
        """
        pool = self.tools() if offered is None else list(offered)
        outcomes: list[Outcome] = []
        i = 0
        while i < len(calls):
            batch = [calls[i]]
            if self._is_read_only(calls[i], pool):
                while (i + len(batch) < len(calls) and len(batch) < self.max_workers
                       and self._is_read_only(calls[i + len(batch)], pool)):
                    batch.append(calls[i + len(batch)])
            i += len(batch)
            for call in batch:
                if on_start is not None:
                    on_start(call)
            if cancel is not None and cancel.is_set():
                done = [Outcome(c, _interrupted_result(), 0.0, "interrupted") for c in batch]
            elif len(batch) == 1:
                done = [self.execute(batch[0], pool, cancel=cancel)]
            else:
                done = self._execute_concurrently(batch, pool, cancel)
            for outcome in done:
                outcomes.append(outcome)
                if on_end is not None:
                    on_end(outcome)
        return outcomes

    def _is_read_only(self, call: ToolCall, pool: Sequence[Tool]) -> bool:
        return not call.error and any(t.name == call.name and t.read_only for t in pool)

    def _execute_concurrently(self, batch: Sequence[ToolCall], pool: Sequence[Tool],
                              cancel: threading.Event | None) -> list[Outcome]:
        results: list[Outcome | None] = [None] * len(batch)
        crashed: list[BaseException] = []

        def work(k: int) -> None:
            try:
                results[k] = self.execute(batch[k], pool, cancel=cancel)
            except BaseException as exc:  # re-raised in the loop's thread below
                crashed.append(exc)

        threads = [threading.Thread(target=work, args=(k,), daemon=True, name=f"tool-batch-{k}")
                   for k in range(len(batch))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()  # each execute() is itself bounded by its timeout
        if crashed:
            raise crashed[0]
        return [r for r in results if r is not None]

    def _run(self, call: ToolCall, tool: Tool, args: dict[str, Any], cancel: threading.Event | None,
             timeout_s: float | None, start: float) -> Outcome:
        limit = timeout_s or tool.timeout_s or self.default_timeout_s
        box: dict[str, Any] = {}
        finished = threading.Event()
        # the tool's own event: set on the run's cancel and on this call's timeout, never shared
        stop = threading.Event() if takes_cancel(tool) and "cancel" not in args else None
        if stop is not None:
            args = {**args, "cancel": stop}

        def work() -> None:
            try:
                box["value"] = tool.fn(**args)
            except BaseException as exc:  # handed to the loop thread, which sorts it below
                box["error"] = exc
            finally:
                finished.set()

        worker = threading.Thread(target=work, daemon=True, name=f"tool-{tool.name}")
        try:
            # start() inside: it waits for the thread, and a Ctrl-C during that wait must stop the tool too
            worker.start()
            return self._wait(call, tool, limit, start, box, finished, cancel, stop)
        except BaseException:  # KeyboardInterrupt in this thread: the tool must not run on unattended
            if stop is not None:
                stop.set()
            raise

    def _wait(self, call: ToolCall, tool: Tool, limit: float, start: float, box: dict[str, Any],
              finished: threading.Event, cancel: threading.Event | None, stop: threading.Event | None) -> Outcome:
        """The outcome once the worker has finished, the call overran ``limit``, or ``cancel`` was set."""
        deadline = start + limit
        interrupted = False
        while not finished.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if stop is not None:
                    stop.set()  # the tool kills what it started instead of leaving it running
                return Outcome(call, ToolResult.error(
                    f"{tool.name} did not finish within {limit:g} s and was "
                    + ("stopped" if stop is not None else "abandoned"),
                    hint="do less in one call (a smaller file, a narrower search, a quicker command)"),
                    time.monotonic() - start, "timeout")
            if cancel is not None and cancel.is_set():
                if stop is None:
                    return Outcome(call, _interrupted_result(), time.monotonic() - start, "interrupted")
                stop.set()
                interrupted = True
                # the tool stops its process and says what it had done by then
                if not finished.wait(STOP_GRACE_S):
                    return Outcome(call, _interrupted_result(), time.monotonic() - start, "interrupted")
                break
            # short waits also let a KeyboardInterrupt in this thread through (a lock wait hides it)
            finished.wait(min(remaining, 0.05))
        duration = time.monotonic() - start
        if "error" in box:
            exc = box["error"]
            if isinstance(exc, (ToolError, ToolArgumentError, UnknownToolError)):
                return Outcome(call, ToolResult.error(exc.message, exc.hint), duration,
                               "interrupted" if interrupted else "failed")
            if isinstance(exc, KeyboardInterrupt):
                return Outcome(call, _interrupted_result(), duration, "interrupted")
            raise exc  # a bug in the tool or the program: the person must see it
        result = self._finish(tool, box.get("value"))
        if interrupted:
            return Outcome(call, result, duration, "interrupted")
        return Outcome(call, result, duration, "" if result.ok else "failed")

    def _finish(self, tool: Tool, value: Any) -> ToolResult:
        if isinstance(value, ToolResult):
            result = value
        elif isinstance(value, str):
            result = ToolResult(value)
        elif value is None:
            result = ToolResult("(no output)")
        else:
            raise TypeError(f"tool {tool.name!r} returned {type(value).__name__}; tools return str or ToolResult")
        clipped = clip_text(result.content, self.result_tokens)
        if clipped is result.content:
            return result
        return ToolResult(clipped, result.ok, result.summary, {**result.data, "clipped": True})


def takes_cancel(tool: Tool) -> bool:
    """Whether ``tool.fn`` takes the keyword argument ``cancel`` (and no argument of the model is named so)."""
    if "cancel" in (tool.parameters.get("properties") or {}):
        return False  # the model's argument wins; such a tool cannot be stopped early
    try:
        params = inspect.signature(tool.fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    found = params.get("cancel")
    return found is not None and found.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _interrupted_result() -> ToolResult:
    return ToolResult(f"Error: {INTERRUPTED}", ok=False, summary="interrupted", data={"interrupted": True})


def _explain(error: jsonschema.ValidationError) -> str:
    """A validation error in words a model acts on: which field, what was expected."""
    if error.validator == "required":
        return error.message.replace("is a required property", "is required but missing")
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted((error.schema.get("properties") or {}).keys())) or "none"
        return f"{error.message}; the allowed fields are: {allowed}"
    if error.validator == "type":
        return f"expected {error.validator_value}, got {json.dumps(error.instance)[:60]}"
    if error.validator == "enum":
        return f"expected one of {', '.join(json.dumps(v) for v in error.validator_value)}, got {json.dumps(error.instance)[:60]}"
    return error.message


def _check_tool(tool: Tool) -> None:
    if not tool.name or not tool.name.replace("_", "a").replace("-", "a").isalnum():
        raise ValueError(f"tool name {tool.name!r} must be letters, digits, '_' or '-'")
    try:
        Draft202012Validator.check_schema(dict(tool.parameters))
    except jsonschema.SchemaError as exc:
        raise ValueError(f"tool {tool.name!r} has an invalid JSON schema: {exc.message}") from None
    if tool.parameters.get("type") != "object":
        raise ValueError(f"tool {tool.name!r}: the parameters schema must be of type 'object'")
