#!/usr/bin/env bash
# Exit 0 (and print the state file) when the cluster started by tests/slurm/start.sh is healthy:
# its recorded daemons run, slurmctld answers and the node takes jobs. Exit 1 otherwise.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
PATH="$PATH:/usr/sbin:/sbin"

if cluster_healthy; then
  grep -v '^#' "$SLURM_TEST_STATE"
  exit 0
fi
log "no healthy test cluster${MUNGED_PID:+ (state file $SLURM_TEST_STATE is stale)}"
exit 1
