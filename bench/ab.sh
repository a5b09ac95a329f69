#!/usr/bin/env bash
# A/B runs of one proxy at a time, for deciding on a change: the shared
# harness' origin (nginx, CPU 1) and one contender on CPU 0 (the gateway or
# the harness' nginx proxy config), wrk at CPU 1, and CPU 0's busy time per
# request from /proc/stat. Quicker and less noisy than bench/load.sh when
# runs of two builds are alternated:
#   for b in old new old new; do PLEO_GATEWAY_BIN=/tmp/pgw-$b bench/ab.sh gateway http; done
# `hyper` is the floor under the gateway: examples/bare_proxy.rs, the same
# job on the gateway's stack (hyper, tokio, rustls) with nothing else.
# A delay gives the harness' paced load: each connection waits that many ms
# between requests (its "paced" row is 32 connections and 2 ms).
# SYSCALLS=1 also counts the proxy's system calls per request (perf stat;
# the counting itself costs CPU, so take the CPU figures from runs without it).
# IDLE_CONNS=N measures memory instead: N kept-alive client connections,
# each after one request, held open; prints the proxy's RSS before and with
# them (whole process group: nginx master + worker, or the gateway), per connection.
# GATEWAY_METRICS=FILE (gateway only) saves its /metrics there after the run,
# e.g. to see how many trace spans were exported or dropped with
# GATEWAY_EXTRA_YAML="telemetry: { otlp_endpoint: ... }".
# LISTENER=tls (gateway and nginx): the contender terminates TLS on its
# listener, with the origin's certificate (ECDSA P-256, same file for both),
# TLS 1.2 and 1.3, session resumption enabled (nginx: a shared session cache
# and tickets; the gateway: rustls tickets); wrk then speaks https.
# HANDSHAKES=1.3|1.2 (with LISTENER=tls) measures a new TLS connection per
# request instead of wrk: examples/handshake_load.rs on CPU 1 with
# HANDSHAKE_CONNS (16) connections at once, each a handshake and `GET /`
# (HTTP/1.0, so the server closes; both contenders answer it themselves, no
# tenant), over and over. RESUME=1 offers each connection's session to the
# next; else each is a full handshake. Prints handshakes/s and CPU 0 per
# handshake. (openssl s_time, used before, makes one connection at a time:
# its rate is both ends' latency, not the server's capacity.)
# usage: bench/ab.sh gateway|nginx|hyper http|https [connections=32] [seconds=4] [delay_ms=0]
set -euo pipefail
who=${1:?gateway|nginx|hyper} origin=${2:?http|https} conns=${3:-32} secs=${4:-4} delay=${5:-0}
here=$(cd "$(dirname "$0")/.." && pwd)
harness=${BENCH_HARNESS:-$here/../shared/bench}
w=$here/bench-results/ab
mkdir -p "$w/gw" "$w/logs"
pgids=()
cleanup() { for g in "${pgids[@]}"; do kill -- "-$g" 2>/dev/null || true; done; }
trap cleanup EXIT

: >"$w/origin-auth.map"; : >"$w/nginx-tenants.map"; : >"$w/tenants.auth"; : >"$w/tenants.tsv"
while IFS=$'\t' read -r name scheme secret _; do
  [[ -z $name || $name == \#* ]] && continue
  case $scheme in bearer) a="Bearer $secret" ;; basic) a="Basic $(printf '%s:' "$secret" | base64 -w0)" ;; esac
  printf '%s\t%s\n' "$name" "$a" >>"$w/tenants.auth"
  printf '"/bench/%s|%s" 1;\n' "$name" "$a" >>"$w/origin-auth.map"
  printf '"%s" "%s";\n' "$name" "$a" >>"$w/nginx-tenants.map"
  printf '%s\t%s\t%s\n' "$name" "$scheme" "$secret" >>"$w/tenants.tsv"
done <"$harness/tenants.tsv"
if [[ ! -f $w/origin.crt ]]; then
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$w/ca.key" -out "$w/ca.crt" \
      -days 30 -subj "/CN=pleo-gateway ab CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$w/origin.key" -out "$w/origin.csr" -subj "/CN=localhost"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$w/origin.ext"
    openssl x509 -req -in "$w/origin.csr" -CA "$w/ca.crt" -CAkey "$w/ca.key" -CAcreateserial -out "$w/origin.crt" \
      -days 30 -extfile "$w/origin.ext"
  } >"$w/logs/openssl.log" 2>&1
fi
# Ports 18180-18190, apart from bench/load.sh's 18080-18092.
sed -e "s#@TMP@#$w#g" "$harness/conf/origin-locations.inc.tmpl" >"$w/origin-locations.inc"
sed -e "s#@TMP@#$w#g" -e "s#@HTTP_PORT@#18180#g" -e "s#@HTTPS_PORT@#18181#g" -e "s#@STATUS_PORT@#18182#g" \
  "$harness/conf/origin.nginx.conf.tmpl" >"$w/origin.conf"
if [[ $origin == https ]]; then up=18181; else up=18180; fi
listener=${LISTENER:-plain}
if [[ $listener == tls && $who == hyper ]]; then echo "LISTENER=tls: gateway or nginx" >&2; exit 2; fi
if [[ -n ${HANDSHAKES:-} && $listener != tls ]]; then echo "HANDSHAKES needs LISTENER=tls" >&2; exit 2; fi
scheme=http curl_tls=()
if [[ $listener == tls ]]; then scheme=https curl_tls=(--cacert "$w/ca.crt"); fi
setsid taskset -c 1 nginx -e "$w/origin-startup.log" -p "$w/" -c "$w/origin.conf" -g 'daemon off;' >"$w/logs/origin.log" 2>&1 &
pgids+=($!)
if [[ $who == nginx ]]; then
  sed -e "s#@TMP@#$w#g" -e "s#@LISTEN_PORT@#18190#g" -e "s#@UP_PORT@#$up#g" -e "s#@UP_HOST@#127.0.0.1:$up#g" \
    -e "s#@UP_SCHEME@#$origin#g" -e "s#@UP_TLS_NAME@#localhost#g" "$harness/conf/proxy.nginx.conf.tmpl" >"$w/nginx-proxy.conf"
  # Idle mode: room for the connections held open (the template allows 8,192).
  if [[ -n ${IDLE_CONNS:-} ]]; then sed -i "s/worker_connections [0-9]*;/worker_connections $((IDLE_CONNS * 2 + 1024));/" "$w/nginx-proxy.conf"; fi
  if [[ $listener == tls ]]; then
    sed -i -e "s#listen 127.0.0.1:18190 backlog=4096;#listen 127.0.0.1:18190 ssl backlog=4096;\n        ssl_certificate $w/origin.crt;\n        ssl_certificate_key $w/origin.key;\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:ab:10m;\n        ssl_session_tickets on;#" "$w/nginx-proxy.conf"
    grep -q 'listen 127.0.0.1:18190 ssl' "$w/nginx-proxy.conf" || { echo "nginx template: listen line not found" >&2; exit 1; }
  fi
  setsid taskset -c 0 nginx -e "$w/nginx-startup.log" -p "$w/" -c "$w/nginx-proxy.conf" -g 'daemon off;' >"$w/logs/proxy.log" 2>&1 &
elif [[ $who == hyper ]]; then
  # The floor: a bare hyper proxy on the gateway's stack (examples/bare_proxy.rs).
  bare=${BARE_PROXY_BIN:-$here/target/release/examples/bare_proxy}
  [[ -x $bare ]] || (cd "$here" && cargo build --release --quiet --example bare_proxy)
  setsid taskset -c 0 "$bare" 127.0.0.1:18190 "$origin://127.0.0.1:$up" "$w/tenants.auth" "$w/ca.crt" >"$w/logs/proxy.log" 2>&1 &
else
  extra=${GATEWAY_EXTRA_YAML:-}
  [[ -n ${IDLE_CONNS:-} ]] && extra+=$'\n'"limits: { max_connections: $((IDLE_CONNS * 2 + 1024)) }"
  [[ $listener == tls ]] && extra+=$'\n'"tls: { cert: $w/origin.crt, key: $w/origin.key }"
  export GATEWAY_EXTRA_YAML=$extra
  GATEWAY_LISTEN=127.0.0.1:18190 GATEWAY_PORT=18190 GATEWAY_UPSTREAM=$origin://127.0.0.1:$up GATEWAY_UPSTREAM_CA=$w/ca.crt \
    GATEWAY_TENANTS_TSV=$w/tenants.tsv GATEWAY_WORKDIR=$w/gw GATEWAY_WORKERS=1 \
    setsid taskset -c 0 bash "$here/bench/gateway-wrapper.sh" >"$w/logs/proxy.log" 2>&1 &
fi
pgids+=($!)
for _ in $(seq 50); do curl -s "${curl_tls[@]}" -o /dev/null $scheme://localhost:18190/ && break; sleep 0.1; done
for t in $(cut -f1 "$w/tenants.tsv"); do
  code=$(curl -s "${curl_tls[@]}" -o /dev/null -w '%{http_code}' -H "X-Pleo-Tenant: $t" "$scheme://localhost:18190/bench/$t")
  [[ $code == 200 ]] || { echo "preflight: $t got $code" >&2; exit 1; }
done
if [[ -n ${IDLE_CONNS:-} ]]; then
  rss() { ps -o rss= -g "${pgids[-1]}" | awk '{s += $1} END {print s}'; }
  before=$(rss)
  t=$(cut -f1 "$w/tenants.tsv" | head -1)
  python3 - "$IDLE_CONNS" "$t" >"$w/logs/idle.txt" 2>&1 <<'PY' &
import asyncio, sys
n, tenant = int(sys.argv[1]), sys.argv[2]
req = f"GET /bench/{tenant} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pleo-Tenant: {tenant}\r\n\r\n".encode()
async def one(held):
    r, w = await asyncio.open_connection("127.0.0.1", 18190)
    w.write(req)
    head = await r.readuntil(b"\r\n\r\n")
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    await r.readexactly(length)
    held.append(w)
async def main():
    held = []
    for i in range(0, n, 500):
        await asyncio.gather(*(one(held) for _ in range(min(500, n - i))))
    print(f"open {len(held)}", flush=True)
    await asyncio.sleep(30)
asyncio.run(main())
PY
  opener=$!
  for _ in $(seq 600); do grep -q '^open' "$w/logs/idle.txt" && break; sleep 0.1; done
  grep -q '^open' "$w/logs/idle.txt" || { cat "$w/logs/idle.txt" >&2; exit 1; }
  sleep 1
  after=$(rss)
  kill $opener 2>/dev/null || true
  awk -v who="$who" -v n="$IDLE_CONNS" -v b="$before" -v a="$after" \
    'BEGIN { printf "%s idle: RSS %.1f MiB -> %.1f MiB with %d idle connections: %.1f KiB each\n", who, b/1024, a/1024, n, (a-b)/n }'
  exit 0
fi
wrk_run() { WRK_DELAY_MS=$delay taskset -c 1 wrk -t1 -c"$conns" -d"$1" --latency -s "$harness/wrk/tenants.lua" $scheme://127.0.0.1:18190 -- proxy "$w/tenants.auth"; }
if [[ -n ${HANDSHAKES:-} ]]; then
  loader=${HANDSHAKE_LOAD_BIN:-$here/target/release/examples/handshake_load}
  [[ -x $loader ]] || (cd "$here" && cargo build --release --quiet --example handshake_load)
  mode=full
  [[ -n ${RESUME:-} ]] && mode=resume
  wrk_run() { taskset -c 1 "$loader" 127.0.0.1:18190 "$HANDSHAKES" "$mode" "${HANDSHAKE_CONNS:-16}" "${1%s}" >"$w/logs/handshakes.txt"; }
fi
busy() { awk '/^cpu0 / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
wrk_run 2s >/dev/null
# The proxy's own user and system time (its whole process group), to split
# CPU 0's busy time into the proxy's user-space work and the kernel's.
# The proxy's exact run time (ns, the scheduler's sum_exec_runtime over all
# its threads): user, system and the softirq work done in its syscalls. Tick
# sampling (/proc/stat, and the user/system split above) is coarse for loads
# that wake an idle CPU for a few microseconds at a time.
runtime() { for p in $(pgrep -g "${pgids[-1]}"); do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done | awk '{s += $1} END {printf "%.0f\n", s}'; }
cputimes() { for p in $(pgrep -g "${pgids[-1]}"); do awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{u += $1; s += $2} END {print u + 0, s + 0}'; }
read -r b0 _ < <(busy)
read -r u0 s0 < <(cputimes)
r0=$(runtime)
if [[ -n ${SYSCALLS:-} ]]; then
  # Count the proxy's system calls and context switches over the measured run.
  perf stat -x, -e 'syscalls:sys_enter_*' -e 'sched:sched_switch' -p "$(pgrep -g "${pgids[-1]}" | paste -sd,)" \
    -o "$w/logs/syscalls.csv" -- sleep "$secs" >/dev/null 2>&1 &
  counting=$!
fi
wrk_run "${secs}s" >"$w/logs/wrk.txt"
read -r u1 s1 < <(cputimes)
r1=$(runtime)
read -r b1 _ < <(busy)
[[ -n ${SYSCALLS:-} ]] && wait "$counting"
if [[ $who == gateway && -n ${GATEWAY_METRICS:-} ]]; then
  sleep 1 # the export task's last batch
  curl -s http://127.0.0.1:18290/metrics >"$GATEWAY_METRICS"
fi
if [[ -n ${HANDSHAKES:-} ]]; then
  # "handshakes N in T s: R resumed, F failed"
  read -r n real resumed failed < <(awk '/^handshakes/ {print $2, $4, $6, $8}' "$w/logs/handshakes.txt")
  [[ -n $n && $n != 0 ]] || { cat "$w/logs/handshakes.txt" >&2; exit 1; }
  if [[ $failed != 0 ]]; then echo "$failed handshakes failed" >&2; cat "$w/logs/handshakes.txt" >&2; exit 1; fi
  # A RESUME=1 pass that did not resume would only measure full handshakes.
  # (A TLS 1.3 ticket is used once; a connection that starts while the
  # client holds none makes a full handshake, so a few do.)
  if [[ -n ${RESUME:-} && $resumed -lt $((n / 2)) ]]; then echo "RESUME=1 but only $resumed of $n resumed" >&2; exit 1; fi
  if [[ -z ${RESUME:-} && $resumed != 0 ]]; then echo "full handshakes, yet $resumed resumed" >&2; exit 1; fi
  awk -v n="$n" -v t="$real" -v b=$((b1 - b0)) -v hz="$(getconf CLK_TCK)" -v who="$who" -v v="$HANDSHAKES" \
    -v mode="${RESUME:+resumed}" -v rt=$((r1 - r0)) -v u=$((u1 - u0)) -v sy=$((s1 - s0)) \
    -v resumed="$resumed" 'BEGIN { printf "%s TLS %s handshakes%s: %.0f/s (%.0f%% resumed), CPU 0 %.1f us each (proxy user %.1f, system %.1f; run time %.1f)\n", who, v, (mode == "" ? " (full)" : " (" mode ")"), n / t, resumed * 100 / n, b * 1e6 / hz / n, u * 1e6 / hz / n, sy * 1e6 / hz / n, rt / 1e3 / n }'
  exit 0
fi
reqs=$(awk '/requests in/ {print $1}' "$w/logs/wrk.txt")
awk -v b=$((b1 - b0)) -v r="$reqs" -v hz="$(getconf CLK_TCK)" -v who="$who" -v o="$origin" -v c="$conns" \
  -v rps="$(awk '/Requests\/sec/ {print $2}' "$w/logs/wrk.txt")" -v p50="$(awk '$1 == "50%" {print $2}' "$w/logs/wrk.txt")" \
  -v d="$delay" -v u=$((u1 - u0)) -v sy=$((s1 - s0)) -v rt=$((r1 - r0)) \
  -v l="$([[ $listener == tls ]] && echo ' tls-listener')" 'BEGIN { printf "%s %s%s c%d%s: %s req/s, p50 %s, CPU 0 %.1f us/req (proxy user %.1f, system %.1f; run time %.1f)\n", who, o, l, c, (d > 0 ? "+" d "ms" : ""), rps, p50, b * 1e6 / hz / r, u * 1e6 / hz / r, sy * 1e6 / hz / r, rt / 1e3 / r }'
if [[ -n ${SYSCALLS:-} ]]; then
  awk -F, -v r="$reqs" '$1 / r >= 0.005 { sub(/^(syscalls:sys_enter_|sched:)/, "", $3); printf "  %s %.2f/req", $3, $1 / r } END { print "" }' "$w/logs/syscalls.csv"
fi
