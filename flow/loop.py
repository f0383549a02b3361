"""The agent loop: ``run → step → query → execute``.

Each step checks the budgets (interruption, steps, wall time, tokens), builds a request that fits
the context (``flow/context.py``, compacting when it must), asks the model, records its reply,
then runs the tool calls and records their results. The assistant message with its calls is
written before any result, and every call gets exactly one result, even when the run ends in
the middle (Ctrl-C, a crash repaired on the next load), so a strict server accepts the session
when it is resumed.

Every way out is a :class:`flow.events.RunResult` with a status from ``RUN_STATUSES``: the model
answered without tool calls (``done``), a budget was spent, the person interrupted, the model kept
making malformed or identical failing calls (``format_errors``), or the model server failed in a
way its retries could not fix (``error``). Only :class:`core.errors.FatalError` (no server, a bad
setting) propagates, for the CLI to print.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence, Union

from core.errors import BudgetExceeded, ConfigError, ContextOverflow, FormatErrorLimit, GatewayError, Interrupted, RunEnded
from core.gateway import ModelGateway, StreamEvent
from core.messages import Completion, Message, ToolCall, Usage
from core.toolparse import parse_tool_calls
from core.tools import Tool, ToolResult, object_schema
from flow.compaction import Compactor
from flow.context import ContextBudget, Request, reply_budget
from flow.events import AgentEvents, RunResult, ToolCallRecord
from flow.toolset import CORE, choose_tools
from flow.prompt import PromptSection, environment_prompt, gather_sections, system_prompt
from store.sessions import SessionStore, StoredMessage
from tool.registry import Outcome, ToolRegistry

if TYPE_CHECKING:  # flow does not depend on boot; the settings object is only passed in
    from boot.settings import Settings

#: context assumed when neither the setting nor the server says (small enough to be safe)
DEFAULT_CONTEXT = 8192
#: replies in a row whose every call was unreadable, unknown or badly formed
FORMAT_ERROR_LIMIT = 3
#: times the same call may fail the same way before the run ends
REPEAT_LIMIT = 3

INTERRUPTED_BY_PERSON = "Error: interrupted by the person before the tool finished"

#: offered when calls are constrained (``tool_choice="required"``): how the model ends its turn
FINAL_ANSWER = Tool(
    "final_answer",
    "Finish your turn: give the person your answer, or say briefly what you changed. Call it only when the "
    "task is done (or you need the person to answer a question).",
    object_schema({"answer": {"type": "string", "description": "what to tell the person, in plain words"}},
                  ["answer"]),
    lambda answer: ToolResult(answer),
    read_only=True,
)


class _Submitted(Exception):
    """The model answered without tool calls."""

    def __init__(self, answer: str) -> None:
        super().__init__(answer)
        self.answer = answer


@dataclass(frozen=True)
class Finished:
    """What a verifier (the judge) is shown when the model says it is done."""

    answer: str
    task: str
    session_id: str
    tool_calls: tuple[ToolCallRecord, ...]  # every call of this run so far, in order
    cancel: threading.Event
    started_at: float = 0.0  # wall-clock time (``time.time()``) the run started: names the run, dates its changes


#: ``finished -> None`` accepts the answer; a string goes back to the model and the run goes on.
#: To end the run with another status, raise a :class:`core.errors.RunEnded` whose ``status`` is
#: one of ``RUN_STATUSES`` (the judge's ``checks_failed``).
Verifier = Callable[[Finished], Union[str, None]]

#: the share of the prompt budget tool descriptions may take before optional tools give way
TOOL_SHARE = 0.5


@dataclass
class _Run:
    """What one run knows about itself."""

    session_id: str
    task: str
    task_seq: int
    cancel: threading.Event
    started: float
    history: list[StoredMessage]
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    records: list[ToolCallRecord] = field(default_factory=list)
    answer: str = ""
    pending: dict[str, ToolCall] = field(default_factory=dict)
    format_errors: int = 0
    note: str = ""  # told to the model after this step's results
    failures: Counter[str] = field(default_factory=Counter)
    started_at: float = field(default_factory=time.time)  # wall clock, for the verifier


class Agent:
    """A coding agent: one gateway, one tool registry, one session store."""

    def __init__(self, gateway: ModelGateway, registry: ToolRegistry, sessions: SessionStore, settings: Settings,
                 events: AgentEvents | None = None,
                 system_prompt_extra: Union[PromptSection, Sequence[PromptSection], None] = None,
                 verifier: Verifier | None = None) -> None:
        self.gateway = gateway
        self.registry = registry
        self.sessions = sessions
        self.settings = settings
        self.events = events or AgentEvents()
        if system_prompt_extra is None:
            self.prompt_sections: list[PromptSection] = []
        elif callable(system_prompt_extra):
            self.prompt_sections = [system_prompt_extra]
        else:
            self.prompt_sections = list(system_prompt_extra)
        self.verifier = verifier
        self.format_error_limit = FORMAT_ERROR_LIMIT
        self.repeat_limit = REPEAT_LIMIT
        self._sized: tuple[ContextBudget, Compactor] | None = None
        self._provisional = False  # sized on DEFAULT_CONTEXT because the server did not say (yet)
        self._session: str | None = None
        self._tools_left_out: list[str] = []
        #: called by :meth:`close`, newest first (the Python REPL's process, the memory store, ...)
        self.closers: list[Callable[[], None]] = []

    def close(self) -> None:
        """Free what the agent holds: its tools' processes and stores, then the session store."""
        while self.closers:
            self.closers.pop()()
        self.sessions.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the context ---------------------------------------------------------------------------

    @property
    def context(self) -> ContextBudget:
        """The context budget, sized on first use (asking the server for its context length)."""
        return self._size()[0]

    @property
    def compactor(self) -> Compactor:
        return self._size()[1]

    def _size(self) -> tuple[ContextBudget, Compactor]:
        if self._sized is None:
            server = self.gateway.context_length()
            known = [n for n in (self.settings.ctx, server) if n]
            ctx = min(known) if known else DEFAULT_CONTEXT
            self._provisional = not known
            reply = reply_budget(ctx, self.settings.max_reply_tokens)
            budget = ContextBudget(self.gateway, context_length=ctx, reply_tokens=reply,
                                   tool_result_tokens=self.settings.tool_result_tokens)
            compactor = Compactor(self.gateway, limit_tokens=budget.limit,
                                  summary_tokens=max(64, min(600, budget.limit // 6)))
            self._sized = (budget, compactor)
        return self._sized

    def use_gateway(self, gateway: ModelGateway) -> None:
        """Continue with another model (``/gemini``, ``/local``); the context is sized again on next use."""
        self.gateway = gateway
        self._sized = None

    def system_messages(self, task: str, session_id: str) -> list[Message]:
        """The instructions (stable, cached by the server) and then the environment (varies)."""
        sections = gather_sections(self.prompt_sections, task, session_id, self.events.notice)
        return [Message.system(system_prompt()),
                Message.system(environment_prompt(sections=sections))]

    # --- run ---------------------------------------------------------------------------------

    def run(self, task: str, *, session_id: str | None = None, cancel: threading.Event | None = None) -> RunResult:
        """Work on ``task`` until the model answers, a budget is spent, or ``cancel`` is set.

        ``session_id`` continues that session (a crash's dangling tool call is repaired first);
        without it a new session is created. Raises only :class:`core.errors.FatalError`.
        """
        if not task or not task.strip():
            raise ConfigError("the task is empty", hint="say what the agent should do")
        st = self._start(task.strip(), session_id, cancel or threading.Event())
        status, reason, budget = "error", "", ""
        try:
            while True:
                self.step(st)
        except _Submitted as done:
            status, st.answer = "done", done.answer
        except BudgetExceeded as exc:
            status, reason, budget = exc.status, str(exc), exc.budget
        except RunEnded as exc:
            status, reason = exc.status, str(exc)
        except KeyboardInterrupt:
            status, reason = "interrupted", "interrupted by the person"
        except GatewayError as exc:
            status, reason = "error", " ".join(str(exc).split())
        finally:
            self._settle(st, status)
        return RunResult(status, st.answer, st.session_id, st.steps, st.records, st.usage, reason,
                         time.monotonic() - st.started, budget)

    def _start(self, task: str, session_id: str | None, cancel: threading.Event) -> _Run:
        if self._provisional:
            self._sized = None  # the server may say now what it did not before
        budget = self.context  # sized first: a server that does not answer stops us before a session is made
        provider = str(getattr(self.gateway, "provider", None) or type(self.gateway).__name__)
        model = str(getattr(self.gateway, "model", "") or "")
        if session_id is None:
            session_id = self.sessions.create(title=task.splitlines()[0], workspace=self.settings.workspace_root,
                                              provider=provider, model=model)
            history: list[StoredMessage] = []
        else:
            history = self.sessions.load(session_id)
            self.sessions.update(session_id, provider=provider, model=model)
        if session_id != self._session:
            budget.forget()
            self._session = session_id
        stored = self.sessions.append(session_id, Message.user(task))
        history.append(stored)
        self.sessions.update(session_id, status="running")
        return _Run(session_id, task, stored.seq, cancel, time.monotonic(), history)

    def _settle(self, st: _Run, status: str) -> None:
        """Leave the session consistent: every call answered, the status written."""
        for call in list(st.pending.values()):
            self._record_result(st, Outcome(call, ToolResult(INTERRUPTED_BY_PERSON, ok=False, summary="interrupted",
                                                             data={"interrupted": True}), 0.0, "interrupted"))
        self.sessions.update(st.session_id, status=status)

    # --- step --------------------------------------------------------------------------------

    def step(self, st: _Run) -> None:
        """One model call and the tool calls it asks for."""
        self._check_budgets(st)
        tools = self._fit_tools(self.registry.tools(task=st.task), st.task)
        if self._constrained():
            # right after the core tools, so the cached prefix covers it whatever else is offered
            at = max((i + 1 for i, t in enumerate(tools) if t.name in CORE), default=len(tools))
            tools = [*tools[:at], FINAL_ANSWER, *tools[at:]]
        request = self._request(st, tools)
        completion = self._query(st, request, tools)
        calls = self._record_reply(st, completion, tools)
        self._execute(st, calls, tools)

    def _constrained(self) -> bool:
        """Whether every reply is a tool call (``tool_choice="required"``, with ``final_answer`` to finish).

        ``auto``: when the server grammar-constrains such calls (this project's, llama-server), so a
        small model's every call is valid JSON for its tool; elsewhere replies stay free text.
        """
        mode = getattr(self.settings, "constrained_calls", "off")
        if mode == "auto":
            probe = getattr(self.gateway, "constrains_calls", None)
            return bool(probe and probe())
        return mode == "on"

    def _fit_tools(self, tools: list[Tool], task: str = "") -> list[Tool]:
        """The tools to offer (``flow/toolset.py``): the core ones, what the task calls for, the skills."""
        budget = self.context
        counter = budget.counter
        cap = int(budget.limit * TOOL_SHARE)
        choice = choose_tools(tools, task, everything=getattr(self.settings, "toolset", "all") == "all",
                              fits=lambda offered: counter.raw_tools(offered) <= cap)
        dropped = list(choice.dropped)
        if dropped and dropped != self._tools_left_out:
            self.events.notice(f"the {budget.context_length}-token context is small: not offering "
                               f"{', '.join(dropped)} (raise AGENT_CTX, or turn off tools you do not need)")
        self._tools_left_out = dropped
        return choice.tools

    def _check_budgets(self, st: _Run) -> None:
        s = self.settings
        if st.cancel.is_set():
            raise Interrupted("interrupted by the person")
        if st.steps >= s.max_steps:
            raise BudgetExceeded(f"step budget spent: {st.steps} model calls", budget="steps",
                                 hint="raise --max-steps (AGENT_MAX_STEPS) or continue with --resume")
        elapsed = time.monotonic() - st.started
        if elapsed >= s.max_wall_s:
            raise BudgetExceeded(f"time budget spent: {elapsed:.0f} s", budget="time",
                                 hint="raise AGENT_MAX_WALL_S or continue with --resume")
        if st.usage.total_tokens >= s.max_tokens_total:
            raise BudgetExceeded(f"token budget spent: {st.usage.total_tokens} tokens", budget="tokens",
                                 hint="raise AGENT_MAX_TOKENS_TOTAL or continue with --resume")

    def _request(self, st: _Run, tools: Sequence[Tool]) -> Request:
        system = self.system_messages(st.task, st.session_id)
        budget = self.context
        request = budget.build(system, st.history, tools, task_seq=st.task_seq)
        if request.dropped:
            self._compact(st, request.dropped)
            request = budget.build(system, st.history, tools, task_seq=st.task_seq)
            if request.dropped:
                # the summary itself left too little room: send without the oldest part this time
                self.events.notice(f"{len(request.dropped)} older messages left out of this request to fit the context")
        return request

    def _compact(self, st: _Run, dropped: list[StoredMessage]) -> None:
        if st.cancel.is_set():
            raise Interrupted("interrupted by the person")
        self.events.notice(f"compacting the context: summarising {len(dropped)} older messages")
        summary = self.compactor.summarise(dropped, cancel=st.cancel, on_retry=self.events.notice,
                                            factor=self.context.counter.factor)
        st.usage = st.usage + summary.usage
        if st.cancel.is_set():
            raise Interrupted("interrupted while compacting the context")
        self.sessions.compact(st.session_id, [e.seq for e in dropped], summary.message)
        st.history = self.sessions.records(st.session_id)
        how = "summarised by the model" if summary.by_model else "summarised without the model"
        self.events.notice(f"context compacted: {len(dropped)} older messages {how}")

    def _query(self, st: _Run, request: Request, tools: Sequence[Tool]) -> Completion:
        st.steps += 1
        self.events.thinking(st.steps)

        streamed: list[str] = []

        def on_event(event: StreamEvent) -> None:
            if event.kind == "text" and event.text:
                streamed.append(event.text)
                self.events.text(event.text)
            elif event.kind == "progress":
                self.events.prompt_progress(event.done, event.total, event.cached, event.time_ms)

        budget = self.context
        for attempt in range(2):
            try:
                constrained = any(t is FINAL_ANSWER for t in tools)
                completion = self.gateway.complete(request.messages, tools, max_tokens=budget.reply_tokens,
                                                   temperature=self.settings.temperature, on_event=on_event,
                                                   cancel=st.cancel, **({"tool_choice": "required"} if constrained else {}))
                break
            except Interrupted:
                self._keep_partial(st, "".join(streamed))
                raise
            except ContextOverflow:
                if attempt:
                    raise BudgetExceeded("the model server says the request does not fit its context, even cut down",
                                         budget="context", hint="use a model with a longer context (AGENT_CTX)") from None
                # our estimate was too low for this server: count tighter and build again
                budget.counter.factor *= 1.3
                self.events.notice("the server said the request was too long; building a shorter one")
                request = self._request(st, tools)
        st.usage = st.usage + completion.usage
        if completion.usage.prompt_tokens:
            budget.counter.calibrate(request.raw, completion.usage.prompt_tokens)
        used = completion.usage.prompt_tokens or request.tokens
        self.events.usage(st.usage, used, budget.context_length)
        if st.cancel.is_set():
            self._keep_partial(st, completion.message.content)
            raise Interrupted("interrupted by the person")
        return completion

    def _keep_partial(self, st: _Run, text: str) -> None:
        """What the person saw of an interrupted reply stays in the session; its calls are not run."""
        partial = text.strip()
        if partial:
            self._append(st, Message.assistant(partial + " [interrupted]"))
            st.answer = partial

    def _record_reply(self, st: _Run, completion: Completion, tools: Sequence[Tool]) -> tuple[ToolCall, ...]:
        msg = completion.message
        calls = msg.tool_calls
        text = msg.content
        if not calls and text:
            # a gateway that does not parse text-format calls (or a model that wrote them anyway)
            parsed = parse_tool_calls(text, {t.name for t in tools})
            if parsed.calls:
                text = parsed.content
                calls = tuple(ToolCall(c.name, c.arguments, error=c.error) for c in parsed.calls)
        unreadable = [c for c in calls if not c.name]
        calls = tuple(c for c in calls if c.name)
        finals = [c for c in calls if c.name == FINAL_ANSWER.name and not c.error]
        if finals and len(finals) == len(calls) and any(t is FINAL_ANSWER for t in tools):
            # the constrained way to answer: the same as a reply without a call
            text = "\n\n".join(str(c.arguments.get("answer", "")).strip() for c in finals).strip()
            calls = ()
        elif finals:
            calls = tuple(c for c in calls if c.name != FINAL_ANSWER.name)  # work first; answer after it
        if not calls:
            if unreadable:
                if msg.content.strip():
                    self._append(st, Message.assistant(msg.content))
                cut = (f" (the reply was cut off at the {self.context.reply_tokens}-token limit: write less per call)"
                       if completion.finish_reason == "length" else "")
                self._format_error(st, "your tool call could not be read: " + "; ".join(
                    c.error or "no tool name" for c in unreadable) + cut)
                return ()
            if not text.strip():
                self._format_error(st, "your reply was empty")
                return ()
            attempt = looks_like_call(text)
            if attempt:
                self._append(st, Message.assistant(text))
                offered = ", ".join(t.name for t in tools) or "none"
                self._format_error(st, f"your reply looks like a tool call ({attempt}) but it could not be run; "
                                       f"the tools are: {offered}. Call one with "
                                       '<tool_call>{"name": ..., "arguments": {...}}</tool_call>, '
                                       "or answer in plain words if the task is done")
                return ()
            self._append(st, Message.assistant(text))
            self.events.assistant_done(text, ())
            st.answer = text
            feedback = self._verify(st, text)
            if feedback:
                self._append(st, Message.user(feedback))
                return ()
            raise _Submitted(text)
        self._append(st, Message.assistant(text, calls))
        st.pending = {c.id: c for c in calls}
        if text.strip():
            st.answer = text.strip()
        self.events.assistant_done(text, calls)
        if unreadable:
            st.note = "(One of your tool calls could not be read and was not run: " + "; ".join(
                c.error or "no tool name" for c in unreadable) + ".)"
        return calls

    def _verify(self, st: _Run, answer: str) -> str | None:
        if self.verifier is None:
            return None
        return self.verifier(Finished(answer, st.task, st.session_id, tuple(st.records), st.cancel, st.started_at))

    def _format_error(self, st: _Run, problem: str) -> None:
        st.format_errors += 1
        if st.format_errors >= self.format_error_limit:
            raise FormatErrorLimit(f"{st.format_errors} malformed replies in a row; the last: {problem}",
                                   hint="a larger or better instruction-tuned model follows the tool format more reliably")
        self._append(st, Message.user(
            f"({problem}. To use a tool, call it with a JSON object of arguments; to finish, answer in plain text.)"))

    def _execute(self, st: _Run, calls: Sequence[ToolCall], tools: Sequence[Tool]) -> None:
        if not calls:
            return
        outcomes = self.registry.execute_many(calls, tools, cancel=st.cancel, on_start=self.events.tool_start,
                                              on_end=lambda o: self._record_result(st, o))
        if st.cancel.is_set() or any(o.interrupted for o in outcomes):
            raise Interrupted("interrupted by the person while a tool was running")
        if st.note:
            self._append(st, Message.user(st.note))
            st.note = ""
        if all(o.failure == "format" for o in outcomes):
            st.format_errors += 1
            if st.format_errors >= self.format_error_limit:
                last = outcomes[-1].result.content.splitlines()[0]
                # unreadable, unknown or not offered, or arguments that do not fit: none of them ran
                raise FormatErrorLimit(f"{st.format_errors} replies in a row whose tool calls could not run; the last: {last}",
                                       hint="a larger or better instruction-tuned model follows the tool schemas more reliably")
        else:
            st.format_errors = 0
        for o in outcomes:
            if not o.failure:
                continue
            key = o.call.name + " " + json.dumps(dict(o.call.arguments), sort_keys=True, default=str)
            st.failures[key] += 1
            if st.failures[key] >= self.repeat_limit:
                raise FormatErrorLimit(
                    f"the model made the same failing call {st.failures[key]} times: {key[:200]}",
                    hint="rephrase the task, or give the missing detail the model keeps guessing")

    def _record_result(self, st: _Run, outcome: Outcome) -> None:
        call, result = outcome.call, outcome.result
        if call.id not in st.pending:
            return
        self._append(st, Message.tool(call.id, call.name, result.content))
        del st.pending[call.id]
        st.records.append(ToolCallRecord(call.name, dict(call.arguments), result.ok,
                                         result.summary or _summary(result), round(outcome.duration_s, 3)))
        self.events.tool_end(call, result, outcome.duration_s)

    def _append(self, st: _Run, message: Message) -> None:
        st.history.append(self.sessions.append(st.session_id, message))


_CALL_START = re.compile(r'\{\s*"(?:name|tool|function)"\s*:\s*"([A-Za-z_][A-Za-z0-9_.]*)"')
_CALL_KEYS = {"arguments", "parameters", "args", "input", "tool_input"}
_CALL_MARKUP = ("<tool_call>", "</tool_call>", "<tool_response>", "<|im_start|>", "<function=", "<tool ")


def looks_like_call(text: str) -> str:
    """Why a reply without a readable call still looks like an attempt at one ('' when it does not).

    A final answer must be words for the person: a reply that is mostly a JSON object with a
    ``name``, or that carries call markup, is a call gone wrong, and the model gets another go.
    """
    body = text.strip()
    for mark in _CALL_MARKUP:
        if mark in body:
            return f"it contains {mark}"
    unfenced = body
    if unfenced.startswith("```"):
        unfenced = unfenced.split("\n", 1)[1] if "\n" in unfenced else ""
        unfenced = unfenced.rsplit("```", 1)[0]
    unfenced = unfenced.strip()
    match = _CALL_START.match(unfenced)
    if not match:
        return ""
    try:
        value = json.loads(unfenced)
    except json.JSONDecodeError:
        return f"broken JSON naming {match.group(1)!r}"
    if isinstance(value, dict) and (len(value) == 1 or _CALL_KEYS & value.keys()):
        return f"a JSON object naming {match.group(1)!r}"
    return ""  # data that happens to start with a name, such as a package.json


def _summary(result: ToolResult) -> str:
    first = result.content.strip().splitlines()[0] if result.content.strip() else "(no output)"
    return first[:120]

