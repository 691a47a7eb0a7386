#!/usr/bin/env bash
# `make demo`: configuration example #2 of the 2010 module, live. Three real backends answer
# "backend <port>"; nginx (two workers) balances over the UP ones while /_start/N and /_stop/N
# take them in and out of rotation, then everything stops cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

nginx=build/sbin/nginx
backend=build/bin/test-backend
conf="$PWD/examples/example2.conf"
prefix="$PWD/build"
pids=()

for port in 8080 8000 8001 8002; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; the demo needs 8000-8002 and 8080 free" >&2
        exit 1
    fi
done

cleanup() {
    "$nginx" -p "$prefix" -c "$conf" -s quit 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
traffic() {
    printf '$ 12 x curl -s http://127.0.0.1:8080/   (answers counted)\n'
    for _ in $(seq 12); do curl -s http://127.0.0.1:8080/; done | sort | uniq -c
}

say "starting three backends (8000, 8001, 8002) and nginx with examples/example2.conf"
for port in 8000 8001 8002; do
    "$backend" "$port" & pids+=($!)
done
mkdir -p build/logs
"$nginx" -p "$prefix" -c "$conf"
sleep 0.5

say "8002 is configured 'down': only 8000 and 8001 get traffic"
traffic

say "take 8002 into rotation, for every worker"
show curl -s http://127.0.0.1:8080/_start/2
traffic

say "take 8000 out of rotation"
show curl -s http://127.0.0.1:8080/_stop/0
traffic

say "junk and wrong methods are refused"
show curl -s -o /dev/null -w '%{http_code} for /_start/1x\n' http://127.0.0.1:8080/_start/1x
show curl -s -o /dev/null -w '%{http_code} for POST /_stop/1\n' -X POST http://127.0.0.1:8080/_stop/1

say "what nginx logged"
grep supervisord build/logs/error.log | tail -n 2

say "stopping nginx and the backends"
