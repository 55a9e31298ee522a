"""A small local stand-in for the Hugging Face Hub's HTTP API, so publish/load tests run the real client offline.

It speaks what the installed ``huggingface_hub`` (2.x) calls for ``create_repo``, ``create_branch``,
``upload_folder`` (README YAML validation, preupload, the LFS batch API with a basic upload + verify, the ndjson
commit), ``repo_info`` and ``hf_hub_download`` (HEAD/GET ``resolve`` with X-Repo-Commit, ETag, X-Linked-Etag,
X-Linked-Size, and X-Error-Code on 404s).

It never sends Xet headers, so downloads take plain HTTP. Uploads are different: huggingface_hub 2.x picks Xet on
the client side whenever ``hf_xet`` is installed, without asking the server, so uploading clients must run with
``HF_HUB_DISABLE_XET=1`` (the Xet/CAS protocol is not implemented here).

Bounded on purpose: loopback only, in-memory, request bodies and total storage capped, socket timeouts set;
``with HubServer() as hub:`` stops it. ``hub.faults["commit"] = "500" | "drop"`` breaks a step for failure tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

TOKEN = "hf_local_test_token"
MAX_BODY = 32 << 20  # bytes per request
MAX_STORAGE = 128 << 20  # bytes held in all repos + pending LFS objects
LFS_SUFFIXES = (".safetensors", ".onnx", ".bin", ".pt", ".pth", ".ckpt")
REGULAR_MAX = 10 << 20  # the Hub sends bigger files through LFS too

_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/branch/(?P<rev>[^/]+)$"), "create_branch"),
    ("GET", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
    ("POST", re.compile(rf"^/{_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("POST", re.compile(rf"^/{_REPO}\.git/info/lfs/objects/verify$"), "lfs_verify"),
    ("PUT", re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$"), "lfs_upload"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


def _route(method: str, raw_path: str) -> tuple[str, dict[str, str]] | None:
    """Endpoint name and its unquoted path arguments (split before unquoting: revisions may hold %2F)."""
    for m, pattern, name in _ROUTES:
        match = pattern.match(raw_path)
        if m == method and match:
            return name, {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
    return None


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub uses as ETag / oid of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    lfs: bool

    @property
    def oid(self) -> str:
        return hashlib.sha256(self.data).hexdigest() if self.lfs else git_blob_sha1(self.data)


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit sha
    commits: dict[str, dict[str, StoredFile]] = field(default_factory=dict)  # sha -> tree (path -> file)

    def tree(self, rev: str) -> tuple[str, dict[str, StoredFile]] | None:
        sha = self.branches.get(rev, rev)
        return (sha, self.commits[sha]) if sha in self.commits else None


class HttpError(Exception):
    """An error answer: status, message and the X-Error-Code the client maps to its exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


class HubState:
    """Repos, pending LFS objects and injected faults; every access holds the lock (handlers run in threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.faults: dict[str, str] = {}
        self.requests: list[str] = []  # "METHOD route" log, for tests to assert what the client did
        self._counter = 0

    def stored_bytes(self) -> int:
        files = {id(f.data): len(f.data) for r in self.repos.values() for t in r.commits.values() for f in t.values()}
        return sum(files.values()) + sum(len(b) for b in self.lfs.values())

    def new_commit(self, repo: Repo, parent: str | None, tree: dict[str, StoredFile], message: str) -> str:
        self._counter += 1
        listing = sorted((p, f.oid) for p, f in tree.items())
        sha = hashlib.sha1(json.dumps([parent, listing, message, self._counter]).encode()).hexdigest()
        repo.commits[sha] = tree
        return sha

    def create(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(private)
        attributes = StoredFile(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", lfs=False)
        repo.branches["main"] = self.new_commit(repo, None, {".gitattributes": attributes}, "initial commit")
        self.repos[repo_id] = repo
        return repo

    def seed(self, repo_id: str, files: dict[str, bytes], private: bool = False) -> str:
        """Put files on ``main`` directly (test setup, e.g. another model already in the repo); returns the commit."""
        with self.lock:
            repo = self.repos.get(repo_id) or self.create(repo_id, private)
            head = repo.branches["main"]
            tree = dict(repo.commits[head])
            for path, data in files.items():
                tree[path] = StoredFile(data, lfs=path.endswith(LFS_SUFFIXES))
            repo.branches["main"] = self.new_commit(repo, head, tree, "seed")
            return repo.branches["main"]

    def file(self, repo_id: str, rev: str, path: str) -> bytes | None:
        with self.lock:
            repo = self.repos.get(repo_id)
            found = repo.tree(rev) if repo else None
            return found[1][path].data if found and path in found[1] else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 15  # a stuck client cannot hold a thread for ever

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures, not access logs
        return

    # --- plumbing -------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        raw_path = urlsplit(self.path).path
        routed = _route(method, raw_path)
        if routed is None:
            self._drain()
            self._send(404, {"error": f"no route for {method} {raw_path}"})
            return
        name, args = routed
        state = self.server.state
        with state.lock:
            state.requests.append(f"{method} {name}")
            fault = state.faults.get(name)
        if fault == "drop":  # the network goes away mid-request: no answer at all
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            body = self._drain()
            if fault == "500":
                raise HttpError(500, f"injected failure on {name}")
            status, payload, headers = getattr(self, f"_{name}")(body, **args)
        except HttpError as e:
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self._send(e.status, {"error": e.message}, headers, head=method == "HEAD")
            return
        self._send(status, payload, headers, head=method == "HEAD")

    def _drain(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise HttpError(413, f"request body over {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, head: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    # --- auth and lookups -----------------------------------------------------------------------------------------
    def _authed(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {TOKEN}"

    def _require_auth(self) -> None:
        if not self._authed():
            raise HttpError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_id: str, write: bool = False) -> Repo:
        if write:
            self._require_auth()
        repo = self.server.state.repos.get(repo_id)
        if repo is None or (repo.private and not self._authed()):
            raise HttpError(404 if repo is None else 401, "Repository not found", "RepoNotFound")
        return repo

    def _tree(self, repo: Repo, rev: str) -> tuple[str, dict[str, StoredFile]]:
        found = repo.tree(rev)
        if found is None:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return found

    def _url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    # --- endpoints --------------------------------------------------------------------------------------------------
    def _create_repo(self, body: bytes) -> tuple[int, Any, dict[str, str]]:
        self._require_auth()
        req = json.loads(body)
        if req.get("type", "model") != "model":
            raise HttpError(400, "this test server only hosts model repos")
        repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else f"user/{req['name']}"
        state = self.server.state
        with state.lock:
            if repo_id in state.repos:
                return 409, {"error": "You already created this model repo", "url": self._url(f"/{repo_id}")}, {}
            state.create(repo_id, private=req.get("visibility") == "private" or bool(req.get("private")))
        return 200, {"url": self._url(f"/{repo_id}"), "name": repo_id}, {}

    def _validate_yaml(self, body: bytes) -> tuple[int, Any, dict[str, str]]:
        content = json.loads(body)["content"]
        m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            meta = yaml.safe_load(m[1]) if m else {}
        except yaml.YAMLError as e:
            return 400, {"errors": [{"message": f"YAML does not parse: {e}"}], "warnings": []}, {}
        if not isinstance(meta, dict):
            return 400, {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _preupload(self, body: bytes, repo: str, rev: str) -> tuple[int, Any, dict[str, str]]:
        state = self.server.state
        with state.lock:
            tree = self._tree(self._repo(repo, write=True), rev)[1]
        files = []
        for f in json.loads(body)["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > REGULAR_MAX
            existing = tree.get(f["path"])
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.oid if existing else None,
                }
            )
        return 200, {"files": files}, {}

    def _lfs_batch(self, body: bytes, repo: str) -> tuple[int, Any, dict[str, str]]:
        req = json.loads(body)
        state = self.server.state
        with state.lock:
            self._repo(repo, write=True)
            known = set(state.lfs) | {
                f.oid for r in state.repos.values() for t in r.commits.values() for f in t.values() if f.lfs
            }
        objects = []
        for obj in req["objects"]:
            out: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in known:
                out["actions"] = {
                    "upload": {"href": self._url(f"/lfs-upload/{obj['oid']}")},
                    "verify": {"href": self._url(f"/{repo}.git/info/lfs/objects/verify")},
                }
            objects.append(out)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def _lfs_upload(self, body: bytes, oid: str) -> tuple[int, Any, dict[str, str]]:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HttpError(400, "uploaded content does not match its sha256 oid")
        state = self.server.state
        with state.lock:
            if state.stored_bytes() + len(body) > MAX_STORAGE:
                raise HttpError(507, f"test server storage is capped at {MAX_STORAGE} bytes")
            state.lfs[oid] = body
        return 200, b"", {}

    def _lfs_verify(self, body: bytes, repo: str) -> tuple[int, Any, dict[str, str]]:
        req = json.loads(body)
        state = self.server.state
        with state.lock:
            self._repo(repo, write=True)
            data = state.lfs.get(req["oid"])
        if data is None or len(data) != req["size"]:
            raise HttpError(404, f"LFS object {req['oid']} was not uploaded")
        return 200, {"ok": True}, {}

    def _commit(self, body: bytes, repo: str, rev: str) -> tuple[int, Any, dict[str, str]]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HttpError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        state = self.server.state
        with state.lock:
            r = self._repo(repo, write=True)
            parent, tree = self._tree(r, rev)
            if rev not in r.branches:
                raise HttpError(400, f"can only commit to a branch, not {rev!r}")
            if header.get("parentCommit") not in (None, parent):
                raise HttpError(412, "parent commit is not the head of the branch")
            tree = dict(tree)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    tree[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    data = state.lfs.get(value["oid"]) or next(
                        (f.data for f in tree.values() if f.lfs and f.oid == value["oid"]), None
                    )
                    if data is None:
                        raise HttpError(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    tree[value["path"]] = StoredFile(data, lfs=True)
                elif key == "deletedFile":
                    if tree.pop(value["path"], None) is None:
                        raise HttpError(404, "A file with this name doesn't exist", "EntryNotFound")
                else:
                    raise HttpError(400, f"unsupported commit operation {key!r}")
            if state.stored_bytes() > MAX_STORAGE:
                raise HttpError(507, f"test server storage is capped at {MAX_STORAGE} bytes")
            sha = state.new_commit(r, parent, tree, header.get("summary", ""))
            r.branches[rev] = sha
            state.lfs.clear()  # pending objects now live in a tree (or were abandoned by their client)
        return 200, {"success": True, "commitOid": sha, "commitUrl": self._url(f"/{repo}/commit/{sha}")}, {}

    def _create_branch(self, body: bytes, repo: str, rev: str) -> tuple[int, Any, dict[str, str]]:
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        state = self.server.state
        with state.lock:
            r = self._repo(repo, write=True)
            if rev in r.branches:
                raise HttpError(409, f"Reference refs/heads/{rev} already exists")
            r.branches[rev] = self._tree(r, start)[0]
        return 200, {}, {}

    def _repo_info(self, body: bytes, repo: str, rev: str = "main") -> tuple[int, Any, dict[str, str]]:
        state = self.server.state
        with state.lock:
            r = self._repo(repo)
            sha, tree = self._tree(r, rev)
        siblings = [{"rfilename": p} for p in sorted(tree)]
        return 200, {"id": repo, "modelId": repo, "sha": sha, "private": r.private, "siblings": siblings}, {}

    def _resolve(self, body: bytes, repo: str, rev: str, path: str) -> tuple[int, Any, dict[str, str]]:
        state = self.server.state
        with state.lock:
            r = self._repo(repo)
            sha, tree = self._tree(r, rev)
        f = tree.get(path)
        if f is None:
            raise HttpError(404, f"Entry not found: {path}", "EntryNotFound", commit=sha)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f.oid}"', "Accept-Ranges": "none"}
        if f.lfs:  # the Hub names the LFS content (sha256) separately from the pointer's git oid
            headers.update({"X-Linked-Etag": f'"{f.oid}"', "X-Linked-Size": str(len(f.data))})
            headers["ETag"] = f'"{git_blob_sha1(f.data)}"'
        return 200, f.data, headers


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState


class HubServer:
    """The server on 127.0.0.1 (a free port) in a background thread; a context manager that always stops it."""

    def __init__(self) -> None:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = HubState()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def state(self) -> HubState:
        return self._httpd.state

    @property
    def faults(self) -> dict[str, str]:
        return self._httpd.state.faults

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def client_env(self, base: dict[str, str], **extra: str) -> dict[str, str]:
        """Environment for a client process talking to this server with the test token (Xet off, see module doc)."""
        env = {k: v for k, v in base.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
        env.update({"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN})
        env.update({"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"})
        return {**env, **extra}

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
