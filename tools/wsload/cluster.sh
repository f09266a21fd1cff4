#!/usr/bin/env bash
# Three (NODES) `troupe run` nodes clustered over one PostgreSQL schema, WebSocket subscribers spread over all
# three, publishes sent to the first: measures cross-node broadcast delivery (BENCHMARKS §7).
#
#   cargo build --release -p troupe -p wsload
#   tools/wsload/cluster.sh [fanout options…]     # default: --conns 15000 --rates 5,10,20,40 --secs 8
#
# Env: NODES (default 3; 1 = the same harness on one node with its embedded store, the baseline),
# PG (default postgres://root@127.0.0.1:5432/test), TARGET (cargo target dir, default $CARGO_TARGET_DIR
# or ./target), PORT_BASE (default 9500). Needs psql and curl. The schema is dropped at the end.
set -euo pipefail

PG=${PG:-postgres://root@127.0.0.1:5432/test}
TARGET=${TARGET:-${CARGO_TARGET_DIR:-target}}
TROUPE=$TARGET/release/troupe
WSLOAD=$TARGET/release/wsload
BASE=${PORT_BASE:-9500}
NODES=${NODES:-3}
SCHEMA=wsbench_$$
SECRET=wsbench-secret-wsbench-secret-wsbench-secret
ADMIN=ops@wsbench.example
WORK=$(mktemp -d)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q "$PG" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[[ -x $TROUPE && -x $WSLOAD ]] || { echo "build first: cargo build --release -p troupe -p wsload" >&2; exit 2; }
psql -q "$PG" -c "CREATE SCHEMA $SCHEMA" >/dev/null
URL="$PG?options=-c%20search_path%3D$SCHEMA"

seeds=""
for i in $(seq 1 "$NODES"); do
    http=127.0.0.1:$((BASE + i))
    cluster=127.0.0.1:$((BASE + 10 + i))
    mkdir -p "$WORK/n$i"
    # The first node starts alone; the others join it.
    args=(--cluster-addr "$cluster")
    [[ -n $seeds ]] && args+=(--join "$seeds")
    store=(TROUPE_STORE_BACKEND=postgres TROUPE_STORE_URL="$URL" TROUPE_CLUSTER_COOKIE=wsbench)
    # One node: no cluster, the default embedded store.
    [[ $NODES -eq 1 ]] && { args=(); store=(); }
    env "${store[@]}" TROUPE_AUTH_JWT_SECRET=$SECRET TROUPE_AUTH_ADMIN_EMAILS=$ADMIN TROUPE_LOG_LEVEL=warn \
        TROUPE_NODE_NAME=wsbench-$i \
        "$TROUPE" run --http-addr "$http" --data-dir "$WORK/n$i" "${args[@]}" >"$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
    seeds=${seeds:-$cluster}
    # Alive is enough to start the next: a node is ready only once a peer has answered it.
    for _ in $(seq 1 100); do
        curl -sf "http://$http/health/live" >/dev/null && break
        sleep 0.3
    done
done
for i in $(seq 1 "$NODES"); do
    http=127.0.0.1:$((BASE + i))
    for _ in $(seq 1 100); do
        curl -sf "http://$http/health/ready" >/dev/null && break
        sleep 0.3
    done
    curl -sf "http://$http/health/ready" >/dev/null || { echo "node $i not ready:" >&2; tail -20 "$WORK/n$i.log" >&2; exit 1; }
done

first=http://127.0.0.1:$((BASE + 1))
body='{"email":"'$ADMIN'","password":"correct horse battery staple","display_name":"ops"}'
curl -sf -o /dev/null -H 'content-type: application/json' -d "$body" "$first/api/v1/auth/register"
body='{"email":"'$ADMIN'","password":"correct horse battery staple"}'
token=$(curl -sf -H 'content-type: application/json' -d "$body" "$first/api/v1/auth/login" |
    sed -E 's/.*"access_token":"([^"]+)".*/\1/')

servers=$(for i in $(seq 1 "$NODES"); do echo "127.0.0.1:$((BASE + i))"; done | paste -sd,)
pids=$(IFS=,; echo "${PIDS[*]}")
echo "nodes up: $servers (pids $pids)"
args=("$@")
[[ ${#args[@]} -eq 0 ]] && args=(--conns 15000 --rates 5,10,20,40 --secs 8)
"$WSLOAD" fanout --server "$servers" --server-pid "$pids" --token "$token" --sources 8 --procs 4 "${args[@]}"
