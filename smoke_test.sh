#!/usr/bin/env bash
# Install if needed, run quick end-to-end health checks, then the whole test suite.
# Exit code: non-zero when anything failed.
#   bash smoke_test.sh            everything
#   bash smoke_test.sh -k chat    extra arguments go to pytest
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"

bash boot/install.sh || { echo "smoke: install failed" >&2; exit 1; }
py="$root/.venv/bin/python"

passed=0
failed=0
check() {
    local name="$1"; shift
    local out
    if out="$("$@" 2>&1)"; then
        passed=$((passed + 1)); printf '  ok    %s\n' "$name"
    else
        failed=$((failed + 1)); printf '  FAIL  %s\n' "$name"; printf '%s\n' "$out" | tail -n 15 | sed 's/^/        /'
    fi
}

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"

echo "smoke: health checks"
check "core imports without torch or llama_cpp" "$py" -c '
import sys, core.messages, core.toolparse, core.paths, core.sandbox, gate, flow.loop, tool.registry
bad = [m for m in ("torch", "llama_cpp", "fastapi") if m in sys.modules]
sys.exit(f"imported {bad}" if bad else 0)'
check "settings load from the environment" env AGENT_PORT=8123 "$py" -c '
from boot.settings import load_settings; assert load_settings().port == 8123'
one_line_exit_2() {  # the command fails with exit 2 and says why in one line, no stack trace
    local out rc
    out="$("$@" 2>&1)"; rc=$?
    [ "$rc" -eq 2 ] && [ "$(printf '%s\n' "$out" | grep -c .)" -eq 1 ] && ! grep -q Traceback <<<"$out" \
        || { echo "exit $rc: $out"; return 1; }
}
check "bad setting stops with one line (exit 2)" one_line_exit_2 env AGENT_PORT=notaport "$py" cli.py -p hi
check "no server at the model URL: one line (exit 2)" one_line_exit_2 "$py" cli.py --model-url http://127.0.0.1:9/v1 -p hi
check "python cli.py --help" "$py" cli.py --help
check "runsv.sh --help" bash runsv.sh --help
check "memory plan: 7B Q4_K_M plans 32768 tokens on 8 GB" bash -c "bash runsv.sh --plan --profile qwen2.5-coder-7b-instruct-q4_k_m --vram-gb 8 --json \
    | '$py' -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d[\"fits\"] and d[\"n_ctx\"]==32768 else d)'"
check "memory plan: 7B Q8_0 is refused with a suggestion (exit 1)" bash -c "bash runsv.sh --plan --profile qwen2.5-coder-7b-instruct-q8_0 --vram-gb 8 >/dev/null 2>&1; test \$? -eq 1"
check "memory add, search and check" bash -c "cd '$tmp' && '$py' '$root/cli.py' --workspace '$tmp/ws' memory add 'the smoke test runs with bash smoke_test.sh' --kind fact >/dev/null \
    && '$py' '$root/cli.py' --workspace '$tmp/ws' memory search 'how is the smoke test run' --json | grep -q smoke_test.sh \
    && '$py' '$root/cli.py' --workspace '$tmp/ws' memory check >/dev/null"
check "skills list --json" bash -c "'$py' cli.py --workspace '$tmp/ws' skills list --json | '$py' -c 'import json,sys; assert isinstance(json.load(sys.stdin), list)'"

AGENT_WORKSPACE="$tmp/ws" bash runsv.sh --demo --port "$port" >"$tmp/server.log" 2>&1 &
server_pid=$!
check "demo server answers /health within 120 s" "$py" - "$url" <<'EOF'
import sys, time, httpx
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if httpx.get(sys.argv[1] + "/health", timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.5)
sys.exit("no /health answer; see the server log")
EOF
check "chat completion through the openai SDK" "$py" - "$url" <<'EOF'
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="none")
model = client.models.list().data[0].id
reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8)
assert reply.choices[0].message.content is not None and reply.usage.completion_tokens > 0, reply
EOF
check "agent CLI runs one task against the demo server" bash -c "
cd '$tmp' && '$py' '$root/cli.py' --model-url '$url/v1' --workspace '$tmp/ws' --max-steps 2 -p 'Say hello.' --output-format json > out.json;
'$py' -c 'import json,sys; d=json.load(open(\"out.json\")); sys.exit(0 if d[\"status\"] in (\"done\",\"budget_exceeded\",\"format_errors\") and d[\"steps\"]>=1 else d)'"
# sandbox="on" whatever .env says, and proof it ran inside bwrap: the sandbox's own host name and uid
check "sandbox runs a command with bwrap" "$py" -c '
from boot.settings import load_settings
from tool.shell import shell_tool
import os, tempfile, pathlib
ws = pathlib.Path(tempfile.mkdtemp())
r = shell_tool(load_settings(workspace=ws, sandbox="on")).fn(command="echo sandboxed on $(hostname) as $(id -u)")
text = r if isinstance(r, str) else r.content
uid = 1000 if os.geteuid() == 0 else os.geteuid()
assert f"sandboxed on sandbox as {uid}" in text, text'
if [ "$failed" -gt 0 ]; then
    echo "server log (tail):"; tail -n 20 "$tmp/server.log"
fi
kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=""

echo "smoke: $passed passed, $failed failed"

echo "smoke: test suite"
"$py" -m pytest -q "$@"
tests_rc=$?

# The attack suite again as an ordinary user: RLIMIT_NPROC inside the user namespace, the path
# most people get, never runs as root. A throw-away uid (nobody) with its own HOME and TMPDIR.
attack_user_rc=0
if [ "$(id -u)" -eq 0 ] && [ $# -eq 0 ]; then
    echo "smoke: attack suite as an ordinary user (uid 65534)"
    bash "$root/tests/tool/attacks_as_user.sh" || attack_user_rc=$?
fi

if [ "$failed" -gt 0 ]; then
    echo "smoke: $failed health check(s) failed" >&2
    exit 1
fi
if [ "$attack_user_rc" -ne 0 ]; then
    echo "smoke: the attack suite failed as an ordinary user" >&2
    exit 1
fi
exit "$tests_rc"
