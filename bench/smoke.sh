#!/usr/bin/env bash
# A 5-second smoke run of `flotilla bench put` against a 3-node Flotilla on loopback, for CI:
# it fails if any request fails (or the cluster does not start). It measures nothing worth
# keeping: the figures only show that the bench and the cluster work together.
#
# Environment: FLOTILLA (a built binary; default: build target/release/flotilla),
# SMOKE_BASE_PORT (default 15379: ports 15379/15380, 15389/15390, 15399/15400, clear of the
# 2379 range that `flotilla dev` and a local etcd use, and below Linux's ephemeral range
# (32768 and up), so that no outgoing connection holds one), SMOKE_DURATION (default 5s).
set -euo pipefail
cd "$(dirname "$0")/.."

base_port=${SMOKE_BASE_PORT:-15379}
duration=${SMOKE_DURATION:-5s}
if [[ -z "${FLOTILLA:-}" ]]; then
    cargo build --release -p flotilla
    FLOTILLA=target/release/flotilla
fi

data=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-smoke.XXXXXX")
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $status -ne 0 ]]; then
        for log in "$data"/*.log; do
            echo "== last lines of $log"
            tail -n 20 "$log" || true
        done
    fi
    rm -rf "$data"
    exit "$status"
}
trap cleanup EXIT INT TERM

initial_cluster=""
endpoints=""
for i in 1 2 3; do
    peer_port=$((base_port + 10 * (i - 1) + 1))
    initial_cluster+="${initial_cluster:+,}smoke$i=http://127.0.0.1:$peer_port"
done
for i in 1 2 3; do
    client_port=$((base_port + 10 * (i - 1)))
    peer_port=$((client_port + 1))
    endpoints+="${endpoints:+,}127.0.0.1:$client_port"
    RUST_LOG=warn "$FLOTILLA" serve --name "smoke$i" --data-dir "$data/smoke$i" \
        --listen-client-urls "http://127.0.0.1:$client_port" \
        --advertise-client-urls "http://127.0.0.1:$client_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "$initial_cluster" --initial-cluster-state new \
        --initial-cluster-token flotilla-smoke \
        --heartbeat-interval 100 --election-timeout 1000 \
        >"$data/smoke$i.log" 2>&1 &
    pids+=($!)
done

# The bench waits until every node reports the same leader before its clock starts. A node
# can still refuse a request for a moment after that (while it reaches the leader), so each
# endpoint must first take one write; then every request of the run must succeed (the bench
# exits non-zero if any failed).
deadline=$((SECONDS + 60))
for endpoint in ${endpoints//,/ }; do
    until "$FLOTILLA" --endpoints "$endpoint" --command-timeout 2 bench put --total 1 \
        --key-space 1 >/dev/null 2>&1; do
        for pid in "${pids[@]}"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "smoke: a node (pid $pid) exited" >&2
                exit 1
            fi
        done
        if ((SECONDS >= deadline)); then
            echo "smoke: $endpoint still refused writes after 60 s" >&2
            exit 1
        fi
        sleep 0.5
    done
done
"$FLOTILLA" --endpoints "$endpoints" bench put --duration "$duration" \
    --clients 16 --conns 4 --val-size 256 --key-space 10000 | tee "$data/result.txt"
grep -q "Errors:      none" "$data/result.txt"
echo "smoke: ok"
