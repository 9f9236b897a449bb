#!/usr/bin/env bash
# Start a single-node SLURM cluster on localhost for the SLURM test: munged, slurmctld, slurmd.
#
#   bash tests/slurm/start.sh [--install]
#
# --install  apt-get the Debian packages (slurmctld slurmd slurm-client munge) when missing.
#
# Idempotent: when the cluster recorded in the state file is healthy it is left as it is. Every
# file lives in $DYNSPARSE_SLURM_DIR (default /tmp/dynsparse-slurm); the PIDs of the daemons
# go to its state.env, which tests/slurm/stop.sh reads to stop exactly these daemons.
# Clients need SLURM_CONF=<dir>/etc/slurm.conf (state.env records it).
# Exit status: 0 running; 2 cannot run here (not root, packages missing); 1 a daemon failed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

install=0
for arg in "$@"; do
  case "$arg" in
    --install) install=1 ;;
    *) echo "usage: $0 [--install]" >&2; exit 64 ;;
  esac
done

if [ "$(uname -s)" != Linux ]; then
  log "cannot start: not Linux"; exit 2
fi
if [ "$(id -u)" != 0 ]; then
  log "cannot start: slurmd must run as root (running as uid $(id -u))"; exit 2
fi

missing="$(missing_commands)"
if [ -n "$missing" ] && [ "$install" = 1 ]; then
  if ! command -v apt-get >/dev/null; then
    log "cannot start: commands missing ($missing) and no apt-get to install them"; exit 2
  fi
  log "installing ${SLURM_TEST_PACKAGES[*]} (missing: $missing)"
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o DPkg::Lock::Timeout=300 "${SLURM_TEST_PACKAGES[@]}" >/dev/null
  }
  if ! apt_install 2>/dev/null; then
    apt-get update -qq -o DPkg::Lock::Timeout=300 || true
    apt_install || { log "cannot start: apt-get install ${SLURM_TEST_PACKAGES[*]} failed"; exit 2; }
  fi
  missing="$(missing_commands)"
fi
if [ -n "$missing" ]; then
  log "cannot start: commands missing ($missing); install the Debian packages" \
    "${SLURM_TEST_PACKAGES[*]} (or run: bash ci/slurm.sh)"
  exit 2
fi
PATH="$PATH:/usr/sbin:/sbin"

if { [ -e "$SLURM_ETC_CONF" ] || [ -L "$SLURM_ETC_CONF" ]; } && ! etc_conf_is_ours; then
  log "cannot start: $SLURM_ETC_CONF exists and belongs to another SLURM; jobs would use it" \
    "(the jobstep plugin drops SLURM_CONF inside jobs)"
  exit 2
fi

if cluster_healthy; then
  log "already running (slurmctld $SLURMCTLD_PID, slurmd $SLURMD_PID, munged $MUNGED_PID);" \
    "SLURM_CONF=$SLURM_TEST_CONF"
  exit 0
fi
if [ -f "$SLURM_TEST_STATE" ]; then
  log "a previous cluster is not healthy; stopping what is left of it"
  bash "$here/stop.sh"
fi

fail() {
  log "FAILED: $*"
  local file
  for file in "$SLURM_TEST_MUNGE_DIR/munged.log" "$SLURM_TEST_DIR"/log/*.log; do
    [ -s "$file" ] && { echo "--- tail of $file"; tail -n 15 "$file"; }
  done
  if [ -n "${SLURM_CONF:-}" ]; then timeout 5 sinfo -N -o '%N %T %E' 2>&1 || true; fi
  # Stop whatever part of the cluster did start, by PID.
  write_state
  bash "$here/stop.sh" || true
  exit 1
}

write_state() {
  local pid_munged="" pid_ctld="" pid_slurmd=""
  [ -f "$SLURM_TEST_MUNGE_DIR/munged.pid" ] && pid_munged="$(cat "$SLURM_TEST_MUNGE_DIR/munged.pid")"
  [ -f "$SLURM_TEST_DIR/run/slurmctld.pid" ] && pid_ctld="$(cat "$SLURM_TEST_DIR/run/slurmctld.pid")"
  [ -f "$SLURM_TEST_DIR/run/slurmd.pid" ] && pid_slurmd="$(cat "$SLURM_TEST_DIR/run/slurmd.pid")"
  cat >"$SLURM_TEST_STATE.tmp" <<EOF
# Written by tests/slurm/start.sh on $(date -Is); read by stop.sh and tests/test_slurm.py.
SLURM_CONF=$SLURM_TEST_CONF
SLURM_PARTITION=$SLURM_TEST_PARTITION
SLURM_NODE=$node
SLURM_REAL_MEMORY_MB=$real_memory
SLURM_CPUS=$cpus
SLURM_VERSION=$version
SLURMCTLD_LOG=$SLURM_TEST_DIR/log/slurmctld.log
MUNGE_SOCKET=$SLURM_TEST_MUNGE_SOCKET
MUNGED_PID=$pid_munged
SLURMCTLD_PID=$pid_ctld
SLURMD_PID=$pid_slurmd
EOF
  mv "$SLURM_TEST_STATE.tmp" "$SLURM_TEST_STATE"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds="$1" what="$2" i
  shift 2
  for ((i = 0; i < seconds * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "$what (waited ${seconds}s)"
}

t0=$SECONDS
version="$(slurmctld -V | awk '{print $2}')"
node="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
real_memory=$((mem_mb * 9 / 10))

# Fresh state: no jobs or node state from an earlier cluster; earlier logs are kept as *.prev.
rm -rf "$SLURM_TEST_DIR/state" "$SLURM_TEST_DIR/spool" "$SLURM_TEST_DIR/run"
mkdir -p "$SLURM_TEST_DIR"/{etc,state,spool,run,log}
chmod 755 "$SLURM_TEST_DIR"
for file in "$SLURM_TEST_DIR"/log/*.log; do
  [ -e "$file" ] && mv -f "$file" "$file.prev"
done

# munge: its own key, socket, PID and log files, owned by the munge user.
mkdir -p "$SLURM_TEST_MUNGE_DIR"
chown munge:munge "$SLURM_TEST_MUNGE_DIR"
chmod 711 "$SLURM_TEST_MUNGE_DIR"  # munged wants the socket folder executable for all
key="$SLURM_TEST_MUNGE_DIR/munge.key"
if [ "$(stat -c %s "$key" 2>/dev/null || echo 0)" != 1024 ]; then
  head -c 1024 /dev/urandom >"$key.tmp"
  mv -f "$key.tmp" "$key"
  log "wrote a new 1024-byte munge key"
fi
chown munge:munge "$key"
chmod 400 "$key"
rm -f "$SLURM_TEST_MUNGE_DIR/munged.pid" "$SLURM_TEST_MUNGE_SOCKET"
runuser -u munge -- munged --socket="$SLURM_TEST_MUNGE_SOCKET" --key-file="$key" \
  --pid-file="$SLURM_TEST_MUNGE_DIR/munged.pid" --log-file="$SLURM_TEST_MUNGE_DIR/munged.log" \
  --seed-file="$SLURM_TEST_MUNGE_DIR/munged.seed" || fail "munged did not start"
munge_ok() {
  munge -n -S "$SLURM_TEST_MUNGE_SOCKET" | unmunge -S "$SLURM_TEST_MUNGE_SOCKET" | grep -q Success
}
wait_for 15 "munge -n | unmunge does not report Success" munge_ok
log "munged running (PID $(cat "$SLURM_TEST_MUNGE_DIR/munged.pid"))"

cat >"$SLURM_TEST_CONF" <<EOF
# Single-node test cluster written by tests/slurm/start.sh. Not for production use.
ClusterName=dynsparse-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$SLURM_TEST_CTLD_PORT
SlurmdPort=$SLURM_TEST_SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SLURM_TEST_MUNGE_SOCKET
StateSaveLocation=$SLURM_TEST_DIR/state
SlurmdSpoolDir=$SLURM_TEST_DIR/spool
SlurmctldPidFile=$SLURM_TEST_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_TEST_DIR/run/slurmd.pid
SlurmctldLogFile=$SLURM_TEST_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_TEST_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
# Finished jobs stay visible to squeue/scontrol for an hour (the executor polls with squeue).
MinJobAge=3600
KillWait=5
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_memory State=UNKNOWN
PartitionName=$SLURM_TEST_PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$SLURM_TEST_CONF"
if ! etc_conf_is_ours; then
  mkdir -p "$(dirname "$SLURM_ETC_CONF")"
  ln -s "$SLURM_TEST_CONF" "$SLURM_ETC_CONF"
  log "linked $SLURM_ETC_CONF -> $SLURM_TEST_CONF (removed again by stop.sh)"
fi

slurmctld -f "$SLURM_TEST_CONF" || fail "slurmctld did not start"
ctld_up() { timeout 5 scontrol ping | grep -q 'is UP'; }
wait_for 30 "slurmctld does not answer scontrol ping" ctld_up
log "slurmctld running (PID $(cat "$SLURM_TEST_DIR/run/slurmctld.pid"))"

slurmd -f "$SLURM_TEST_CONF" || fail "slurmd did not start"
node_idle() { timeout 5 sinfo -h -N -n "$node" -o '%T' | grep -qx idle; }
wait_for 60 "node $node did not become idle" node_idle
log "slurmd running (PID $(cat "$SLURM_TEST_DIR/run/slurmd.pid")), node $node idle"
write_state

if ! out="$(timeout 60 srun -N1 -n1 --mem=100 -t 1 hostname 2>&1)"; then
  fail "srun hostname failed: $out"
fi
log "srun hostname -> $out"
log "SLURM $version up in $((SECONDS - t0))s: node $node, $cpus CPUs, ${real_memory} MB," \
  "partition $SLURM_TEST_PARTITION; export SLURM_CONF=$SLURM_TEST_CONF"
