"""Pods, deployments, daemonsets and selectors through the official client.

``kubernetes`` is imported only here and only inside functions: it costs about
300 ms, which ``ctrace --help`` and host targets must not pay. Raw JSON is read
(``_preload_content=False``) into the TypedDicts of resolvers/pods.py.
"""

from __future__ import annotations

import json
import os
import threading

from ctrace.errors import CtraceError, EnvironmentProblem, NotFound
from ctrace.model import AGENT_NAMESPACE, Container, Pod, Process
from ctrace.proc import cgroups, placement
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers import apierrors, host, pods
from ctrace.resolvers.base import Context, K8sOptions

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

_FORWARDS = threading.Lock()

NAME = "k8s"
AGENT_SELECTOR = "app.kubernetes.io/name=ctrace-agent"
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
HINT = "check --kubeconfig, KUBECONFIG and --context"


def claims(target: str, ctx: Context) -> bool:
    if pods.split_target(target) is not None or ctx.k8s.selector is not None:
        return True
    return ctx.k8s.under_kubectl and host.parse_pid(target) is None


def resolve(target: str, ctx: Context) -> list[Process]:
    if not configured(ctx.k8s):
        from ctrace.resolvers import nodepods

        return nodepods.resolve(target, ctx)  # no API server: the pods on this node, from CRI metadata
    api = Api(ctx.k8s)
    found = api.find_pods(target)
    if not found:
        raise NotFound(f"no pods match {target or api.opts.selector!r} in namespace {api.namespace}", api.get_hint())
    out: list[Process] = []
    for pod in found:
        out.extend(_processes(api, pod, ctx))
    return out


def _processes(api: Api, pod: pods.PodJSON, ctx: Context) -> list[Process]:
    name, note = pods.choose_container(pod, ctx.k8s.container)
    notes = (note,) if note else ()  # kubectl's "Defaulted container" line, shown with the target
    runtime, cid = pods.container_id(pod, name)
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    node = spec.get("nodeName", "")
    image = next((c.get("image", "") for c in spec.get("containers", []) if c.get("name") == name), "")
    container = Container(id=cid, name=name, image=image, runtime=runtime)
    local = container_pids(cid, ctx.proc_root)
    info = Pod(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""), name, node)
    if not local:
        remote = Pod(info.namespace, info.name, info.uid, name, node, api.agent_on(node))
        return [Process(0, (), name, "", runtime="k8s", container=container, pod=remote, remote=True, notes=notes)]
    procs = []
    for pid in local:
        try:
            proc = host.process(pid, ctx)
        except CtraceError:
            continue  # exited, or a kernel thread
        procs.append(_agreed(proc._replace(notes=(*proc.notes, *notes)), container, info, ctx))
    return procs


def _agreed(proc: Process, container: Container, info: Pod, ctx: Context) -> Process:
    """The API's pod, with what the runtime itself says about the container (its root filesystem,
    namespace, the node container it runs in), and a note where the two disagree on the pod."""
    from ctrace.resolvers import runtimes

    try:
        (local,) = runtimes.annotate([proc], ctx, {proc.pid: placement.placement(proc.pid, ctx.proc_root)})
    except CtraceError:
        local = proc  # exited while we looked: the API's word alone
    found, notes = container, proc.notes
    if local.container is not None and local.container.id == container.id:
        found = local.container._replace(name=container.name, image=container.image or local.container.image)
    said = local.pod
    if said is not None and (said.namespace, said.name) != (info.namespace, info.name):
        notes = (*notes, f"the API server says pod {info.namespace}/{info.name}; "
                 f"the runtime's CRI metadata says {said.namespace}/{said.name}")  # fmt: skip
    return Process(
        proc.pid, proc.nspid, proc.comm, proc.exe, proc.deleted, "k8s", found, info, proc.nspid[-1] == 1, notes=notes
    )


def container_pids(container_id: str, proc_root: str) -> list[int]:
    """Host PIDs of a container, by the id in their cgroup paths (any runtime, kind's nesting too)."""
    return sorted(pid for pid, p in placement.placements(proc_root).items() if p.container_id == container_id)


def configured(opts: K8sOptions) -> bool:
    """Whether a cluster is configured at all (a kubeconfig, or running in a pod): cheap, no import."""
    return bool(opts.kubeconfig) or bool(kubeconfig_files(opts)) or _in_cluster()


def kubeconfig_files(opts: K8sOptions) -> list[str]:
    """The kubeconfig files kubectl reads (client-go's ClientConfigLoadingRules): --kubeconfig alone;
    else each file named in KUBECONFIG (colon-separated, merged, the first to set a key wins) that
    exists, a missing one skipped; else ~/.kube/config if it exists. [] is "no kubeconfig"."""
    if opts.kubeconfig:
        return [opts.kubeconfig]  # must exist: checked where it is loaded (_load), as kubectl does
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        return list(dict.fromkeys(p for p in listed.split(os.pathsep) if p and os.path.exists(p)))
    home = os.path.expanduser("~/.kube/config")
    return [home] if os.path.exists(home) else []


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def annotate(procs: list[Process], ctx: Context, where: dict[int, cgroups.Placement]) -> list[Process]:
    """Reverse lookup for ``ps`` and ``ns``: the pod of each containerised process, when the API answers."""
    wanted = {where[p.pid].container_id for p in procs if p.pid in where}
    if not wanted or not configured(ctx.k8s):
        return procs
    try:
        api = Api(ctx.k8s)
        listed = api.call("pods", "list_pod_for_all_namespaces")
    except CtraceError:
        return procs  # no cluster answers: ps and ns still show everything else
    by_id = {}
    for pod in listed.get("items", []):
        for status in pod.get("status", {}).get("containerStatuses", []):
            ident = status.get("containerID", "").partition("://")[2]
            if ident in wanted:
                by_id[ident] = _pod_of(pod, status.get("name", ""))
    out = []
    for p in procs:
        found = by_id.get(where[p.pid].container_id or "") if p.pid in where else None
        out.append(p._replace(pod=found) if found else p)
    return out


def _pod_of(pod: pods.PodJSON, container: str) -> Pod:
    meta = pod.get("metadata", {})
    node = pod.get("spec", {}).get("nodeName", "")
    return Pod(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""), container, node)


class Api:
    """The two API groups ctrace reads, with every client error translated where it happens."""

    def __init__(self, opts: K8sOptions) -> None:
        self.opts = opts
        self.client, self.namespace = _load(opts)
        self._agents: dict[str, str | None] = {}

    def get_hint(self) -> str:
        return f"list them with 'kubectl get pods -n {self.namespace}'"

    def call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        from kubernetes import client

        group = client.AppsV1Api if "deployment" in method or "daemon_set" in method or "stateful" in method else None
        api = (group or client.CoreV1Api)(self.client)
        try:
            resp = getattr(api, method)(
                *args, _preload_content=False, _request_timeout=self.opts.request_timeout, **kwargs
            )
            return json.loads(resp.data)
        except Exception as err:
            raise _translate(err, what, self) from err

    def find_pods(self, target: str) -> list[pods.PodJSON]:
        labels, fields = self.pod_query(target)
        if fields:  # pod/NAME: read, so a missing pod is a 404 that names it
            name = fields.partition("=")[2]
            pod: pods.PodJSON = self.call(f"pod {self.namespace}/{name}", "read_namespaced_pod", name, self.namespace)
            return [pod]
        return self.select(labels)

    def select(self, selector: str) -> list[pods.PodJSON]:
        if self.opts.all_namespaces:
            data = self.call("pods", "list_pod_for_all_namespaces", label_selector=selector)
        else:
            data = self.call(
                f"pods in {self.namespace}", "list_namespaced_pod", self.namespace, label_selector=selector
            )
        items: list[pods.PodJSON] = data.get("items", [])
        return items

    def pod_query(self, target: str) -> tuple[str, str]:
        """(label selector, field selector) of the pods a target means, for a list and a watch."""
        split = pods.split_target(target) if target else None
        if split is None and target and not self.opts.selector:
            split = ("pod", target)
        if split is None:
            return self.opts.selector or "", ""
        kind, name = split
        if kind == "pod":
            return "", f"metadata.name={name}"
        method = {"deployment": "deployment", "daemonset": "daemon_set", "statefulset": "stateful_set"}[kind]
        workload = self.call(f"{kind} {self.namespace}/{name}", f"read_namespaced_{method}", name, self.namespace)
        return pods.selector_string(workload.get("spec", {}).get("selector", {})), ""

    def list_pods(self, labels: str, fields: str, namespace: str | None = None) -> tuple[list[pods.PodJSON], str]:
        """The matching pods and the list's resourceVersion (where a watch starts)."""
        ns = namespace or ("" if self.opts.all_namespaces else self.namespace)
        where = f"pods in {ns}" if ns else "pods"
        query = {"label_selector": labels, "field_selector": fields}
        if ns:
            data = self.call(where, "list_namespaced_pod", ns, **query)
        else:
            data = self.call(where, "list_pod_for_all_namespaces", **query)
        return data.get("items", []), data.get("metadata", {}).get("resourceVersion", "")

    def watch_pods(self, labels: str, fields: str, version: str, seconds: int) -> Iterator[tuple[str, pods.PodJSON]]:
        """(ADDED|MODIFIED|DELETED, pod) from ``version`` on, for at most ``seconds`` (the server ends it)."""
        from kubernetes import client, watch

        api = client.CoreV1Api(self.client)
        ns = "" if self.opts.all_namespaces else self.namespace
        method, args = (api.list_namespaced_pod, (ns,)) if ns else (api.list_pod_for_all_namespaces, ())
        query = {"label_selector": labels, "field_selector": fields, "resource_version": version}
        try:
            events = watch.Watch().stream(
                method, *args, timeout_seconds=seconds, _request_timeout=seconds + 10, deserialize=False, **query
            )
            for got in events:
                if got.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    yield got["type"], got["object"]
        except Exception as err:
            raise _translate(err, f"pods in {ns or 'all namespaces'} (watch)", self) from err

    def machine_id(self, node: str) -> str | None:
        """status.nodeInfo.machineID of a node (None when it cannot be read)."""
        try:
            got = self.call(f"node {node}", "read_node", node)
        except CtraceError:
            return None
        return got.get("status", {}).get("nodeInfo", {}).get("machineID") or None

    def portforward(self, namespace: str, pod: str, port: int) -> Any:
        """A socket to ``port`` on the pod's loopback, through the API server (pods/portforward).

        In-process (the client's websocket port-forward) rather than a `kubectl port-forward`
        child: it dies with ctrace by construction (nothing to reap or leak after SIGKILL), it
        authenticates exactly as the pod listing did, and needs no kubectl on PATH."""
        from kubernetes import client
        from kubernetes.stream import portforward

        # The stream helpers swap call_api on the ApiClient they are given while they run:
        # a client of their own, one at a time, keeps the list and watch calls untouched.
        with _FORWARDS:
            api = client.CoreV1Api(client.ApiClient(self.client.configuration))
            try:
                forward = portforward(api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
            except Exception as err:
                raise _translate(err, f"pods/portforward of {namespace}/{pod}", self, verb="create") from err
        return forward.socket(port)

    def agent_on(self, node: str) -> str | None:
        """The ctrace node agent pod on ``node`` (manifests/agent.yaml), if one runs."""
        if node not in self._agents:
            try:
                data = self.call(
                    "agent pods",
                    "list_namespaced_pod",
                    AGENT_NAMESPACE,
                    label_selector=AGENT_SELECTOR,
                    field_selector=f"spec.nodeName={node}",
                )
                names = [p["metadata"]["name"] for p in data.get("items", [])]
            except (NotFound, EnvironmentProblem):
                names = []
            self._agents[node] = names[0] if names else None
        return self._agents[node]


def _load(opts: K8sOptions) -> tuple[Any, str]:
    """An ApiClient and the namespace to use, as kubectl would choose them."""
    import yaml
    from kubernetes import client, config

    cfg = client.Configuration()
    files = kubeconfig_files(opts)
    try:
        if files:
            _check_explicit(opts)
            current = _current_context(files)  # read first: it also checks each file is a kubeconfig
            context = opts.context or current
            joined = os.pathsep.join(files)  # the client merges a colon-separated list, first name wins
            config.load_kube_config(joined, context=context, client_configuration=cfg)
            namespace = opts.namespace or _context_namespace(joined, context)
        elif _in_cluster():
            config.load_incluster_config(client_configuration=cfg)
            namespace = opts.namespace or _read(SA_NAMESPACE) or "default"
        else:
            raise EnvironmentProblem(
                "no kubeconfig found and not running in a pod", "pass --kubeconfig or set KUBECONFIG"
            )
    except (config.ConfigException, OSError, yaml.YAMLError) as err:
        why = " ".join(str(err).split())  # YAML's errors span lines: the CLI prints one
        raise EnvironmentProblem(f"kubeconfig: {why}", HINT) from err
    cfg.retries = 0  # fail fast: a down API server is an answer, not something to wait out
    return client.ApiClient(cfg), namespace


def _check_explicit(opts: K8sOptions) -> None:
    if opts.kubeconfig and not os.path.exists(opts.kubeconfig):
        raise EnvironmentProblem(
            f"kubeconfig {opts.kubeconfig} does not exist",
            "give an existing file to --kubeconfig (kubectl refuses a missing one too), "
            "or leave it out to read KUBECONFIG and ~/.kube/config",
        )


def _current_context(files: list[str]) -> str | None:
    """current-context of the first file that sets one (client-go's merge; the Python client's takes
    the last), each file checked to be a kubeconfig: the client fails on a YAML list with a TypeError."""
    import yaml

    current = None
    for path in files:
        with open(path) as f:
            data = yaml.safe_load(f)
        if data is not None and not isinstance(data, dict):
            raise EnvironmentProblem(f"kubeconfig {path} is not a kubeconfig (not a YAML mapping)", HINT)
        current = current or (data or {}).get("current-context") or None
    return str(current) if current else None


def _context_namespace(joined: str, context: str | None) -> str:
    from kubernetes import config

    contexts, active = config.list_kube_config_contexts(joined)
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    ns: str = (chosen or {}).get("context", {}).get("namespace") or "default"
    return ns


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _translate(err: Exception, what: str, api: Api, verb: str = "read") -> CtraceError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(err, ApiException):
        status, body = apierrors.status(err)
        if status == 404:
            return NotFound(f"{what} not found", api.get_hint())
        if status == 401:
            return EnvironmentProblem(
                "the API server rejected the credentials (401 Unauthorized)", "refresh the token in your kubeconfig"
            )
        if status == 403:
            said = apierrors.forbidden(body) or f"cannot {verb} {what}"
            return EnvironmentProblem(
                f"the API server forbids it: {said} (403 Forbidden)",
                "bind the ctrace-user ClusterRole and the ctrace-user Role in ctrace-system (manifests/rbac-user.yaml)",
            )
        if status:
            return EnvironmentProblem(f"the API server answered {status} {err.reason} for {what}")
    if "timed out" in str(err).lower() or "timeout" in type(err).__name__.lower():
        return EnvironmentProblem(
            f"the API server did not answer within {api.opts.request_timeout:g}s",
            "check the cluster, or --request-timeout",
        )
    if isinstance(err, (OSError, ValueError)) or "urllib3" in type(err).__module__ or isinstance(err, ApiException):
        return EnvironmentProblem(
            f"cannot reach the API server for {what}: {str(err).strip()[:300]}",
            "check --kubeconfig, --context and the network",
        )
    return EnvironmentProblem(f"unexpected error reading {what}: {type(err).__name__}: {err}")
