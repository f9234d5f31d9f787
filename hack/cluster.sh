#!/usr/bin/env bash
# A real Kubernetes (1.20, built from Debian's source by hack/k8s-build.sh) on this machine,
# without a registry: the kind of interface kind gives, for machines where kind's node images
# cannot be pulled.
#   hack/cluster.sh up            control plane on the host, two worker nodes as docker containers
#   hack/cluster.sh down          remove every process, veth, mount, cgroup and file it made
#   hack/cluster.sh kubeconfig [--user]   the admin's kubeconfig path (--user: an unprivileged user's)
#   hack/cluster.sh load IMAGE... put local docker images on every node (as `kind load docker-image`)
#   hack/cluster.sh status        what runs
#   hack/cluster.sh prepare       build and cache what `up` needs (hack/setup.sh runs it)
# Control plane: etcd, kube-apiserver (certificates made here, token auth for the user
# `ctrace-user`, Node,RBAC), kube-controller-manager, kube-scheduler, all on the host's
# loopback, state under /var/lib/ctrace-cluster. Each worker is a docker container with its own
# PID, mount, network and UTS namespaces, running its own containerd (CRI) and kubelet, as kind's
# nodes do, so pods are three PID namespaces deep. Nothing of the host's docker is touched: the
# nodes use `--network none` plus a veth of their own (docker0 and its iptables rules stay as they are).
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
STATE=${CTRACE_CLUSTER_STATE:-/var/lib/ctrace-cluster}
CACHE=${CTRACE_K8S_CACHE:-/var/cache/ctrace-k8s}
NODES=(ctrace-worker1 ctrace-worker2)
PREFIX=ctrace-cluster            # docker container names and labels, the cgroup root
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1             # the `kubernetes` Service: translated on each node (no kube-proxy)
ADVERTISE=10.250.0.1             # the apiserver's Endpoints address (no process uses it)
APISERVER=https://127.0.0.1:6443
ETCD_PORT=23790                  # not etcd's default 2379: another etcd may run on this machine
USER_NAME=ctrace-user

log() { echo "cluster.sh: $*" >&2; }
die() {
    log "$*"
    exit 1
}

node_ip() { echo "10.250.$(($1 + 1)).2"; }
host_ip() { echo "10.250.$(($1 + 1)).1"; }
pod_cidr() { echo "10.244.$(($1 + 1)).0/24"; }
veth() { echo "ctk-w$(($1 + 1))"; }

# ---- processes recorded by PID ------------------------------------------------------------
pidfile() { echo "$STATE/pids/$1.pid"; }
alive() { # NAME: the recorded process runs and is still the one started (its exe path matches)
    local f pid exe
    f=$(pidfile "$1")
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    [ "$exe" = "$(cat "$f.exe" 2>/dev/null)" ]
}
running() { # PID: exists and is not a zombie (this machine's PID 1 reaps no orphan: a caller
    # that wants none left makes itself a child subreaper, as tests/cluster.py does)
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}
start() { # NAME EXE ARGS...: start in the background (own session), logs under $STATE/logs
    local name=$1
    shift
    alive "$name" && return 0
    (
        # Nothing of the caller's (its lock, its pipes) stays open in a daemon.
        exec </dev/null >"$STATE/logs/$name.log" 2>&1
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] && eval "exec $fd>&-"
        done
        exec setsid "$@"
    ) &
    echo $! >"$(pidfile "$name")"
    readlink -f "$1" >"$(pidfile "$name").exe"
}
stop() { # NAME: SIGTERM, then SIGKILL, to the recorded process and its process group (started
    # by setsid, it leads one: socat's forked connections are in it)
    local name=$1 pid
    alive "$name" || { rm -f "$(pidfile "$name")" "$(pidfile "$name").exe"; return 0; }
    pid=$(cat "$(pidfile "$name")")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        running "$pid" || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$(pidfile "$name")" "$(pidfile "$name").exe"
}

# ---- certificates -------------------------------------------------------------------------
cert() { # NAME SUBJECT [SAN]: a key and a certificate signed by the cluster CA
    local name=$1 subj=$2 san=${3:-} pki=$STATE/pki ext
    [ -f "$pki/$name.crt" ] && return 0
    ext=$(mktemp)
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid,issuer"
        if [ -n "$san" ]; then
            echo "extendedKeyUsage=serverAuth,clientAuth"
            echo "subjectAltName=$san"
        else
            echo "extendedKeyUsage=clientAuth"
        fi
    } >"$ext"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 3650 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$ext" "$pki/$name.csr"
}

kubeconfig_file() { # FILE USER (cert NAME | token TOKEN) SERVER
    local file=$1 user=$2 kind=$3 cred=$4 server=$5 pki=$STATE/pki
    {
        echo "apiVersion: v1"
        echo "kind: Config"
        echo "clusters:"
        echo "- name: ctrace"
        echo "  cluster:"
        echo "    server: $server"
        echo "    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")"
        echo "users:"
        echo "- name: $user"
        echo "  user:"
        if [ "$kind" = cert ]; then
            echo "    client-certificate-data: $(base64 -w0 <"$pki/$cred.crt")"
            echo "    client-key-data: $(base64 -w0 <"$pki/$cred.key")"
        else
            echo "    token: $cred"
        fi
        echo "contexts:"
        echo "- name: ctrace"
        echo "  context:"
        echo "    cluster: ctrace"
        echo "    user: $user"
        echo "current-context: ctrace"
    } >"$file.tmp"
    chmod 600 "$file.tmp"
    mv "$file.tmp" "$file"
}

pki() {
    local p=$STATE/pki n
    mkdir -p "$p"
    chmod 700 "$p"
    if [ ! -f "$p/ca.crt" ]; then
        # Key usage and key identifiers as a strict verifier wants them (Python 3.13's ssl
        # refuses a CA without keyUsage: "CA cert does not include key usage extension").
        openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$p/ca.key" -subj "/CN=ctrace-cluster-ca" \
            -days 3650 -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
            -addext "subjectKeyIdentifier=hash" -out "$p/ca.crt" 2>/dev/null
    fi
    cert apiserver "/CN=kube-apiserver" \
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$SERVICE_IP,IP:$ADVERTISE"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    cert admin "/O=system:masters/CN=ctrace-admin"
    cert controller-manager "/CN=system:kube-controller-manager"
    cert scheduler "/CN=system:kube-scheduler"
    for n in "${NODES[@]}"; do cert "$n" "/O=system:nodes/CN=system:node:$n"; done
    [ -f "$p/sa.key" ] || openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
    [ -f "$p/sa.pub" ] || openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
    if [ ! -f "$p/tokens.csv" ]; then
        echo "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n'),$USER_NAME,$USER_NAME" >"$p/tokens.csv"
    fi
    kubeconfig_file "$STATE/admin.kubeconfig" ctrace-admin cert admin "$APISERVER"
    kubeconfig_file "$STATE/user.kubeconfig" "$USER_NAME" token "$(cut -d, -f1 "$p/tokens.csv")" "$APISERVER"
    kubeconfig_file "$STATE/controller-manager.kubeconfig" controller-manager cert controller-manager "$APISERVER"
    kubeconfig_file "$STATE/scheduler.kubeconfig" scheduler cert scheduler "$APISERVER"
    for n in "${NODES[@]}"; do kubeconfig_file "$STATE/$n.kubeconfig" "system:node:$n" cert "$n" "$APISERVER"; done
}

# ---- control plane ------------------------------------------------------------------------
wait_for() { # SECONDS WHAT COMMAND...
    local secs=$1 what=$2
    shift 2
    for _ in $(seq $((secs * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$what did not come up within ${secs}s (logs: $STATE/logs)"
}

api_ready() { kubectl_ get --raw /readyz; }
kubectl_() { "$BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }

control_plane() {
    local p=$STATE/pki
    start etcd "$BIN/etcd" --name ctrace --data-dir "$STATE/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
        --initial-cluster "ctrace=http://127.0.0.1:$((ETCD_PORT + 10))" --log-level warn
    start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --bind-address 127.0.0.1 --secure-port 6443 --insecure-port 0 --advertise-address "$ADVERTISE" \
        --client-ca-file "$p/ca.crt" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
        --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$p/apiserver-kubelet-client.key" --kubelet-preferred-address-types InternalIP \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
        --token-auth-file "$p/tokens.csv" --allow-privileged=true --enable-admission-plugins NodeRestriction \
        --profiling=false --v=1
    # The nodes reach the apiserver through this unix socket (bind-mounted into each); socat is
    # the node image's, run through that root's own loader (the host need not have it).
    local r=$NODE_ROOTFS
    start apiserver-forwarder "$r/lib64/ld-linux-x86-64.so.2" \
        --library-path "$r/usr/lib/x86_64-linux-gnu:$r/lib/x86_64-linux-gnu" "$r/usr/bin/socat" \
        "UNIX-LISTEN:$STATE/sock/apiserver.sock,fork,mode=600,unlink-early" TCP:127.0.0.1:6443
}

controllers() { # after /readyz: started earlier, they exit on RBAC the apiserver has not made yet
    local p=$STATE/pki
    start kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig "$STATE/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --port 0 --secure-port 10357 --leader-elect=false \
        --use-service-account-credentials=true --controllers '*,-nodeipam' \
        --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
        --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" --v=1
    start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$STATE/scheduler.kubeconfig" \
        --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
        --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --port 0 --secure-port 10359 --leader-elect=false --v=1
}

# ---- images -------------------------------------------------------------------------------
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

pause_image() { # k8s.gcr.io/pause:3.2 from the source tree's pause.c, saved for the nodes
    mkdir -p "$CACHE/images"
    local key tar
    key=$(sha256sum "$BIN/pause" | cut -c1-12)
    tar=$CACHE/images/pause-$key.tar
    if [ ! -f "$tar" ]; then
        local d
        d=$(mktemp -d)
        cp "$BIN/pause" "$d/pause"
        tar -C "$d" -c pause | docker import -c 'ENTRYPOINT ["/pause"]' - k8s.gcr.io/pause:3.2 >/dev/null
        rm -rf "$d"
        docker save k8s.gcr.io/pause:3.2 >"$tar.tmp"
        mv "$tar.tmp" "$tar"
    fi
    ln -sf "$tar" "$STATE/images/pause.tar"
}

node_image() { # the nodes' image: a Debian root with containerd, runc, CNI, plus kubelet and our files
    local files=$HACK/cluster key extra stage
    key=$( (
        echo "$NODE_ROOTFS"
        sha256sum "$BIN/kubelet"
        cat "$files/node-entry.sh" "$files/containerd.toml" "$files/10-ctrace.conflist" \
            "$files/runc-wrapper/main.go"
    ) | sha256sum | cut -c1-12)
    NODE_IMAGE=$PREFIX/node:$key
    image_exists "$NODE_IMAGE" && return 0
    log "building the node image $NODE_IMAGE"
    extra=$(mktemp -d)
    mkdir -p "$extra/usr/local/bin" "$extra/etc/containerd" "$extra/etc/cni/net.d" "$extra/etc/kubernetes"
    install -m 0755 "$BIN/kubelet" "$extra/usr/local/bin/kubelet"
    install -m 0755 "$files/node-entry.sh" "$extra/usr/local/bin/node-entry"
    (cd "$files/runc-wrapper" && CGO_ENABLED=0 GOFLAGS=-mod=mod GOCACHE="$CACHE/gocache" \
        go build -o "$extra/usr/local/bin/runc-wrapper" .)
    cp "$files/containerd.toml" "$extra/etc/containerd/config.toml"
    cp "$files/10-ctrace.conflist" "$extra/etc/cni/net.d/"
    rm -f "$NODE_ROOTFS/etc/cni/net.d/"* 2>/dev/null || true
    # One tree (docker import refuses a path twice): the cached root hard-linked, our files copied over.
    stage=$(mktemp -d "$CACHE/stage.XXXXXX")
    cp -al "$NODE_ROOTFS/." "$stage/"
    rm -f "$stage/.complete"
    cp -a --remove-destination "$extra/." "$stage/"
    tar -c -C "$stage" . |
        docker import -c 'ENTRYPOINT ["/usr/local/bin/node-entry"]' - "$NODE_IMAGE" >/dev/null
    rm -rf "$extra" "$stage"
}

# ---- nodes --------------------------------------------------------------------------------
kubelet_config() { # NODE
    cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /$PREFIX/$1
failSwapOn: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
makeIPTablesUtilChains: true
protectKernelDefaults: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
nodeStatusReportFrequency: 10s
EOF
}

start_node() { # INDEX
    local i=$1 n=${NODES[$1]} dir pid v
    dir=$STATE/nodes/$n
    v=$(veth "$i")
    if [ "$(docker inspect -f '{{.State.Running}}' "$PREFIX-$n" 2>/dev/null)" = true ]; then
        return 0
    fi
    docker rm -f "$PREFIX-$n" >/dev/null 2>&1 || true
    mkdir -p "$dir/pki" "$dir/containerd"
    cp "$STATE/pki/ca.crt" "$dir/pki/ca.crt"
    cp "$STATE/$n.kubeconfig" "$dir/kubelet.conf"
    kubelet_config "$n" >"$dir/kubelet.yaml"
    docker run -d --name "$PREFIX-$n" --hostname "$n" --label "$PREFIX=node" \
        --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined \
        --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
        --device-cgroup-rule 'a *:* rwm' --cgroupns host --device /dev/kmsg --network none \
        -v /sys/fs/cgroup:/sys/fs/cgroup -v /sys/kernel/tracing:/sys/kernel/tracing \
        -v /sys/kernel/debug:/sys/kernel/debug -v /lib/modules:/lib/modules:ro \
        -v "$dir/containerd:/var/lib/containerd" -v "$STATE/sock:/ctrace-host:ro" \
        -v "$STATE/images:/ctrace-images:ro" -v "$CACHE/images:$CACHE/images:ro" \
        -v "$dir/kubelet.yaml:/etc/kubernetes/kubelet.yaml:ro" -v "$dir/kubelet.conf:/etc/kubernetes/kubelet.conf:ro" \
        -v "$dir/pki:/etc/kubernetes/pki:ro" --tmpfs /run --tmpfs /tmp \
        -e "NODE=$n" -e "NODE_IP=$(node_ip "$i")" -e "POD_CIDR=$(pod_cidr "$i")" -e "SERVICE_IP=$SERVICE_IP" \
        "$NODE_IMAGE" >/dev/null
    pid=$(docker inspect -f '{{.State.Pid}}' "$PREFIX-$n")
    echo "$pid" >"$dir/pid"
    # A veth of our own into the node's network namespace; the host end is named for removal.
    ip link del "$v" 2>/dev/null || true
    ip link add "$v" type veth peer name eth0 netns "$pid"
    ip addr add "$(host_ip "$i")/24" dev "$v"
    ip link set "$v" up
    nsenter -t "$pid" -n ip addr add "$(node_ip "$i")/24" dev eth0
    nsenter -t "$pid" -n ip link set eth0 up
    nsenter -t "$pid" -n ip link set lo up
    nsenter -t "$pid" -n ip route add default via "$(host_ip "$i")"
}

nodes_ready() {
    local ready
    ready=$(kubectl_ get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null) || return 1
    for n in "${NODES[@]}"; do
        grep -qx "$n=True" <<<"$ready" || return 1
    done
}

# ---- commands -----------------------------------------------------------------------------
setup_bins() {
    BIN=$("$HACK/k8s-build.sh")
    NODE_ROOTFS=$("$HACK/k8s-rootfs.sh" containerd,runc,iptables,socat,containernetworking-plugins,procps,kmod,iproute2,mount,util-linux,ca-certificates)
}

cmd_up() {
    [ "$(id -u)" = 0 ] || die "run as root (docker, veth, cgroups)"
    exec 7>"/run/ctrace-cluster.lock"
    flock 7
    local t0
    t0=$(date +%s%N)
    setup_bins
    mkdir -p "$STATE"/{pids,logs,sock,images,nodes}
    echo "$BIN" >"$STATE/bin"
    pki
    pause_image
    node_image
    control_plane
    wait_for 60 "kube-apiserver" api_ready
    controllers
    local i
    for i in "${!NODES[@]}"; do start_node "$i"; done
    wait_for 120 "two Ready nodes" nodes_ready
    local ms=$((($(date +%s%N) - t0) / 1000000))
    log "up: two Ready nodes in $((ms / 1000)).$((ms % 1000 / 100)) s; kubeconfig: $STATE/admin.kubeconfig"
}

cgroup_dirs() { # every cgroup directory of ours, deepest first
    local h
    for h in /sys/fs/cgroup/*/; do
        [ -d "$h$PREFIX" ] && find "$h$PREFIX" -depth -type d
    done
    return 0
}

cmd_down() {
    [ "$(id -u)" = 0 ] || die "run as root"
    exec 7>"/run/ctrace-cluster.lock"
    flock 7
    local n i d pids
    for i in "${!NODES[@]}"; do
        n=${NODES[$i]}
        docker rm -f "$PREFIX-$n" >/dev/null 2>&1 || true
        ip link del "$(veth "$i")" 2>/dev/null || true
    done
    for n in apiserver-forwarder kube-scheduler kube-controller-manager kube-apiserver etcd; do
        [ -d "$STATE/pids" ] && stop "$n"
    done
    # Pod cgroups outlive the node's processes by a moment (the kernel frees them as tasks exit).
    for _ in $(seq 50); do
        while read -r d; do
            [ -n "$d" ] && rmdir "$d" 2>/dev/null || true
        done < <(cgroup_dirs)
        [ -z "$(cgroup_dirs)" ] && break
        sleep 0.2
    done
    # Any mount left under our state (none is made on the host, but a crashed node may leave one).
    awk -v s="$STATE" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
        umount -l "$m" || true
    done
    rm -rf "$STATE"
    [ -z "$(cgroup_dirs)" ] || log "cgroups left: $(cgroup_dirs | tr '\n' ' ')"
    log "down"
}

cmd_status() {
    local n ok=0
    for n in etcd kube-apiserver kube-controller-manager kube-scheduler apiserver-forwarder; do
        if [ -d "$STATE/pids" ] && alive "$n"; then echo "$n: running (pid $(cat "$(pidfile "$n")"))"; else echo "$n: stopped"; ok=1; fi
    done
    for n in "${NODES[@]}"; do
        echo "$n: $(docker inspect -f '{{.State.Status}}' "$PREFIX-$n" 2>/dev/null || echo absent)"
    done
    if [ -f "$STATE/bin" ]; then
        BIN=$(cat "$STATE/bin")
        kubectl_ get nodes 2>/dev/null || ok=1
    fi
    return $ok
}

cmd_kubeconfig() {
    local f=$STATE/admin.kubeconfig
    [ "${1:-}" = --user ] && f=$STATE/user.kubeconfig
    [ -f "$f" ] || die "no cluster: run hack/cluster.sh up"
    echo "$f"
}

cmd_load() {
    [ $# -gt 0 ] || die "usage: hack/cluster.sh load IMAGE..."
    local n image
    for n in "${NODES[@]}"; do
        [ "$(docker inspect -f '{{.State.Running}}' "$PREFIX-$n" 2>/dev/null)" = true ] || die "node $n is not running"
    done
    local id mark
    for image in "$@"; do
        image_exists "$image" || die "no local docker image $image"
        id=$(docker image inspect -f '{{.Id}}' "$image")
        for n in "${NODES[@]}"; do
            # The same image (name and content) already imported on this node is not sent again.
            mark=$STATE/nodes/$n/loaded/$(printf '%s' "$image $id" | sha256sum | cut -c1-16)
            [ -f "$mark" ] && continue
            docker save "$image" | docker exec -i "$PREFIX-$n" \
                ctr -a /run/containerd/containerd.sock -n k8s.io images import - >/dev/null
            mkdir -p "${mark%/*}"
            touch "$mark"
        done
    done
}

case ${1:-} in
    prepare)  # what `up` and the agent image need that takes minutes, cached (hack/setup.sh)
        setup_bins
        "$HACK/agent-image.sh" --rootfs-only
        ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    kubeconfig) cmd_kubeconfig "${2:-}" ;;
    load)
        shift
        cmd_load "$@"
        ;;
    *) die "usage: hack/cluster.sh up | down | kubeconfig [--user] | load IMAGE... | status | prepare" ;;
esac
