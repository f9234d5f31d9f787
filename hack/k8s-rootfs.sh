#!/usr/bin/env bash
# A Debian minbase root filesystem (bookworm, or SUITE) with PACKAGES, cached under
# /var/cache/ctrace-k8s/rootfs/<hash of suite and package list>, for the local cluster's node image
# and the agent image (hack/cluster.sh): no registry is reachable, so images are `docker import`s
# of such roots. The mirror is read from this machine's apt sources at run time.
# Usage: hack/k8s-rootfs.sh PACKAGE,PACKAGE,... [SUITE]   (prints the directory)
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
CACHE=${CTRACE_K8S_CACHE:-/var/cache/ctrace-k8s}
pkgs=$1
suite=${2:-bookworm}
if [ "$suite" = bookworm ]; then
    key=$(printf 'bookworm minbase %s' "$pkgs" | sha256sum | cut -c1-12)  # the first caches' key
else
    key=$(printf '%s minbase %s' "$suite" "$pkgs" | sha256sum | cut -c1-12)
fi
dir=$CACHE/rootfs/$key
mkdir -p "$CACHE/rootfs"
exec 8>"$dir.lock"
flock 8
if [ ! -f "$dir/.complete" ]; then
    m=$(awk '/^deb /{print $3; exit}' "$("$HACK/k8s-apt.sh" true >/dev/null; echo "$CACHE/apt/sources.list")")
    rm -rf "$dir.partial"
    echo "hack/k8s-rootfs.sh: debootstrap $suite with $pkgs (a few minutes; log $dir.log)" >&2
    debootstrap --variant=minbase --include="$pkgs" "$suite" "$dir.partial" "$m" >"$dir.log" 2>&1 ||
        { echo "hack/k8s-rootfs.sh: debootstrap failed, see $dir.log" >&2; exit 1; }
    # Nothing of the build machine's apt state or caches belongs in an image.
    rm -rf "$dir.partial/var/cache/apt/archives/"*.deb "$dir.partial/var/lib/apt/lists/"*_Packages
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    touch "$dir/.complete"
fi
echo "$dir"
