#!/usr/bin/env bash
# `make demo`: the module's main job, live.
#  1. Example #1 with a real supervisord: every backend is stopped; the first request makes
#     supervisord start one and waits for it (held, not failed), then gets its answer.
#  2. Example #2 (`supervisord none`): /_start/N and /_stop/N take servers in and out of rotation.
# Everything stops cleanly at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

nginx=build/sbin/nginx
backend="$PWD/build/bin/test-backend"
prefix="$PWD/build"
demo_dir="$PWD/build/demo"
pids=()
running_conf=""

for port in 8080 8000 8001 8002 9001; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; the demo needs 8000-8002, 8080 and 9001 free" >&2
        exit 1
    fi
done

cleanup() {
    [ -n "$running_conf" ] && "$nginx" -p "$prefix" -c "$running_conf" -s quit 2>/dev/null || true
    [ -f "$demo_dir/supervisord.conf" ] && supervisorctl -c "$demo_dir/supervisord.conf" shutdown >/dev/null 2>&1 || true
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
ctl() { supervisorctl -c "$demo_dir/supervisord.conf" "$@"; }
run_nginx() {
    running_conf="$1"
    : > build/logs/error.log
    "$nginx" -p "$prefix" -c "$running_conf"
    sleep 0.5
}
stop_nginx() {
    "$nginx" -p "$prefix" -c "$running_conf" -s quit
    while [ -f build/logs/nginx.pid ]; do sleep 0.1; done
    running_conf=""
}

rm -rf "$demo_dir"
mkdir -p build/logs "$demo_dir"

say "1. example #1: nginx in front of a real supervisord; every backend is stopped"
sed -e "s|@DIR@|$demo_dir|g" -e "s|@BACKEND@|$backend|g" examples/supervisord.conf \
    > "$demo_dir/supervisord.conf"
supervisord -c "$demo_dir/supervisord.conf" > "$demo_dir/supervisord.out" 2>&1 & pids+=($!)
until ctl status >/dev/null 2>&1 || [ $? -eq 3 ]; do sleep 0.1; done
run_nginx "$PWD/examples/example1.conf"
show ctl status || true

say "the first request finds nothing running: supervisord starts backend0, the request waits"
show curl -s -w '   (answered in %{time_total} s)\n' http://127.0.0.1:8080/
show ctl status || true
grep -o 'supervisord: .*starting up -> up.*' build/logs/error.log | head -n 1

say "ten requests at once while backend0 is stopped again: one start, all answered"
show curl -s http://127.0.0.1:8080/_stop/0
sleep 0.3
printf '$ 10 x curl -s http://127.0.0.1:8080/ &   (at once)\n'
clients=()
for _ in $(seq 10); do curl -s http://127.0.0.1:8080/ & clients+=($!); done
wait "${clients[@]}"
grep -c "spawned: 'backend0'" "$demo_dir/supervisord.log" | sed 's/$/ starts of backend0 in supervisord'"'"'s log: one per start, not one per request/'
show curl -s http://127.0.0.1:8080/_status
echo

say "start backend1 by hand (/_start/1): traffic spreads over both"
show curl -s http://127.0.0.1:8080/_start/1
sleep 0.6
traffic
stop_nginx
ctl stop all >/dev/null

say "2. example #2 (supervisord none): three plain backends, 8002 configured 'down'"
for port in 8000 8001 8002; do
    "$backend" "$port" & pids+=($!)
done
run_nginx "$PWD/examples/example2.conf"
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

say "stopping nginx, supervisord and the backends"
