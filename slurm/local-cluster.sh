#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, with real accounting.
#
#   slurm/local-cluster.sh start    install what is missing, start every daemon, wait until
#                                   the node is idle and sacct answers (a no-op when running)
#   slurm/local-cluster.sh stop     cancel all jobs, stop the daemons by their recorded pids
#   slurm/local-cluster.sh status   daemons, sinfo, and whether accounting (sacct) works;
#                                   exit status 0 only when everything is up
#   slurm/local-cluster.sh restart  stop, then start (state is kept)
#   slurm/local-cluster.sh wipe     stop, then delete the state directory (job ids restart at 1)
#
# Daemons: munged, a private MariaDB (own datadir, 127.0.0.1 on a spare port), slurmdbd
# (localhost:6819), slurmctld (6817), slurmd (6818). Everything they write -- configs, state,
# logs, pid files, the munge key and socket, the database -- lives under one directory:
# ${POOLBENCH_SLURM_DIR:-/tmp/poolbench-slurm}. The only file written outside it is the symlink
# /etc/slurm/slurm.conf -> $DIR/etc/slurm.conf, because Debian's client commands (sbatch,
# squeue, sacct, ... as called by submitit) read that path.
# No systemd and no cgroups: proctrack/linuxproc, task/none. Needs root (CI runs as root, no
# stdin). See slurm/README.md.
set -euo pipefail

DIR="${POOLBENCH_SLURM_DIR:-/tmp/poolbench-slurm}"
CLUSTER="${POOLBENCH_SLURM_CLUSTER:-poolbench}"
PARTITION="${POOLBENCH_SLURM_LOCAL_PARTITION:-debug}"
DBD_PORT=6819
CTLD_PORT=6817
SLURMD_PORT=6818
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stop is the reverse
ETC_CONF=/etc/slurm/slurm.conf
WAIT_S="${POOLBENCH_SLURM_WAIT_S:-60}"

log() { printf '[local-cluster] %s\n' "$*" >&2; }
die() { printf '[local-cluster] error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

[ "$#" -eq 1 ] || usage
cmd="$1"
case "$cmd" in start|stop|status|restart|wipe) ;; -h|--help|help) usage 0 ;; *) usage ;; esac
if [ ! -d "$DIR" ] && [ "$cmd" != start ] && [ "$cmd" != restart ]; then
    echo "not started: no state directory $DIR"
    [ "$cmd" = status ] && exit 1 || exit 0
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
CONF="$DIR/etc/slurm.conf"
export SLURM_CONF="$CONF"   # our daemons and client calls; others use the /etc symlink
MUNGE_SOCKET="$DIR/munge/munge.socket.2"
DB_SOCKET="$DIR/mysql/mysqld.sock"

# Serialize concurrent invocations. Daemons must not inherit this fd (see launch).
exec 9>"$DIR/.lock"
flock -w 300 9 || die "another local-cluster.sh holds $DIR/.lock"

# ---------------------------------------------------------------------------------------------
# helpers

# Run a daemon with stdin from /dev/null, output to its log, and every fd above 2 closed (a
# daemon that inherits our lock fd keeps the lock held forever), in its own session.
launch() {
    local logfile="$1"; shift
    (
        exec </dev/null >>"$logfile" 2>&1
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
        done
        exec setsid "$@"
    ) &
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_for() {
    local secs="$1" what="$2"; shift 2
    local deadline=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "timed out after ${secs}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

# Whether something accepts TCP connections on 127.0.0.1:port (bash only: no ss/netstat needed).
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether pid is a live (not zombie) process named name.
is_alive() {
    local pid="$1" name="$2" stat
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat%% *}" != Z ]
}

# The pid we recorded for a daemon, if that process is still that daemon.
live_pid() {
    local name="$1" pid
    [ -f "$DIR/pids/$name.pid" ] || return 1
    pid="$(cat "$DIR/pids/$name.pid" 2>/dev/null)" || return 1
    is_alive "$pid" "$name" || return 1
    echo "$pid"
}

# Copy the pid a daemon wrote into our own record (the daemons delete their pid files on exit,
# so stop must not depend on them).
record_pid() {
    local name="$1" pidfile="$2"
    wait_for 20 "$name to write $pidfile" test -s "$pidfile" || return 1
    cp "$pidfile" "$DIR/pids/$name.pid"
    live_pid "$name" >/dev/null || { log "$name (pid $(cat "$pidfile")) is not running"; return 1; }
}

fail_start() {
    local name="$1" logfile="$2"
    log "$name failed to start; last lines of $logfile:"
    tail -n 30 "$logfile" >&2 || true
    exit 1
}

# ---------------------------------------------------------------------------------------------
# install

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing ${missing[*]} (apt-get, --no-install-recommends)"
    export DEBIAN_FRONTEND=noninteractive
    # Package scripts must not start system services (munge, mariadb) of their own.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1
    fi
    local rc=0 t0 apt_log="$DIR/log/apt.log"
    t0="$(date +%s)"
    mkdir -p "$DIR/log"
    apt-get update -q </dev/null >"$apt_log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}" </dev/null >>"$apt_log" 2>&1 || rc=$?
    fi
    [ "$made_policy" -eq 1 ] && rm -f "$policy"
    if [ "$rc" -ne 0 ]; then
        tail -n 30 "$apt_log" >&2
        die "apt-get failed (exit $rc) installing ${missing[*]}; full log: $apt_log"
    fi
    log "installed in $(( $(date +%s) - t0 )) s (log: $apt_log)"
}

# ---------------------------------------------------------------------------------------------
# configuration (rewritten on every start: hostname, CPUs and memory are read each time)

free_db_port() {
    local p
    if [ -s "$DIR/etc/db_port" ]; then cat "$DIR/etc/db_port"; return; fi
    for p in $(seq "${POOLBENCH_SLURM_DB_PORT:-3307}" 3399); do
        port_in_use "$p" || { echo "$p" >"$DIR/etc/db_port"; echo "$p"; return; }
    done
    die "no free port for MariaDB in 3307-3399"
}

write_configs() {
    mkdir -p "$DIR"/{etc,pids,run,log,state/slurmctld,state/slurmd,munge,mysql}
    chmod 755 "$DIR"
    local host node_line mem db_port
    host="$(hostname -s)"
    db_port="$(free_db_port)"
    # slurmd -C: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
    # ThreadsPerCore=1 RealMemory=24105"; keep the topology, report a little less memory.
    node_line="$(slurmd -C | head -n 1)"
    [[ "$node_line" == NodeName=* ]] || die "unexpected 'slurmd -C' output: $node_line"
    mem="$(sed -nE 's/.*RealMemory=([0-9]+).*/\1/p' <<<"$node_line")"
    mem=$(( ${mem:-1024} * 95 / 100 ))
    node_line="$(sed -E "s/RealMemory=[0-9]+/RealMemory=$mem/; s/^NodeName=[^ ]+/NodeName=$host/" \
        <<<"$node_line")"

    cat >"$CONF" <<EOF
# Written by slurm/local-cluster.sh on every start; edits are lost.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=cred_expire=10,socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state/slurmctld
SlurmdSpoolDir=$DIR/state/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd, no cgroups.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
# Fast turnaround for tests: schedule batch jobs at once, look at pending jobs every 2 s (a
# requeued job becomes eligible cred_expire seconds later, an event no scheduler pass waits
# for; the default passes come every 30/60 s), forget finished jobs soon (sacct keeps them),
# kill a job 5 s after SIGTERM.
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
MinJobAge=10
KillWait=5
InactiveLimit=0
# Real accounting: submitit reads job states with sacct.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# The munge socket used to talk to slurmdbd (AuthInfo does not apply to that connection).
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    # slurmdbd reads slurmdbd.conf next to $SLURM_CONF; it must be private to SlurmUser.
    (umask 077; cat >"$DIR/etc/slurmdbd.conf" <<EOF
# Written by slurm/local-cluster.sh on every start; edits are lost.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=poolbench
StorageLoc=slurm_acct_db
EOF
    )

    # Client commands read /etc/slurm/slurm.conf: point it here, but never clobber a real one.
    mkdir -p /etc/slurm
    if [ -L "$ETC_CONF" ] || [ ! -e "$ETC_CONF" ]; then
        ln -sfn "$CONF" "$ETC_CONF"
    else
        log "warning: $ETC_CONF is a real file, left alone; export SLURM_CONF=$CONF to use this cluster"
    fi
}

# ---------------------------------------------------------------------------------------------
# daemons

start_munged() {
    # Our own key and socket: independent of any system munged.
    chown munge:munge "$DIR/munge"; chmod 755 "$DIR/munge"   # munged: socket dir must be o+x
    if [ ! -s "$DIR/munge/munge.key" ]; then
        (umask 077; dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none)
        chown munge:munge "$DIR/munge/munge.key"; chmod 400 "$DIR/munge/munge.key"
    fi
    rm -f "$DIR/munge/munged.pid"
    launch "$DIR/log/munged.out" runuser -u munge -- munged \
        --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    record_pid munged "$DIR/munge/munged.pid" || fail_start munged "$DIR/munge/munged.log"
    wait_for 20 "munge to answer" sh -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'" ||
        fail_start munged "$DIR/munge/munged.log"
}

sql() { mariadb --no-defaults -S "$DB_SOCKET" -u root "$@"; }

start_mariadb() {
    local db_port; db_port="$(cat "$DIR/etc/db_port")"
    if [ ! -d "$DIR/mysql/data/mysql" ]; then
        log "creating the MariaDB datadir $DIR/mysql/data"
        mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" --user=root \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$DIR/log/mariadb-install.log" 2>&1 ||
            fail_start mariadb-install-db "$DIR/log/mariadb-install.log"
    fi
    port_in_use "$db_port" && die "port $db_port (MariaDB) is taken; delete $DIR/etc/db_port to pick another"
    rm -f "$DIR/run/mariadbd.pid"
    launch "$DIR/log/mariadb.log" mariadbd --no-defaults --user=root \
        --datadir="$DIR/mysql/data" --socket="$DB_SOCKET" --port="$db_port" \
        --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$DIR/run/mariadbd.pid" \
        --log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=32M --skip-log-bin
    record_pid mariadbd "$DIR/run/mariadbd.pid" || fail_start mariadbd "$DIR/log/mariadb.log"
    wait_for "$WAIT_S" "MariaDB to answer" mariadb-admin --no-defaults -S "$DB_SOCKET" -u root ping ||
        fail_start mariadbd "$DIR/log/mariadb.log"
    sql <<'EOF'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'poolbench';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'poolbench';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurmdbd() {
    rm -f "$DIR/run/slurmdbd.pid"
    launch "$DIR/log/slurmdbd.out" slurmdbd
    record_pid slurmdbd "$DIR/run/slurmdbd.pid" || fail_start slurmdbd "$DIR/log/slurmdbd.log"
    wait_for "$WAIT_S" "slurmdbd to answer" sacctmgr -n list cluster ||
        fail_start slurmdbd "$DIR/log/slurmdbd.log"
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

start_slurmctld() {
    rm -f "$DIR/run/slurmctld.pid"
    launch "$DIR/log/slurmctld.out" slurmctld -f "$CONF"
    record_pid slurmctld "$DIR/run/slurmctld.pid" || fail_start slurmctld "$DIR/log/slurmctld.log"
    wait_for "$WAIT_S" "slurmctld to answer" sh -c "scontrol ping | grep -q UP" ||
        fail_start slurmctld "$DIR/log/slurmctld.log"
}

node_idle() {
    local st; st="$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1)"
    case "$st" in idle|mixed|allocated|completing) return 0 ;; esac
    return 1
}

start_slurmd() {
    rm -f "$DIR/run/slurmd.pid"
    launch "$DIR/log/slurmd.out" slurmd -f "$CONF"
    record_pid slurmd "$DIR/run/slurmd.pid" || fail_start slurmd "$DIR/log/slurmd.log"
    if ! wait_for 10 "the node to become idle" node_idle; then
        # ReturnToService=2 normally does this; a node left DOWN/DRAIN by an earlier run may not.
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        wait_for "$WAIT_S" "the node to become idle" node_idle || {
            sinfo -N -l >&2 || true; fail_start slurmd "$DIR/log/slurmd.log"; }
    fi
}

accounting_ok() { sacct -n -X -S now-1hours -o JobID >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# commands

running_count() {
    local n=0 d
    for d in "${DAEMONS[@]}"; do live_pid "$d" >/dev/null && n=$((n + 1)); done
    echo "$n"
}

do_status() {
    local d pid ok=0
    echo "state directory: $DIR"
    for d in "${DAEMONS[@]}"; do
        if pid="$(live_pid "$d")"; then
            printf '  %-10s running (pid %s)\n' "$d" "$pid"
        else
            printf '  %-10s stopped\n' "$d"; ok=1
        fi
    done
    if [ "$ok" -eq 0 ]; then
        sinfo || ok=1
        if accounting_ok; then
            echo "accounting: OK (sacct answers; slurmdbd on localhost:$DBD_PORT," \
                "MariaDB on 127.0.0.1:$(cat "$DIR/etc/db_port" 2>/dev/null))"
        else
            echo "accounting: NOT working (sacct fails)"; ok=1
        fi
    fi
    return "$ok"
}

do_stop() {
    local d pid i
    if live_pid slurmctld >/dev/null; then
        # Jobs first: their slurmstepd processes would outlive slurmd.
        if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
            log "cancelling running jobs"
            scancel --full --user=root >/dev/null 2>&1 || true
            for i in $(seq 1 100); do
                [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
                sleep 0.2
            done
        fi
    fi
    for (( i=${#DAEMONS[@]}-1; i>=0; i-- )); do
        d="${DAEMONS[$i]}"
        if pid="$(live_pid "$d")"; then
            kill -TERM "$pid" 2>/dev/null || true
            local t
            for t in $(seq 1 300); do
                is_alive "$pid" "$d" || break
                sleep 0.1
            done
            if is_alive "$pid" "$d"; then
                log "$d (pid $pid) ignored SIGTERM for 30 s: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            log "stopped $d (pid $pid)"
        fi
        rm -f "$DIR/pids/$d.pid"
    done
}

do_start() {
    local n; n="$(running_count)"
    if [ "$n" -eq "${#DAEMONS[@]}" ]; then
        log "already running"
        do_status
        return
    fi
    if [ "$n" -gt 0 ]; then
        log "only $n of ${#DAEMONS[@]} daemons are running: restarting all of them"
        do_stop
    fi
    local t0; t0="$(date +%s%N)"
    install_packages
    for p in $CTLD_PORT $SLURMD_PORT $DBD_PORT; do
        port_in_use "$p" && die "port $p is taken (another SLURM on this machine?)"
    done
    write_configs
    start_munged
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    wait_for 20 "sacct to answer" accounting_ok || die "sacct does not work; see $DIR/log/"
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    log "started in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s"
    do_status
}

case "$cmd" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    restart) do_stop; do_start ;;
    wipe)
        do_stop
        [ "$(readlink "$ETC_CONF" 2>/dev/null)" = "$CONF" ] && rm -f "$ETC_CONF"
        exec 9>&-
        rm -rf "$DIR"
        log "removed $DIR"
        ;;
esac
