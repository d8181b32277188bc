#!/usr/bin/env bash
# Stop the head node that start-head.sh started in FOLDER, and every process below it, by pid.
#   cluster/local/stop-head.sh /tmp/psvae-head
set -euo pipefail
exec "${PYTHON:-python3}" -m cluster.local.head stop "$@"
