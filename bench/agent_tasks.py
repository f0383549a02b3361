"""The task benchmark: small everyday coding tasks, solved by our agent or by mini-swe-agent.

    .venv/bin/python bench/agent_tasks.py --self-test
    .venv/bin/python bench/agent_tasks.py --model-url http://127.0.0.1:8080/v1 --model qwen2.5-coder \\
        --agent ours,mini-swe-agent [--tasks '1*'] [--timeout 300] [--agent-args "--max-steps 12"] [--json OUT]

A task is a folder ``bench/tasks/NN_name/``: ``task.toml`` (``prompt``, ``level`` 1-3, optional
``timeout``, optional ``answer_contains`` regexes that the final answer must all match, and
``reference_answer`` for them), ``ws/`` (the starting workspace), ``check.py`` (run after the agent
stops, with cwd = the final workspace, ``AGENT_ANSWER`` = the agent's final text, ``TASK_DIR`` = the
task folder; exit 0 = solved) and a reference solution: ``solution/`` (files copied over the
workspace) and/or ``solution.sh`` (run in it). The agent sees only a copy of ``ws/``.

For each task and agent: copy ``ws/`` to a fresh temporary folder, run the agent there under a
wall-clock timeout (the whole process group is killed past it), run the check, and print pass/fail,
seconds, steps, tokens and how the run ended. Every run's output goes to
``bench/results/<timestamp>/<agent>/<task>.log``.

``--self-test`` needs no model: every check must fail on the untouched workspace and pass on the
reference solution. mini-swe-agent is installed on first use into ``bench/.venvs/mini`` (with
``-c boot/constraints-peers.txt`` when that file exists) and configured by ``bench/mini.yaml``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TASKS_DIR = ROOT / "bench" / "tasks"
RESULTS_DIR = ROOT / "bench" / "results"
OUR_PYTHON = ROOT / ".venv" / "bin" / "python"
MINI_VENV = ROOT / "bench" / ".venvs" / "mini"
MINI_CONFIG = ROOT / "bench" / "mini.yaml"
PEER_CONSTRAINTS = ROOT / "boot" / "constraints-peers.txt"
AGENTS = ("ours", "mini-swe-agent")
CHECK_TIMEOUT_S = 180
#: seconds an agent past its timeout gets after Ctrl-C before its process group is killed
INTERRUPT_GRACE_S = 15


@dataclass(frozen=True)
class Task:
    name: str
    folder: Path
    prompt: str
    level: int
    timeout: float | None
    answer_contains: tuple[str, ...]
    reference_answer: str


@dataclass
class Outcome:
    task: str
    agent: str
    level: int
    passed: bool = False
    seconds: float = 0.0
    steps: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    status: str = ""  # how the agent's run ended: 'done', 'format_errors', 'timeout', ...
    exit_code: int | None = None
    why: str = ""  # the check's verdict line
    answer: str = ""
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --- tasks -----------------------------------------------------------------------------------------

def load_tasks(pattern: str = "*") -> list[Task]:
    tasks = []
    for folder in sorted(p for p in TASKS_DIR.iterdir() if (p / "task.toml").is_file()):
        if not any(fnmatch.fnmatch(folder.name, pat) for pat in pattern.split(",")):
            continue
        spec = tomllib.loads((folder / "task.toml").read_text(encoding="utf-8"))
        tasks.append(Task(folder.name, folder, spec["prompt"].strip(), int(spec.get("level", 1)),
                          spec.get("timeout"), tuple(spec.get("answer_contains", ())),
                          spec.get("reference_answer", "")))
    return tasks


def fresh_workspace(task: Task, parent: Path) -> Path:
    ws = parent / task.name
    shutil.copytree(task.folder / "ws", ws, symlinks=True)
    return ws


def check(task: Task, ws: Path, answer: str) -> tuple[bool, str]:
    """Run the task's check on the final workspace: (solved, why)."""
    for pattern in task.answer_contains:
        if not re.search(pattern, answer, re.IGNORECASE):
            return False, f"FAIL: the answer does not match /{pattern}/"
    script = task.folder / "check.py"
    if not script.is_file():
        return True, "ok"
    env = {**os.environ, "AGENT_ANSWER": answer, "TASK_DIR": str(task.folder),
           "PYTHONPATH": str(TASKS_DIR), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        r = subprocess.run([sys.executable, str(script)], cwd=ws, env=env, capture_output=True, text=True,
                           timeout=CHECK_TIMEOUT_S, start_new_session=True)
    except subprocess.TimeoutExpired:
        return False, f"FAIL: the check ran past {CHECK_TIMEOUT_S} s"
    out = (r.stdout + r.stderr).strip()
    if r.returncode == 0:
        return True, "ok"
    lines = out.splitlines()
    verdict = next((line for line in reversed(lines) if line.startswith("FAIL:")), lines[-1] if lines else "")
    return False, (verdict or f"FAIL: check exited {r.returncode}")[:300]


def apply_solution(task: Task, ws: Path) -> None:
    solution = task.folder / "solution"
    if solution.is_dir():
        shutil.copytree(solution, ws, dirs_exist_ok=True)
    script = task.folder / "solution.sh"
    if script.is_file():
        subprocess.run(["bash", str(script)], cwd=ws, check=True)


def self_test(tasks: list[Task]) -> int:
    """Every check fails on the starting workspace and passes on the reference solution."""
    bad = 0
    with tempfile.TemporaryDirectory(prefix="bench-self-") as tmp:
        for task in tasks:
            problems = []
            if not (task.folder / "ws").is_dir():
                problems.append("no ws/")
            if task.answer_contains and not task.reference_answer:
                problems.append("answer_contains without reference_answer")
            if not task.answer_contains and not (task.folder / "solution").is_dir() \
                    and not (task.folder / "solution.sh").is_file():
                problems.append("no solution/ or solution.sh")
            start = fresh_workspace(task, Path(tmp) / "start")
            ok, why = check(task, start, "")
            if ok:
                problems.append("the check passes on the starting workspace")
            solved = fresh_workspace(task, Path(tmp) / "solved")
            apply_solution(task, solved)
            ok2, why2 = check(task, solved, task.reference_answer)
            if not ok2:
                problems.append(f"the reference solution fails: {why2}")
            if task.answer_contains:
                # a question's files are left alone by the reference: the answer is what is judged
                ok3, _ = check(task, start, task.reference_answer)
                if not ok3:
                    problems.append("the reference answer fails on the untouched workspace")
            bad += bool(problems)
            mark = "ok  " if not problems else "BAD "
            print(f"{mark} L{task.level} {task.name:<34} start: {why[:60]}"
                  + ("" if not problems else "\n       " + "\n       ".join(problems)))
    levels = [t.level for t in tasks]
    print(f"\nself-test: {len(tasks) - bad}/{len(tasks)} tasks ok "
          f"(levels 1/2/3: {levels.count(1)}/{levels.count(2)}/{levels.count(3)})")
    return 1 if bad else 0


# --- running an agent --------------------------------------------------------------------------------

def run_process(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str, str, float]:
    """(exit code or None on timeout, stdout, stderr, seconds).

    Past the timeout the process group gets SIGINT, and SIGKILL after :data:`INTERRUPT_GRACE_S`.
    """
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        # Ctrl-C first, so an agent can end its run and say how far it got; then the whole group goes
        signal_group(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        signal_group(proc.pid, signal.SIGKILL)  # whatever it left running in its group
        code = None
    except BaseException:  # Ctrl-C of the benchmark itself: the agent, in its own session, goes too
        signal_group(proc.pid, signal.SIGKILL)
        raise
    return code, out, err, time.monotonic() - start


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def last_json_object(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run_ours(task: Task, ws: Path, args: argparse.Namespace, timeout: float, outcome: Outcome) -> str:
    python = OUR_PYTHON if OUR_PYTHON.exists() else Path(sys.executable)
    cmd = [str(python), str(ROOT / "cli.py"), "-p", task.prompt, "--workspace", str(ws),
           "--model-url", args.model_url, "--model", args.model, "--output-format", "json",
           *shlex.split(args.agent_args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code, out, err, seconds = run_process(cmd, cwd=ROOT, env=env, timeout=timeout)
    outcome.seconds, outcome.exit_code = seconds, code
    result = last_json_object(out)
    if code is None:
        outcome.status = "timeout"
    elif result is None:
        outcome.status = f"no_json(exit {code})"
    if result is not None:
        if code is None:
            outcome.status = f"timeout({result.get('status', '?')})"
        outcome.status = outcome.status or str(result.get("status", "?"))
        outcome.answer = str(result.get("answer") or "")
        outcome.steps = result.get("steps")
        usage = result.get("usage") or {}
        outcome.prompt_tokens = usage.get("prompt_tokens")
        outcome.completion_tokens = usage.get("completion_tokens")
        outcome.extra["tools"] = [c.get("name") for c in result.get("tool_calls", [])]
        outcome.extra["reason"] = result.get("reason")
    return log_text(cmd, code, out, err)


def ensure_mini() -> Path:
    """The ``mini`` executable, installing mini-swe-agent into its own venv on first use."""
    mini = MINI_VENV / "bin" / "mini"
    if mini.exists():
        return mini
    print(f"installing mini-swe-agent into {MINI_VENV.relative_to(ROOT)} …", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(MINI_VENV)], check=True)
    pip = [str(MINI_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "mini-swe-agent"]
    if PEER_CONSTRAINTS.is_file():
        pip += ["-c", str(PEER_CONSTRAINTS)]
    subprocess.run(pip, check=True)
    return mini


def mini_env(home: Path) -> dict[str, str]:
    """mini-swe-agent's environment: no key prompt, no first-run wizard, its state in a scratch folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSWEA_", "VIRTUAL_ENV"))}
    env.update({
        "OPENAI_API_KEY": env.get("AGENT_API_KEY") or "none",
        "MSWEA_CONFIGURED": "true",
        "MSWEA_GLOBAL_CONFIG_DIR": str(home),
        "MSWEA_SILENT_STARTUP": "1",
        "MSWEA_COST_TRACKING": "ignore_errors",
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from GitHub at each start
        "PYTHONUNBUFFERED": "1",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "COLUMNS": "200",
    })
    # the agent's shell must not pick up the peer's venv: `python` is the same one ours sees
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if str(MINI_VENV) not in p)
    return env


def run_mini(task: Task, ws: Path, args: argparse.Namespace, timeout: float, outcome: Outcome) -> str:
    mini = ensure_mini()
    with tempfile.TemporaryDirectory(prefix="mini-home-") as home:
        traj = Path(home) / "trajectory.json"
        cmd = [str(mini), "-t", task.prompt, "-y", "--exit-immediately", "-m", f"openai/{args.model}",
               "-c", str(args.mini_config), "-c", f"model.model_kwargs.api_base={args.model_url}",
               "-o", str(traj), *shlex.split(args.mini_args)]
        code, out, err, seconds = run_process(cmd, cwd=ws, env=mini_env(Path(home)), timeout=timeout)
        outcome.seconds, outcome.exit_code = seconds, code
        data = None
        if traj.is_file():
            try:
                data = json.loads(traj.read_text())
            except json.JSONDecodeError:
                data = None
        read_mini_trajectory(data, outcome)
        if code is None:
            outcome.status = "timeout"
        elif not outcome.status:
            outcome.status = f"no_trajectory(exit {code})"
        text = log_text(cmd, code, out, err)
        if data is not None:
            text += "\n=== trajectory ===\n" + json.dumps(data, indent=1, ensure_ascii=False)[:400_000]
    return text


def read_mini_trajectory(data: dict[str, Any] | None, outcome: Outcome) -> None:
    """Steps, tokens, exit status and final text from mini-swe-agent's trajectory file."""
    if not isinstance(data, dict):
        return
    info = data.get("info") or {}
    outcome.status = str(info.get("exit_status") or "?")
    messages = data.get("messages") or []
    assistant = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    stats = info.get("model_stats") or {}
    outcome.steps = stats.get("api_calls", len(assistant))
    prompt = completion = 0
    seen = False
    for m in messages:  # a call that failed to parse is kept on the error message that followed it
        response = ((m.get("extra") or {}).get("response") if isinstance(m, dict) else None) or {}
        usage = response.get("usage") if isinstance(response, dict) else None
        if usage:
            seen = True
            prompt += int(usage.get("prompt_tokens") or 0)
            completion += int(usage.get("completion_tokens") or 0)
    if seen:
        outcome.prompt_tokens, outcome.completion_tokens = prompt, completion
    # its answer: the model's last words (mini's final call is the bare submit command, so the text
    # beside it, or else the text before it) and whatever it submitted
    texts = [str(m.get("content") or "").strip() for m in assistant]
    last = next((t for t in reversed(texts) if t), "")
    outcome.answer = "\n".join(s for s in (last, str(info.get("submission") or "").strip()) if s)


def log_text(cmd: list[str], code: int | None, out: str, err: str) -> str:
    return (f"$ {shlex.join(cmd)}\nexit: {'timeout' if code is None else code}\n"
            f"=== stdout ===\n{out}\n=== stderr ===\n{err}\n")


def run_task(task: Task, agent: str, args: argparse.Namespace, results: Path) -> Outcome:
    outcome = Outcome(task.name, agent, task.level)
    timeout = float(args.timeout or task.timeout or 300)
    with tempfile.TemporaryDirectory(prefix=f"bench-{agent}-") as tmp:
        ws = fresh_workspace(task, Path(tmp))
        runner = run_ours if agent == "ours" else run_mini
        try:
            log = runner(task, ws, args, timeout, outcome)
        except Exception as exc:  # a broken harness or peer install: that task fails, the run goes on
            log, outcome.status = f"harness error: {type(exc).__name__}: {exc}\n", "harness_error"
        outcome.passed, outcome.why = check(task, ws, outcome.answer)
        path = results / agent / f"{task.name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        files = sorted(str(p.relative_to(ws)) for p in ws.rglob("*")
                       if p.is_file() and ".agent" not in p.parts and "__pycache__" not in p.parts)
        path.write_text(f"task: {task.name}\nprompt: {task.prompt}\n{log}\n=== answer ===\n{outcome.answer}\n"
                        f"=== check ===\n{'PASS' if outcome.passed else outcome.why}\n"
                        f"=== final workspace ===\n" + "\n".join(files) + "\n", encoding="utf-8")
        outcome.log = str(path.relative_to(ROOT))
    return outcome


# --- report ------------------------------------------------------------------------------------------

def fmt(n: Any) -> str:
    return "-" if n is None else str(n)


def table(outcomes: list[Outcome], agent: str) -> str:
    rows = [o for o in outcomes if o.agent == agent]
    lines = [f"### {agent}", "",
             "| task | L | result | s | steps | prompt tok | compl tok | status | why |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for o in rows:
        why = "" if o.passed else o.why.removeprefix("FAIL: ").replace("|", "\\|")[:90]
        lines.append(f"| {o.task} | {o.level} | {'pass' if o.passed else 'FAIL'} | {o.seconds:.0f} | "
                     f"{fmt(o.steps)} | {fmt(o.prompt_tokens)} | {fmt(o.completion_tokens)} | {o.status} | {why} |")
    lines += ["", summary(rows)]
    return "\n".join(lines)


def summary(rows: list[Outcome]) -> str:
    solved = [o for o in rows if o.passed]
    median = f"{statistics.median(o.seconds for o in solved):.0f} s" if solved else "-"
    statuses: dict[str, int] = {}
    for o in rows:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    by_level = []
    for level in (1, 2, 3):
        of = [o for o in rows if o.level == level]
        if of:
            by_level.append(f"L{level} {sum(o.passed for o in of)}/{len(of)}")
    return (f"solved {len(solved)}/{len(rows)} ({', '.join(by_level)}); median seconds of solved tasks: {median}; "
            f"status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items(), key=lambda kv: -kv[1])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--self-test", action="store_true",
                        help="no model: check that every check fails on the start and passes on the reference")
    parser.add_argument("--model-url", default=os.environ.get("AGENT_MODEL_URL", "http://127.0.0.1:8000/v1"))
    parser.add_argument("--model", default=os.environ.get("AGENT_MODEL", ""),
                        help="model id the server answers to")
    parser.add_argument("--agent", default="ours", help="ours, mini-swe-agent, or both comma-separated")
    parser.add_argument("--tasks", default="*", help="glob(s) of task folder names, comma-separated")
    parser.add_argument("--timeout", type=float, help="wall-clock seconds per task (default: the task's, else 300)")
    parser.add_argument("--agent-args", default="", help="extra flags for our cli.py, e.g. '--max-steps 12'")
    parser.add_argument("--mini-args", default="", help="extra flags for mini")
    parser.add_argument("--mini-config", type=Path, default=MINI_CONFIG,
                        help="mini-swe-agent's config (default bench/mini.yaml, tool calls; "
                             "bench/mini_textbased.yaml: its text-based format)")
    parser.add_argument("--json", type=Path, help="also write every outcome to this JSON file")
    parser.add_argument("--list", action="store_true", help="list the tasks and stop")
    args = parser.parse_args(argv)

    tasks = load_tasks(args.tasks)
    if not tasks:
        parser.error(f"no task matches {args.tasks!r}")
    if args.list:
        for t in tasks:
            print(f"{t.name:<34} L{t.level}  {t.prompt}")
        return 0
    if args.self_test:
        return self_test(tasks)
    agents = [a.strip() for a in args.agent.split(",") if a.strip()]
    for a in agents:
        if a not in AGENTS:
            parser.error(f"--agent {a!r}: choose from {', '.join(AGENTS)}")
    if not args.model:
        parser.error("--model is required (the model id the server answers to)")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = RESULTS_DIR / stamp
    print(f"{len(tasks)} tasks × {', '.join(agents)} against {args.model_url} ({args.model}); "
          f"logs in {results.relative_to(ROOT)}", file=sys.stderr)
    outcomes: list[Outcome] = []
    for task in tasks:
        for agent in agents:  # interleaved, so a drift in server load hits both agents alike
            o = run_task(task, agent, args, results)
            outcomes.append(o)
            print(f"{agent:>14} {task.name:<34} {'pass' if o.passed else 'FAIL'} {o.seconds:6.1f}s "
                  f"steps {fmt(o.steps):>3} {o.status}  {'' if o.passed else o.why[:80]}", file=sys.stderr, flush=True)
            save(outcomes, agents, args, stamp, results)  # after every task: a cut-short run keeps what it did

    report = save(outcomes, agents, args, stamp, results)
    print(report)
    return 0


def save(outcomes: list[Outcome], agents: list[str], args: argparse.Namespace, stamp: str, results: Path) -> str:
    """Write table.md and outcomes.json (and --json) for what has run so far; return the tables."""
    report = "\n\n".join(table(outcomes, a) for a in agents)
    results.mkdir(parents=True, exist_ok=True)
    (results / "table.md").write_text(report + "\n", encoding="utf-8")
    data = {"model_url": args.model_url, "model": args.model, "agents": agents, "agent_args": args.agent_args,
            "mini_config": str(args.mini_config), "mini_args": args.mini_args,
            "timeout": args.timeout, "started": stamp, "outcomes": [asdict(o) for o in outcomes]}
    (results / "outcomes.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return report


if __name__ == "__main__":
    sys.exit(main())
