"""Hub downloads against a local stand-in hub: resume, truncation, damage, redirects, split files."""

from __future__ import annotations

import hashlib
import os

import pytest

from model.download import DownloadFailed, HubUnreachable, NotOnHub, download, list_repo, make_client, remote_file
from model.locate import download_profile
from model.profiles import get_profile

REPO = "Qwen/Qwen2.5-Coder-7B-Instruct-GGUF"
NAME = "weights.gguf"
BLOB = os.urandom(3 << 20)  # 3 MiB: several chunks


class Recorder:
    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0
        self.finished = False

    def start(self, name: str, total: int | None, done: int) -> None:
        self.total, self.done = total, done

    def advance(self, n: int) -> None:
        self.done += n

    def finish(self) -> None:
        self.finished = True


def _fetch(hub, dest, **kw):
    with make_client() as client:
        remote = remote_file(client, hub.url, REPO, NAME)
        return download(client, hub.url, REPO, remote, dest, backoff_s=0, **kw)


def test_head_reads_size_and_sha256_from_the_linked_headers_of_a_redirect(fake_hub):
    fake_hub.add(REPO, NAME, BLOB)
    with make_client() as client:
        remote = remote_file(client, fake_hub.url, REPO, NAME)
    assert remote.size == len(BLOB)
    assert remote.sha256 == hashlib.sha256(BLOB).hexdigest()


def test_download_writes_the_file_and_leaves_no_part_file(fake_hub, tmp_path):
    fake_hub.add(REPO, NAME, BLOB)
    progress = Recorder()
    path = _fetch(fake_hub, tmp_path / NAME, progress=progress)
    assert path.read_bytes() == BLOB
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]
    assert (progress.total, progress.done, progress.finished) == (len(BLOB), len(BLOB), True)


def test_an_interrupted_transfer_resumes_with_a_range_request(fake_hub, tmp_path):
    fake_hub.add(REPO, NAME, BLOB)
    fake_hub.cut_after, fake_hub.cut_times = 1_000_000, 1
    path = _fetch(fake_hub, tmp_path / NAME)
    assert path.read_bytes() == BLOB
    ranges = fake_hub.gets(f"/cdn/{REPO}/{NAME}")
    assert ranges[0] is None
    assert ranges[1] is not None and int(ranges[1].removeprefix("bytes=").rstrip("-")) >= 1_000_000
    assert not (tmp_path / f"{NAME}.part").exists()


def test_a_part_file_left_by_an_earlier_run_is_resumed_not_restarted(fake_hub, tmp_path):
    fake_hub.add(REPO, NAME, BLOB)
    (tmp_path / f"{NAME}.part").write_bytes(BLOB[:1234567])
    path = _fetch(fake_hub, tmp_path / NAME)
    assert path.read_bytes() == BLOB
    assert fake_hub.gets(f"/cdn/{REPO}/{NAME}") == ["bytes=1234567-"]


def test_a_transfer_that_keeps_falling_short_leaves_only_a_part_file(fake_hub, tmp_path):
    fake_hub.add(REPO, NAME, BLOB)
    fake_hub.cut_after, fake_hub.cut_times = 500_000, -1
    with pytest.raises(DownloadFailed) as err:
        _fetch(fake_hub, tmp_path / NAME, attempts=2)
    assert not (tmp_path / NAME).exists()
    part = tmp_path / f"{NAME}.part"
    assert 0 < part.stat().st_size < len(BLOB)
    assert "run again to resume" in str(err.value)
    # and the next run, with the hub healthy again, finishes it from where it stopped
    fake_hub.cut_after = None
    assert _fetch(fake_hub, tmp_path / NAME).read_bytes() == BLOB


def test_a_damaged_download_is_removed_and_never_renamed(fake_hub, tmp_path):
    fake_hub.add(REPO, NAME, BLOB)
    fake_hub.wrong_sha = True
    with pytest.raises(DownloadFailed, match="arrived damaged"):
        _fetch(fake_hub, tmp_path / NAME)
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_ignores_range_restarts_the_file_cleanly(fake_hub, tmp_path):
    fake_hub.add(REPO, NAME, BLOB)
    fake_hub.ignore_range = True
    (tmp_path / f"{NAME}.part").write_bytes(b"stale bytes of something else")
    progress = Recorder()
    assert _fetch(fake_hub, tmp_path / NAME, progress=progress).read_bytes() == BLOB
    assert progress.done == len(BLOB)


def test_a_bigger_part_file_than_the_remote_is_discarded(fake_hub, tmp_path):
    fake_hub.add(REPO, NAME, BLOB)
    (tmp_path / f"{NAME}.part").write_bytes(BLOB + b"extra")
    assert _fetch(fake_hub, tmp_path / NAME).read_bytes() == BLOB
    assert fake_hub.gets(f"/cdn/{REPO}/{NAME}") == [None]


def test_a_complete_file_is_not_fetched_again(fake_hub, tmp_path):
    fake_hub.add(REPO, NAME, BLOB)
    (tmp_path / NAME).write_bytes(BLOB)
    _fetch(fake_hub, tmp_path / NAME)
    assert fake_hub.gets(NAME) == []


def test_a_missing_file_is_reported_as_not_on_the_hub(fake_hub):
    with make_client() as client, pytest.raises(NotOnHub):
        remote_file(client, fake_hub.url, REPO, "nope.gguf")


def test_connection_refused_is_hub_unreachable(refused_endpoint):
    with make_client() as client, pytest.raises(HubUnreachable, match="AGENT_HF_ENDPOINT"):
        remote_file(client, refused_endpoint, REPO, NAME)


def test_list_repo_returns_sizes_and_sha256(fake_hub):
    fake_hub.add(REPO, NAME, BLOB)
    fake_hub.add(REPO, "README.md", b"# card")
    with make_client() as client:
        files = {f.path: f for f in list_repo(client, fake_hub.url, REPO)}
    assert files[NAME].size == len(BLOB) and files[NAME].sha256 == hashlib.sha256(BLOB).hexdigest()
    assert files["README.md"].size == 6 and files["README.md"].sha256 is None


def test_profile_download_fetches_every_split_part(fake_hub, tmp_path):
    profile = get_profile("qwen2.5-coder-7b-instruct-q4_k_m")
    assert len(profile.files) == 2
    parts = [os.urandom(2000), os.urandom(1500)]
    for name, blob in zip(profile.files, parts):
        fake_hub.add(profile.repo, name, blob)
    path = download_profile(profile, tmp_path, endpoint=fake_hub.url, backoff_s=0)
    assert path == tmp_path / profile.files[0]
    assert [(tmp_path / n).read_bytes() for n in profile.files] == parts


def test_profile_download_finds_a_single_file_when_the_hub_has_no_split(fake_hub, tmp_path):
    profile = get_profile("qwen2.5-coder-7b-instruct-q4_k_m")
    fake_hub.add(profile.repo, f"{profile.id}.gguf", BLOB)
    path = download_profile(profile, tmp_path, endpoint=fake_hub.url, backoff_s=0)
    assert path.name == f"{profile.id}.gguf" and path.read_bytes() == BLOB


def test_profile_download_finds_another_part_count_than_the_profile_lists(fake_hub, tmp_path):
    profile = get_profile("qwen2.5-coder-7b-instruct-q4_k_m")
    names = [f"{profile.id}-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for n in names:
        fake_hub.add(profile.repo, n, n.encode() * 50)
    path = download_profile(profile, tmp_path, endpoint=fake_hub.url, backoff_s=0)
    assert path.name == names[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_hf_profile_download_fills_a_folder_only_when_complete(fake_hub, tmp_path):
    profile = get_profile("qwen2.5-coder-0.5b-instruct")
    fake_hub.add(profile.repo, "config.json", b'{"num_hidden_layers": 1}')
    fake_hub.add(profile.repo, "model.safetensors", BLOB)
    fake_hub.add(profile.repo, "README.md", b"# not needed")
    fake_hub.cut_after, fake_hub.cut_times = 100_000, -1
    with pytest.raises(DownloadFailed):
        download_profile(profile, tmp_path, endpoint=fake_hub.url, backoff_s=0)
    assert not (tmp_path / profile.local_name).exists()
    fake_hub.cut_after = None
    folder = download_profile(profile, tmp_path, endpoint=fake_hub.url, backoff_s=0)
    assert folder == tmp_path / "Qwen2.5-Coder-0.5B-Instruct"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_a_busy_hub_is_retried(fake_hub, tmp_path):
    fake_hub.add(REPO, NAME, BLOB)
    fake_hub.busy_times = 2
    assert _fetch(fake_hub, tmp_path / NAME).read_bytes() == BLOB
    assert len(fake_hub.gets(f"/cdn/{REPO}/{NAME}")) == 3


def test_a_hub_that_stays_busy_fails_with_the_status(fake_hub, tmp_path):
    fake_hub.add(REPO, NAME, BLOB)
    fake_hub.busy_times = 10
    with pytest.raises(DownloadFailed, match="HTTP 503"):
        _fetch(fake_hub, tmp_path / NAME, attempts=2)
    assert not (tmp_path / NAME).exists()


def test_a_second_downloader_of_the_same_file_is_refused_while_the_first_holds_it(fake_hub, tmp_path):
    import fcntl

    fake_hub.add(REPO, NAME, BLOB)
    with (tmp_path / f"{NAME}.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DownloadFailed, match="another process is downloading"):
            _fetch(fake_hub, tmp_path / NAME)
    assert not (tmp_path / NAME).exists()
