"""Which kubeconfig ctrace reads, by kubectl's rules (client-go's ClientConfigLoadingRules, issue 22).

--kubeconfig alone, and it must exist; else the files of KUBECONFIG (colon-separated)
that exist, merged, the first to set a key winning, a missing one skipped; else
~/.kube/config. No file at all is "no kubeconfig": the pods of this node from CRI
metadata. The API server is tests/k8s_api.py's, on loopback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrace.resolvers import kubernetes
from ctrace.resolvers.base import K8sOptions
from tests.conftest import ctrace
from tests.k8s_api import ApiServer


@pytest.fixture
def server() -> Iterator[ApiServer]:
    api = ApiServer()
    yield api
    api.stop()


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """No KUBECONFIG, no in-cluster variables, a HOME without ~/.kube/config."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path / "home")
    return env


def test_missing_entries_of_kubeconfig_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("{}")
    b.write_text("{}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("{}")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(["/nonexistent/one", str(a), "", str(b), str(a)]))
    assert kubernetes.kubeconfig_files(K8sOptions()) == [str(a), str(b)]
    # --kubeconfig alone, whatever KUBECONFIG says; existence is checked where it is loaded
    assert kubernetes.kubeconfig_files(K8sOptions(kubeconfig="/nonexistent/two")) == ["/nonexistent/two"]
    # KUBECONFIG set: ~/.kube/config is not read, even when none of its files exists (kubectl)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/one:/nonexistent/two")
    assert kubernetes.kubeconfig_files(K8sOptions()) == []
    assert not kubernetes.configured(K8sOptions())
    monkeypatch.setenv("KUBECONFIG", "")  # empty: as if unset
    assert kubernetes.kubeconfig_files(K8sOptions()) == [str(tmp_path / ".kube" / "config")]


def test_kubeconfig_of_missing_and_real_files_asks_the_server(
    server: ApiServer, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    first = server.kubeconfig(tmp_path / "first", namespace="shop")
    second = tmp_path / "second"  # merged after the first: its current-context and namespace lose
    data = json.loads(first.read_text())
    data["current-context"] = "other"
    second.write_text(json.dumps(data))
    env = {**clean_env, "KUBECONFIG": os.pathsep.join(["/nonexistent/config", str(first), str(second)])}
    res = ctrace("target", "pod/nope", "--func", "f", env=env)
    assert res.code == 1 and "pod shop/nope not found" in res.err, res.err
    assert server.requests == ["/api/v1/namespaces/shop/pods/nope"]


def test_explicit_kubeconfig_must_exist(server: ApiServer, tmp_path: Path, clean_env: dict[str, str]) -> None:
    good = server.kubeconfig(tmp_path / "config", namespace="shop")
    env = {**clean_env, "KUBECONFIG": str(good)}  # a good KUBECONFIG does not stand in for it
    res = ctrace("target", "pod/nope", "--func", "f", "--kubeconfig", str(tmp_path / "missing"), env=env)
    assert res.code == 3, res
    error, hint = res.err.strip().splitlines()
    assert error == f"ctrace: error: kubeconfig {tmp_path / 'missing'} does not exist"
    assert hint.startswith("hint: ") and "--kubeconfig" in hint
    assert server.requests == []


def test_kubeconfig_of_only_missing_files_is_no_kubeconfig(clean_env: dict[str, str]) -> None:
    env = {**clean_env, "KUBECONFIG": "/nonexistent/config:/nonexistent/other"}
    res = ctrace("target", "pod/no-such-pod-x", "-n", "shop", "--func", "f", env=env)
    assert res.code == 1, res
    assert "no pod 'no-such-pod-x' on this node (no kubeconfig or in-cluster config" in res.err, res.err
    assert "Invalid kube-config" not in res.err


def test_a_kubeconfig_that_is_not_one_is_one_clear_error(tmp_path: Path, clean_env: dict[str, str]) -> None:
    for text in ("", "[1, 2", "- a\n- b\n"):
        (tmp_path / "config").write_text(text)
        res = ctrace("target", "pod/x", "--func", "f", "--kubeconfig", str(tmp_path / "config"), env=clean_env)
        assert res.code == 3 and len(res.err.strip().splitlines()) == 2, (text, res)
        assert res.err.startswith("ctrace: error: kubeconfig") and "Traceback" not in res.err, (text, res.err)
    res = ctrace("target", "pod/x", "--func", "f", "--kubeconfig", str(tmp_path), env=clean_env)  # a directory
    assert res.code == 3 and "Traceback" not in res.err and len(res.err.strip().splitlines()) == 2, res
