#!/usr/bin/env bash
# `make demo-hosts`: one upstream over two hosts, each with its own supervisord (example #3).
# Each host is a loopback address (127.0.0.2, 127.0.0.3) standing for a machine.
#  1. The first request starts app0 on the first host, through that host's supervisord.
#  2. /_start/2 starts the third server: app0 on the second host, through its supervisord.
#  3. The second host's supervisord goes away: its server stops, requests go to the first host.
# Everything stops cleanly at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

nginx=build/sbin/nginx
backend="$PWD/build/bin/test-backend"
prefix="$PWD/build"
demo_dir="$PWD/build/demo-hosts"
hosts=(127.0.0.2 127.0.0.3)
pids=()
running_conf=""

for address in 127.0.0.1:8080 127.0.0.2:8000 127.0.0.2:8001 127.0.0.2:9001 127.0.0.3:8000 127.0.0.3:9001; do
    if (exec 3<>"/dev/tcp/${address%:*}/${address#*:}") 2>/dev/null; then
        echo "$address is in use; the demo needs it free" >&2
        exit 1
    fi
done

ctl() { local host=$1; shift; supervisorctl -c "$demo_dir/$host/supervisord.conf" "$@"; }
cleanup() {
    [ -n "$running_conf" ] && "$nginx" -p "$prefix" -c "$running_conf" -s quit 2>/dev/null || true
    for host in "${hosts[@]}"; do
        [ -f "$demo_dir/$host/supervisord.conf" ] && ctl "$host" shutdown >/dev/null 2>&1 || true
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
traffic() {
    printf '$ 12 x curl -s -D - http://127.0.0.1:8080/   (X-Upstream-Addr counted: who answered)\n'
    for _ in $(seq 12); do
        curl -s -D - -o /dev/null http://127.0.0.1:8080/ | tr -d '\r' | grep -i '^x-upstream-addr'
    done | sort | uniq -c
}
start_supervisord() {
    local host=$1
    supervisord -c "$demo_dir/$host/supervisord.conf" > "$demo_dir/$host/supervisord.out" 2>&1 & pids+=($!)
    until ctl "$host" status >/dev/null 2>&1 || [ $? -eq 3 ]; do sleep 0.1; done
}

rm -rf "$demo_dir"
mkdir -p build/logs
for host in "${hosts[@]}"; do
    mkdir -p "$demo_dir/$host"
    sed -e "s|@DIR@|$demo_dir/$host|g" -e "s|@HOST@|$host|g" -e "s|@BACKEND@|$backend|g" \
        examples/supervisord-host.conf > "$demo_dir/$host/supervisord.conf"
    start_supervisord "$host"
done
: > build/logs/error.log
running_conf="$PWD/examples/example3.conf"
"$nginx" -p "$prefix" -c "$running_conf"
sleep 0.5

say "1. everything is stopped on both hosts; the first request starts app0 on 127.0.0.2"
show curl -s -w '   (answered in %{time_total} s)\n' http://127.0.0.1:8080/
for host in "${hosts[@]}"; do echo "host $host:"; ctl "$host" status || true; done

say "2. /_start/2: the third server is the second host's app0, started by its supervisord"
show curl -s http://127.0.0.1:8080/_start/2
sleep 0.6
for host in "${hosts[@]}"; do echo "host $host:"; ctl "$host" status || true; done
traffic

say "3. the second host's supervisord goes away (it stops its program): traffic stays on the first"
ctl 127.0.0.3 shutdown >/dev/null
sleep 1.5
traffic
grep -o 'supervisord: .*cannot reach supervisord at 127.0.0.3.*' build/logs/error.log | head -n 1 || true

say "stopping nginx, both supervisords and their programs"
