#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the harness's sbatch end-to-end test (and for
# trying the slurm executor by hand): munged, slurmctld and slurmd on localhost, all state under
# one folder. Needs Debian's slurm-wlm (apt-get install slurm-wlm) and root or a user that may
# start the daemons.
#
#   tests/slurm/localhost.sh start DIR   # prints the SLURM_CONF to export; exit 0 once sinfo sees the node idle
#   tests/slurm/localhost.sh stop DIR
#
# SLURM_LOCALHOST_PORT (default 16817) and the next port are slurmctld's and slurmd's.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf=$dir/slurm.conf

stop() {
    for pidfile in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    sleep 1
    for pidfile in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
        [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
}

case $action in
stop) stop; exit 0 ;;
start) ;;
*) usage ;;
esac

for tool in munged slurmctld slurmd sinfo sbatch; do
    command -v "$tool" >/dev/null || { echo "$tool not found: install Debian's slurm-wlm" >&2; exit 3; }
done

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
user=$(id -un)
port=${SLURM_LOCALHOST_PORT:-16817}
mkdir -p "$dir"/state "$dir"/spool "$dir"/log
chmod 755 "$dir"

# A private munge key and socket, so that a system munged (if any) is left alone.
key=$dir/munge.key
[ -f "$key" ] || { head -c 1024 /dev/urandom > "$key"; chmod 600 "$key"; }
socket=$dir/munge.socket
munged --force --key-file="$key" --socket="$socket" --pid-file="$dir/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge.seed"

cat > "$conf" <<CONF
ClusterName=harness-test
SlurmctldHost=$host
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
MaxArraySize=1001
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$conf

slurmctld -f "$conf" -i
slurmd -f "$conf"

for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
        echo "$conf"
        exit 0
    fi
    sleep 0.5
done
echo "slurm did not come up; logs in $dir/log:" >&2
tail -n 20 "$dir"/log/*.log >&2 || true
stop
exit 1
