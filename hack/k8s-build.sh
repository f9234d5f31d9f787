#!/usr/bin/env bash
# Build Kubernetes 1.20 for the local cluster (hack/cluster.sh) from Debian bookworm's source
# package `kubernetes` (the newest Debian that ships the servers: trixie's and sid's "+ds" source
# holds kubectl only), with bullseye's Go 1.15 (the vendored reflect2 1.0.1 breaks on Go >= 1.18).
# Cached under /var/cache/ctrace-k8s/<source version>/: a changed source version builds again.
# Prints the directory of the binaries (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kubectl, etcd, etcdctl, socat, pause).
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
CACHE=${CTRACE_K8S_CACHE:-/var/cache/ctrace-k8s}
APT="$HACK/k8s-apt.sh"
mkdir -p "$CACHE"
exec 9>"$CACHE/build.lock"
flock 9  # two callers (make test and a user's `cluster.sh up`) build once

ver=$("$APT" apt-cache showsrc kubernetes | awk '/^Version:/{print $2}' | sort -V | tail -1)
[ -n "$ver" ] || { echo "hack/k8s-build.sh: no source package kubernetes in bookworm" >&2; exit 1; }
top=$CACHE/$ver
bin=$top/bin
if [ -f "$bin/.complete" ]; then
    echo "$bin"
    exit 0
fi
log=$top/build.log
mkdir -p "$top"
echo "hack/k8s-build.sh: building Kubernetes $ver (10-20 min on 2 cores; log $log)" >&2
start=$(date +%s)
{
    dl=$top/dl
    mkdir -p "$dl"
    if [ ! -f "$dl/.done" ]; then
        (cd "$dl" && "$APT" apt-get -qq source --download-only "kubernetes=$ver" &&
            "$APT" apt-get -qq download golang-1.15-go golang-1.15-src rsync etcd-server etcd-client socat)
        touch "$dl/.done"
    fi
    if [ ! -f "$top/src/.unpacked" ]; then
        rm -rf "$top/src"
        dpkg-source --no-check -x "$dl"/kubernetes_*.dsc "$top/src"
        touch "$top/src/.unpacked"
    fi
    tools=$top/tools
    if [ ! -f "$tools/.done" ]; then
        rm -rf "$tools"
        for deb in "$dl"/*.deb; do dpkg -x "$deb" "$tools"; done
        touch "$tools/.done"
    fi
} >>"$log" 2>&1
goroot=$top/tools/usr/lib/go-1.15
export GOROOT=$goroot PATH=$goroot/bin:$PATH:$top/tools/usr/bin
# Kubernetes' make needs rsync: the host's (hack/setup.sh installs it), else the unpacked one.
if ! rsync --version >/dev/null 2>&1; then
    echo "hack/k8s-build.sh: the unpacked rsync does not run (missing library?): $(rsync --version 2>&1 | head -1)" >&2
    exit 1
fi
export GOPATH=$top/gopath GOCACHE=$top/gocache GOFLAGS=-mod=vendor GO111MODULE=on HOME=$top
unset GOBIN
(
    cd "$top/src"
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kubectl" \
        KUBE_VERBOSE=1
) >>"$log" 2>&1 || { echo "hack/k8s-build.sh: make failed; tail of $log:" >&2; tail -30 "$log" >&2; exit 1; }
out=$top/src/_output/local/bin/linux/amd64
mkdir -p "$bin"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    install -m 0755 "$out/$b" "$bin/$b"
done
install -m 0755 "$top/tools/usr/bin/etcd" "$bin/etcd"
install -m 0755 "$top/tools/usr/bin/etcdctl" "$bin/etcdctl"
install -m 0755 "$top/tools/usr/bin/socat" "$bin/socat"
# The pause container of the same tree (k8s.gcr.io/pause:3.2 cannot be pulled here).
gcc -Os -static -Wall -Werror -DVERSION=v3.2-ctrace -o "$bin/pause" "$top/src/build/pause/linux/pause.c"
strip "$bin/pause"
echo "$ver" >"$bin/VERSION"
touch "$bin/.complete"
echo "hack/k8s-build.sh: built in $(($(date +%s) - start)) s" >&2
# The 3 GB build tree is not needed any more; the binaries are.
rm -rf "$top/src/_output" "$top/gocache" "$top/gopath"
echo "$bin"
