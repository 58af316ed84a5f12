#!/usr/bin/env python3
"""Render the markdown report of bench/run.sh from its run directory.

Usage: report.py bench/work/run  > results.md

The run directory holds meta.kv and one directory per proxy (envoy/, strait/)
with the raw wrk / h2load output, CPU tick counts, RSS samples and the idle
connection helper's output; baseline/ holds the wrk run straight at nginx.
"""
import os
import re
import sys


def kv(path):
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, _, v = line.partition("=")
                out[k.strip()] = v
    return out


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def parse_wrk(path):
    text = read(path)
    if not text:
        return None
    r = {}
    for line in text.splitlines():
        if line.startswith("BENCH "):
            for tok in line.split()[1:]:
                k, _, v = tok.partition("=")
                r[k] = float(v)
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps_wrk"] = float(m.group(1)) if m else None
    if "requests" not in r:
        return None
    r["done"] = int(r["requests"])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r.get("duration_us") else r["rps_wrk"]
    # wrk counts non-2xx in errors_status and also in Non-2xx; report one sum.
    r["errors"] = int(sum(r.get(k, 0) for k in
                          ("errors_connect", "errors_read", "errors_write", "errors_status", "errors_timeout")))
    r["p50_us"] = r.get("lat_p50_us")
    r["p99_us"] = r.get("lat_p99_us")
    r["latency_source"] = "wrk histogram"
    return r


def to_us(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", s)
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def parse_h2load(path, reqlog):
    text = read(path)
    if not text:
        return None
    r = {}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    if m:
        r["wall"] = float(m.group(1))
        r["rps"] = float(m.group(2))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    if not m:
        return None
    total, started, done, ok, failed, errored, timeout = map(int, m.groups())
    r["done"] = done
    r["succeeded"] = ok
    r["errors"] = failed + errored + timeout
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        r["non2xx"] = sum(map(int, m.groups()[1:]))
        r["errors"] += r["non2xx"]
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        r["req_min_us"], r["req_max_us"], r["req_mean_us"], r["req_sd_us"] = (to_us(x) for x in m.groups())
    r["p50_us"] = r["p99_us"] = None
    r["latency_source"] = "h2load mean/sd/max only"
    if reqlog and os.path.exists(reqlog):
        lat = []
        with open(reqlog) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    try:
                        lat.append(int(parts[2]))
                    except ValueError:
                        pass
        if lat:
            lat.sort()
            n = len(lat)
            pct = lambda p: lat[min(n - 1, max(0, int(round(p / 100.0 * n)) - 1))]
            r["p50_us"], r["p99_us"], r["p999_us"] = pct(50), pct(99), pct(99.9)
            r["latency_source"] = f"h2load --log-file, {n} requests"
    return r


def rss_max(path):
    vals = [int(x) for x in read(path).split() if x.isdigit()]
    return max(vals) if vals else None


def fmt_lat(us):
    if us is None:
        return "n/a"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def fmt_mib(kb):
    if kb in (None, ""):
        return "n/a"
    return f"{int(kb) / 1024:.1f} MiB"


def fmt_int(x):
    return "n/a" if x is None else f"{x:,.0f}"


def cpu_stats(run, done):
    c = kv(run)
    if not c or not done:
        return None, None, None
    ticks, hz, wall = int(c["cpu_ticks"]), int(c["clk_tck"]), float(c["wall_s"])
    us_per_req = ticks / hz * 1e6 / done
    proxy_pct = ticks / hz / wall * 100 if wall else None
    tot = int(c.get("load_core_total", 0))
    load_pct = int(c["load_core_busy"]) / tot * 100 if tot else None
    return us_per_req, proxy_pct, load_pct


def main():
    run = sys.argv[1]
    meta = kv(os.path.join(run, "meta.kv"))
    proxies = meta.get("proxies", "").split()
    out = []
    w = out.append
    quick = meta.get("quick") == "1"
    w(f"# Whole-proxy benchmark: {' vs '.join(p.capitalize() for p in proxies)}"
      + (" (QUICK smoke run: not for comparison)" if quick else ""))
    w("")
    w(f"- Date: {meta.get('date')}")
    w(f"- Command: `{meta.get('cmdline')}`")
    dirty = " (uncommitted changes)" if meta.get("git_dirty") == "yes" else ""
    w(f"- Git: {meta.get('git_sha')}{dirty}")
    w(f"- Machine: nproc={meta.get('nproc')}, {meta.get('cpu_model')}, {meta.get('mem')}, kernel {meta.get('kernel')}")
    vers = []
    for p in proxies:
        v = read(os.path.join(run, p, "version")).strip().splitlines()
        line = v[0].strip() if v else "unknown"
        if "version:" in line:  # envoy: "<path>  version: <sha>/<ver>/<status>/<type>/<ssl>"
            line = line.split("version:", 1)[1].strip()
            parts = line.split("/")
            if len(parts) >= 2 and re.fullmatch(r"[0-9a-f]{7,40}", parts[0]):  # Envoy: sha first
                line = f"{parts[1]} ({parts[0][:12]}, {'/'.join(parts[2:])})"
            elif len(parts) >= 2:
                line = f"{parts[0]} ({'/'.join(parts[1:])})"
        vers.append(f"{p.capitalize()}: `{line}`")
    vers += [f"nginx: {meta.get('nginx_version')}", f"wrk: {meta.get('wrk_version')}",
             f"h2load: {meta.get('h2load_version')}"]
    w(f"- Versions: {'; '.join(vers)}")
    w(f"- Pinning: proxy on core {meta.get('proxy_cpu')} (`taskset -c {meta.get('proxy_cpu')}`, `--concurrency 1`); "
      f"wrk/h2load, nginx (1 worker) and the helpers on core {meta.get('load_cpu')}; "
      f"all at nice {meta.get('nice', '0')}, scheduling policy {meta.get('sched', 'n/a').strip()}")
    w(f"- Load: {meta.get('conns')} connections, {meta.get('warmup')} s warm-up (discarded) then "
      f"{meta.get('duration')} s measured, per protocol; idle test: {meta.get('idle_conns')} keep-alive connections")
    w("- Upstream: nginx `return 200 \"hello, world\\n\"` (13-byte body), keep-alive; "
      "same `bench/bootstrap.yaml` for every proxy")
    for p in proxies:
        b = read(os.path.join(run, p, "binary")).strip()
        if b:
            w(f"- {p.capitalize()} binary: `{b}`")
    for p in proxies:
        cmd = read(os.path.join(run, p, "cmdline")).strip()
        if cmd:
            w(f"- {p.capitalize()} command: `{cmd}`")
    first = proxies[0] if proxies else None
    if first:
        w(f"- HTTP/1.1 load: `{read(os.path.join(run, first, 'wrk.cmd')).strip()}`")
        w(f"- HTTP/2 load (h2c prior knowledge): `{read(os.path.join(run, first, 'h2load.cmd')).strip()}`")
    w("")

    rows = {}
    w("## Results")
    w("")
    w("| Proxy | Protocol | req/s | p50 | p99 | CPU µs/req | proxy core busy | load core busy | errors "
      "| RSS idle | RSS under load | RSS with idle conns | bytes/idle conn |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for p in proxies:
        d = os.path.join(run, p)
        idle = kv(os.path.join(d, "idle.kv"))
        ic = kv(os.path.join(d, "idle_conns.kv"))
        ic_ok = ic.get("rc") == "0"
        if ic and not ic_ok:
            notes.append(f"{p}: idle-connection test incomplete: opened={ic.get('opened')} "
                         f"alive={ic.get('alive_at_sample')} failed={ic.get('failed')} {ic.get('first_error', '')}")
        rss_conns = fmt_mib(ic.get("rss_with_conns_kb")) if ic else "n/a"
        bpc = ic.get("bytes_per_conn")
        bpc_s = "n/a" if bpc is None else f"{int(bpc):,} B" + ("" if ic_ok else " (incomplete)")
        for label, proto, parsed in (
            ("wrk", "HTTP/1.1", parse_wrk(os.path.join(d, "wrk.out"))),
            ("h2load", "HTTP/2 h2c", parse_h2load(os.path.join(d, "h2load.out"), os.path.join(d, "h2load.reqlog"))),
        ):
            if not parsed:
                w(f"| {p.capitalize()} | {proto} | failed | | | | | | | | | | |")
                continue
            us, ppct, lpct = cpu_stats(os.path.join(d, f"{label}.cpu"), parsed["done"])
            rows[(p, label)] = dict(parsed, cpu_us=us, rss_load=rss_max(os.path.join(d, f"{label}.rss")),
                                    rss_idle=idle.get("rss_idle_kb"), bpc=bpc)
            p99 = fmt_lat(parsed.get("p99_us"))
            p50 = fmt_lat(parsed.get("p50_us"))
            if label == "h2load" and parsed.get("p50_us") is None:
                p50 = p99 = "see below"
            w(f"| {p.capitalize()} | {proto} | {fmt_int(parsed['rps'])} | {p50} | {p99} | "
              f"{'n/a' if us is None else f'{us:.2f}'} | "
              f"{'n/a' if ppct is None else f'{ppct:.0f}%'} | {'n/a' if lpct is None else f'{lpct:.0f}%'} | "
              f"{parsed['errors']} | {fmt_mib(idle.get('rss_idle_kb'))} | "
              f"{fmt_mib(rows[(p, label)]['rss_load'])} | {rss_conns} | {bpc_s} |")
    base = parse_wrk(os.path.join(run, "baseline", "wrk.out")) if meta.get("baseline") == "1" else None
    if base:
        w(f"| nginx direct (no proxy) | HTTP/1.1 | {fmt_int(base['rps'])} | {fmt_lat(base['p50_us'])} | "
          f"{fmt_lat(base['p99_us'])} | – | – | – | {base['errors']} | – | – | – | – |")
    w("")

    if "envoy" in proxies and "strait" in proxies:
        w("## Strait relative to Envoy")
        w("")
        w("| Protocol | req/s | p50 | p99 | CPU µs/req | RSS under load |")
        w("|---|---:|---:|---:|---:|---:|")
        for label, proto in (("wrk", "HTTP/1.1"), ("h2load", "HTTP/2 h2c")):
            e, s = rows.get(("envoy", label)), rows.get(("strait", label))
            if not e or not s:
                continue

            def ratio(k):
                a, b = e.get(k), s.get(k)
                return f"{float(b) / float(a):.2f}×" if a and b else "n/a"
            w(f"| {proto} | {ratio('rps')} | {ratio('p50_us')} | {ratio('p99_us')} | {ratio('cpu_us')} | "
              f"{ratio('rss_load')} |")
        e, s = kv(os.path.join(run, "envoy", "idle_conns.kv")), kv(os.path.join(run, "strait", "idle_conns.kv"))
        if e.get("bytes_per_conn") and s.get("bytes_per_conn") and float(e["bytes_per_conn"]) > 0:
            w(f"\nBytes per idle connection: Strait/Envoy = "
              f"{float(s['bytes_per_conn']) / float(e['bytes_per_conn']):.2f}×")
        w("")

    w("## Run conditions")
    w("")
    w(f"Background CPU load (2 s sample) before the run: {meta.get('bg_load_before', 'n/a')}, "
      f"after: {meta.get('bg_load_after', 'n/a')}. "
      "'Other load on proxy core' = that core's busy time (incl. softirq/steal) minus the proxy's own CPU time; "
      "more than a few % means something else (a build, another benchmark) shared the proxy's core.")
    if "SCHED_RR" in meta.get("sched", ""):
        w("")
        w("This run used SCHED_RR because the machine was busy: the kernel still keeps ~5% of each core for "
          "normal tasks, so the proxy core tops out near 95% busy, and those slices show up as tens of ms in p99 "
          "(also in the nginx-direct row).")
    w("")
    w("| Proxy | Protocol | wall | proxy CPU | proxy core busy | other load on proxy core | load core busy "
      "| nginx CPU |")
    w("|---|---|---:|---:|---:|---:|---:|---:|")
    for p in proxies:
        for label, proto in (("wrk", "HTTP/1.1"), ("h2load", "HTTP/2 h2c")):
            c = kv(os.path.join(run, p, f"{label}.cpu"))
            if not c:
                continue
            hz, wall, ticks = int(c["clk_tck"]), float(c["wall_s"]), int(c["cpu_ticks"])
            pct = lambda a, b: f"{100.0 * a / b:.0f}%" if b else "n/a"
            pt = int(c.get("proxy_core_total", 0))
            pb = int(c.get("proxy_core_busy", 0))
            other = max(0, pb - ticks)
            if pt and other / pt > 0.07:
                notes.append(f"{p} {proto}: {100.0 * other / pt:.0f}% of the proxy core went to something else "
                             "during the run: its req/s and tail latency are lowered by that (CPU µs/req much less); "
                             "compare proxies within this run only")
            w(f"| {p.capitalize()} | {proto} | {wall:.1f} s | {ticks / hz:.2f} s | {pct(ticks / hz, wall)} | "
              f"{pct(other, pt)} | {pct(int(c['load_core_busy']), int(c['load_core_total']))} | "
              f"{pct(int(c.get('nginx_ticks', 0)) / hz, wall)} |")
    w("")

    w("## HTTP/2 request time as h2load reports it")
    w("")
    w("h2load itself prints only min/max/mean/sd of the request time; p50/p99 in the table above come from "
      "its per-request `--log-file` (microsecond resolution) when BENCH_H2_LOG=1.")
    w("")
    w("| Proxy | min | mean | sd | max | p99.9 (log) | requests done | source of p50/p99 |")
    w("|---|---:|---:|---:|---:|---:|---:|---|")
    for p in proxies:
        r = rows.get((p, "h2load"))
        if r:
            w(f"| {p.capitalize()} | {fmt_lat(r.get('req_min_us'))} | {fmt_lat(r.get('req_mean_us'))} | "
              f"{fmt_lat(r.get('req_sd_us'))} | {fmt_lat(r.get('req_max_us'))} | {fmt_lat(r.get('p999_us'))} | "
              f"{fmt_int(r['done'])} | {r['latency_source']} |")
    w("")

    w("## Memory detail")
    w("")
    w("| Proxy | threads | RSS idle | VmHWM after load runs | RSS before idle conns | RSS with idle conns "
      "| idle conns open | time to open |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for p in proxies:
        d = os.path.join(run, p)
        idle, ic = kv(os.path.join(d, "idle.kv")), kv(os.path.join(d, "idle_conns.kv"))
        w(f"| {p.capitalize()} | {idle.get('threads', 'n/a')} | {fmt_mib(idle.get('rss_idle_kb'))} | "
          f"{fmt_mib(idle.get('hwm_kb'))} | {fmt_mib(ic.get('rss_before_kb'))} | {fmt_mib(ic.get('rss_with_conns_kb'))} | "
          f"{ic.get('alive_at_sample', 'n/a')}/{ic.get('conns_requested', 'n/a')} | {ic.get('open_seconds', 'n/a')} s |")
    w("")

    w("## How to read this")
    w("")
    w("- **CPU µs/req** = proxy (utime+stime from `/proc/<pid>/stat`, all threads) over the measured run, divided by "
      "completed requests. It is the most stable figure on a shared or noisy machine: it does not depend on "
      "how fast the client side could push.")
    w("- **proxy core busy** = that CPU time over wall time (100% = one full core). Well below ~95% (the most a SCHED_RR run gets) the proxy "
      "was not the bottleneck; then req/s and latency are bounded by **load core busy** (wrk/h2load + nginx share one core), "
      "and the nginx-direct row shows what that core does with no proxy in between.")
    w("- **RSS under load** is the largest VmRSS sampled every 0.2 s during that run. **RSS idle** is VmRSS 1 s "
      "after start. **bytes/idle conn** = (VmRSS with N idle keep-alive connections − VmRSS just before) / N, "
      "measured on a fresh proxy process, after one request on each connection; kernel socket buffers are not in RSS.")
    w("- **errors**: wrk socket errors + non-2xx; h2load failed + errored + timeout + non-2xx. Any non-zero count "
      "makes the row suspect.")
    if notes:
        w("")
        w("## Warnings")
        w("")
        for n in notes:
            w(f"- {n}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
