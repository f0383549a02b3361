"""The model server's process entry point: ``bash runsv.sh [flags]`` runs ``python -m boot.serve``.

Resolves the model (``model/``), plans its memory (``servr/planner.py``), loads the engine, prints
one block saying what is served and where, then serves with uvicorn. ``--plan`` stops after the
plan. Expected failures print one line and exit non-zero: 1 when the model does not fit the GPU,
2 for a bad setting, a missing model, a failed download or a busy port. Ctrl-C or SIGTERM while
serving stops gracefully and exits 0; Ctrl-C before (during a download or the load) exits 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
from typing import Any, Sequence

from boot.settings import Settings, env_name, load_settings
from core.errors import AgentError, ConfigError, FatalError
from model.inspect import WeightsLayout, inspect_weights, layout_from_profile
from model.locate import WEIGHTS_DIR, ResolvedModel, demo_model_path, find_local, resolve_model
from model.profiles import DEFAULT_PROFILE_ID, Profile, default_profile, get_profile, profile_for_file
from servr.planner import GpuInfo, MemoryPlan, detect_gpu, plan_memory

EXIT_OK, EXIT_NO_FIT, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130

# flag → settings field; each flag's help names its environment variable
_FLAG_FIELDS = {"model": "model_path", "profile": "profile", "host": "host", "port": "port", "ctx": "ctx",
                "api_key": "api_key", "vram_gb": "vram_gb", "backend": "backend", "threads": "threads",
                "n_gpu_layers": "n_gpu_layers", "model_id": "model"}


def build_parser() -> argparse.ArgumentParser:
    env = env_name
    p = argparse.ArgumentParser(
        prog="runsv.sh",
        description="Serve a Qwen2.5-Coder model (or any GGUF) over an OpenAI-compatible API on 127.0.0.1.",
        epilog=(
            "Model resolution, in order: --model/AGENT_MODEL_PATH; a model already in model/weights/ "
            f"(the --profile asked, else {DEFAULT_PROFILE_ID}, else any other there); a download of "
            "the profile from the Hugging Face hub (AGENT_HF_ENDPOINT); with no profile asked and no hub, the "
            "bundled demo model, with a warning. Flags override the environment and .env. "
            "Exit codes: 0 ok, 1 the model does not fit the GPU budget, 2 bad setting / missing model / busy port."),
    )
    p.add_argument("--demo", action="store_true",
                   help=f"serve the bundled tiny model (SmolLM2-135M; no download, CPU is fine); same as {env('model_path')}=demo")
    p.add_argument("--model", metavar="PATH", help=f"GGUF file or Hugging Face folder to serve ({env('model_path')})")
    p.add_argument("--profile", metavar="ID", help=f"model profile to serve or download, e.g. {DEFAULT_PROFILE_ID} "
                   f"({env('profile')}); see docts/models.md")
    p.add_argument("--host", help=f"address to bind, default 127.0.0.1 ({env('host')})")
    p.add_argument("--port", type=int, help=f"port to listen on, default 8000 ({env('port')})")
    p.add_argument("--ctx", type=int, metavar="TOKENS", help=f"context size; default: the largest that fits, "
                   f"capped by the model ({env('ctx')})")
    p.add_argument("--api-key", metavar="KEY", help=f"require 'Authorization: Bearer KEY' on /v1 ({env('api_key')})")
    p.add_argument("--vram-gb", type=float, metavar="GB", help=f"GPU memory budget in GiB, default 8 ({env('vram_gb')})")
    p.add_argument("--backend", choices=["auto", "llamacpp", "transformers"], help=f"inference engine ({env('backend')})")
    p.add_argument("--threads", type=int, metavar="N", help=f"CPU threads for generation ({env('threads')})")
    p.add_argument("--n-gpu-layers", type=int, metavar="N", help=f"layers on the GPU; default from the plan, -1 all "
                   f"({env('n_gpu_layers')})")
    p.add_argument("--model-id", metavar="ID", help=f"model id clients use; default from the file name ({env('model')})")
    p.add_argument("--plan", action="store_true", help="print the memory plan without loading the model; "
                   "exit 0 if it fits, 1 if not")
    p.add_argument("--json", action="store_true", help="with --plan: print the plan as one JSON object")
    return p


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {field: getattr(args, flag) for flag, field in _FLAG_FIELDS.items()}
    if args.demo:
        if args.model or args.profile:
            raise ConfigError("--demo serves the bundled model; leave out --model and --profile")
        overrides["model_path"] = "demo"
    return load_settings(**overrides)


def _is_demo(settings: Settings) -> bool:
    return (settings.model_path or "").strip().lower() == "demo"


def _backend_for(settings: Settings, layout: WeightsLayout) -> str:
    if settings.backend == "llamacpp" and layout.format != "gguf":
        raise ConfigError("bad setting AGENT_BACKEND (got 'llamacpp'): the model is a Hugging Face folder, "
                          "and llama.cpp serves GGUF files", hint="use AGENT_BACKEND=transformers or auto")
    if settings.backend != "auto":
        return settings.backend
    return "llamacpp" if layout.format == "gguf" else "transformers"


def _plan(settings: Settings, layout: WeightsLayout, profile: Profile | None, gpu: GpuInfo | None) -> MemoryPlan:
    return plan_memory(layout, backend=_backend_for(settings, layout), vram_gb=settings.vram_gb, ctx=settings.ctx,
                       n_gpu_layers=settings.n_gpu_layers, gpu=gpu, profile=profile)


def _plan_target(settings: Settings) -> tuple[str, WeightsLayout, Profile | None]:
    """What ``--plan`` plans for, without downloading: a file when there is one, else the profile's numbers."""
    if _is_demo(settings):
        path = demo_model_path()
        return str(path), inspect_weights(path), None
    if settings.model_path:
        resolved = resolve_model(model_path=settings.model_path, profile_id=None, hf_endpoint=settings.hf_endpoint)
        return str(resolved.path), inspect_weights(resolved.path), resolved.profile
    profile = get_profile(settings.profile) if settings.profile else None
    found = find_local(WEIGHTS_DIR, profile)
    if found:
        return str(found[0]), inspect_weights(found[0]), found[1] or profile_for_file(found[0].name)
    target = profile or default_profile()
    return target.id, layout_from_profile(target), target


def run_plan(settings: Settings, as_json: bool) -> int:
    target, layout, profile = _plan_target(settings)
    gpu = detect_gpu()
    plan = _plan(settings, layout, profile, gpu)
    if as_json:
        out: dict[str, Any] = {"model": target, "profile": profile.id if profile else None,
                               "gpu": None if gpu is None else {"name": gpu.name, "total_bytes": gpu.total_bytes,
                                                                "free_bytes": gpu.free_bytes}}
        out.update(plan.to_dict())
        print(json.dumps(out))
    else:
        print(f"model: {target}")
        print(plan_text(plan))
    return EXIT_OK if plan.fits else EXIT_NO_FIT


class _RichProgress:
    """A download progress bar on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self._task: Any = None

    def start(self, name: str, total: int | None, done: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task(f"downloading {name}", total=total, completed=done)

    def advance(self, n: int) -> None:
        if n < 0:  # the server restarted the file: start the bar (and its speed) over
            task = next(t for t in self._progress.tasks if t.id == self._task)
            self._progress.reset(self._task, total=task.total, completed=max(0, int(task.completed) + n))
        else:
            self._progress.advance(self._task, n)

    def finish(self) -> None:
        self._progress.stop()


class _LineProgress:
    """Download progress as a line per tenth, for logs and pipes where a bar would be noise."""

    def __init__(self) -> None:
        self._name, self._total, self._done, self._shown = "", None, 0, -1

    def start(self, name: str, total: int | None, done: int) -> None:
        self._name, self._total, self._done, self._shown = name, total, done, -1
        size = f"{total / 1e9:.2f} GB" if total else "size unknown"
        resumed = f", resuming at {done / 1e9:.2f} GB" if done else ""
        print(f"downloading {name} ({size}{resumed})", file=sys.stderr, flush=True)

    def advance(self, n: int) -> None:
        self._done += n
        if self._total:
            tenth = self._done * 10 // self._total
            if tenth > self._shown:
                self._shown = tenth
                print(f"  {self._name}: {tenth * 10}%", file=sys.stderr, flush=True)

    def finish(self) -> None:
        return None


def _bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads so a busy port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
            raise FatalError(f"port {port} on {host} is already in use",
                             hint=f"stop the other server, or pick another port with --port / {env_name('port')}") from None
        raise FatalError(f"cannot listen on {host}:{port}: {exc.strerror}",
                         hint=f"check --host / {env_name('host')}") from None
    # not listening yet: until the model is loaded, clients get "connection refused" rather than a hang
    return sock


def plan_text(plan: MemoryPlan) -> str:
    """The memory plan as printed at start; on a machine without a GPU it does not claim one."""
    lines = plan.lines()
    if plan.device == "cpu":
        lines = [line.replace(" on the GPU (", " (on a GPU: ", 1) for line in lines]
        lines.insert(1, "  no GPU found: the model runs on the CPU, in main memory; the figures below are what "
                        "a GPU would need")
    return "\n".join(lines)


def banner(resolved: ResolvedModel, info: dict[str, Any], plan: MemoryPlan, host: str, port: int,
           api_key: bool) -> str:
    """The block printed before serving: what is served, how, and where clients point."""
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in shown_host and not shown_host.startswith("["):
        shown_host = f"[{shown_host}]"
    url = f"http://{shown_host}:{port}/v1"
    gpu = info.get("n_gpu_layers")
    no_offload = info.get("gpu_offload") is False  # a llama.cpp built without CUDA ignores n_gpu_layers
    where = ("CPU only" if plan.device == "cpu" or gpu == 0 or no_offload
             else f"{'all' if gpu == -1 else gpu} layers on the GPU")
    source = {"flag": "--model / AGENT_MODEL_PATH", "weights": "found in model/weights/",
              "download": "downloaded from the hub", "demo": "bundled demo model"}[resolved.source]
    lines = [
        "─" * 72,
        f" model      {info.get('model_path', resolved.path)}  ({source})",
        f" served as  {info.get('model_id')}",
        f" backend    {info.get('backend')}   context {info.get('n_ctx'):,} tokens   "
        f"chat template from {info.get('chat_template')}",
        f" compute    {info.get('n_threads')} CPU threads, {where}",
        f" plan       {plan.total_bytes / (1 << 30):.2f} GiB of {plan.budget_bytes / (1 << 30):.2f} GiB budget"
        + (" (figures for a GPU; running on the CPU)" if plan.device == "cpu" else ""),
        f" listening  http://{shown_host}:{port}  (health: /health)" + ("   bearer key required on /v1" if api_key else ""),
        " clients    export AGENT_MODEL_URL=" + url,
        f"            openai.OpenAI(base_url=\"{url}\", api_key=\"{'<your key>' if api_key else 'none'}\")",
        "─" * 72,
    ]
    if plan.device == "cuda" and no_offload:
        lines.insert(-1, " WARNING    a GPU is present but this llama-cpp-python was built without GPU support: "
                         "reinstall it with CMAKE_ARGS=-DGGML_CUDA=on (boot/install.sh does when nvcc is found)")
    return "\n".join(lines)


def effective_settings(settings: Settings, resolved: ResolvedModel, plan: MemoryPlan) -> Settings:
    """The settings the engine and the app get: the plan's context and GPU layers unless set by hand."""
    return settings.model_copy(update={
        "model_path": str(resolved.path),
        # a profile's id, not a split part's file name ("…-00001-of-00002"), is what clients should ask for
        "model": settings.model or (resolved.profile.id if resolved.profile else None),
        "ctx": settings.ctx or plan.n_ctx,
        "n_gpu_layers": settings.n_gpu_layers if settings.n_gpu_layers is not None else plan.llama_n_gpu_layers,
    })


def serve(settings: Settings) -> int:
    sock = _bind(settings.host, settings.port)
    try:
        return _serve_on(settings, sock)
    finally:
        sock.close()


def _serve_on(settings: Settings, sock: socket.socket) -> int:
    import uvicorn

    from servr.app import create_app
    from servr.engines import load_engine

    class _ReadyServer(uvicorn.Server):
        """uvicorn's server, saying once when it is ready (its own lines are at INFO level)."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print("ready: serving until Ctrl-C", flush=True)

    progress = _RichProgress() if sys.stderr.isatty() else _LineProgress()
    resolved = resolve_model(model_path=settings.model_path, profile_id=settings.profile,
                             hf_endpoint=settings.hf_endpoint, progress=progress)
    if resolved.warning:
        print(f"\n!!! {resolved.warning}\n", file=sys.stderr, flush=True)
    layout = inspect_weights(resolved.path)
    gpu = detect_gpu()
    plan = _plan(settings, layout, resolved.profile or profile_for_file(resolved.path.name), gpu)
    if not plan.fits and gpu is not None:
        print("\n".join(plan.lines()), file=sys.stderr)
        print(f"error: {resolved.path.name} does not fit in {settings.vram_gb:g} GiB of GPU memory"
              + (f"; {plan.suggestion}" if plan.suggestion else ""), file=sys.stderr)
        return EXIT_NO_FIT
    effective = effective_settings(settings, resolved, plan)
    engine = load_engine(effective, resolved.path)
    try:
        app = create_app(effective, engine, health_extra={"memory_plan": plan.to_dict()})  # /health shows it
        print(plan_text(plan), flush=True)
        print(banner(resolved, engine.describe(), plan, settings.host, sock.getsockname()[1],
                     settings.api_key is not None), flush=True)
        if resolved.warning:  # again, below the banner, where it is seen
            print(f"!!! {resolved.warning}", file=sys.stderr, flush=True)
        show_request_log(settings.log_level)
        server = _ReadyServer(uvicorn.Config(app, log_level=settings.log_level.lower(), access_log=False,
                                             timeout_graceful_shutdown=5))
        previous = signal.signal(signal.SIGTERM, _interrupt)  # uvicorn re-raises it after its graceful stop
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass  # Ctrl-C or SIGTERM: uvicorn has already finished the requests in flight
        finally:
            signal.signal(signal.SIGTERM, previous)
        print("stopped", flush=True)
    finally:
        engine.close()
    return EXIT_OK


def show_request_log(level: str) -> None:
    """One line per generation on stderr (prompt tokens, cached, speeds, finish): shown unless the
    log level is ERROR, since a long prompt otherwise looks like a hung server."""
    logger = logging.getLogger("servr.requests")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s request: %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if level == "ERROR" else logging.INFO)
    logger.propagate = False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json and not args.plan:
        parser.error("--json goes with --plan")
    if getattr(args, "api_key", None):  # a key in argv is seen by every user through `ps`
        print("warning: --api-key puts the key on the command line, where `ps` shows it to every user of this "
              "machine and your shell history keeps it; set AGENT_API_KEY in the environment or in .env instead",
              file=sys.stderr)
    try:
        settings = _settings_from(args)
        if args.plan:
            return run_plan(settings, args.json)
        return serve(settings)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
