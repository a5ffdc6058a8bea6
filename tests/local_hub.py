"""A stand-in for the Hugging Face Hub on 127.0.0.1: answers the requests huggingface_hub's download client
makes (HEAD/GET `/<repo>/resolve/<revision>/<file>`, GET `/api/models/<repo>[/revision/<rev>]`) from local
folders, so the real client can be exercised without a network."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class LocalHub:
    def __init__(self, repos: dict[str, Path], commit: str = "0123456789abcdef0123456789abcdef01234567"):
        self.repos = {repo_id: Path(folder) for repo_id, folder in repos.items()}
        self.commit = commit
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _known_revision(self, revision: str) -> bool:
        return revision in ("main", self.commit)

    def _serve(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append((handler.command, path))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            revision = parts[5] if len(parts) >= 6 and parts[4] == "revision" else "main"
            if repo_id not in self.repos or not self._known_revision(revision):
                return self._reply(handler, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
            siblings = [{"rfilename": p.name} for p in sorted(self.repos[repo_id].iterdir()) if p.is_file()]
            info = {"id": repo_id, "modelId": repo_id, "sha": self.commit, "siblings": siblings, "private": False}
            return self._reply(handler, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if repo_id not in self.repos:
                return self._reply(handler, 404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, body)
            if not self._known_revision(revision):
                return self._reply(handler, 404, b"Revision not found", {"X-Error-Code": "RevisionNotFound"}, body)
            file = self.repos[repo_id] / filename
            if not file.is_file():
                return self._reply(handler, 404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, body)
            data = file.read_bytes()
            headers = {"X-Repo-Commit": self.commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Content-Type": "application/octet-stream"}
            return self._reply(handler, 200, data, headers, body)
        return self._reply(handler, 404, b"not found", {}, body)

    @staticmethod
    def _reply(handler, status: int, data: bytes, headers: dict, body: bool) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)
