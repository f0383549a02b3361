"""Downloading files from a Hugging Face hub, resumable, never leaving a file that looks complete.

Speaks the hub's plain HTTP layout, so any mirror that copies it works (``AGENT_HF_ENDPOINT``):

- ``HEAD {endpoint}/{repo}/resolve/{revision}/{filename}`` gives the size and, for large (LFS)
  files, the sha256 (``X-Linked-Size`` / ``X-Linked-Etag``; the response itself may be a redirect
  to a CDN, which is not followed for the HEAD);
- ``GET`` on the same address (redirects followed) with ``Range: bytes=N-`` resumes;
- ``GET {endpoint}/api/models/{repo}/tree/{revision}`` lists the repository's files.

Bytes go to ``<name>.part`` beside the destination; it is renamed to ``<name>`` only after its
size (and sha256 when the hub gave one) match. An interrupted transfer is retried from where it
stopped; one that still falls short keeps its ``.part`` so the next run resumes it. A lock file
keeps two processes from writing the same ``.part``. huggingface_hub's ``hf_hub_download`` does
much the same, but keeps its own cache layout and symlinks; this module writes plain files into
``model/weights/`` where people look for them, and its failure modes are tested here.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import httpx

from core.errors import FatalError

CHUNK = 1 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class DownloadFailed(FatalError):
    """A file could not be fetched from the hub (the message says what to do)."""


class HubUnreachable(DownloadFailed):
    """No connection to the hub at all: offline, refused, or the name does not resolve."""


class NotOnHub(DownloadFailed):
    """The hub answered 404 for this repository or file."""


class Progress(Protocol):
    """Receives download progress (a progress bar, a log line, or nothing)."""

    def start(self, name: str, total: int | None, done: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, name: str, total: int | None, done: int) -> None:
        return None

    def advance(self, n: int) -> None:
        return None

    def finish(self) -> None:
        return None


@dataclass(frozen=True)
class RemoteFile:
    path: str  # inside the repository
    size: int | None
    sha256: str | None


def resolve_url(endpoint: str, repo: str, filename: str, revision: str = "main") -> str:
    return f"{endpoint.rstrip('/')}/{repo}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def make_client(timeout_s: float = 30.0) -> httpx.Client:
    """An HTTP client for the hub: connect/read timeouts, no overall limit (files are gigabytes)."""
    return httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0),
                        headers={"user-agent": "local-coder-model-download/0.1"})


def _unreachable(endpoint: str, exc: Exception) -> HubUnreachable:
    return HubUnreachable(f"cannot reach the model hub at {endpoint} ({type(exc).__name__}: {exc})",
                          hint="check the network, or set AGENT_HF_ENDPOINT to a reachable mirror")


def remote_file(client: httpx.Client, endpoint: str, repo: str, filename: str,
                revision: str = "main") -> RemoteFile:
    """Size and sha256 of one file, from a HEAD request."""
    url = resolve_url(endpoint, repo, filename, revision)
    try:
        r = client.head(url, follow_redirects=False)
        if r.status_code in (301, 302, 307, 308) and "x-linked-size" not in r.headers and "location" in r.headers:
            # a mirror that redirects small files: ask the target
            r = client.head(url, follow_redirects=True)
    except httpx.TransportError as exc:
        raise _unreachable(endpoint, exc) from None
    if r.status_code == 404:
        raise NotOnHub(f"{repo}/{filename} is not on the hub at {endpoint}")
    if r.status_code in (401, 403):
        raise DownloadFailed(f"the hub refused {repo}/{filename} (HTTP {r.status_code})",
                             hint="the repository may be gated; set HF_TOKEN or download it by hand into model/weights/")
    if r.status_code >= 400:
        raise DownloadFailed(f"the hub answered HTTP {r.status_code} for {repo}/{filename}")
    size_text = r.headers.get("x-linked-size") or r.headers.get("content-length")
    etag = (r.headers.get("x-linked-etag") or r.headers.get("etag") or "").strip('"').removeprefix("W/").strip('"')
    return RemoteFile(path=filename, size=int(size_text) if size_text and size_text.isdigit() else None,
                      sha256=etag.lower() if _SHA256_RE.match(etag.lower()) else None)


def list_repo(client: httpx.Client, endpoint: str, repo: str, revision: str = "main") -> list[RemoteFile]:
    """Every file in a repository (recursively), with size and sha256 where the hub gives them."""
    url = f"{endpoint.rstrip('/')}/api/models/{repo}/tree/{quote(revision, safe='')}"
    out: list[RemoteFile] = []
    next_url: str | None = url
    params: dict[str, str] | None = {"recursive": "true"}
    while next_url:
        try:
            r = client.get(next_url, params=params, follow_redirects=True)
        except httpx.TransportError as exc:
            raise _unreachable(endpoint, exc) from None
        if r.status_code == 404:
            raise NotOnHub(f"repository {repo} is not on the hub at {endpoint}")
        if r.status_code >= 400:
            raise DownloadFailed(f"the hub answered HTTP {r.status_code} listing {repo}")
        try:
            entries = r.json()
        except ValueError:
            raise DownloadFailed(f"the hub at {endpoint} sent a file list that is not JSON") from None
        for e in entries:
            if e.get("type") != "file":
                continue
            lfs = e.get("lfs") or {}
            sha = str(lfs.get("oid") or lfs.get("sha256") or "").lower()
            out.append(RemoteFile(path=e["path"], size=int(lfs.get("size", e.get("size", 0))) if
                                  (lfs.get("size") or e.get("size") is not None) else None,
                                  sha256=sha if _SHA256_RE.match(sha) else None))
        next_url = r.links.get("next", {}).get("url")  # the hub paginates large repositories
        params = None
    return out


@contextmanager
def _locked(dest: Path) -> Iterator[None]:
    lock_path = dest.with_name(dest.name + ".lock")
    with lock_path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadFailed(f"another process is downloading {dest.name}",
                                 hint="wait for it to finish, or stop it") from None
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)  # while still holding it: nobody else owns this file
            fcntl.flock(fh, fcntl.LOCK_UN)


class _Transient(Exception):
    """A hub answer worth retrying (overloaded, rate-limited)."""


class _RunningHash:
    """sha256 of the ``.part`` file, kept up to date while bytes arrive (no second read at the end).

    Hashing runs on a worker thread (hashlib releases the GIL), so it overlaps with the network
    instead of adding to it; the bounded queue keeps memory flat when the disk outruns the hash.
    """

    def __init__(self) -> None:
        self.h, self.count = hashlib.sha256(), 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=256)
        self._worker = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self.h.update(data)
            self.count += len(data)
            self._queue.task_done()
        self._queue.task_done()

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def reset(self) -> None:
        self._queue.join()
        self.h, self.count = hashlib.sha256(), 0

    def sync(self, part: Path) -> None:
        """Re-hash the file when it is not what was hashed (resumed from an earlier run, restarted)."""
        self._queue.join()
        size = part.stat().st_size if part.exists() else 0
        if size == self.count:
            return
        self.reset()
        if size:
            with part.open("rb") as fh:
                while block := fh.read(CHUNK):
                    self.update(block)
            self._queue.join()

    def hexdigest(self) -> str:
        self._queue.join()
        return self.h.hexdigest()

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join()


def download(client: httpx.Client, endpoint: str, repo: str, remote: RemoteFile, dest: Path, *,
             revision: str = "main", progress: Progress | None = None, attempts: int = 4,
             backoff_s: float = 1.0) -> Path:
    """Fetch one file to ``dest`` via ``dest.part``, resuming, verified; returns ``dest``."""
    progress = progress or NoProgress()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and (remote.size is None or dest.stat().st_size == remote.size):
        return dest
    part = dest.with_name(dest.name + ".part")
    url = resolve_url(endpoint, repo, remote.path, revision)
    running = _RunningHash()
    try:
        with _locked(dest):
            last_error = _transfer(client, endpoint, url, part, remote, progress, running, attempts, backoff_s)
            _verify(part, remote, running, last_error)
            os.replace(part, dest)
    finally:
        running.close()
    return dest


def _transfer(client: httpx.Client, endpoint: str, url: str, part: Path, remote: RemoteFile, progress: Progress,
              running: _RunningHash, attempts: int, backoff_s: float) -> str | None:
    """Up to ``attempts`` GETs, each resuming where the last stopped; the last error, if any."""
    have = part.stat().st_size if part.exists() else 0
    progress.start(part.name.removesuffix(".part"), remote.size,
                   have if remote.size is None or have <= remote.size else 0)
    last_error: str | None = None
    try:
        for attempt in range(attempts):
            have = part.stat().st_size if part.exists() else 0
            if remote.size is not None and have > remote.size:  # not the file we were fetching
                part.unlink()
                have = 0
            if remote.size is not None and have == remote.size:
                break
            if remote.sha256 is not None:
                running.sync(part)
            try:
                ended_cleanly = _fetch_into(client, url, part, have, progress, running)
            except httpx.ConnectError as exc:
                if attempt == 0 and have == 0:
                    raise _unreachable(endpoint, exc) from None
                last_error = f"{type(exc).__name__}: {exc}"
            except (httpx.TransportError, _Transient) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                got = part.stat().st_size if part.exists() else 0
                if ended_cleanly and (remote.size is None or got == remote.size):
                    break
                last_error = ("the server sent another byte range than asked" if not ended_cleanly
                              else f"the server ended the transfer early ({got:,} bytes)")
            if attempt + 1 < attempts and backoff_s:
                time.sleep(min(backoff_s * 2 ** attempt, 30.0))
    finally:
        progress.finish()
    return last_error


def _verify(part: Path, remote: RemoteFile, running: _RunningHash, last_error: str | None) -> None:
    """Size, then sha256 when known; a short file stays for resuming, a damaged one is removed."""
    got = part.stat().st_size if part.exists() else 0
    if remote.size is not None and got != remote.size:
        raise DownloadFailed(
            f"download of {remote.path} stopped at {got:,} of {remote.size:,} bytes ({last_error})",
            hint="run again to resume; the partial file is kept as " + part.name)
    if remote.sha256 is not None:
        running.sync(part)
        digest = running.hexdigest()
        if digest != remote.sha256:
            part.unlink()
            raise DownloadFailed(f"{remote.path} arrived damaged (sha256 {digest[:12]}…, expected "
                                 f"{remote.sha256[:12]}…); the partial file was removed",
                                 hint="run again to download it afresh")


def _fetch_into(client: httpx.Client, url: str, part: Path, have: int, progress: Progress,
                running: _RunningHash) -> bool:
    """One GET from byte ``have``; True when the server finished its response."""
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", url, headers=headers, follow_redirects=True) as r:
        if r.status_code == 416:  # nothing left to send: the .part already holds everything
            return True
        if r.status_code == 404:
            raise NotOnHub(f"{url} is not on the hub")
        if r.status_code == 429 or r.status_code >= 500:
            raise _Transient(f"the hub answered HTTP {r.status_code}")
        if r.status_code >= 400:
            raise DownloadFailed(f"the hub answered HTTP {r.status_code} for {url}")
        mode = "ab"
        if r.status_code == 206:
            start = r.headers.get("content-range", "").removeprefix("bytes ").split("-")[0]
            if start != str(have):  # the server sent another range than asked: start over
                part.unlink(missing_ok=True)
                return False
        else:  # 200: the server ignored Range, so the body is the whole file
            mode = "wb"
            running.reset()
            if have:
                progress.advance(-have)
        with part.open(mode) as fh:
            for chunk in r.iter_bytes():  # as it arrives, so an interruption loses nothing received
                fh.write(chunk)
                running.update(chunk)
                progress.advance(len(chunk))
    return True
