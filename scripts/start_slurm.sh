#!/usr/bin/env bash
# Start a single-node Slurm on this machine, for the Slurm integration test.
#
#   sudo bash scripts/start_slurm.sh        # or as root
#
# What it does, each step skipped when already done (safe to run again):
#   1. apt-get install slurm-wlm munge (Debian/Ubuntu), quietly;
#   2. creates the munge key if missing and starts munged;
#   3. writes a minimal /etc/slurm/slurm.conf: this host is controller and the
#      only compute node (CPUs from nproc, RealMemory = 90% of MemTotal), one
#      partition "debug" (default, no time limit), munge auth, no cgroups;
#   4. starts slurmctld and slurmd as root daemons (no systemd needed);
#   5. waits (bounded) until sinfo shows the node idle and `srun hostname` runs.
#
# A slurm.conf not written by this script is left alone (and used as is).
# Exits non-zero with the reason when Slurm cannot be brought up.
# Environment: SLURM_START_TIMEOUT (seconds to wait for the node, default 60).

set -euo pipefail

readonly MARKER="# written by kmeans_dask scripts/start_slurm.sh"
readonly CONF_DIR=/etc/slurm
readonly CONF="$CONF_DIR/slurm.conf"
readonly LOG_DIR=/var/log/slurm
readonly TIMEOUT="${SLURM_START_TIMEOUT:-60}"

log() { printf 'start_slurm: %s\n' "$*"; }
die() {
    printf 'start_slurm: ERROR: %s\n' "$*" >&2
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        if [[ -s "$f" ]]; then
            printf -- '--- last lines of %s ---\n' "$f" >&2
            tail -n 15 "$f" >&2
        fi
    done
    exit 1
}

# Succeeds when the node is idle (or mixed/allocated) and a job step runs.
slurm_works() {
    command -v sinfo >/dev/null 2>&1 || return 1
    # Both daemons must run here (sinfo keeps reporting a dead slurmd's node idle for a while).
    pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null || return 1
    local state
    state=$(timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1) || return 1
    [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]] || return 1
    [[ "$(timeout 30 srun -N1 -n1 -t 1 hostname 2>/dev/null)" == "$(hostname)" ]]
}

# Is the daemon whose pid file is $1 alive?
pid_alive() {
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages and starts daemons)"
NODE=$(hostname -s)

if slurm_works; then
    log "Slurm is already up: node $NODE idle in partition $(sinfo -h -o '%R' | head -n 1); nothing to do"
    exit 0
fi

# --- 1. packages ------------------------------------------------------------------
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
    || ! command -v munged >/dev/null 2>&1 || ! command -v srun >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "slurm-wlm/munge missing and no apt-get to install them"
    log "installing slurm-wlm and munge with apt-get (quiet)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 \
        || die "apt-get install -y slurm-wlm munge failed"
fi
for cmd in slurmctld slurmd munged sinfo srun scontrol; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found after installing slurm-wlm/munge"
done

# --- 2. munge ----------------------------------------------------------------------
id munge >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin munge
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 1 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.5
    done
    munge -n | unmunge >/dev/null || die "munge does not work: munge -n | unmunge fails"
fi

# --- 3. slurm.conf -----------------------------------------------------------------
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
install -d -m 0755 "$CONF_DIR" "$LOG_DIR" /var/spool/slurmd /var/spool/slurmctld
NEW_CONF=$(mktemp)
trap 'rm -f "$NEW_CONF"' EXIT
cat >"$NEW_CONF" <<EOF
$MARKER
# Single-node Slurm: this host is the controller and the only compute node.
ClusterName=kmeans-dask
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=30
KillWait=5
Waittime=0
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
CONF_CHANGED=0
if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF"; then
    log "$CONF was not written by this script: using it unchanged"
elif ! cmp -s "$NEW_CONF" "$CONF"; then
    log "writing $CONF (node $NODE, $CPUS CPUs, RealMemory ${MEM_MB} MB, partition debug)"
    install -m 0644 "$NEW_CONF" "$CONF"
    CONF_CHANGED=1
fi

# --- 4. daemons --------------------------------------------------------------------
if [[ $CONF_CHANGED -eq 1 ]]; then
    # Daemons started with an older configuration of ours: restart them.
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if pid_alive "$pidfile"; then
            log "configuration changed: stopping pid $(cat "$pidfile") ($pidfile)"
            kill "$(cat "$pidfile")" || true
            for _ in $(seq 1 20); do pid_alive "$pidfile" || break; sleep 0.5; done
        fi
    done
fi
if ! pid_alive /run/slurmctld.pid; then
    log "starting slurmctld"
    slurmctld || die "slurmctld failed to start"
fi
for _ in $(seq 1 20); do
    scontrol ping 2>/dev/null | grep -q 'is UP' && break
    sleep 0.5
done
scontrol ping 2>/dev/null | grep -q 'is UP' || die "slurmctld does not answer scontrol ping"
if ! pid_alive /run/slurmd.pid; then
    log "starting slurmd"
    slurmd || die "slurmd failed to start"
fi

# --- 5. wait for the node ----------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
resumed=0
state=""
while ((SECONDS < deadline)); do
    state=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true)
    case "$state" in
        idle | mixed | allocated | completing) break ;;
        drain* | down* | fail*)
            # e.g. left drained by an earlier run with other resources.
            if [[ $resumed -eq 0 ]]; then
                log "node $NODE is $state: resuming it"
                scontrol update NodeName="$NODE" State=RESUME || true
                resumed=1
            fi
            ;;
    esac
    sleep 1
done
[[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]] \
    || die "node $NODE not idle after ${TIMEOUT}s (state: '${state:-none}'; reason: $(sinfo -h -R -o '%E' 2>/dev/null | head -n 1))"
errors=$(mktemp)
trap 'rm -f "$NEW_CONF" "$errors"' EXIT
out=$(timeout 60 srun -N1 -n1 -t 1 hostname 2>"$errors") \
    || die "srun hostname failed: $(cat "$errors")"
[[ "$out" == "$(hostname)" ]] \
    || die "srun hostname printed '$out', expected '$(hostname)' ($(cat "$errors"))"

log "Slurm is up: node $NODE ($CPUS CPUs, ${MEM_MB} MB) idle in partition debug; srun hostname -> $out"
sinfo
