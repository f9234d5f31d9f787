"""A small fake Kubernetes API server on 127.0.0.1, for what a real one will not do on demand.

The Kubernetes tests run against a real cluster (hack/cluster.sh, tests/test_kubernetes.py);
this fake stays for a request that never answers, a 500, a pod on a node that is not this
machine, and an API that contradicts the runtime. It serves real Pod, Deployment and DaemonSet
JSON, the shapes the official client and kubectl read.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STATUS_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}


def pod(
    name: str,
    namespace: str,
    container_id: str,
    node: str,
    labels: dict[str, str] | None = None,
    containers: tuple[str, ...] = ("cilium-agent",),
    uid: str = "",
) -> dict[str, Any]:
    """A running Pod whose first container is ``container_id`` (docker://...)."""
    statuses = [
        {
            "name": c,
            "containerID": container_id if i == 0 else f"docker://{'0' * 64}",
            "image": "ctrace/cilium-agent:dev",
            "ready": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": "2026-11-25T00:00:00Z"}},
        }
        for i, c in enumerate(containers)
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{name}",
            "labels": labels or {},
        },
        "spec": {"nodeName": node, "containers": [{"name": c, "image": "ctrace/cilium-agent:dev"} for c in containers]},
        "status": {"phase": "Running", "containerStatuses": statuses},
    }


def workload(kind: str, name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": labels}},
    }


def _selected(obj: dict[str, Any], query: dict[str, list[str]]) -> bool:
    labels = obj["metadata"].get("labels", {})
    for term in filter(None, query.get("labelSelector", [""])[0].split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    for term in filter(None, query.get("fieldSelector", [""])[0].split(",")):
        key, _, value = term.partition("=")
        if key == "spec.nodeName" and obj["spec"].get("nodeName") != value:
            return False
    return True


class ApiServer:
    """Serve ``objects`` until stopped; ``answer`` forces 401/403/404 or 'timeout' on every call."""

    def __init__(self) -> None:
        self.pods: list[dict[str, Any]] = []
        self.workloads: list[dict[str, Any]] = []
        self.answer: int | str | None = None
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                code, body = server.route(self.path)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, raw: str) -> tuple[int, dict[str, Any]]:
        if isinstance(self.answer, int):
            return self.answer, self.status(self.answer, "forced by the test")
        if self.answer == "timeout":
            time.sleep(3)  # longer than the tests' --request-timeout
        url = urllib.parse.urlsplit(raw)
        query = urllib.parse.parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        return self.lookup(parts, query)

    def lookup(self, parts: list[str], query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if parts[:2] == ["api", "v1"] and parts[-1] == "pods":
            ns = parts[3] if len(parts) == 5 else None
            items = [p for p in self.pods if (ns is None or p["metadata"]["namespace"] == ns) and _selected(p, query)]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
        if len(parts) >= 6 and parts[-2] in ("pods", "deployments", "daemonsets", "statefulsets"):
            ns, resource, name = parts[-3], parts[-2], parts[-1]
            pool = self.pods if resource == "pods" else self.workloads
            kind = {
                "pods": "Pod",
                "deployments": "Deployment",
                "daemonsets": "DaemonSet",
                "statefulsets": "StatefulSet",
            }
            for obj in pool:
                meta = obj["metadata"]
                if meta["namespace"] == ns and meta["name"] == name and obj["kind"] == kind[resource]:
                    return 200, obj
            return 404, self.status(404, f'{resource} "{name}" not found')
        return 404, self.status(404, "the server could not find the requested resource")

    @staticmethod
    def status(code: int, message: str) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": STATUS_REASONS.get(code, "Unknown"),
            "code": code,
        }

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context talks to this server."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [
                {"name": "local", "context": {"cluster": "local", "user": "tester", "namespace": namespace}},
                {"name": "other", "context": {"cluster": "local", "user": "tester", "namespace": "other-ns"}},
            ],
            "current-context": "local",
        }
        path.write_text(json.dumps(cfg))
        return path
