"""`longlive-runner download` against a local fake of the Hugging Face hub (stdlib http.server).

The fake serves what the real hub serves for these calls: `GET /api/models/{repo}/revision/{rev}`
(`sha`, `siblings` with `blobId`, `size` and `lfs.sha256`), and `GET /{repo}/resolve/{rev}/{path}`,
which redirects LFS files to a "CDN" path (with `X-Linked-Etag`) and honours `Range` requests.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from longlive_runner.weights.download import (
    LONGLIVE_REPO,
    MANIFEST_NAME,
    WAN_REPO,
    DownloadError,
    download_weights,
)

COMMIT_WAN = "a" * 40
COMMIT_LL = "b" * 40
LFS_SUFFIXES = (".pt", ".pth", ".safetensors")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub:
    """Files per repository, and knobs to make the server misbehave."""

    repos: dict[str, dict[str, bytes]]
    commits: dict[str, str]
    requests: list[Request] = field(default_factory=list)
    break_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before closing (once)
    corrupt: set[str] = field(default_factory=set)  # paths served with one byte flipped
    ignore_range: bool = False
    token: str | None = None  # when set, requests without this bearer token get 401
    url: str = ""

    def resolve_requests(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/" + path) and "/api/" not in r.path]


def _is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            hub.requests.append(
                Request("GET", unquote(url.path), {k.lower(): v for k, v in self.headers.items()})
            )
            if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
                return self._send(
                    401, b'{"error": "Invalid credentials"}', {"Content-Type": "application/json"}
                )
            parts = unquote(url.path).strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
                return self._api(f"{parts[2]}/{parts[3]}", parts[5], url.query)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            if parts[0] == "cdn" and len(parts) >= 4:
                return self._content(f"{parts[1]}/{parts[2]}", "/".join(parts[3:]), {})
            self._send(404, b"not found")

        def _api(self, repo: str, rev: str, query: str) -> None:
            if repo not in hub.repos or rev not in ("main", hub.commits[repo]):
                return self._send(
                    404, b'{"error": "Repository not found"}', {"Content-Type": "application/json"}
                )
            siblings = []
            for path, data in sorted(hub.repos[repo].items()):
                entry = {"rfilename": path}
                if "blobs=true" in query:
                    entry["size"] = len(data)
                    entry["blobId"] = _git_sha1(data)
                    if _is_lfs(path):
                        entry["lfs"] = {
                            "sha256": hashlib.sha256(data).hexdigest(),
                            "size": len(data),
                            "pointerSize": 134,
                        }
                siblings.append(entry)
            body = json.dumps({"id": repo, "sha": hub.commits[repo], "siblings": siblings}).encode()
            self._send(200, body, {"Content-Type": "application/json"})

        def _resolve(self, repo: str, rev: str, path: str) -> None:
            if repo not in hub.repos or path not in hub.repos[repo] or rev != hub.commits[repo]:
                return self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"})
            data = hub.repos[repo][path]
            if _is_lfs(path):
                self._send(
                    302,
                    b"Found. Redirecting",
                    {
                        "Location": f"/cdn/{repo}/{path}",
                        "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                        "X-Linked-Size": str(len(data)),
                        "X-Repo-Commit": hub.commits[repo],
                    },
                )
                return
            self._content(repo, path, {"ETag": f'"{_git_sha1(data)}"', "X-Repo-Commit": hub.commits[repo]})

        def _content(self, repo: str, path: str, extra: dict[str, str]) -> None:
            data = hub.repos[repo][path]
            if path in hub.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start, status, headers = 0, 200, dict(extra)
            rng = self.headers.get("Range")
            if rng and not hub.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            cut = hub.break_after.pop(path, None)
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body)), "Accept-Ranges": "bytes"}.items():
                self.send_header(k, v)
            self.end_headers()
            if cut is not None:  # the connection breaks mid-file
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in {**(headers or {}), "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[[FakeHub], FakeHub]]:
    servers: list[ThreadingHTTPServer] = []

    def start(hub: FakeHub) -> FakeHub:
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(hub))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        hub.url = f"http://127.0.0.1:{server.server_address[1]}"
        return hub

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def generated_repos(seed: int = 0) -> dict[str, dict[str, bytes]]:
    """Small random files under the real file names (one LFS file large enough to split)."""
    rnd = random.Random(seed)
    return {
        WAN_REPO: {
            "config.json": json.dumps({"model_type": "t2v", "dim": 64}).encode(),
            "diffusion_pytorch_model.safetensors": rnd.randbytes(5000),
            "Wan2.1_VAE.pth": rnd.randbytes(70_000),
            "models_t5_umt5-xxl-enc-bf16.pth": rnd.randbytes(300_000),
            "google/umt5-xxl/tokenizer.json": b'{"version": "1.0"}',
            "README.md": b"# Wan",
        },
        LONGLIVE_REPO: {
            "models/longlive_base.pt": rnd.randbytes(2_500_000),
            "models/lora.pt": rnd.randbytes(40_000),
        },
    }


@pytest.fixture
def hub(serve) -> FakeHub:
    return serve(FakeHub(generated_repos(), {WAN_REPO: COMMIT_WAN, LONGLIVE_REPO: COMMIT_LL}))


def fetch(hub: FakeHub, to: Path, **kw) -> dict[str, Path]:
    kw.setdefault("progress", False)
    kw.setdefault("retry_wait", 0.0)
    kw.setdefault("log", lambda _text: None)
    return download_weights(to, endpoint=hub.url, **kw)


def assert_same_files(hub: FakeHub, to: Path, *, with_dit: bool = False) -> None:
    folders = {WAN_REPO: to / "Wan2.1-T2V-1.3B", LONGLIVE_REPO: to / "LongLive"}
    for repo, files in hub.repos.items():
        for path, data in files.items():
            target = folders[repo] / path
            if path == "README.md" or (path.startswith("diffusion_") and not with_dit):
                assert not target.exists(), path
            else:
                assert target.read_bytes() == data, path
    assert not list(to.rglob("*.part"))


# ----------------------------------------------------------------------------------------------
def test_full_download_verified_pinned_to_the_commit(hub, tmp_path):
    folders = fetch(hub, tmp_path)
    assert folders == {"wan": tmp_path / "Wan2.1-T2V-1.3B", "longlive": tmp_path / "LongLive"}
    assert_same_files(hub, tmp_path)
    resolves = [r.path for r in hub.requests if "/resolve/" in r.path]
    assert len(resolves) == 6  # config, VAE, T5, tokenizer, base, LoRA: not the Wan DiT, not README
    assert all(f"/resolve/{COMMIT_WAN}/" in p or f"/resolve/{COMMIT_LL}/" in p for p in resolves)
    manifest = json.loads((tmp_path / "LongLive" / MANIFEST_NAME).read_text())
    data = hub.repos[LONGLIVE_REPO]["models/lora.pt"]
    assert manifest["models/lora.pt"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_rerun_skips_verified_files_and_only_and_with_wan_dit(hub, tmp_path):
    fetch(hub, tmp_path)
    hub.requests.clear()
    fetch(hub, tmp_path)
    assert not [r for r in hub.requests if "/api/" not in r.path]  # nothing downloaded again
    hub.requests.clear()
    fetch(hub, tmp_path, only="wan", with_wan_dit=True)
    assert [r.path.rsplit("/", 1)[1] for r in hub.requests if "/resolve/" in r.path] == [
        "diffusion_pytorch_model.safetensors"
    ]
    assert all(LONGLIVE_REPO not in r.path for r in hub.requests)
    assert_same_files(hub, tmp_path, with_dit=True)
    # A file altered on disk is noticed (its hash no longer matches) and fetched again.
    vae = tmp_path / "Wan2.1-T2V-1.3B" / "Wan2.1_VAE.pth"
    vae.write_bytes(b"x" * vae.stat().st_size)
    hub.requests.clear()
    fetch(hub, tmp_path, only="wan")
    assert [r.path.rsplit("/", 1)[1] for r in hub.requests if "/resolve/" in r.path] == ["Wan2.1_VAE.pth"]
    assert vae.read_bytes() == hub.repos[WAN_REPO]["Wan2.1_VAE.pth"]


def test_broken_connection_is_resumed_with_range(hub, tmp_path):
    path = "models/longlive_base.pt"
    hub.break_after[path] = 1_000_000
    fetch(hub, tmp_path, only="longlive")
    cdn = [r for r in hub.resolve_requests(path) if r.path.startswith("/cdn/")]
    assert [r.headers.get("range") for r in cdn] == [None, "bytes=1000000-"]
    assert (tmp_path / "LongLive" / path).read_bytes() == hub.repos[LONGLIVE_REPO][path]
    assert not list(tmp_path.rglob("*.part"))


def test_interrupted_run_keeps_the_part_and_the_next_run_resumes(hub, tmp_path):
    path = "models/longlive_base.pt"
    hub.break_after[path] = 700_000
    with pytest.raises(DownloadError, match="Run the command again to resume") as info:
        fetch(hub, tmp_path, only="longlive", retries=0)
    assert "gave up after 0 retries" in str(info.value)
    part = tmp_path / "LongLive" / (path + ".part")
    assert part.stat().st_size == 700_000 and not (tmp_path / "LongLive" / path).exists()
    hub.requests.clear()
    fetch(hub, tmp_path, only="longlive")
    assert [r.headers.get("range") for r in hub.resolve_requests(path) if r.path.startswith("/cdn/")] == [
        "bytes=700000-"
    ]
    assert (tmp_path / "LongLive" / path).read_bytes() == hub.repos[LONGLIVE_REPO][path]


def test_a_server_answering_200_to_a_range_request_starts_over(hub, tmp_path):
    path = "models/lora.pt"
    part = tmp_path / "LongLive" / (path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes of another version")
    hub.ignore_range = True
    fetch(hub, tmp_path, only="longlive")
    assert hub.resolve_requests(path)[-1].headers.get("range") == "bytes=30-"
    assert (tmp_path / "LongLive" / path).read_bytes() == hub.repos[LONGLIVE_REPO][path]


def test_a_stale_part_that_does_not_verify_is_downloaded_afresh(hub, tmp_path):
    path = "models/lora.pt"
    part = tmp_path / "LongLive" / (path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 10_000)  # bytes of another version: the resumed file cannot verify
    fetch(hub, tmp_path, only="longlive")
    cdn = [r for r in hub.resolve_requests(path) if r.path.startswith("/cdn/")]
    assert [r.headers.get("range") for r in cdn] == ["bytes=10000-", None]
    assert (tmp_path / "LongLive" / path).read_bytes() == hub.repos[LONGLIVE_REPO][path]


@pytest.mark.parametrize(
    ("only", "path", "digest"),
    [("longlive", "models/lora.pt", "sha256"), ("wan", "config.json", "git blob sha1")],
)
def test_corrupted_file_is_rejected_and_nothing_is_left(hub, tmp_path, only, path, digest):
    hub.corrupt.add(path)
    with pytest.raises(DownloadError) as info:
        fetch(hub, tmp_path, only=only)
    message = str(info.value)
    assert "does not match the hub" in message and digest in message and "partial file was deleted" in message
    folder = tmp_path / ("LongLive" if only == "longlive" else "Wan2.1-T2V-1.3B")
    assert not (folder / path).exists()
    assert not list(tmp_path.rglob("*.part"))


def test_token_is_sent_as_bearer_and_a_refusal_says_what_to_do(serve, tmp_path):
    hub = serve(
        FakeHub(generated_repos(), {WAN_REPO: COMMIT_WAN, LONGLIVE_REPO: COMMIT_LL}, token="hf_s3cret")
    )
    with pytest.raises(DownloadError, match="HTTP 401") as info:
        fetch(hub, tmp_path / "a")
    assert "HF_TOKEN" in str(info.value)
    hub.requests.clear()
    fetch(hub, tmp_path / "b", only="longlive", token="hf_s3cret")
    assert hub.requests and all(r.headers.get("authorization") == "Bearer hf_s3cret" for r in hub.requests)
    with pytest.raises(DownloadError, match="refused") as info:
        fetch(hub, tmp_path / "c", token="wrong-token")
    assert "wrong-token" not in str(info.value)


def test_not_found_and_unreachable_hub_fail_clearly(hub, tmp_path):
    with pytest.raises(DownloadError, match="not found \\(HTTP 404\\)") as info:
        fetch(hub, tmp_path, only="wan", wan_revision="no-such-branch")
    assert "no-such-branch" in str(info.value) and "--wan-revision" in str(info.value)
    with pytest.raises(DownloadError, match="cannot reach http://127.0.0.1:9"):
        download_weights(tmp_path, endpoint="http://127.0.0.1:9", log=lambda _t: None)


def test_downloaded_folders_load_with_load_pipeline(serve, real_layout, tmp_path):
    """Serve the tiny model in the real layouts: what `download` writes is what load_pipeline reads."""
    repos: dict[str, dict[str, bytes]] = {}
    for repo, folder in ((WAN_REPO, real_layout["wan"]), (LONGLIVE_REPO, real_layout["longlive"])):
        repos[repo] = {
            p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
        }
    hub = serve(FakeHub(repos, {WAN_REPO: COMMIT_WAN, LONGLIVE_REPO: COMMIT_LL}))
    folders = fetch(hub, tmp_path)
    assert not (folders["wan"] / "diffusion_pytorch_model.safetensors").exists()

    from longlive_runner import load_pipeline

    pipe = load_pipeline("tiny", wan_dir=folders["wan"], longlive_dir=folders["longlive"], device="cpu")
    assert pipe.config.dit.dim == 64


def test_cli_downloads_with_progress_and_never_prints_the_token(serve, tmp_path):
    hub = serve(
        FakeHub(generated_repos(), {WAN_REPO: COMMIT_WAN, LONGLIVE_REPO: COMMIT_LL}, token="hf_s3cret")
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "HF_TOKEN")}
    cmd = [sys.executable, "-m", "longlive_runner", "download", "--endpoint", hub.url, "--to", str(tmp_path)]
    proc = subprocess.run(
        cmd, env={**env, "HF_TOKEN": "hf_s3cret"}, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert_same_files(hub, tmp_path)
    assert "MB/s" in proc.stderr or "kB/s" in proc.stderr  # the progress bar: bytes and rate
    assert "(2.50MB)" in proc.stderr and "every file verified" in proc.stderr
    assert "\r" not in proc.stderr  # not a terminal: the bars are whole lines, not one redrawn line
    assert "--wan-dir" in proc.stderr and "hf_s3cret" not in proc.stderr + proc.stdout
    assert all(r.headers.get("authorization") == "Bearer hf_s3cret" for r in hub.requests)

    # HF_ENDPOINT picks the endpoint; a refused token: exit 2, one clear line, no traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "longlive_runner", "download", "--to", str(tmp_path / "x"), "--only", "wan"],
        env={**env, "HF_ENDPOINT": hub.url, "HF_TOKEN": "bad-token"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "longlive-runner: error: the hub refused" in proc.stderr and "HTTP 401" in proc.stderr
    assert "Traceback" not in proc.stderr and "bad-token" not in proc.stderr
