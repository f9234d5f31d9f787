#!/usr/bin/env bash
# Start dockerd when none answers (machines without systemd), and wait for it.
set -euo pipefail
if docker info >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "hack/dockerd.sh: no docker daemon answers and only root can start one" >&2
    exit 3
fi
setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 0.5
done
echo "hack/dockerd.sh: dockerd did not come up; see /var/log/dockerd.log" >&2
exit 3
