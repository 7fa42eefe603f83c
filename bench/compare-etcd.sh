#!/usr/bin/env bash
# Flotilla side by side with etcd, in one run on one machine: a 3-member etcd and a 3-node
# Flotilla on loopback with equal settings (both fsync every commit, which neither can turn
# off here; data on the same filesystem; the same --heartbeat-interval and --election-timeout),
# loaded with the same workloads by `flotilla bench` (which speaks only etcd's v3 API, so both
# are measured the same way). Each workload runs on both systems in turn, REPEATS times,
# alternating which goes first. It prints one table (the median over the repeats) and appends
# it with the date, the machine and the exact commands to docs/PERFORMANCE.md; it also records
# each cluster's resident memory after loading LOAD_KEYS keys.
#
# Rationale for one run: machines are shared and noisy, so figures from different runs do not
# compare; ratios within one run do.
#
# Environment (defaults in brackets):
#   OPS [50000]          operations per workload and system in each repeat
#   REPEATS [3]          repeats of every etcd/Flotilla pair
#   LOAD_KEYS [100000]   distinct keys written before the memory is read
#   RECORD [1]           0: print the table only, do not touch docs/PERFORMANCE.md
#   DATA_ROOT [target/compare-etcd]  where both clusters keep their data (one filesystem)
#   ETCD_BASE_PORT [11379], FLOTILLA_BASE_PORT [13379]  member i uses base+10(i-1) for
#                        clients and the port after it for peers; below Linux's ephemeral
#                        range (32768 and up), so that no outgoing connection holds one
#   FLOTILLA_COMMIT      what to call the Flotilla build in the record [git rev-parse]
#   KEEP_DATA [0]        1: keep both clusters' data directories after a successful run
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

ops=${OPS:-50000}
repeats=${REPEATS:-3}
load_keys=${LOAD_KEYS:-100000}
record=${RECORD:-1}
data_root=${DATA_ROOT:-$repo/target/compare-etcd}
etcd_base_port=${ETCD_BASE_PORT:-11379}
flotilla_base_port=${FLOTILLA_BASE_PORT:-13379}
value_size_bytes=256
key_space=10000
heartbeat_interval_ms=100
election_timeout_ms=1000
invocation="OPS=$ops REPEATS=$repeats LOAD_KEYS=$load_keys bench/compare-etcd.sh"

# The workloads: a name for the table, then the flags that differ.
workload_names=(
    "put, 1 client"
    "put, 64 clients / 8 conns"
    "put, 256 clients / 16 conns"
    "range linearizable, 64 clients / 8 conns"
    "range serializable, 64 clients / 8 conns"
)
workload_flags=(
    "put --clients 1 --conns 1"
    "put --clients 64 --conns 8"
    "put --clients 256 --conns 16"
    "range --consistency l --clients 64 --conns 8"
    "range --consistency s --clients 64 --conns 8"
)
# Every request goes to the leader, as in the reference figures.
common_flags="--total $ops --val-size $value_size_bytes --key-space $key_space --target-leader --json"

if ! command -v etcd >/dev/null 2>&1; then
    echo "== installing etcd (Debian's etcd-server)"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server
fi

echo "== building flotilla (release)"
cargo build --release -p flotilla
flotilla=$repo/target/release/flotilla

rm -rf "$data_root"
mkdir -p "$data_root/etcd" "$data_root/flotilla" "$data_root/results"
etcd_pids=()
flotilla_pids=()
cleanup() {
    local status=$?
    for pid in "${etcd_pids[@]}" "${flotilla_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${etcd_pids[@]}" "${flotilla_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $status -ne 0 ]]; then
        echo "compare-etcd: failed; logs in $data_root/*/*.log" >&2
    elif [[ ${KEEP_DATA:-0} != 1 ]]; then
        # Gigabytes after a full run; the results and the table stay.
        rm -rf "$data_root/etcd" "$data_root/flotilla"
    fi
    exit "$status"
}
trap cleanup EXIT INT TERM

# One line per cluster member: what was run, for the record.
commands_file=$data_root/commands.txt
: >"$commands_file"

# Prints the endpoints of a cluster whose first client port is $1.
endpoints_of() {
    local base=$1 list="" i
    for i in 1 2 3; do
        list+="${list:+,}127.0.0.1:$((base + 10 * (i - 1)))"
    done
    echo "$list"
}

initial_cluster_of() {
    local prefix=$1 base=$2 list="" i
    for i in 1 2 3; do
        list+="${list:+,}$prefix$i=http://127.0.0.1:$((base + 10 * (i - 1) + 1))"
    done
    echo "$list"
}

# Starts member $3 of a cluster: $1 is etcd or flotilla, $2 the base port.
start_member() {
    local system=$1 base=$2 i=$3
    local client_port=$((base + 10 * (i - 1)))
    local peer_port=$((client_port + 1))
    local name data command
    if [[ $system == etcd ]]; then
        name=etcd$i
        command=(etcd --logger zap --log-level warn)
    else
        name=flotilla$i
        command=("$flotilla" serve)
    fi
    data=$data_root/$system/$name
    command+=(--name "$name" --data-dir "$data"
        --listen-client-urls "http://127.0.0.1:$client_port"
        --advertise-client-urls "http://127.0.0.1:$client_port"
        --listen-peer-urls "http://127.0.0.1:$peer_port"
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port"
        --initial-cluster "$(initial_cluster_of "$system" "$base")"
        --initial-cluster-state new --initial-cluster-token "compare-$system"
        --heartbeat-interval "$heartbeat_interval_ms" --election-timeout "$election_timeout_ms")
    # Quoted for the shell; commas need no quoting, and paths are shown from the repository.
    printf '%q ' "${command[@]}" | sed -e "s|$repo/||g" -e 's|\\,|,|g' >>"$commands_file"
    echo >>"$commands_file"
    RUST_LOG=warn "${command[@]}" >"$data_root/$system/$name.log" 2>&1 &
    if [[ $system == etcd ]]; then
        etcd_pids+=($!)
    else
        flotilla_pids+=($!)
    fi
}

# Fails if any port of the two clusters is taken (a member that cannot bind would leave the
# other two waiting for it).
check_ports_free() {
    local base i port
    for base in "$etcd_base_port" "$flotilla_base_port"; do
        for i in 1 2 3; do
            for port in $((base + 10 * (i - 1))) $((base + 10 * (i - 1) + 1)); do
                # TIME-WAIT leftovers of a previous run do not stop a bind (both servers set
                # SO_REUSEADDR), so only other states count.
                if [[ -n $(ss -Htan exclude time-wait "( sport = :$port )" 2>/dev/null) ]]; then
                    echo "compare-etcd: port $port is in use; choose others with ETCD_BASE_PORT or FLOTILLA_BASE_PORT" >&2
                    return 1
                fi
            done
        done
    done
}

# Fails if a member of either cluster has exited.
check_members_alive() {
    local pid
    for pid in "${etcd_pids[@]}" "${flotilla_pids[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "compare-etcd: a cluster member (pid $pid) exited" >&2
            return 1
        fi
    done
}

# Waits until every member of the cluster at $1 takes a write (a member may refuse requests
# for a moment after it knows the leader), so that start-up does not count as errors.
wait_ready() {
    local endpoint deadline=$((SECONDS + 60))
    for endpoint in $(endpoints_of "$1" | tr , ' '); do
        until "$flotilla" --endpoints "$endpoint" --command-timeout 2 bench put --total 1 \
            --key-space 1 >/dev/null 2>&1; do
            check_members_alive
            if ((SECONDS >= deadline)); then
                echo "compare-etcd: $endpoint still refused writes after 60 s" >&2
                return 1
            fi
            sleep 0.5
        done
    done
}

base_port_of() {
    if [[ $1 == etcd ]]; then echo "$etcd_base_port"; else echo "$flotilla_base_port"; fi
}

# Runs `flotilla bench` against a system: $1 system, $2 result file, the rest bench flags.
bench_against() {
    local system=$1 out=$2
    shift 2
    # A run with errors still counts (its errors are reported); only a run that could not
    # start at all stops the comparison.
    "$flotilla" --endpoints "$(endpoints_of "$(base_port_of "$system")")" bench "$@" >"$out" ||
        [[ -s $out ]]
}

# The number after "key": in a one-line JSON file.
json_number() {
    grep -o "\"$2\":[-0-9.eE+]*" "$1" | head -n 1 | cut -d: -f2
}

# The median of the numbers on standard input.
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

range_of() {
    sort -g | awk 'NR == 1 { low = $1 } { high = $1 } END { printf "%.0f-%.0f", low, high }'
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

check_ports_free
echo "== starting a 3-member etcd and a 3-node Flotilla on loopback (data in $data_root)"
for i in 1 2 3; do
    start_member etcd "$etcd_base_port" "$i"
    start_member flotilla "$flotilla_base_port" "$i"
done
wait_ready "$etcd_base_port"
wait_ready "$flotilla_base_port"

echo "== loading the $key_space keys the reads use"
for system in etcd flotilla; do
    bench_against "$system" "$data_root/results/preload.$system.json" put --total "$key_space" \
        --key-space "$key_space" --sequential-keys --val-size "$value_size_bytes" \
        --clients 64 --conns 8 --target-leader --json
done

for repeat in $(seq 1 "$repeats"); do
    # Alternate which system goes first, so that drift over the run (a filling disk cache, a
    # noisy neighbour) does not always favour the same one.
    if ((repeat % 2)); then order="etcd flotilla"; else order="flotilla etcd"; fi
    for index in "${!workload_names[@]}"; do
        for system in $order; do
            out=$data_root/results/$index.$system.$repeat.json
            # shellcheck disable=SC2086 # the flags are words on purpose
            bench_against "$system" "$out" ${workload_flags[$index]} $common_flags
            printf '%-9s repeat %d/%d  %-42s %10.0f ops/s  p50 %7.2f ms  p99 %7.2f ms  %s errors\n' \
                "$system" "$repeat" "$repeats" "${workload_names[$index]}" \
                "$(json_number "$out" throughput_per_s)" "$(json_number "$out" p50)" \
                "$(json_number "$out" p99)" "$(json_number "$out" failed)"
        done
    done
done

echo "== loading $load_keys keys, then reading each cluster's resident memory"
declare -A rss_mib disk_mib
for system in etcd flotilla; do
    bench_against "$system" "$data_root/results/load.$system.json" put --total "$load_keys" \
        --key-space "$load_keys" --sequential-keys --val-size "$value_size_bytes" \
        --clients 64 --conns 8 --target-leader --json
done
sleep 2
for system in etcd flotilla; do
    if [[ $system == etcd ]]; then pids=("${etcd_pids[@]}"); else pids=("${flotilla_pids[@]}"); fi
    rss_kib=0
    for pid in "${pids[@]}"; do
        rss_kib=$((rss_kib + $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")))
    done
    rss_mib[$system]=$((rss_kib / 1024))
    disk_mib[$system]=$(($(du -sk "$data_root/$system" | cut -f1) / 1024))
done

# The table: medians over the repeats; throughput's range over the repeats in brackets.
table=$data_root/table.md
{
    echo "| workload | etcd ops/s | etcd p50 ms | etcd p99 ms | Flotilla ops/s | Flotilla p50 ms | Flotilla p99 ms | throughput Flotilla/etcd | p99 Flotilla/etcd | errors etcd/Flotilla |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for index in "${!workload_names[@]}"; do
        row="| ${workload_names[$index]} "
        declare -A throughput p99
        errors=""
        for system in etcd flotilla; do
            files=("$data_root"/results/"$index.$system".*.json)
            throughput[$system]=$(for f in "${files[@]}"; do json_number "$f" throughput_per_s; done | median)
            p50=$(for f in "${files[@]}"; do json_number "$f" p50; done | median)
            p99[$system]=$(for f in "${files[@]}"; do json_number "$f" p99; done | median)
            failed=$(for f in "${files[@]}"; do json_number "$f" failed; done | awk '{ s += $1 } END { print s }')
            spread=""
            if ((repeats > 1)); then
                spread=" ($(for f in "${files[@]}"; do json_number "$f" throughput_per_s; done | range_of))"
            fi
            row+=$(printf '| %.0f%s | %.2f | %.2f ' "${throughput[$system]}" "$spread" "$p50" "${p99[$system]}")
            errors+="${errors:+/}$failed"
        done
        row+=$(awk -v f="${throughput[flotilla]}" -v e="${throughput[etcd]}" 'BEGIN { printf "| %.2f ", (e > 0 ? f / e : 0) }')
        row+=$(awk -v f="${p99[flotilla]}" -v e="${p99[etcd]}" 'BEGIN { printf "| %.2f ", (e > 0 ? f / e : 0) }')
        row+="| $errors |"
        echo "$row"
    done
} >"$table"

# Both clusters have taken the same writes by now: the preload, every put above, then the
# $load_keys distinct keys; what they hold in memory depends on all of it, so say so.
memory_line="Resident memory (VmRSS summed over the 3 members) after the workloads above and then $load_keys distinct keys of $value_size_bytes bytes ($((key_space + repeats * 3 * ops + load_keys)) puts in all): etcd ${rss_mib[etcd]} MiB, Flotilla ${rss_mib[flotilla]} MiB; data on disk then: etcd ${disk_mib[etcd]} MiB, Flotilla ${disk_mib[flotilla]} MiB."

echo
cat "$table"
echo
echo "$memory_line"

if [[ $record != 1 ]]; then
    exit 0
fi

commit=${FLOTILLA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
memory_gib=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
disk=$(df -T "$data_root" | awk 'NR == 2 { printf "%s (%s)", $1, $2 }')
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
etcd_version=$(etcd --version | awk '/^etcd Version/ { print $3 }')
entry=$data_root/entry.md
{
    echo "### $(date -u '+%Y-%m-%d %H:%M UTC'), Flotilla $commit, etcd $etcd_version"
    echo
    echo "Machine: $(nproc) CPUs ($cpu_model), $memory_gib GiB memory, data on $disk;"
    echo "load average (1, 5, 15 min) $load_before before the run and $load_after after it."
    echo "Command: \`$invocation\` ($ops operations per workload and system, $repeats repeat(s),"
    echo "medians; throughput's range over the repeats in brackets). $value_size_bytes-byte values,"
    echo "keys uniform over $key_space (all loaded first), every request to the leader."
    echo
    cat "$table"
    echo
    echo "$memory_line"
    echo
    echo "The exact commands (members, then the bench; --endpoints names the members' client URLs):"
    echo
    echo '```'
    cat "$commands_file"
    for index in "${!workload_names[@]}"; do
        echo "flotilla --endpoints ... bench ${workload_flags[$index]} $common_flags"
    done
    echo '```'
    echo
} >"$entry"

# New runs go above the marker at the end of the etcd section, so the section stays whole
# whatever follows it in the file.
performance=$repo/docs/PERFORMANCE.md
marker="<!-- compare-etcd: new runs go above this line -->"
if ! grep -qF "$marker" "$performance"; then
    {
        echo
        echo "## Side by side with etcd (issue: benchmark)"
        echo
        echo "Written by \`bench/compare-etcd.sh\`, newest last."
        echo
        echo "$marker"
    } >>"$performance"
fi
awk -v marker="$marker" -v entry="$entry" '
    $0 == marker { while ((getline line < entry) > 0) print line }
    { print }
' "$performance" >"$performance.new"
mv "$performance.new" "$performance"
echo "recorded in docs/PERFORMANCE.md"
