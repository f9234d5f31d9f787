#!/usr/bin/env bash
# ctrace/agent:dev without a registry: a Debian bookworm minbase root with bpftrace and python3
# (cached, hack/k8s-rootfs.sh), ctrace's Python dependencies installed by pip into
# /opt/ctrace/lib, and this worktree's ctrace/ on PYTHONPATH, made an image by `docker import`.
# The image is tagged by the content it was made from, so an unchanged worktree is not rebuilt.
# manifests/agent/Dockerfile builds the same image where `FROM debian:bookworm-slim` can be pulled.
# Usage: hack/agent-image.sh [TAG]   (default ctrace/agent:dev) | --rootfs-only
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HACK")
CACHE=${CTRACE_K8S_CACHE:-/var/cache/ctrace-k8s}
suite=${CTRACE_AGENT_SUITE:-bookworm}  # as manifests/agent/Dockerfile; trixie (bpftrace 0.23) works too
rootfs=$("$HACK/k8s-rootfs.sh" bpftrace,python3,binutils,procps "$suite")
[ "${1:-}" = --rootfs-only ] && exit 0  # hack/cluster.sh prepare: no docker needed yet
tag=${1:-ctrace/agent:dev}

# ctrace's run-time dependencies (pyproject.toml), as wheels for the root's own python3,
# installed once per dependency list.
pyver=$(basename "$(ls -d "$rootfs"/usr/lib/python3.[0-9]* | grep -E 'python3\.[0-9]+$' | sort -V | tail -1)")
pyver=${pyver#python}
deps=$(python3 -c 'import tomllib,sys; print("\n".join(tomllib.load(open(sys.argv[1],"rb"))["project"]["dependencies"]))' "$ROOT/pyproject.toml")
dkey=$(printf '%s\n%s\n%s\n' "$rootfs" "$pyver" "$deps" | sha256sum | cut -c1-12)
lib=$CACHE/agent-deps/$dkey
if [ ! -f "$lib/.complete" ]; then
    rm -rf "$lib"
    mkdir -p "$lib"
    pip=("$ROOT/.venv/bin/python" -m pip)
    [ -x "$ROOT/.venv/bin/python" ] || pip=(python3 -m pip)
    # shellcheck disable=SC2086
    "${pip[@]}" install -q --no-compile --only-binary=:all: --python-version "$pyver" --target "$lib" $deps
    touch "$lib/.complete"
fi

key=$( (
    echo "$rootfs $dkey trimmed"
    cd "$ROOT" && find ctrace -name '*.py' -o -name '*.c' -o -name '*.typed' | sort | xargs sha256sum
) | sha256sum | cut -c1-12)
if docker image inspect "ctrace/agent:$key" >/dev/null 2>&1; then
    docker tag "ctrace/agent:$key" "$tag"
    echo "$tag"
    exit 0
fi
extra=$(mktemp -d)
trap 'rm -rf "$extra" "${stage:-}"' EXIT
mkdir -p "$extra/opt/ctrace/src" "$extra/usr/local/bin"
(cd "$ROOT" && find ctrace -name '*.py' -o -name '*.c' -o -name '*.typed' | tar -c -T - | tar -x -C "$extra/opt/ctrace/src")
cp -a "$lib" "$extra/opt/ctrace/lib"
rm -f "$extra/opt/ctrace/lib/.complete"
for cmd in ctrace kubectl-ctrace; do  # as pip's entry points: argv[0] names the program
    printf '%s\n' '#!/usr/bin/python3' 'import sys' 'sys.path[:0] = ["/opt/ctrace/src", "/opt/ctrace/lib"]' \
        'from ctrace.cli import run' 'sys.exit(run())' >"$extra/usr/local/bin/$cmd"
    chmod 755 "$extra/usr/local/bin/$cmd"
done
# One tree (docker import refuses a path twice): the cached root hard-linked, our files copied over.
stage=$(mktemp -d "$CACHE/stage.XXXXXX")
cp -al "$rootfs/." "$stage/"
rm -f "$stage/.complete"
cp -a --remove-destination "$extra/." "$stage/"
# Documentation, translations and apt's caches are not needed in the image (~70 MB less to load).
tar -c --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale \
    --exclude=./var/cache/apt --exclude=./var/lib/apt/lists -C "$stage" . |
    docker import -c 'ENV PYTHONPATH=/opt/ctrace/src:/opt/ctrace/lib' - "ctrace/agent:$key" >/dev/null
echo "hack/agent-image.sh: built ctrace/agent:$key" >&2
# Earlier builds of this script are not kept, under any tag (the tests tag each build by its
# content, ctrace/agent:fanout-test-ID) or none (a tag moved on): each import is a layer of half
# a gigabyte of its own, and a machine that ran the tests kept one per change. Ours are known
# by the PYTHONPATH the import above sets.
current=$(docker image inspect -f '{{.Id}}' "ctrace/agent:$key")
{
    docker images ctrace/agent --no-trunc --format '{{.ID}}'
    docker images --filter dangling=true --no-trunc --format '{{.ID}}'
} | sort -u | grep -vx "$current" | while read -r old; do
    env=$(docker image inspect -f '{{.Config.Env}}' "$old" 2>/dev/null) || continue
    case $env in *PYTHONPATH=/opt/ctrace/src:/opt/ctrace/lib*) docker rmi -f "$old" >/dev/null 2>&1 || true ;; esac
done
docker tag "ctrace/agent:$key" "$tag"
echo "$tag"
