#!/usr/bin/env bash
# CI: install and start the single-node SLURM cluster that tests/test_slurm.py runs against.
#
#   bash ci/slurm.sh          install the Debian packages if missing, start (or keep) the cluster
#   bash ci/slurm.sh stop     stop the daemons it started, by PID
#
# Always exits 0: where SLURM cannot be installed or started it prints why, and the SLURM test
# skips with the reason. The cluster's state (SLURM_CONF, PIDs) is in
# ${DYNSPARSE_SLURM_DIR:-/tmp/dynsparse-slurm}/state.env, where the test finds it.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-start}" in
  start)
    t0=$SECONDS
    if bash tests/slurm/start.sh --install; then
      echo "ci/slurm: SLURM cluster ready in $((SECONDS - t0))s; tests/test_slurm.py will use it"
    else
      status=$?
      echo "ci/slurm: SLURM not started (exit $status, reason above); the SLURM test will skip"
    fi
    ;;
  stop)
    bash tests/slurm/stop.sh || echo "ci/slurm: stopping the SLURM cluster failed (see above)"
    ;;
  *)
    echo "usage: $0 [start|stop]" >&2
    exit 64
    ;;
esac
exit 0
