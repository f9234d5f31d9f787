#!/usr/bin/env bash
# A private apt (own sources list, lists, cache) under /var/cache/ctrace-k8s/apt, for
# `apt-get source` / `apt-get download` of what the local cluster needs from Debian
# releases the host does not use (bookworm's source package `kubernetes`, bullseye's Go 1.15).
# The host's /etc/apt is only read, for its mirror; nothing is installed with dpkg -i, so
# the dpkg lock is never taken.
# Usage: hack/k8s-apt.sh apt-get|apt-cache ARGS...
set -euo pipefail
CACHE=${CTRACE_K8S_CACHE:-/var/cache/ctrace-k8s}
APT=$CACHE/apt

# The Debian mirror this machine already uses (deb822 or one-line sources), never a name of ours.
mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk '/^URIs:/{u=$2} /^Suites:/{ if ($0 ~ /(bookworm|bullseye|trixie|sid)( |$)/ && u !~ /security/) {print u; exit} }' "$f")
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f")
        if [ -n "$uri" ]; then echo "$uri"; return; fi
    done
    echo "hack/k8s-apt.sh: no Debian mirror found in /etc/apt" >&2
    exit 1
}

mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/parts" "$APT/prefs"
m=$(mirror)
src="deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $m bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $m bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $m bullseye main"
if [ "$(cat "$APT/sources.list" 2>/dev/null)" != "$src" ]; then
    printf '%s\n' "$src" >"$APT/sources.list"
    rm -f "$APT/updated"
fi
opts=(-o "Dir::Etc::SourceList=$APT/sources.list" -o "Dir::Etc::SourceParts=$APT/parts"
      -o "Dir::Etc::Preferences=$APT/prefs/none" -o "Dir::Etc::PreferencesParts=$APT/prefs"
      -o "Dir::State=$APT" -o "Dir::State::Lists=$APT/lists" -o "Dir::State::status=$APT/status"
      -o "Dir::Cache=$APT" -o "Dir::Cache::Archives=$APT/archives"
      -o "APT::Get::List-Cleanup=0" -o "Acquire::Languages=none")
touch "$APT/status"
# One index per day is enough: the versions this pins are a stable release's.
if [ ! -f "$APT/updated" ] || [ -n "$(find "$APT/updated" -mmin +1440)" ]; then
    apt-get "${opts[@]}" -qq update >&2
    touch "$APT/updated"
fi
tool=$1
shift
exec "$tool" "${opts[@]}" "$@"
