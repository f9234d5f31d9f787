#!/bin/bash
# PID 1 of a local cluster node (a docker container made by hack/cluster.sh, as kind makes its
# nodes): its own mount, PID, network and UTS namespaces, running containerd (CRI) and kubelet.
# Environment: NODE (name), NODE_IP, POD_CIDR, SERVICE_IP (the `kubernetes` Service's ClusterIP).
set -euo pipefail
log() { echo "node-entry: $*" >&2; }

# This node's identity: kubelet reports /etc/machine-id as status.nodeInfo.machineID.
tr -d '-' </proc/sys/kernel/random/uuid >/etc/machine-id

# Mounts that containerd and kubelet make (pod volumes, rootfs) propagate inside this node only.
mount --make-rshared /

# kubelet sets these host-wide sysctls when it reads other values; files that hold them, bound
# over /proc/sys in this mount namespace, let it read what it wants and write nothing to the host.
mkdir -p /run/ctrace-sysctl
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    key=${kv%%=*}
    f=/run/ctrace-sysctl/${key//\//.}
    echo "${kv#*=}" >"$f"
    mount --bind "$f" "/proc/sys/$key"
done

# kubelet's --cgroup-root must exist in every hierarchy (cgroup v1; the host's cgroup namespace).
for h in /sys/fs/cgroup/*/; do
    case $h in */unified/) continue ;; esac
    d=${h}ctrace-cluster/$NODE
    mkdir -p "$d"
    if [ -f "${h}cpuset.cpus" ]; then
        cat "${h}cpuset.cpus" >"${h}ctrace-cluster/cpuset.cpus" 2>/dev/null || true
        cat "${h}cpuset.mems" >"${h}ctrace-cluster/cpuset.mems" 2>/dev/null || true
        cat "${h}cpuset.cpus" >"$d/cpuset.cpus"
        cat "${h}cpuset.mems" >"$d/cpuset.mems"
    fi
done

# The network: hack/cluster.sh moves a veth in as eth0 with NODE_IP.
for _ in $(seq 300); do
    ip -4 addr show dev eth0 2>/dev/null | grep -q "inet $NODE_IP/" && break
    sleep 0.1
done
ip -4 addr show dev eth0 | grep -q "inet $NODE_IP/" || { log "no eth0 with $NODE_IP"; exit 1; }

# The apiserver listens on the host's loopback; it is reached through a unix socket that
# hack/cluster.sh serves from the host, on port 6443 of this node (kubelet: 127.0.0.1; pods: the
# `kubernetes` Service's ClusterIP, translated here since no kube-proxy runs).
socat TCP-LISTEN:6443,fork,reuseaddr UNIX-CONNECT:/ctrace-host/apiserver.sock &
sysctl -qw net.ipv4.ip_forward=1
iptables -t nat -A PREROUTING -d "$SERVICE_IP" -p tcp --dport 443 -j DNAT --to-destination "$NODE_IP:6443"
iptables -t nat -A OUTPUT -d "$SERVICE_IP" -p tcp --dport 443 -j DNAT --to-destination "$NODE_IP:6443"

sed -i "s|@POD_CIDR@|$POD_CIDR|" /etc/cni/net.d/10-ctrace.conflist
mkdir -p /var/log/containerd
containerd --config /etc/containerd/config.toml >/var/log/containerd/containerd.log 2>&1 &
for _ in $(seq 300); do
    ctr -a /run/containerd/containerd.sock version >/dev/null 2>&1 && break
    sleep 0.1
done
for image in /ctrace-images/*.tar; do
    [ -f "$image" ] && ctr -a /run/containerd/containerd.sock -n k8s.io images import "$image" >/dev/null
done

mkdir -p /var/log/kubelet
kubelet --config=/etc/kubernetes/kubelet.yaml --kubeconfig=/etc/kubernetes/kubelet.conf \
    --container-runtime=remote --container-runtime-endpoint=unix:///run/containerd/containerd.sock \
    --containerd=/run/containerd/containerd.sock --docker=unix:///run/ctrace-no-docker.sock \
    --node-ip="$NODE_IP" --hostname-override="$NODE" --v=1 >/var/log/kubelet/kubelet.log 2>&1 &

# Either dying ends the node; `wait -n` also reaps orphans (bash as PID 1).
wait -n
log "containerd, kubelet or the forwarder exited"
exit 1
