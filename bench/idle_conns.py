#!/usr/bin/env python3
"""Open N idle HTTP/1.1 keep-alive connections to a proxy and measure its RSS.

Each connection sends one `GET /` with keep-alive, reads the full response
(Content-Length body), then stays open and idle. With all N open, the
proxy's VmRSS is read from /proc/<pid>/status. Prints `key=value` lines:

  rss_before_kb, rss_with_conns_kb, bytes_per_conn, opened, failed, ...

then closes every connection and exits. Bounded in time (--timeout).
"""
import argparse
import asyncio
import resource
import sys
import time


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found for pid {pid}")


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: strait-bench-idle\r\n\r\n"


async def one(host, port, sem, conns, errors):
    async with sem:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            errors.append(f"connect: {e}")
            return
        try:
            writer.write(REQUEST)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v.strip())
                elif k == b"transfer-encoding" and b"chunked" in v.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await reader.readexactly(length)
            if status != b"200":
                errors.append(f"status {status!r}")
            conns.append((reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            errors.append(f"request: {type(e).__name__}: {e}")
            writer.close()


async def main_async(a):
    conns, errors = [], []
    sem = asyncio.Semaphore(a.parallel)
    before = rss_kb(a.pid)
    t0 = time.monotonic()
    tasks = [asyncio.create_task(one(a.host, a.port, sem, conns, errors)) for _ in range(a.conns)]
    done, pending = await asyncio.wait(tasks, timeout=a.timeout)
    for t in pending:
        t.cancel()
    open_s = time.monotonic() - t0
    # Let the proxy settle (deferred frees, timers) before sampling.
    await asyncio.sleep(a.settle)
    samples = [rss_kb(a.pid)]
    for _ in range(4):
        await asyncio.sleep(0.25)
        samples.append(rss_kb(a.pid))
    with_conns = max(samples)
    # Are the connections still open (the proxy did not close idle ones)?
    alive = sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())
    opened = len(conns)
    print(f"conns_requested={a.conns}")
    print(f"opened={opened}")
    print(f"alive_at_sample={alive}")
    print(f"failed={len(errors) + len(pending)}")
    if errors:
        print(f"first_error={errors[0]!r}")
    print(f"open_seconds={open_s:.2f}")
    print(f"rss_before_kb={before}")
    print(f"rss_with_conns_kb={with_conns}")
    print(f"hwm_kb={rss_kb(a.pid, 'VmHWM')}")
    if opened:
        print(f"bytes_per_conn={(with_conns - before) * 1024 / opened:.0f}")
    for _, w in conns:
        w.close()
    await asyncio.sleep(0.2)
    return 0 if opened == a.conns and alive == opened else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pid", type=int, required=True, help="proxy pid whose RSS to read")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=256, help="connections being set up at once")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before sampling RSS")
    p.add_argument("--timeout", type=float, default=60.0, help="max seconds to open all connections")
    a = p.parse_args()
    limit = raise_nofile(a.conns + 1024)
    if limit < a.conns + 64:
        print(f"error=RLIMIT_NOFILE {limit} too low for {a.conns} connections", file=sys.stderr)
        return 2
    return asyncio.run(main_async(a))


if __name__ == "__main__":
    sys.exit(main())
