"""Gemini's ``generateContent`` wire format: requests from our dataclasses, replies and errors back.

Mapping: system messages → ``systemInstruction``; user → ``role: user``; assistant → ``role:
model`` with ``text`` and ``functionCall`` parts; tool results → ``functionResponse`` parts in a
``role: user`` content (consecutive ones merged, so the answers to parallel calls travel
together). Tool schemas are cut down to the OpenAPI subset Gemini accepts.
"""

from __future__ import annotations

import json
import re
from typing import Any, Collection, Mapping, Sequence

from core.errors import ConfigError, ContextOverflow, GatewayError, ModelNotFound
from core.messages import Completion, FinishReason, Message, ToolCall, Usage, new_call_id
from core.tools import Tool
from gate.openai_wire import checked_call
from gate.transport import Retry

#: what Gemini 3 accepts in place of a thought signature for calls it did not make itself
SKIP_SIGNATURE = "skip_thought_signature_validator"

# The schema keys Gemini's function declarations accept (an OpenAPI 3.0 subset).
_SCHEMA_KEYS = {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
                "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
                "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum"}
_BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
_BAD_CALL = {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"}
_RETRY_STATUS = {429, 500, 502, 503, 504}


def gemini_schema(schema: Any) -> Any:
    """A JSON schema cut down to what Gemini accepts: unknown keys dropped, ``const`` made an
    ``enum``, ``["string", "null"]`` types made ``nullable``, ``oneOf`` read as ``anyOf``."""
    if isinstance(schema, list):
        return [gemini_schema(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "const":
            out["enum"] = [value]
        elif key == "oneOf":
            out["anyOf"] = gemini_schema(value)
        elif key == "type" and isinstance(value, list):
            kinds = [k for k in value if k != "null"]
            out["type"] = kinds[0] if kinds else "string"
            if "null" in value:
                out["nullable"] = True
        elif key == "properties" and isinstance(value, Mapping):
            out["properties"] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = gemini_schema(value)
        elif key in _SCHEMA_KEYS:
            out[key] = value
    if out.get("enum") and (out.get("type") not in (None, "string") or
                            not all(isinstance(v, str) for v in out["enum"])):
        # Gemini takes enums of strings only; turning 1 into "1" would make the model send the
        # wrong type, so the choices go into the description instead
        choices = ", ".join(json.dumps(v) for v in out.pop("enum"))
        out["description"] = (out.get("description", "") + f" (one of: {choices})").strip()
    return out


def function_declarations(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    decls = []
    for tool in tools:
        decl: dict[str, Any] = {"name": tool.name, "description": tool.description}
        params = gemini_schema(dict(tool.parameters))
        if params.get("properties"):  # Gemini refuses an object schema with no properties
            decl["parameters"] = params
        decls.append(decl)
    return decls


def contents_from_messages(messages: Sequence[Message], signatures: Mapping[str, str],
                           native_ids: Collection[str], made_ids: Collection[str],
                           skip_signature: bool) -> tuple[list[dict[str, Any]], str]:
    """``contents`` and the system instruction text for a conversation.

    ``signatures``: thought signatures by call id; ``native_ids``: call ids Gemini gave (sent back);
    ``made_ids``: calls Gemini made (the later calls of a parallel batch rightly have no
    signature); ``skip_signature``: give calls Gemini did not make the skip value (Gemini 3).
    """
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}

    def add(role: str, part: dict[str, Any]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].append(part)
        else:
            contents.append({"role": role, "parts": [part]})

    for m in messages:
        if m.role == "system":
            system.append(m.content)
        elif m.role == "user":
            add("user", {"text": m.content})
        elif m.role == "assistant":
            if m.content:
                add("model", {"text": m.content})
            for call in m.tool_calls:
                names[call.id] = call.name
                fc: dict[str, Any] = {"name": call.name or "invalid_tool_call", "args": dict(call.arguments)}
                if call.id in native_ids:
                    fc["id"] = call.id
                part: dict[str, Any] = {"functionCall": fc}
                signature = signatures.get(call.id) or (
                    SKIP_SIGNATURE if skip_signature and call.id not in made_ids else None)
                if signature:
                    part["thoughtSignature"] = signature
                add("model", part)
        else:  # tool
            call_id = m.tool_call_id or ""
            fr: dict[str, Any] = {"name": m.name or names.get(call_id) or "invalid_tool_call",
                                  "response": {"result": m.content}}
            if call_id in native_ids:
                fr["id"] = call_id
            add("user", {"functionResponse": fr})
    return contents, "\n\n".join(s for s in system if s)


def usage_from_gemini(meta: Mapping[str, Any] | None) -> Usage:
    if not meta:
        return Usage()
    # thinking tokens are generated and billed like the answer's
    completion = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
    return Usage(int(meta.get("promptTokenCount") or 0), completion, int(meta.get("cachedContentTokenCount") or 0))


def blocked_prompt(body: Mapping[str, Any]) -> GatewayError | None:
    reason = (body.get("promptFeedback") or {}).get("blockReason")
    if reason:
        return GatewayError(f"Gemini blocked the prompt ({reason})",
                            hint="rephrase the request or remove the content Gemini objects to")
    return None


class ReplyAssembler:
    """Builds a :class:`Completion` from one reply or from streamed chunks (each a full
    ``GenerateContentResponse`` holding the newest parts)."""

    def __init__(self, allowed: Collection[str], model: str) -> None:
        self.allowed = allowed
        self.model = model
        self.text: list[str] = []
        self.calls: list[ToolCall] = []
        self.signatures: dict[str, str] = {}
        self.native_ids: set[str] = set()
        self.made_ids: set[str] = set()
        self.finish: str | None = None
        self.usage = Usage()

    def feed(self, body: Mapping[str, Any]) -> list[tuple[str, str]]:
        blocked = blocked_prompt(body)
        if blocked:
            raise blocked
        if body.get("usageMetadata"):
            self.usage = usage_from_gemini(body["usageMetadata"])
        self.model = body.get("modelVersion") or self.model
        events: list[tuple[str, str]] = []
        candidates = body.get("candidates") or []
        if not candidates:
            return events
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or ():
            if part.get("thought"):
                continue  # thinking summaries are not the answer
            if "functionCall" in part:
                fc = part["functionCall"] or {}
                call_id = fc.get("id") or new_call_id()
                if fc.get("id"):
                    self.native_ids.add(call_id)
                if part.get("thoughtSignature"):
                    self.signatures[call_id] = part["thoughtSignature"]
                self.made_ids.add(call_id)
                self.calls.append(checked_call(fc.get("name") or "", fc.get("args") or {}, call_id, self.allowed))
                events.append(("tool_call", fc.get("name") or ""))
            elif part.get("text"):
                self.text.append(part["text"])
                events.append(("text", part["text"]))
        if candidate.get("finishReason"):
            self.finish = candidate["finishReason"]
        return events

    def close(self) -> Completion:
        finish = self.finish or "STOP"
        if finish in _BLOCKED:
            raise GatewayError(f"Gemini stopped the answer (finishReason {finish})",
                               hint="rephrase the request or remove the content Gemini objects to")
        if finish in _BAD_CALL and not self.calls:
            self.calls.append(ToolCall("", {}, new_call_id(), error=(
                f"your function call could not be read ({finish}); call one of the offered tools "
                "with arguments that match its schema")))
        reason: FinishReason = "tool_calls" if self.calls else ("length" if finish == "MAX_TOKENS" else "stop")
        return Completion(Message.assistant("".join(self.text), tuple(self.calls)), reason, self.usage, self.model)


def _retry_delay(details: Sequence[Any]) -> float | None:
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = re.fullmatch(r"([\d.]+)s", str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def error_from_gemini(status: int, body: Any, model: str) -> Exception:
    """One clear exception (a :class:`Retry` around it when worth another try) from an error reply."""
    err = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(err, Mapping):
        err = {"message": json.dumps(body)[:300] if body else ""}
    message = " ".join(str(err.get("message") or "").split())
    state = str(err.get("status") or "")
    details = err.get("details") if isinstance(err.get("details"), list) else []
    reasons = {str(d.get("reason")) for d in details if isinstance(d, Mapping) and d.get("reason")}
    label = f"{status} {state}".strip()
    if "API_KEY_INVALID" in reasons or status == 401 or (status == 400 and "api key" in message.lower()):
        return ConfigError("Gemini rejected the API key (API_KEY_INVALID)",
                           hint="check GEMINI_API_KEY; keys are made at https://aistudio.google.com/apikey")
    if status == 403:
        return ConfigError(f"Gemini refused access ({label}): {message}",
                           hint="check that GEMINI_API_KEY may use the Gemini API and this model")
    if status == 404:
        return ModelNotFound(f"Gemini has no model {model!r} ({label})",
                             hint="set GEMINI_MODEL to a current model, e.g. gemini-2.5-flash")
    if status == 400 and ("token count" in message.lower() or "tokens allowed" in message.lower()):
        return ContextOverflow(f"the prompt does not fit Gemini's context: {message}", status_code=status)
    if status == 429:
        return Retry(GatewayError(f"Gemini quota exhausted ({label}): {message}", status_code=status,
                                  retryable=True, hint="wait and try again, or check your key's quota"),
                     _retry_delay(details))
    if status in _RETRY_STATUS:
        return Retry(GatewayError(f"Gemini failed ({label}): {message}", status_code=status, retryable=True),
                     _retry_delay(details))
    return GatewayError(f"Gemini refused the request ({label}): {message}", status_code=status)
