"""Exceptions, sorted by who must act.

    AgentError
    ├── ModelFacingError        shown to the model as a tool error; the run goes on
    │   ├── ToolError               a tool failed (bad input, missing file, non-zero exit…)
    │   ├── ToolArgumentError       arguments do not validate against the tool's schema
    │   └── UnknownToolError        the model named a tool that was not offered
    ├── RunEnded                ends the run with a status; the session stays usable
    │   ├── BudgetExceeded          steps, wall time or tokens spent
    │   ├── Interrupted             the person pressed Ctrl-C
    │   └── FormatErrorLimit        too many malformed or repeated failing calls in a row
    ├── FatalError              stops the program with one clear line for the person
    │   ├── ConfigError             a bad setting (names it)
    │   ├── ModelUnavailable        no server answers at the model URL
    │   └── ModelNotFound           no model file / unknown model id
    ├── GatewayError            a model call failed at the transport or protocol level
    └── SandboxError            code could not be run confined (e.g. bwrap missing)

Server-side errors are mapped to the OpenAI error body in ``servr/``. Constructors never log;
whoever catches decides what the person sees.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every expected failure in this program."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ModelFacingError(AgentError):
    """Returned to the model as an error result with a hint; the run continues."""


class ToolError(ModelFacingError):
    """A tool could not do what was asked."""


class ToolArgumentError(ModelFacingError):
    """The arguments of a tool call do not match the tool's JSON schema."""


class UnknownToolError(ModelFacingError):
    """The model called a tool that does not exist (or was not offered)."""


class RunEnded(AgentError):
    """Ends the current run with ``status``; carries no stack trace to the person."""

    status = "error"


class BudgetExceeded(RunEnded):
    status = "budget_exceeded"

    def __init__(self, message: str, *, budget: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.budget = budget  # "steps" | "time" | "tokens" | "context"


class Interrupted(RunEnded):
    status = "interrupted"


class FormatErrorLimit(RunEnded):
    status = "format_errors"


class FatalError(AgentError):
    """Stops the program with a clear message (exit code 2)."""


class ConfigError(FatalError):
    """A setting has a bad value; the message names the setting."""


class ModelUnavailable(FatalError):
    """Nothing answers at the model URL."""


class ModelNotFound(FatalError):
    """The model file or the model id does not exist."""


class GatewayError(AgentError):
    """A model call failed (HTTP error, malformed reply). ``retryable`` says whether to try again."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code
        self.retryable = retryable


class ContextOverflow(GatewayError):
    """The server refused the request because the prompt does not fit its context."""


class SandboxError(AgentError):
    """Code could not be run inside the sandbox (and the person did not turn it off)."""
