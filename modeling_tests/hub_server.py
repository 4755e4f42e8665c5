# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""A Hugging Face Hub on 127.0.0.1: the part of the Hub's HTTP protocol that `huggingface_hub` 2.4, transformers and
PEFT use to push a model and load it back, so `push_to_hub` / `from_pretrained` can be tested without the real Hub.

Served (read from huggingface_hub's own client code: `hf_api.py`, `_commit_api.py`, `lfs.py`, `file_download.py`):

    POST /api/repos/create                                 create a model repo (409 if it exists)
    POST /api/validate-yaml                                the README front matter must be valid YAML
    POST /api/models/{repo}/preupload/{rev}                "regular" or "lfs" per file, and the current blob oid
    POST /{repo}.git/info/lfs/objects/batch                git-LFS batch API, "basic" transfer
    PUT  /lfs/{sha256}, POST /lfs/{sha256}/verify          LFS upload target (content hash checked) and verify
    POST /api/models/{repo}/commit/{rev}                   ndjson commit: file (base64), lfsFile, deleted*
    GET  /api/models/{repo}[/revision/{rev}]               model info (sha, siblings)
    GET  /api/models/{repo}/tree/{rev}[/{path}]            tree listing (paginated by the client, one page here)
    HEAD/GET /{repo}/resolve/{rev}/{path}                  files, with ETag, X-Repo-Commit and Content-Length;
                                                           LFS files redirect to a CDN host (below), as on the Hub
    HEAD/GET http://localhost:{port}/cdn/{sha256}          the "CDN": a different host name for the same server, so
                                                           the client's cross-host redirect path runs

Errors carry the Hub's `X-Error-Code` header (RepoNotFound, RevisionNotFound, EntryNotFound), which is how the
client tells "no such file" (e.g. no README.md yet) from a failure. Writes need a bearer token. Xet storage is not
implemented: huggingface_hub uploads through Xet whenever `hf_xet` is installed, whatever the server says, so the
client side sets `HF_HUB_DISABLE_XET` (see `client_environment`) and uses plain LFS; downloads never see Xet because
no response carries an `X-Xet-Hash`.

Anything else gets a 501 and is recorded in `HubServer.unhandled`, so a test can assert the protocol was covered.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

# Files above this size, or whose first 512 bytes contain a NUL byte, are stored with LFS (the client sends regular
# files base64-encoded inside the commit request and assumes they are small).
REGULAR_FILE_MAX_BYTES = 5 * 1024 * 1024
_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_REV = r"(?P<rev>[^/]+)"


def git_blob_oid(content: bytes) -> str:
    """Git's object id of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class RepoFile:
    size: int
    oid: str  # git blob oid (regular) or sha256 (LFS)
    lfs: bool
    content: bytes | None = None  # regular files only; LFS content lives in the blob store


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, RepoFile]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return next((commit for commit in self.commits if commit.oid == oid), None)


class HubError(Exception):
    def __init__(self, status: HTTPStatus, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.headers = status, message, error_code, headers or {}


class HubServer:
    """The Hub state (repos, commits, LFS blobs on disk) and the HTTP server that serves it on a background thread."""

    def __init__(self, storage: Path, token: str = "hf_loopback_token"):
        self.token = token
        self.storage = Path(storage)
        (self.storage / "lfs").mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, Repo] = {}
        self.unhandled: list[str] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.cdn = f"http://localhost:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- state -------------------------------------------------------------------------------------------------------

    def lfs_path(self, oid: str) -> Path:
        return self.storage / "lfs" / oid

    def repo(self, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def commit_at(self, repo_id: str, revision: str) -> Commit:
        commit = self.repo(repo_id).resolve(unquote(revision))
        if commit is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"Revision {revision} not found in {repo_id}", "RevisionNotFound")
        return commit

    def create_repo(self, repo_id: str, private: bool) -> Repo:
        with self._lock:
            if repo_id in self.repos:
                raise HubError(HTTPStatus.CONFLICT, "You already created this model repo")
            repo = Repo(repo_id, private)
            self._append_commit(repo, "main", "initial commit", {})
            self.repos[repo_id] = repo
            return repo

    def _append_commit(self, repo: Repo, branch: str, message: str, files: dict[str, RepoFile]) -> Commit:
        parent = repo.branches.get(branch, "")
        tree = json.dumps(sorted((path, f.oid) for path, f in files.items()))
        oid = hashlib.sha1(f"{parent}\n{tree}\n{message}\n{time.time_ns()}".encode()).hexdigest()
        commit = Commit(oid, message, files)
        repo.commits.append(commit)
        repo.branches[branch] = oid
        return commit

    def commit(self, repo_id: str, branch: str, lines: list[dict]) -> Commit:
        header = lines[0]["value"] if lines and lines[0].get("key") == "header" else None
        if header is None:
            raise HubError(HTTPStatus.BAD_REQUEST, "A commit payload starts with a 'header' line")
        with self._lock:
            repo = self.repo(repo_id)
            if branch not in repo.branches:
                raise HubError(HTTPStatus.NOT_FOUND, f"Branch {branch} not found in {repo_id}", "RevisionNotFound")
            parent = repo.resolve(branch)
            if header.get("parentCommit") and not parent.oid.startswith(header["parentCommit"]):
                raise HubError(HTTPStatus.PRECONDITION_FAILED, "parentCommit is not the head of the branch")
            files = dict(parent.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(HTTPStatus.BAD_REQUEST, f"Unsupported encoding for {value['path']}")
                    content = base64.b64decode(value["content"])
                    files[value["path"]] = RepoFile(len(content), git_blob_oid(content), False, content)
                elif key == "lfsFile":
                    blob = self.lfs_path(value["oid"])
                    if not blob.exists():
                        raise HubError(HTTPStatus.UNPROCESSABLE_ENTITY, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = RepoFile(blob.stat().st_size, value["oid"], True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(HTTPStatus.NOT_FOUND, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {path: f for path, f in files.items() if not path.startswith(prefix)}
                else:
                    raise HubError(HTTPStatus.BAD_REQUEST, f"Unknown commit operation {key!r}")
            summary = header.get("summary") or "Upload files"
            return self._append_commit(repo, branch, summary, files)


# ----------------------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------------------


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    routes = [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", rf"/api/models/{_REPO}/preupload/{_REV}", "preupload"),
        ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),
        ("POST", r"/lfs/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
        ("POST", rf"/api/models/{_REPO}/commit/{_REV}", "commit"),
        ("GET", rf"/api/models/{_REPO}(?:/revision/{_REV})?", "model_info"),
        ("GET", rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?", "tree"),
        ("GET", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", "resolve"),
        ("GET", r"/cdn/(?P<oid>[0-9a-f]{64})", "cdn"),
        ("GET", r"/api/agent-harnesses", "agent_harnesses"),
    ]
    compiled = [(method, re.compile(pattern + r"/?"), name) for method, pattern, name in routes]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

        def log_message(self, format, *args):  # noqa: A002 - silence the per-request stderr log
            pass

        # -- plumbing ------------------------------------------------------------------------------------------------

        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            self.query = parse_qs(url.query)
            hub.requests.append(f"{method} {url.path}")
            lookup = "GET" if method == "HEAD" else method
            for route_method, pattern, name in compiled:
                match = pattern.fullmatch(url.path)
                if route_method == lookup and match:
                    try:
                        getattr(self, name)(**match.groupdict())
                    except HubError as err:
                        self._error(err)
                    return
            hub.unhandled.append(f"{method} {self.path}")
            self._body_bytes()
            self._error(HubError(HTTPStatus.NOT_IMPLEMENTED, f"{method} {url.path} is not served by the loopback Hub"))

        def _chunks(self) -> Iterator[bytes]:
            """The request body, de-chunked when sent with Transfer-Encoding: chunked (streamed uploads)."""
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return
                    yield self.rfile.read(size)
                    self.rfile.readline()
            else:
                remaining = int(self.headers.get("Content-Length") or 0)
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise HubError(HTTPStatus.BAD_REQUEST, "Request body ended early")
                    remaining -= len(chunk)
                    yield chunk

        def _body_bytes(self) -> bytes:
            return b"".join(self._chunks())

        def _json_body(self):
            return json.loads(self._body_bytes() or b"null")

        def _require_token(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {hub.token}":
                raise HubError(HTTPStatus.UNAUTHORIZED, "Invalid credentials in Authorization header")

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str | None = None):
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, str(value))
            if content_type:
                self.send_header("Content-Type", content_type)
            if "Content-Length" not in (headers or {}):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _json(self, payload, status: int = HTTPStatus.OK, headers: dict | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), headers, "application/json")

        def _error(self, err: HubError) -> None:
            headers = dict(err.headers)
            headers["X-Error-Message"] = err.message
            if err.error_code:
                headers["X-Error-Code"] = err.error_code
            self._json({"error": err.message}, err.status, headers)

        # -- repos and commits ---------------------------------------------------------------------------------------

        def create_repo(self):
            self._require_token()
            payload = self._json_body()
            if payload.get("type", "model") != "model":
                raise HubError(HTTPStatus.BAD_REQUEST, "The loopback Hub serves model repositories only")
            if not payload.get("organization"):
                raise HubError(HTTPStatus.BAD_REQUEST, "Pass a namespaced repo id ('user/name') to the loopback Hub")
            repo_id = f"{payload['organization']}/{payload['name']}"
            hub.create_repo(repo_id, payload.get("visibility") == "private")
            self._json({"url": f"{hub.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})

        def validate_yaml(self):
            content = self._json_body()["content"]
            match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.DOTALL)
            try:
                metadata = yaml.safe_load(match.group(1)) if match else {}
            except yaml.YAMLError as err:
                self._json({"errors": [{"message": f"Invalid YAML: {err}"}]}, HTTPStatus.BAD_REQUEST)
                return
            if metadata is not None and not isinstance(metadata, dict):
                self._json({"errors": [{"message": "Metadata must be a YAML mapping"}]}, HTTPStatus.BAD_REQUEST)
                return
            self._json({"errors": [], "warnings": []})

        def preupload(self, repo, rev):
            self._require_token()
            commit = hub.commit_at(repo, rev)
            files = []
            for entry in self._json_body()["files"]:
                sample = base64.b64decode(entry["sample"])
                lfs = entry["size"] > REGULAR_FILE_MAX_BYTES or b"\0" in sample
                current = commit.files.get(entry["path"])
                files.append(
                    {
                        "path": entry["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": current.oid if current is not None else None,
                    }
                )
            self._json({"files": files, "commitOid": commit.oid})

        def commit(self, repo, rev):
            self._require_token()
            if self.query.get("create_pr"):
                raise HubError(HTTPStatus.BAD_REQUEST, "Pull requests are not supported by the loopback Hub")
            lines = [json.loads(line) for line in self._body_bytes().splitlines() if line.strip()]
            commit = hub.commit(repo, unquote(rev), lines)
            self._json(
                {
                    "success": True,
                    "commitOid": commit.oid,
                    "commitUrl": f"{hub.endpoint}/{repo}/commit/{commit.oid}",
                    "pullRequestUrl": None,
                }
            )

        # -- LFS -----------------------------------------------------------------------------------------------------

        def lfs_batch(self, repo):
            self._require_token()
            hub.repo(repo)
            payload = self._json_body()
            if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
                raise HubError(HTTPStatus.BAD_REQUEST, "The loopback Hub accepts LFS uploads with the basic transfer")
            objects = []
            for obj in payload["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if not hub.lfs_path(obj["oid"]).exists():
                    target = f"{hub.endpoint}/lfs/{obj['oid']}"
                    entry["actions"] = {"upload": {"href": target}, "verify": {"href": f"{target}/verify"}}
                objects.append(entry)
            self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

        def lfs_put(self, oid):
            digest = hashlib.sha256()
            with tempfile.NamedTemporaryFile(dir=hub.storage / "lfs", delete=False) as tmp:
                for chunk in self._chunks():
                    digest.update(chunk)
                    tmp.write(chunk)
            if digest.hexdigest() != oid:
                os.unlink(tmp.name)
                raise HubError(HTTPStatus.BAD_REQUEST, f"Uploaded content hashes to {digest.hexdigest()}, not {oid}")
            os.replace(tmp.name, hub.lfs_path(oid))
            self._send(HTTPStatus.OK, headers={"ETag": f'"{oid}"'})

        def lfs_verify(self, oid):
            self._require_token()
            payload = self._json_body()
            blob = hub.lfs_path(oid)
            if not blob.exists() or blob.stat().st_size != payload["size"]:
                raise HubError(HTTPStatus.NOT_FOUND, f"LFS object {oid} is missing or has the wrong size")
            self._json({"success": True})

        # -- reads ---------------------------------------------------------------------------------------------------

        def model_info(self, repo, rev=None):
            commit = hub.commit_at(repo, rev or "main")
            self._json(
                {
                    "id": repo,
                    "modelId": repo,
                    "sha": commit.oid,
                    "private": hub.repo(repo).private,
                    "tags": [],
                    "siblings": [{"rfilename": path} for path in sorted(commit.files)],
                }
            )

        def tree(self, repo, rev, path=None):
            commit = hub.commit_at(repo, rev)
            prefix = f"{unquote(path).strip('/')}/" if path else ""
            recursive = self.query.get("recursive", ["False"])[0].lower() == "true"
            entries, folders = [], set()
            for file_path, repo_file in sorted(commit.files.items()):
                if not file_path.startswith(prefix):
                    continue
                rest = file_path[len(prefix) :]
                parts = rest.split("/")
                for depth in range(1, len(parts)):
                    if recursive or depth == 1:
                        folders.add(prefix + "/".join(parts[:depth]))
                if len(parts) > 1 and not recursive:
                    continue
                entry = {"type": "file", "path": file_path, "size": repo_file.size, "oid": repo_file.oid}
                if repo_file.lfs:
                    entry["lfs"] = {"oid": repo_file.oid, "size": repo_file.size, "pointerSize": 134}
                entries.append(entry)
            if prefix and not entries and not folders:
                raise HubError(HTTPStatus.NOT_FOUND, f"{path} does not exist on {rev}", "EntryNotFound")
            entries += [{"type": "directory", "path": folder, "oid": "0" * 40} for folder in sorted(folders)]
            self._json(entries)

        def resolve(self, repo, rev, path):
            commit = hub.commit_at(repo, rev)
            headers = {"X-Repo-Commit": commit.oid}
            repo_file = commit.files.get(unquote(path))
            if repo_file is None:
                raise HubError(HTTPStatus.NOT_FOUND, f"{path} does not exist on {rev}", "EntryNotFound", headers)
            if repo_file.lfs:
                headers.update(
                    {
                        "ETag": f'"{repo_file.oid}"',
                        "X-Linked-Etag": f'"{repo_file.oid}"',
                        "X-Linked-Size": repo_file.size,
                        "Location": f"{hub.cdn}/cdn/{repo_file.oid}",
                    }
                )
                self._send(HTTPStatus.FOUND, headers=headers)
                return
            headers["ETag"] = f'"{repo_file.oid}"'
            self._send(HTTPStatus.OK, repo_file.content, headers, "application/octet-stream")

        def agent_harnesses(self):
            # The client fetches this registry (to name the calling agent in its user agent); none is known here.
            self._json({"standardEnvVars": [], "harnesses": {}})

        def cdn(self, oid):
            blob = hub.lfs_path(oid)
            if not blob.exists():
                raise HubError(HTTPStatus.NOT_FOUND, f"No object {oid}")
            size = blob.stat().st_size
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if ranged:
                start = min(int(ranged.group(1)), size)
            headers = {"ETag": f'"{oid}"', "Content-Length": size - start, "Accept-Ranges": "bytes"}
            status = HTTPStatus.OK
            if ranged:
                status = HTTPStatus.PARTIAL_CONTENT
                headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
            self._send(status, headers=headers, content_type="application/octet-stream")
            if self.command == "HEAD":
                return
            with open(blob, "rb") as handle:
                handle.seek(start)
                shutil.copyfileobj(handle, self.wfile, 1 << 20)

    return Handler


# ----------------------------------------------------------------------------------------------------------------------
# Pointing the real client at the server
# ----------------------------------------------------------------------------------------------------------------------


def client_environment(hub: HubServer, cache_dir: Path) -> dict[str, str]:
    """Environment variables that point a fresh Python process's `huggingface_hub` (and transformers) at `hub`."""
    return {
        "HF_ENDPOINT": hub.endpoint,
        "HF_TOKEN": hub.token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(cache_dir / "home"),
        "HF_HUB_CACHE": str(cache_dir / "hub"),
        "HF_MODULES_CACHE": str(cache_dir / "modules"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "0",
    }


@contextlib.contextmanager
def client_pointed_at(hub: HubServer, cache_dir: Path) -> Iterator[dict[str, str]]:
    """Point this process's already-imported client at `hub`; yields the environment for subprocesses.

    huggingface_hub reads its settings from the environment once, at import, into `huggingface_hub.constants` (cache
    paths included: they are redirected too, so nothing lands in the user's real cache). Two objects also capture the
    endpoint when built: the module-level `HfApi` behind `huggingface_hub.create_repo` & co, and transformers' shared
    `HfApi` (`transformers.utils.hub._hf_api`, rebuilt lazily when reset). Patching those covers every call
    transformers, PEFT and huggingface_hub make here; everything is restored on exit.
    """
    import huggingface_hub.hf_api
    import transformers.utils.hub
    from huggingface_hub import constants

    env = client_environment(hub, cache_dir)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.setattr(constants, "ENDPOINT", hub.endpoint)
        url_template = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url_template)
        patch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        patch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
        patch.setattr(constants, "AGENT_HARNESSES_PATH", os.path.join(env["HF_HOME"], ".agent_harnesses.json"))
        patch.setattr(huggingface_hub.hf_api.api, "endpoint", hub.endpoint)
        patch.setattr(transformers.utils.hub, "_hf_api", None)
        yield env
