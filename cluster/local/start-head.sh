#!/usr/bin/env bash
# Start a Ray head node on 127.0.0.1 with token auth, everything it owns in FOLDER
# (keep FOLDER short: Ray puts socket files under it). Stop it with stop-head.sh FOLDER.
#   cluster/local/start-head.sh /tmp/psvae-head [--num-cpus N]
set -euo pipefail
exec "${PYTHON:-python3}" -m cluster.local.head start "$@"
