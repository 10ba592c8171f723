"""`longlive-runner download`: fetch the Wan2.1 and LongLive weights from the Hugging Face hub.

```bash
longlive-runner download --to models          # -> models/Wan2.1-T2V-1.3B and models/LongLive
longlive-runner generate --wan-dir models/Wan2.1-T2V-1.3B --longlive-dir models/LongLive --prompt "0:..."
```

What it does, per file (docs/weights.md):

- asks the hub what it holds (`GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true`: size,
  LFS sha256, git blob id) and pins the revision to the commit it answers with;
- streams `{endpoint}/{repo}/resolve/{commit}/{path}` to `<file>.part` with a progress bar (bytes,
  rate, time left); an interrupted transfer is resumed with an HTTP `Range` request (a server that
  answers 200 instead of 206 makes it start over), within this run (`--retries`) or the next one;
- verifies the content against the digest the hub states: the LFS sha256 for weight files, the git
  blob sha1 for small non-LFS files (size alone is never trusted). A mismatch deletes the `.part`
  file and fails; only a verified file is renamed into place;
- skips files already complete and verified (their digests are remembered in a small
  `.longlive-download.json` in each folder; a file changed since is hashed again).

`HF_TOKEN` is sent as `Authorization: Bearer ...` (never printed); `--endpoint` or `HF_ENDPOINT`
selects a mirror. Network errors, 401/403 and 404 exit with status 2 and a hint.

The Wan DiT (`diffusion_pytorch_model.safetensors`, 5.7 GB) is not fetched by default: LongLive's
`models/longlive_base.pt` overwrites every DiT weight, so `load_pipeline(wan_dir=..., longlive_dir=...)`
never reads it. `--with-wan-dit` fetches it too (needed only to load Wan2.1 without LongLive).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from ..arguments import CLIError
from ..model.layouts import (
    LONGLIVE_BASE_FILE,
    LONGLIVE_LORA_FILE,
    WAN_CONFIG_FILE,
    WAN_DIT_FILE,
    WAN_T5_FILE,
    WAN_TOKENIZER_FILE,
    WAN_VAE_FILE,
)
from ..progress import format_bytes, progress_bar

__all__ = [
    "DEFAULT_ENDPOINT",
    "DownloadError",
    "HubClient",
    "LONGLIVE_REPO",
    "RemoteFile",
    "WAN_REPO",
    "download_file",
    "download_weights",
    "planned_files",
    "register_cli",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
LONGLIVE_REPO = "Efficient-Large-Model/LongLive-1.3B"
WAN_SUBDIR = "Wan2.1-T2V-1.3B"
LONGLIVE_SUBDIR = "LongLive"
WAN_FILES = (WAN_CONFIG_FILE, WAN_VAE_FILE, WAN_T5_FILE, WAN_TOKENIZER_FILE)
LONGLIVE_FILES = (LONGLIVE_BASE_FILE, LONGLIVE_LORA_FILE)
MANIFEST_NAME = ".longlive-download.json"
CHUNK = 1 << 20
TOKEN_HINT = (
    "set HF_TOKEN to a Hugging Face access token with read access (https://huggingface.co/settings/tokens) "
    "and accept the model's terms on its page if it is gated"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


class DownloadError(Exception):
    """A download failed; the message says what and what to do (the CLI prints it, exit 2)."""


# --- what the hub holds -----------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repository at a pinned commit, with the digest the hub states for it."""

    repo: str
    path: str
    revision: str
    size: int | None
    sha256: str | None = None
    """The LFS sha256 of the content (weight files)."""
    git_sha1: str | None = None
    """The git blob id, sha1(b"blob <size>\\0" + content) (small files kept in git)."""

    def url(self, endpoint: str) -> str:
        return f"{endpoint}/{self.repo}/resolve/{quote(self.revision, safe='')}/{quote(self.path, safe='/')}"


def _hex_digest(value: Any, pattern: re.Pattern[str]) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().strip('"').removeprefix("W/").strip('"').lower()
    value = value.removeprefix("sha256:")
    return value if pattern.match(value) else None


def parse_file_entry(repo: str, revision: str, entry: Mapping[str, Any]) -> RemoteFile:
    """A `siblings` entry of the revision API (`rfilename`, `blobId`, `lfs.sha256`) or a
    `paths-info` entry (`path`, `oid`, `lfs.oid`)."""
    path = str(entry.get("rfilename") or entry.get("path") or "")
    lfs = entry.get("lfs") if isinstance(entry.get("lfs"), Mapping) else None
    size = entry.get("size")
    sha256 = None
    if lfs is not None:
        sha256 = _hex_digest(lfs.get("sha256") or lfs.get("oid"), _SHA256)
        size = lfs.get("size", size)
    git_sha1 = _hex_digest(entry.get("blobId") or entry.get("oid"), _SHA1)
    return RemoteFile(
        repo=repo,
        path=path,
        revision=revision,
        size=int(size) if isinstance(size, int) and not isinstance(size, bool) else None,
        sha256=sha256,
        git_sha1=None if lfs is not None else git_sha1,
    )


class HubClient:
    """The few Hugging Face hub HTTP calls the download needs, with clear errors."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        headers = {"User-Agent": "longlive-runner-download"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._owns_client = client is None
        self.client = client or httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout, read=timeout), follow_redirects=True
        )
        if client is not None:
            self.client.headers.update(headers)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def repo_files(self, repo: str, revision: str) -> tuple[str, dict[str, RemoteFile]]:
        """(commit, {path: RemoteFile}) of `repo` at `revision`."""
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}"
        try:
            response = self.client.get(url, params={"blobs": "true"})
        except httpx.HTTPError as exc:
            raise network_error(self.endpoint, exc) from None
        check_status(response, repo, revision, "the file list", self.endpoint)
        try:
            info = response.json()
        except ValueError:
            raise DownloadError(
                f"{url}: the answer is not JSON; is {self.endpoint} a Hugging Face hub (--endpoint / HF_ENDPOINT)?"
            ) from None
        commit = info.get("sha") if isinstance(info, Mapping) else None
        pinned = commit if isinstance(commit, str) and commit else revision
        siblings = info.get("siblings") if isinstance(info, Mapping) else None
        if not isinstance(siblings, list):
            raise DownloadError(f"{url}: the answer lists no files ('siblings'); is this a model repository?")
        files = {}
        for entry in siblings:
            if isinstance(entry, Mapping):
                remote = parse_file_entry(repo, pinned, entry)
                if remote.path:
                    files[remote.path] = remote
        return pinned, files


def network_error(endpoint: str, exc: httpx.HTTPError) -> DownloadError:
    return DownloadError(
        f"cannot reach {endpoint}: {type(exc).__name__}: {exc or 'no details'}. Check the network "
        "connection (a proxy via HTTPS_PROXY), or use a mirror with --endpoint or HF_ENDPOINT; "
        "run the command again to resume."
    )


def check_status(response: httpx.Response, repo: str, revision: str, what: str, endpoint: str) -> None:
    """Raise a `DownloadError` with a hint for a refused request."""
    code = response.status_code
    if code < 400:
        return
    where = f"{repo} at revision {revision!r} on {endpoint}"
    has_token = "authorization" in response.request.headers
    if code in (401, 403):
        hint = (
            "the token in HF_TOKEN was refused or lacks access: check it, and accept the model's terms on its page"
            if has_token
            else TOKEN_HINT
        )
        raise DownloadError(f"the hub refused {what} of {where} (HTTP {code}): {hint}")
    if code == 404:
        raise DownloadError(
            f"{what} of {where} was not found (HTTP 404): check the repository name and the revision "
            "(--wan-revision / --longlive-revision), and the endpoint (--endpoint / HF_ENDPOINT); "
            f"a private or gated repository also answers 404 without a token: {TOKEN_HINT}"
        )
    raise DownloadError(f"the hub answered HTTP {code} for {what} of {where}; try again later")


# --- one file ---------------------------------------------------------------------------------
class _Digests:
    """The hashes a file is checked with, fed incrementally."""

    def __init__(self, remote: RemoteFile, total: int | None) -> None:
        self.sha256 = hashlib.sha256()
        self.git = None
        if remote.sha256 is None and total is not None:  # a file kept in git: its blob id
            self.git = hashlib.sha1(f"blob {total}\0".encode(), usedforsecurity=False)

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)

    def check(self, remote: RemoteFile, header_sha256: str | None, header_sha1: str | None) -> str | None:
        """None when the content matches what the hub states, else why not."""
        got = self.sha256.hexdigest()
        expected = remote.sha256 or header_sha256
        if expected is not None:
            return None if got == expected else f"sha256 {got}, the hub states {expected}"
        expected_sha1 = remote.git_sha1 or header_sha1
        if expected_sha1 is not None and self.git is not None:
            got_sha1 = self.git.hexdigest()
            return (
                None
                if got_sha1 == expected_sha1
                else f"git blob sha1 {got_sha1}, the hub states {expected_sha1}"
            )
        return "the hub states no checksum for this file (no LFS sha256, no git blob id), so it cannot be verified"


def _hash_file(path: Path, digests: _Digests, limit: int | None = None) -> int:
    """Feed the first `limit` bytes of `path` (all when None) to `digests`; returns bytes read."""
    read = 0
    with path.open("rb") as f:
        while limit is None or read < limit:
            chunk = f.read(CHUNK if limit is None else min(CHUNK, limit - read))
            if not chunk:
                break
            digests.update(chunk)
            read += len(chunk)
    return read


def verify_file(path: Path, remote: RemoteFile) -> str | None:
    """None when the file on disk is what the hub states (size and digest), else why not."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{size} bytes, the hub states {remote.size}"
    digests = _Digests(remote, size)
    _hash_file(path, digests)
    return digests.check(remote, None, None)


def download_file(
    hub: HubClient,
    remote: RemoteFile,
    dest: Path,
    *,
    retries: int = 3,
    retry_wait: float = 1.0,
    progress: bool = True,
    stream: TextIO | None = None,
    label: str | None = None,
) -> str:
    """Download `remote` to `dest` through `dest.part` (resumed when present), verified.

    Returns the file's sha256. Raises `DownloadError`; on a digest mismatch the `.part` file is
    deleted and `dest` is left untouched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    url = remote.url(hub.endpoint)
    label = label or remote.path
    attempt = 0
    while True:
        try:
            return _transfer(hub, remote, url, part, dest, progress=progress, stream=stream, label=label)
        except _Retryable as exc:
            attempt += 1
            if attempt > retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"{remote.repo}/{remote.path}: {exc.message}; gave up after {retries} retries "
                    f"({format_bytes(kept)} kept in {part}). Run the command again to resume, check the "
                    "network, or use a mirror with --endpoint / HF_ENDPOINT."
                ) from None
            print(
                f"\n{label}: {exc.message}; retrying ({attempt}/{retries}) from byte {part.stat().st_size if part.exists() else 0}",
                file=stream or sys.stderr,
            )
            time.sleep(retry_wait * attempt)


class _Retryable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _transfer(
    hub: HubClient,
    remote: RemoteFile,
    url: str,
    part: Path,
    dest: Path,
    *,
    progress: bool,
    stream: TextIO | None,
    label: str,
) -> str:
    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have > remote.size:
        part.unlink()
        have = 0
    if remote.size is not None and have == remote.size and have > 0:  # complete: only verify it
        return _finish(remote, part, dest, have, None, None, resumed=True)
    headers = {"Accept-Encoding": "identity"}  # byte offsets (Range) must be those of the file
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with hub.client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and have:  # the range starts past the end: start over
                part.unlink()
                raise _Retryable("the server refused the resume range (HTTP 416); starting over")
            if response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code} from the server")
            check_status(response, remote.repo, remote.revision, f"the file {remote.path}", hub.endpoint)
            offset = _resume_offset(response, have)
            total = _total_size(response, offset, remote.size)
            if remote.size is not None and total is not None and total != remote.size:
                raise DownloadError(
                    f"{remote.repo}/{remote.path}: the server sends {total} bytes, the hub's file list "
                    f"states {remote.size}; the repository changed meanwhile? Run the command again."
                )
            header_sha256 = _header_sha256(response)
            header_sha1 = _header_sha1(response)
            digests = _Digests(remote, total)
            mode = "ab" if offset else "wb"
            if offset:
                _hash_file(part, digests, offset)
            written = offset
            with (
                part.open(mode) as out,
                progress_bar(
                    total,
                    label,
                    bytes=True,
                    initial=offset,
                    stream=stream,
                    enabled=progress and total is not None,
                ) as bar,
            ):
                try:
                    for chunk in response.iter_bytes():  # as received: a break keeps every byte
                        out.write(chunk)
                        digests.update(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
                except httpx.HTTPError as exc:
                    out.flush()
                    raise _Retryable(
                        f"the transfer broke off at byte {written}: {exc or type(exc).__name__}"
                    ) from None
    except httpx.HTTPError as exc:
        if isinstance(
            exc, (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
        ):
            raise _Retryable(f"{type(exc).__name__}: {exc or 'no details'}") from None
        raise network_error(hub.endpoint, exc) from None
    if total is not None and written < total:
        raise _Retryable(f"the transfer broke off at byte {written} of {total}")
    return _finish(
        remote, part, dest, written, header_sha256, header_sha1, resumed=offset > 0, digests=digests
    )


def _header_sha256(response: httpx.Response) -> str | None:
    """The LFS sha256 the hub puts in `X-Linked-Etag` (or `ETag`) of a resolve answer."""
    for r in (*response.history, response):
        for name in ("x-linked-etag", "etag"):
            value = _hex_digest(r.headers.get(name), _SHA256)
            if value is not None:
                return value
    return None


def _header_sha1(response: httpx.Response) -> str | None:
    """The git blob id in the `ETag` of a resolve answer for a file kept in git."""
    for r in (*response.history, response):
        value = _hex_digest(r.headers.get("etag"), _SHA1)
        if value is not None:
            return value
    return None


def _resume_offset(response: httpx.Response, have: int) -> int:
    if response.status_code == 206:
        match = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
        if match is None or int(match.group(1)) != have:
            raise _Retryable(
                f"the server resumed at an unexpected range {response.headers.get('content-range')!r}"
            )
        return have
    return 0  # 200: the whole file (a server that ignores Range): start over


def _total_size(response: httpx.Response, offset: int, known: int | None) -> int | None:
    if response.status_code == 206:
        match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("content-range", ""))
        if match:
            return int(match.group(1))
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and "content-encoding" not in response.headers:
        return offset + int(length)
    return known


def _finish(
    remote: RemoteFile,
    part: Path,
    dest: Path,
    size: int,
    header_sha256: str | None,
    header_sha1: str | None,
    *,
    resumed: bool,
    digests: _Digests | None = None,
) -> str:
    if digests is None:
        digests = _Digests(remote, size)
        _hash_file(part, digests)
    elif digests.git is None and remote.sha256 is None:  # the size was unknown up front
        digests = _Digests(remote, size)
        _hash_file(part, digests)
    problem = digests.check(remote, header_sha256, header_sha1)
    if problem is not None:
        part.unlink(missing_ok=True)
        if resumed:  # the kept bytes may be stale (another version): one fresh try
            raise _Retryable(f"the resumed file does not match the hub ({problem}); starting over")
        raise DownloadError(
            f"{remote.repo}/{remote.path}: the downloaded content does not match the hub ({problem}); "
            f"the partial file was deleted and {dest} was not written. Run the command again; if it "
            "happens again, a proxy or mirror (--endpoint / HF_ENDPOINT) is altering the file."
        )
    os.replace(part, dest)
    return digests.sha256.hexdigest()


# --- the whole set ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Planned:
    repo: str
    revision: str
    folder: str
    paths: tuple[str, ...]


def planned_files(
    only: str | None = None,
    *,
    with_wan_dit: bool = False,
    wan_revision: str = "main",
    longlive_revision: str = "main",
) -> list[Planned]:
    """The repositories and files to fetch (`only`: None, "wan" or "longlive")."""
    plans = []
    if only in (None, "wan"):
        paths = WAN_FILES + ((WAN_DIT_FILE,) if with_wan_dit else ())
        plans.append(Planned(WAN_REPO, wan_revision, WAN_SUBDIR, paths))
    if only in (None, "longlive"):
        plans.append(Planned(LONGLIVE_REPO, longlive_revision, LONGLIVE_SUBDIR, LONGLIVE_FILES))
    return plans


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, folder / MANIFEST_NAME)


def _already_verified(path: Path, remote: RemoteFile, record: Any) -> bool:
    """True when `path` is known (manifest) or checked (hash) to be what the hub states."""
    if not path.is_file():
        return False
    stat = path.stat()
    if (
        isinstance(record, Mapping)
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
        and (
            (remote.sha256 is not None and record.get("sha256") == remote.sha256)
            or (
                remote.sha256 is None
                and remote.git_sha1 is not None
                and record.get("git_sha1") == remote.git_sha1
            )
        )
    ):
        return True
    return verify_file(path, remote) is None


def download_weights(
    to: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    token: str | None = None,
    only: str | None = None,
    with_wan_dit: bool = False,
    wan_revision: str = "main",
    longlive_revision: str = "main",
    retries: int = 3,
    retry_wait: float = 1.0,
    progress: bool = True,
    stream: TextIO | None = None,
    log: Callable[[str], None] | None = None,
    client: httpx.Client | None = None,
) -> dict[str, Path]:
    """Fetch the weights into `to/Wan2.1-T2V-1.3B` and `to/LongLive`; returns those folders
    ({"wan": ..., "longlive": ...}, the ones fetched)."""
    say = log or (lambda text: print(text, file=stream or sys.stderr))
    plans = planned_files(
        only, with_wan_dit=with_wan_dit, wan_revision=wan_revision, longlive_revision=longlive_revision
    )
    folders: dict[str, Path] = {}
    with HubClient(endpoint, token, client=client) as hub:
        work: list[tuple[Planned, RemoteFile, Path, dict[str, Any]]] = []
        for plan in plans:
            commit, files = hub.repo_files(plan.repo, plan.revision)
            folder = to / plan.folder
            folders["wan" if plan.repo == WAN_REPO else "longlive"] = folder
            manifest = _read_manifest(folder)
            for path in plan.paths:
                remote = files.get(path)
                if remote is None:
                    raise DownloadError(
                        f"{plan.repo} at revision {plan.revision!r} has no file {path!r} (it lists "
                        f"{len(files)} files); check --{'wan' if plan.repo == WAN_REPO else 'longlive'}-revision"
                    )
                work.append((plan, remote, folder, manifest))
            say(f"{plan.repo} @ {commit[:12]}: {len(plan.paths)} files -> {folder}")
        todo = []
        for plan, remote, folder, manifest in work:
            dest = folder / remote.path
            if _already_verified(dest, remote, manifest.get(remote.path)):
                say(f"  {remote.path}: already complete and verified, skipped")
                _remember(folder, manifest, remote, dest, None)
            else:
                todo.append((plan, remote, folder, manifest))
        _check_space(to, [(r, f / r.path) for _, r, f, _ in todo])
        for i, (_plan, remote, folder, manifest) in enumerate(todo, 1):
            dest = folder / remote.path
            size = f" ({format_bytes(remote.size)})" if remote.size is not None else ""
            say(f"[{i}/{len(todo)}] {remote.repo}/{remote.path}{size}")
            sha256 = download_file(
                hub,
                remote,
                dest,
                retries=retries,
                retry_wait=retry_wait,
                progress=progress,
                stream=stream,
                label=f"  {Path(remote.path).name}",
            )
            _remember(folder, manifest, remote, dest, sha256)
    return folders


def _remember(
    folder: Path, manifest: dict[str, Any], remote: RemoteFile, dest: Path, sha256: str | None
) -> None:
    stat = dest.stat()
    manifest[remote.path] = {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256 or remote.sha256,
        "git_sha1": remote.git_sha1,
        "revision": remote.revision,
    }
    _write_manifest(folder, manifest)


def _check_space(to: Path, todo: Iterable[tuple[RemoteFile, Path]]) -> None:
    needed = 0
    for remote, dest in todo:
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        needed += max((remote.size or 0) - have, 0)
    if not needed:
        return
    to.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(to).free
    if free < needed:
        raise DownloadError(
            f"not enough disk space in {to}: {format_bytes(needed)} to download, {format_bytes(free)} free"
        )


# --- CLI --------------------------------------------------------------------------------------
def register_cli(subparsers: Any) -> None:
    """Add `download` to the `longlive-runner` command."""
    p = subparsers.add_parser(
        "download",
        help="download the Wan2.1 + LongLive weights from the Hugging Face hub (resumable, verified)",
        description=f"Download {WAN_REPO} (config, VAE, umT5 encoder, tokenizer) into DIR/{WAN_SUBDIR} and "
        f"{LONGLIVE_REPO} (models/longlive_base.pt, models/lora.pt) into DIR/{LONGLIVE_SUBDIR}, resuming "
        "interrupted transfers and verifying every file against the hub's sha256. HF_TOKEN, if set, is "
        "sent as a bearer token.",
    )
    p.add_argument("--to", type=Path, required=True, metavar="DIR", help="destination folder")
    p.add_argument("--only", choices=["wan", "longlive"], help="fetch only one of the two repositories")
    p.add_argument(
        "--with-wan-dit",
        action="store_true",
        help="also fetch Wan's diffusion_pytorch_model.safetensors (5.7 GB; LongLive replaces it, so it is "
        "only needed to run Wan2.1 without LongLive)",
    )
    p.add_argument(
        "--endpoint",
        default=None,
        help=f"hub URL (default: $HF_ENDPOINT, else {DEFAULT_ENDPOINT})",
    )
    p.add_argument("--wan-revision", default="main", help="branch, tag or commit of the Wan repository")
    p.add_argument(
        "--longlive-revision", default="main", help="branch, tag or commit of the LongLive repository"
    )
    p.add_argument("--retries", type=int, default=3, help="resume attempts per file after a broken transfer")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    endpoint = (args.endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise CLIError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
    if args.retries < 0:
        raise CLIError("--retries must be >= 0")
    token = os.environ.get("HF_TOKEN") or None
    try:
        folders = download_weights(
            args.to,
            endpoint=endpoint,
            token=token,
            only=args.only,
            with_wan_dit=args.with_wan_dit,
            wan_revision=args.wan_revision,
            longlive_revision=args.longlive_revision,
            retries=args.retries,
            progress=not args.quiet,
        )
    except DownloadError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write the files: {exc}") from None
    print("done: every file verified", file=sys.stderr)
    if "wan" in folders and "longlive" in folders:
        print(
            f"run it: longlive-runner generate --wan-dir {folders['wan']} --longlive-dir {folders['longlive']} "
            '--prompt "0:a red fox running through fresh snow"',
            file=sys.stderr,
        )
    return 0
