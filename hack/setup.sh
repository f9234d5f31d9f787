#!/usr/bin/env bash
# Install what ctrace's demo and tests need on a fresh Debian machine (as root),
# then create .venv with ctrace installed. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v bpftrace >/dev/null || need+=(bpftrace)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v g++ >/dev/null || need+=(g++)
command -v go >/dev/null || need+=(golang-go)
command -v dockerd >/dev/null || need+=(docker.io)
command -v nm >/dev/null || need+=(binutils)
command -v xz >/dev/null || need+=(xz-utils)
command -v make >/dev/null || need+=(make)
[ -x /bin/busybox ] || need+=(busybox-static)  # /bin/sh of the tests' multi-process container
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
[ -x /bin/busybox ] || need+=(busybox-static)   # a shell and unshare for FROM-scratch test images
command -v perf >/dev/null || need+=(linux-perf)  # --tool perf is checked against the real perf
command -v tmux >/dev/null || need+=(tmux)        # the terminal screen test
command -v kubectl >/dev/null || need+=(kubectl)  # the plugin tests run the real kubectl
command -v zsh >/dev/null || need+=(zsh)          # completion is tested in bash and zsh
[ -f /usr/share/bash-completion/bash_completion ] || need+=(bash-completion)  # kubectl's bash completion needs it
command -v chromium >/dev/null || need+=(chromium)  # the flame graph SVG is checked in a real browser
command -v debootstrap >/dev/null || need+=(debootstrap)  # the bpftrace version matrix's chroots
command -v rustc >/dev/null || need+=(rustc)              # the Rust cells of the action x probe matrix
command -v rsync >/dev/null || need+=(rsync)              # Kubernetes' make, for the local cluster (hack/k8s-build.sh)
command -v openssl >/dev/null || need+=(openssl)          # the local cluster's certificates
# Every runtime of tests/test_runtimes.py: a containerd of the tests' own (and ctr, the runc shim), podman.
command -v containerd >/dev/null || need+=(containerd)
command -v containerd-shim-runc-v2 >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v podman >/dev/null || need+=(podman)
command -v conmon >/dev/null || need+=(conmon)
command -v chromium >/dev/null || need+=(chromium)  # the flame graph SVG is checked in a real browser
command -v debuginfod >/dev/null || need+=(debuginfod)  # a debuginfod server on 127.0.0.1 (debug files by build-id)
command -v debootstrap >/dev/null || need+=(debootstrap)  # the bpftrace version matrix's chroots
command -v rustc >/dev/null || need+=(rustc)              # the Rust cells of the action x probe matrix
# libc's separate debug file: the functions only it names (issue 5 tests).
dpkg -s libc6-dbg >/dev/null 2>&1 || need+=(libc6-dbg)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "hack/setup.sh: missing ${need[*]}; run as root to install them" >&2
        exit 3
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

# bpftrace cleans up through tracefs; mount it where the kernel expects it.
if [ "$(id -u)" = 0 ] && ! mountpoint -q /sys/kernel/tracing 2>/dev/null; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

# Debian's other bpftrace releases (cached chroots), for the tests' version matrix.
if [ "$(id -u)" = 0 ]; then
    hack/bpftrace-versions.sh >/dev/null
fi

# The local Kubernetes cluster of the tests (hack/cluster.sh): Kubernetes 1.20 built from
# Debian's source and the nodes' and agent's root filesystems, cached under /var/cache/ctrace-k8s
# (10-20 minutes once; a changed source version builds again).
if [ "$(id -u)" = 0 ]; then
    hack/cluster.sh prepare >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv .venv 2>/dev/null; then
        apt-get install -y -qq python3-venv >/dev/null
        "$PY" -m venv .venv
    fi
fi
# The C speedups (ctrace/elf/_speedups.c) build with the interpreter's headers;
# without them ctrace still runs, on the pure-Python twins.
if ! .venv/bin/python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))'; then
    apt-get install -y -qq python3-dev >/dev/null || true
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] || [ ctrace/elf/_speedups.c -nt "$stamp" ]; then
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi
