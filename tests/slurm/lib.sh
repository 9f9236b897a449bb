# shellcheck shell=bash disable=SC2034  # settings used by the scripts that source this file
# Shared settings of the single-node test cluster; sourced by start.sh, stop.sh and status.sh.
# Everything lives in one scratch folder (config, munge key and socket, state, spool, logs, PID
# files) and the daemons listen on their own ports, so a system SLURM or munge is left alone.

SLURM_TEST_DIR="${DYNSPARSE_SLURM_DIR:-/tmp/dynsparse-slurm}"
SLURM_TEST_STATE="$SLURM_TEST_DIR/state.env"
SLURM_TEST_CONF="$SLURM_TEST_DIR/etc/slurm.conf"
# The default client config path links to SLURM_TEST_CONF while the cluster runs: inside a job,
# snakemake-executor-plugin-slurm-jobstep (0.6.1) drops every SLURM_* variable but a few job
# ids before its nested `srun`, SLURM_CONF included, so srun must find the config by itself,
# as it does on a real cluster (/etc/slurm/slurm.conf on every node, or configless slurmd).
SLURM_ETC_CONF=/etc/slurm/slurm.conf
SLURM_TEST_MUNGE_DIR="$SLURM_TEST_DIR/munge"
SLURM_TEST_MUNGE_SOCKET="$SLURM_TEST_MUNGE_DIR/munge.socket"
SLURM_TEST_CTLD_PORT="${DYNSPARSE_SLURMCTLD_PORT:-16817}"
SLURM_TEST_SLURMD_PORT="${DYNSPARSE_SLURMD_PORT:-16818}"
SLURM_TEST_PARTITION=debug
SLURM_TEST_PACKAGES=(slurmctld slurmd slurm-client munge)
SLURM_TEST_COMMANDS=(munged munge unmunge slurmctld slurmd sinfo srun sbatch squeue scontrol)

log() { echo "slurm-test: $*"; }

missing_commands() {
  local cmd absent=()
  for cmd in "${SLURM_TEST_COMMANDS[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || absent+=("$cmd")
  done
  echo "${absent[*]}"
}

# A recorded PID still names the daemon we started (and not a recycled PID).
pid_is() {
  local pid="$1" name="$2"
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]
}

etc_conf_is_ours() {
  [ -L "$SLURM_ETC_CONF" ] && [ "$(readlink "$SLURM_ETC_CONF")" = "$SLURM_TEST_CONF" ]
}

load_state() {
  MUNGED_PID="" SLURMCTLD_PID="" SLURMD_PID=""
  # shellcheck disable=SC1090
  [ -f "$SLURM_TEST_STATE" ] && . "$SLURM_TEST_STATE"
  return 0
}

# 0 when the daemons recorded in the state file run and the node accepts jobs.
cluster_healthy() {
  load_state
  etc_conf_is_ours && pid_is "$MUNGED_PID" munged && pid_is "$SLURMCTLD_PID" slurmctld && pid_is "$SLURMD_PID" slurmd \
    || return 1
  SLURM_CONF="$SLURM_TEST_CONF" timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
  SLURM_CONF="$SLURM_TEST_CONF" timeout 10 sinfo -h -N -o '%T' 2>/dev/null \
    | grep -Eq '^(idle|mixed|allocated)' || return 1
}
