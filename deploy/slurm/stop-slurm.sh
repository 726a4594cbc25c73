#!/usr/bin/env bash
# Stop the single-node SLURM started by deploy/slurm/start-slurm.sh.
#
# Cancels running jobs, stops slurmd and slurmctld (and munged, unless
# --keep-munge), waiting for each to exit.  Safe to run when nothing runs.
#
# Usage:  deploy/slurm/stop-slurm.sh [--keep-munge] [--purge]
#   --purge   also delete the state directory ($BGDASK_SLURM_DIR) and the
#             /etc/slurm/slurm.conf this script family wrote
set -uo pipefail

SLURM_DIR=${BGDASK_SLURM_DIR:-/var/tmp/bgdask-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# managed by bgdask deploy/slurm/start-slurm.sh"
KEEP_MUNGE=0
PURGE=0
for arg in "$@"; do
    case "$arg" in
        --keep-munge) KEEP_MUNGE=1 ;;
        --purge) PURGE=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "stop-slurm: unknown argument $arg" >&2; exit 2 ;;
    esac
done

log() { echo "stop-slurm: $*" >&2; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE
    local name=$1 pidfile=$2 pid
    [[ -s $pidfile ]] || { log "$name not running"; return 0; }
    pid=$(cat "$pidfile")
    if ! kill -0 "$pid" 2>/dev/null; then
        log "$name not running (stale pid file)"
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    log "$name did not stop in 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null
    rm -f "$pidfile"
}

if [[ -f $CONF ]] && grep -qF "$MARK" "$CONF" && command -v scancel >/dev/null; then
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
fi

stop_pidfile slurmd "$SLURM_DIR/run/slurmd.pid"
stop_pidfile slurmctld "$SLURM_DIR/run/slurmctld.pid"

if [[ $KEEP_MUNGE == 0 ]]; then
    # munged keeps its pid in /run/munge/munged.pid
    stop_pidfile munged /run/munge/munged.pid
fi

if [[ $PURGE == 1 ]]; then
    log "removing $SLURM_DIR"
    rm -rf "$SLURM_DIR"
    if [[ -f $CONF ]] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF"; fi
    if [[ -f /etc/slurm/cgroup.conf ]] && grep -qF "$MARK" /etc/slurm/cgroup.conf; then
        rm -f /etc/slurm/cgroup.conf
    fi
fi
log "done"
