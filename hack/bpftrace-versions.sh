#!/usr/bin/env bash
# The bpftrace of each Debian release other than the host's (bookworm 0.17, trixie 0.23,
# sid 0.27), each in a cached chroot under $CTRACE_BPFTRACE_CACHE (default
# /var/cache/ctrace-bpftrace/SUITE), for the tests' version matrix (tests/conftest.py).
# Each is run from the host's namespaces through the chroot's own loader, so /proc/PID/root
# and MergedDir paths mean to it what they mean to the host's bpftrace; DIR/ctrace-bpftrace
# is a wrapper that does that, for `ctrace target --bpftrace DIR/ctrace-bpftrace`.
# The mirror is read from this machine's apt sources, never written here.
# Safe to run again: a chroot whose bpftrace runs is kept (python3 added if missing).
set -euo pipefail

cache=${CTRACE_BPFTRACE_CACHE:-/var/cache/ctrace-bpftrace}
suites=(bookworm trixie sid)
host=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")

mirror() {
    # The first Debian archive URI of the apt sources (deb822 first, then one-line), not security.
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk 'tolower($1)=="uris:" {for (i=2;i<=NF;i++) print $i}' "$f" | grep -v -- '-security' | head -n1)
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' "$f" |
            grep -v -- '-security' | head -n1)
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    echo "hack/bpftrace-versions.sh: no Debian mirror in /etc/apt/sources*" >&2
    return 1
}

runs() {  # the chroot's bpftrace runs from the host through its own loader
    local dir=$1
    "$dir/lib64/ld-linux-x86-64.so.2" --library-path "$dir/usr/lib/x86_64-linux-gnu:$dir/lib/x86_64-linux-gnu" \
        "$dir/usr/bin/bpftrace" --version >/dev/null 2>&1
}

wrapper() {
    local dir=$1
    cat >"$dir/ctrace-bpftrace.tmp" <<EOF
#!/bin/sh
# Debian $(basename "$dir")'s bpftrace, run from the host's namespaces (hack/bpftrace-versions.sh).
exec "$dir/lib64/ld-linux-x86-64.so.2" --library-path "$dir/usr/lib/x86_64-linux-gnu:$dir/lib/x86_64-linux-gnu" "$dir/usr/bin/bpftrace" "\$@"
EOF
    chmod 755 "$dir/ctrace-bpftrace.tmp"
    mv "$dir/ctrace-bpftrace.tmp" "$dir/ctrace-bpftrace"
}

with_python() {  # another test runs the chroot's python3 (the oldest Python ctrace supports)
    local dir=$1
    [ -x "$dir/usr/bin/python3" ] && return
    cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
    # A machine clock past a suite's Valid-Until (sid's Release is re-signed weekly) must not stop it.
    chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Check-Valid-Until=false update -qq
    chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null
}

build() {
    local suite=$1 dir=$2 url
    url=$(mirror)
    rm -rf "$dir.partial"
    mkdir -p "$(dirname "$dir")"
    debootstrap --variant=minbase --include=bpftrace,python3 "$suite" "$dir.partial" "$url" >"$dir.log" 2>&1 ||
        { echo "hack/bpftrace-versions.sh: debootstrap $suite failed, see $dir.log" >&2; return 1; }
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
}

if [ "$(id -u)" != 0 ]; then
    echo "hack/bpftrace-versions.sh: run as root (debootstrap, chroot)" >&2
    exit 3
fi
command -v debootstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
for suite in "${suites[@]}"; do
    [ "$suite" = "$host" ] && continue
    dir=$cache/$suite
    runs "$dir" || build "$suite" "$dir"
    with_python "$dir"
    wrapper "$dir"
    echo "$suite: $("$dir/ctrace-bpftrace" --version)"
done
