#!/usr/bin/env bash
# Stop the daemons tests/slurm/start.sh started, by the PIDs in its state file, and only those:
# a recorded PID is signalled only while /proc/<pid>/comm still names that daemon.
# Idempotent: without a state file there is nothing to stop.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

if [ ! -f "$SLURM_TEST_STATE" ]; then
  log "nothing to stop (no $SLURM_TEST_STATE)"
  exit 0
fi
load_state

stop_pid() {  # stop_pid NAME PID
  local name="$1" pid="$2" i
  if ! pid_is "$pid" "$name"; then
    log "$name${pid:+ (PID $pid)} is not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    pid_is "$pid" "$name" || { log "stopped $name (PID $pid)"; return 0; }
    sleep 0.25
  done
  kill -KILL "$pid" 2>/dev/null || true
  log "killed $name (PID $pid) after 10s"
}

# Reverse start order: the compute daemon, the controller, then munge.
stop_pid slurmd "$SLURMD_PID"
stop_pid slurmctld "$SLURMCTLD_PID"
stop_pid munged "$MUNGED_PID"
if etc_conf_is_ours; then
  rm -f "$SLURM_ETC_CONF"
  log "removed the link $SLURM_ETC_CONF"
fi
rm -f "$SLURM_TEST_STATE"
