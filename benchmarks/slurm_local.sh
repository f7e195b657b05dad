#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the `cluster` tests and for trying a launcher config:
#   benchmarks/slurm_local.sh start    install slurm-wlm and munge (apt-get, root), write a minimal
#                                      slurm.conf (this host, its CPUs and memory, no GPUs, accounting
#                                      off), start munged, slurmctld and slurmd; wait for the node
#   benchmarks/slurm_local.sh stop     stop the three daemons it started (by their pid files)
#   benchmarks/slurm_local.sh status   sinfo
# Exit status 2 with one line on stderr when SLURM cannot be installed or started here (no root,
# no package mirror): callers (.ci/run, tests/conftest.py) skip the cluster tests with that reason.
set -euo pipefail

STATE=${ROBUSTLAB_SLURM_STATE:-/var/lib/robustlab-slurm}  # spool, logs and pid files of this cluster
CONF=/etc/slurm/slurm.conf

refuse() { echo "slurm_local.sh: $*" >&2; exit 2; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || refuse "installing slurm-wlm and munge needs root (apt-get)"
    command -v apt-get >/dev/null || refuse "no apt-get on this machine: install slurm-wlm and munge by hand"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$STATE/apt.log" 2>&1 || refuse "apt-get update failed (see $STATE/apt.log)"
    apt-get install -y -qq slurm-wlm munge >>"$STATE/apt.log" 2>&1 \
        || refuse "apt-get install slurm-wlm munge failed (see $STATE/apt.log)"
}

write_conf() {
    local host cpus memory
    host=$(hostname -s)
    cpus=$(nproc --all)
    memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MB, leaving 1 GB to the system
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
    # proctrack/linuxproc and task/none: no cgroup setup needed (containers, CI machines);
    # select/cons_tres: CPUs and memory are scheduled per job, as on a real cluster;
    # no GresTypes: asking for a GPU is refused, as on a cluster without GPUs;
    # accounting off (no slurmdbd): sacct has nothing, as on many small clusters.
    cat >"$CONF" <<CONF
ClusterName=robustlab-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
MpiDefault=none
DefMemPerCPU=1024
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then  # a generated key: this one-node cluster only trusts itself
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chmod 400 /etc/munge/munge.key
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    if ! munge -n >/dev/null 2>&1; then
        if id munge >/dev/null 2>&1; then
            runuser -u munge -- munged --pid-file=/run/munge/munged.pid 2>/dev/null || munged --force
        else
            munged --force
        fi
    fi
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && return; sleep 0.1; done
    refuse "munged did not start"
}

running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

start() {
    mkdir -p "$STATE"
    install
    write_conf
    start_munge
    if running slurmctld && running slurmd; then
        scontrol reconfigure  # already up: read the conf written above
    else
        # -c: a fresh start forgets the jobs of an earlier session (a test cluster keeps no state worth keeping)
        running slurmctld || slurmctld -c
        running slurmd || slurmd
    fi
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            sinfo
            return
        fi
        sleep 0.5
    done
    scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true
    sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' || refuse "the node did not become idle (see $STATE/slurmd.log)"
    sinfo
}

stop_pid() {  # a daemon this script started, by its pid file
    local file=$1 pid
    pid=$(cat "$file" 2>/dev/null) || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$file"
}

stop() {
    stop_pid "$STATE/slurmd.pid"
    stop_pid "$STATE/slurmctld.pid"
    stop_pid /run/munge/munged.pid
    echo "slurm_local.sh: stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 1 ;;
esac
