#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, for tests and CI.
#
# Made for Debian containers / sandboxes running as root without systemd:
# the daemons (munged, slurmctld, slurmd) are started directly.  The node is
# this host (`hostname -s`) with the CPUs and memory `slurmd -C` detects, in
# one default partition "debug"; no cgroups (proctrack/linuxproc), no
# accounting.  State, spool, logs and pid files live under $BGDASK_SLURM_DIR
# (default /var/tmp/bgdask-slurm).
#
# Idempotent: if the node is already up and idle/mixed/allocated, it exits 0.
# Exits non-zero with the daemons' logs printed if the node does not come up
# within $BGDASK_SLURM_TIMEOUT seconds (default 60).
#
# Usage:  sudo deploy/slurm/start-slurm.sh      (stop: deploy/slurm/stop-slurm.sh)
#
# Environment:
#   BGDASK_SLURM_DIR      state directory (default /var/tmp/bgdask-slurm)
#   BGDASK_SLURM_TIMEOUT  seconds to wait for the node (default 60)
#   BGDASK_SLURM_FORCE=1  overwrite an /etc/slurm/slurm.conf not written by this script
set -euo pipefail

SLURM_DIR=${BGDASK_SLURM_DIR:-/var/tmp/bgdask-slurm}
TIMEOUT=${BGDASK_SLURM_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
MARK="# managed by bgdask deploy/slurm/start-slurm.sh"
PARTITION=debug

log() { echo "start-slurm: $*" >&2; }
die() { log "ERROR: $*"; dump_logs; exit 1; }

dump_logs() {
    local f
    for f in "$SLURM_DIR"/log/slurmctld.log "$SLURM_DIR"/log/slurmd.log /var/log/munge/munged.log; do
        if [[ -s $f ]]; then
            echo "----- $f (last 40 lines) -----" >&2
            tail -n 40 "$f" >&2
        fi
    done
    if [[ -f $CONF ]] && command -v sinfo >/dev/null 2>&1; then
        echo "----- sinfo -----" >&2
        sinfo -N -l 2>&1 >&2 || true
    fi
}

node_state() {
    # state of our node as sinfo reports it ("idle", "mix", "down*", ...), empty if unreachable
    sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n 1 || true
}

is_up() {
    case "$(node_state)" in
        idle|mixed|mix|allocated|alloc|completing|comp) return 0 ;;
        *) return 1 ;;
    esac
}

pid_alive() {  # pid_alive PIDFILE
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

if [[ $(id -u) -ne 0 ]]; then
    echo "start-slurm: must run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
        || { log "ERROR: apt-get install slurm-wlm munge failed"; exit 1; }
fi

HOST=$(hostname -s)

# ---------------------------------------------------------------- already running?
if [[ -f $CONF ]] && grep -qF "$MARK" "$CONF" && is_up; then
    log "SLURM already running: node $HOST is $(node_state)"
    exit 0
fi

mkdir -p "$SLURM_DIR"/{log,state,spool,run}

# ---------------------------------------------------------------- munge
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating munge key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged \
        || runuser -u munge -- /usr/sbin/munged --force \
        || die "munged failed to start"
    for _ in $(seq 1 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null 2>&1 || die "munge does not work (munge -n | unmunge)"
fi

# ---------------------------------------------------------------- slurm.conf
if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF" && [[ ${BGDASK_SLURM_FORCE:-0} != 1 ]]; then
    die "$CONF exists and was not written by this script; set BGDASK_SLURM_FORCE=1 to overwrite it"
fi

# "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
NODE_LINE=$(slurmd -C | grep '^NodeName=' | head -n 1)
[[ -n $NODE_LINE ]] || die "slurmd -C did not describe this node"
# Leave a little memory headroom so the node never drains for "Low RealMemory".
REAL_MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEM=$(( REAL_MEM > 2048 ? REAL_MEM - 256 : REAL_MEM ))
NODE_LINE=$(sed -e "s/^NodeName=[^ ]*/NodeName=$HOST/" -e "s/RealMemory=[0-9]*/RealMemory=$MEM/" <<<"$NODE_LINE")

mkdir -p /etc/slurm
TMP_CONF=$(mktemp "$SLURM_DIR/slurm.conf.XXXXXX")
cat >"$TMP_CONF" <<EOF
$MARK
# Single-node SLURM for tests/CI: node $HOST, no cgroups, no accounting.
ClusterName=bgdask
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/run/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=30
KillWait=5
Waittime=0
# Without cgroups the memory request is bookkeeping only; default per-CPU
# memory keeps jobs that request none from claiming the whole node.
DefMemPerCPU=1024
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
mv "$TMP_CONF" "$CONF"
chmod 0644 "$CONF"
# cgroup.conf is consulted by some plugins even when unused; make it harmless.
if [[ ! -f /etc/slurm/cgroup.conf ]]; then
    printf '%s\nCgroupPlugin=autodetect\nIgnoreSystemd=yes\n' "$MARK" >/etc/slurm/cgroup.conf
fi

# ---------------------------------------------------------------- daemons
if pid_alive "$SLURM_DIR/run/slurmctld.pid"; then
    log "slurmctld running; reconfiguring"
    scontrol reconfigure >/dev/null 2>&1 || true
else
    log "starting slurmctld"
    # -i: ignore state files that do not match this configuration
    /usr/sbin/slurmctld -i || die "slurmctld failed to start"
fi

if ! pid_alive "$SLURM_DIR/run/slurmd.pid"; then
    log "starting slurmd"
    /usr/sbin/slurmd || die "slurmd failed to start"
fi

# ---------------------------------------------------------------- wait
deadline=$(( SECONDS + TIMEOUT ))
while (( SECONDS < deadline )); do
    state=$(node_state)
    case "$state" in
        idle|mixed|mix|allocated|alloc|completing|comp)
            log "SLURM up: node $HOST is $state (partition $PARTITION, $(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE") CPUs, ${MEM} MB)"
            exit 0 ;;
        down*|drain*|drained*)
            # e.g. left down from a previous run: bring it back
            scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
die "node $HOST not idle after ${TIMEOUT}s (state: '$(node_state)')"
