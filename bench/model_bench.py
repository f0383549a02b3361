"""Figures for model/ and boot/serve.py: header reading, download throughput, start-up.

    .venv/bin/python bench/model_bench.py [--mib 256] [--runs 5]

1. Reading a GGUF header for the planner: model/inspect.py's scan against the gguf package's
   GGUFReader (the peer) on the bundled SmolLM2 file and the Qwen2 vocabulary fixture.
2. Downloading one file from a local stand-in hub on 127.0.0.1 (hub URL layout, LFS-style redirect,
   Range): model/download.py (resume-safe .part, sha256 check, rename) against a bare httpx stream
   into a file (the limit) and huggingface_hub's hf_hub_download (the peer a user would reach for).
3. Start-up: ``python -m boot.serve --plan`` (a process, to the printed plan) and ``--demo`` (to the
   ``ready`` line and a first /health answer).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gguf  # noqa: E402
import httpx  # noqa: E402

from model.download import download, make_client, remote_file  # noqa: E402
from model.inspect import inspect_weights  # noqa: E402
from model.locate import demo_model_path  # noqa: E402

REPO = "Qwen/Qwen2.5-Coder-7B-Instruct-GGUF"
NAME = "bench.gguf"
COMMIT = "0" * 40


def median_s(fn, runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def bench_inspect(runs: int) -> None:
    files = [demo_model_path(), ROOT.parent / "shared" / "fixtures" / "ggml-vocab-qwen2.gguf"]
    print("\n1. GGUF header for the planner (median of", runs, "runs)")
    print(f"{'file':38} {'model/inspect':>14} {'GGUFReader':>12} {'ratio':>7}")
    for f in files:
        if not f.is_file():
            print(f"{f.name:38} missing, skipped")
            continue
        ours = median_s(lambda: inspect_weights(f), runs) if f.stat().st_size > 10_000_000 else None
        theirs = median_s(lambda: gguf.GGUFReader(str(f)), max(1, runs // 2))
        if ours is None:  # a vocabulary-only file: no tensors, so time just the header scan
            from model.inspect import _read_gguf_header

            ours = median_s(lambda: _read_gguf_header(f), runs)
        print(f"{f.name:38} {ours * 1000:11.1f} ms {theirs * 1000:9.1f} ms {theirs / ours:6.1f}×")


class _Hub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    blob = b""
    sha = ""

    def log_message(self, format, *args):  # noqa: A002
        return None

    def _headers(self, status, extra):
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self):  # noqa: N802
        if self.path.startswith("/cdn/"):
            self._headers(200, {"Content-Length": str(len(self.blob)), "ETag": f'"{self.sha}"',
                                "X-Repo-Commit": COMMIT})
            return
        self._headers(302, {"Location": f"/cdn/{NAME}", "X-Linked-Size": str(len(self.blob)),
                            "X-Linked-Etag": f'"{self.sha}"', "ETag": f'"{self.sha}"', "X-Repo-Commit": COMMIT,
                            "Content-Length": "0"})

    def do_GET(self):  # noqa: N802
        if not self.path.startswith("/cdn/"):
            self._headers(302, {"Location": f"/cdn/{NAME}", "X-Repo-Commit": COMMIT, "Content-Length": "0"})
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
        body = memoryview(self.blob)[start:]
        headers = {"Content-Length": str(len(body)), "Content-Type": "application/octet-stream"}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(self.blob) - 1}/{len(self.blob)}"
        self._headers(206 if start else 200, headers)
        for i in range(0, len(body), 1 << 20):
            self.wfile.write(body[i:i + (1 << 20)])


def bench_download(mib: int, runs: int) -> None:
    _Hub.blob = os.urandom(mib << 20)
    _Hub.sha = hashlib.sha256(_Hub.blob).hexdigest()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    tmp = Path(tempfile.mkdtemp())

    def ours() -> None:
        dest = tmp / "ours" / NAME
        shutil.rmtree(dest.parent, ignore_errors=True)
        with make_client() as client:
            download(client, endpoint, REPO, remote_file(client, endpoint, REPO, NAME), dest)

    def bare() -> None:
        dest = tmp / "bare.bin"
        with httpx.Client() as client, client.stream("GET", f"{endpoint}/{REPO}/resolve/main/{NAME}",
                                                     follow_redirects=True) as r, dest.open("wb") as fh:
            for chunk in r.iter_bytes():
                fh.write(chunk)

    def hf() -> None:
        from huggingface_hub import hf_hub_download

        out = tmp / "hf"
        shutil.rmtree(out, ignore_errors=True)
        hf_hub_download(REPO, NAME, local_dir=str(out), endpoint=endpoint)

    print(f"\n2. Download of a {mib} MiB file from a stand-in hub on 127.0.0.1 (median of {runs} runs)")
    results = {"bare httpx stream (limit)": median_s(bare, runs), "model/download.py": median_s(ours, runs)}
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    try:
        results["huggingface_hub.hf_hub_download"] = median_s(hf, runs)
    except Exception as exc:  # the peer may want more of the hub than this stand-in offers: say so
        print(f"   hf_hub_download did not run against the stand-in: {type(exc).__name__}: {exc}"[:200])
    limit = results["bare httpx stream (limit)"]
    print(f"{'client':36} {'time':>9} {'MiB/s':>9} {'vs limit':>9}")
    for name, t in results.items():
        print(f"{name:36} {t:7.3f} s {mib / t:9.0f} {limit / t:8.2f}×")
    server.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def bench_startup(runs: int) -> None:
    print(f"\n3. Start-up (median of {runs} runs)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    env["AGENT_HF_ENDPOINT"] = "http://127.0.0.1:9"

    def plan() -> None:
        subprocess.run([sys.executable, "-m", "boot.serve", "--plan", "--profile", "qwen2.5-coder-7b-instruct-q4_k_m"],
                       cwd=ROOT, env=env, capture_output=True, check=True)

    def demo() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "boot.serve", "--demo", "--port", str(port)], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in proc.stdout:
                if line.startswith("ready"):
                    break
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).raise_for_status()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            proc.stdout.close()

    print(f"{'runsv --plan (process, to the plan)':44} {median_s(plan, runs):6.2f} s")
    print(f"{'runsv --demo (process, to a /health answer)':44} {median_s(demo, max(1, runs // 2)):6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    bench_inspect(args.runs)
    bench_download(args.mib, args.runs)
    bench_startup(args.runs)


if __name__ == "__main__":
    main()
