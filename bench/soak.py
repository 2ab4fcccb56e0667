#!/usr/bin/env python3
"""Concurrency soak (make soak): 1000 client connections, split between two
ferryd, list domains, look them up and query their jobs without pause while 8
VMs migrate back and forth between the daemons, half tunnelled and half in
proxy mode. It passes with zero errors: every call answered OK (a job query
for a domain that left the daemon between the list and the query counts as
a race, shown apart), every migration completed, both daemons alive and
their RSS within a bound. Prints the table docs/testing.md records.

    bench/soak.py [BUILD_DIR]      (make soak uses the optimized build/)
    SOAK_CLIENTS=1000 SOAK_VMS=8 SOAK_ROUNDS=2 SOAK_VM_MIB=128
"""

import asyncio
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../build"))
os.environ["FERRY_BUILD_DIR"] = BUILD
sys.path.insert(0, os.path.join(HERE, "../tests/integration"))
import ferrytest as ft  # noqa: E402

CLIENTS = int(os.environ.get("SOAK_CLIENTS", 1000))
VMS = int(os.environ.get("SOAK_VMS", 8))
ROUNDS = int(os.environ.get("SOAK_ROUNDS", 2))
VM_MIB = int(os.environ.get("SOAK_VM_MIB", 128))
BASELINE_SECONDS = 10
RSS_GROWTH_LIMIT_MIB = 256

CONNECT_OPEN, LOOKUP_BY_NAME, GET_JOB_INFO, LIST_ALL_DOMAINS = 1, 23, 163, 273
VIR_ERR_NO_DOMAIN = 42
ANCHORS = ["anchor-%d" % i for i in range(4)]  # defined on both daemons, never migrate


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Stats:
    def __init__(self):
        self.calls = 0
        self.errors = []
        self.races = 0
        self.connected = 0


class Client:
    """One connection's loop: list, look up an anchor, query a job."""

    def __init__(self, port, stats, idx):
        self.port = port
        self.stats = stats
        self.idx = idx
        self.serial = 0

    async def call(self, proc, payload=b""):
        self.serial += 1
        self.w.write(ft.message(ft.REMOTE_PROGRAM, proc, ft.CALL, self.serial, ft.OK, payload))
        while True:
            (n,) = struct.unpack(">I", await self.r.readexactly(4))
            rest = await self.r.readexactly(n - 4)
            hdr = struct.unpack(">IIiIII", rest[:24])
            if hdr[0] == ft.KEEPALIVE_PROGRAM:
                if hdr[2] == 1:  # PING: answer it like libvirt's client
                    self.w.write(ft.message(ft.KEEPALIVE_PROGRAM, 2, ft.MESSAGE, 0))
                continue
            if hdr[4] != self.serial:
                continue
            self.stats.calls += 1
            return hdr[5], rest[24:]

    def fail(self, what, status, body):
        code, _, msg = ft.decode_error(body) if status == ft.ERROR else (None, None, None)
        if what == "job-info" and code == VIR_ERR_NO_DOMAIN:
            self.stats.races += 1
            return
        self.stats.errors.append(f"client {self.idx}: {what}: {code} {msg}")

    async def run(self, stop):
        for attempt in range(50):
            try:
                self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            self.stats.errors.append(f"client {self.idx}: cannot connect")
            return
        try:
            status, body = await self.call(CONNECT_OPEN, struct.pack(">I", 1)
                                           + ft.xdr_string("sim:///system") + struct.pack(">I", 0))
            if status != ft.OK:
                return self.fail("open", status, body)
            self.stats.connected += 1
            i = 0
            while not stop.is_set():
                status, body = await self.call(LIST_ALL_DOMAINS, struct.pack(">iI", 1, 0))
                if status != ft.OK:
                    self.fail("list", status, body)
                    continue
                doms = parse_domains(body)
                status, body = await self.call(LOOKUP_BY_NAME,
                                               ft.xdr_string(ANCHORS[i % len(ANCHORS)]))
                if status != ft.OK:
                    self.fail("lookup", status, body)
                if doms:
                    name, uuid, did = doms[i % len(doms)]
                    status, body = await self.call(
                        GET_JOB_INFO, ft.xdr_string(name) + uuid + struct.pack(">i", did))
                    if status != ft.OK:
                        self.fail("job-info", status, body)
                i += 1
                await asyncio.sleep(0.05)
        except (OSError, asyncio.IncompleteReadError) as e:
            self.stats.errors.append(f"client {self.idx}: connection lost: {e!r}")
        finally:
            self.w.close()


def parse_domains(body):
    (n,) = struct.unpack(">I", body[:4])
    off, out = 4, []
    for _ in range(n):
        (ln,) = struct.unpack(">I", body[off:off + 4])
        name = body[off + 4:off + 4 + ln].decode()
        off += 4 + ln + (4 - ln % 4) % 4
        uuid = body[off:off + 16]
        (did,) = struct.unpack(">i", body[off + 16:off + 20])
        off += 20
        out.append((name, uuid, did))
    return out


def clients_thread(ports, stats, stop_async, ready):
    async def main():
        stop = asyncio.Event()
        stop_async.append((asyncio.get_running_loop(), stop))
        tasks = [asyncio.create_task(Client(ports[i % 2], stats, i).run(stop)) for i in range(CLIENTS)]
        ready.set()
        await asyncio.gather(*tasks)
    asyncio.run(main())


def main():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    conf = "max_clients = 5000\nmax_workers = 20\nlog_level = 3\n"
    a = ft.Daemon(name="soak-a", extra_conf=conf).start()
    b = ft.Daemon(name="soak-b", extra_conf=conf).start()
    tmp = tempfile.mkdtemp(prefix="ferry-soak-")
    ok = False
    try:
        for d in (a, b):
            for n in ANCHORS:
                ft.virsh(d.tcp_uri, "define", ft.write_file(tmp, n + ".xml", ft.domain_xml(n)))
        names = ["soak-vm%d" % i for i in range(VMS)]
        for n in names:
            ft.virsh(a.tcp_uri, "define", ft.write_file(tmp, n + ".xml", ft.domain_xml(
                n, memory_mib=VM_MIB, dirty_rate="8MiB", seed=len(n))))
            ft.virsh(a.tcp_uri, "start", n)
        idle = {d.name: rss_mib(d.proc.pid) for d in (a, b)}
        peak = dict(idle)

        stats = Stats()
        stop_async, ready = [], threading.Event()
        ct = threading.Thread(target=clients_thread, args=((a.port, b.port), stats, stop_async, ready))
        ct.start()
        ready.wait(30)
        t_connect = time.monotonic()
        while stats.connected + len(stats.errors) < CLIENTS and time.monotonic() - t_connect < 120:
            time.sleep(0.2)
        connect_s = time.monotonic() - t_connect

        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                for d in (a, b):
                    peak[d.name] = max(peak[d.name], rss_mib(d.proc.pid))
                time.sleep(0.2)
        st = threading.Thread(target=sample)
        st.start()

        # The same clients with no migration running, for comparison.
        b0, bc0 = time.monotonic(), stats.calls
        time.sleep(BASELINE_SECONDS)
        baseline_rate = (stats.calls - bc0) / (time.monotonic() - b0)

        t0 = time.monotonic()
        calls0 = stats.calls
        migrations = {"tunnelled": 0, "proxy": 0}
        mig_errors = []
        src, dst = a, b
        for rnd in range(ROUNDS):
            procs = []
            for i, n in enumerate(names):
                tunnelled = i % 2 == 0
                procs.append((n, tunnelled, ft.start_migration(src, dst, n, "--live",
                                                                tunnelled=tunnelled)))
            for n, tunnelled, p in procs:
                out, err = p.communicate(timeout=600)
                if p.returncode == 0:
                    migrations["tunnelled" if tunnelled else "proxy"] += 1
                else:
                    mig_errors.append(f"round {rnd} {n}: {err.strip()}")
            src, dst = dst, src
        elapsed = time.monotonic() - t0
        calls = stats.calls - calls0

        loop, stop = stop_async[0]
        loop.call_soon_threadsafe(stop.set)
        ct.join(60)
        sampling.set()
        st.join()
        alive = all(d.proc.poll() is None for d in (a, b))

        print()
        print("| measure | value |")
        print("| --- | --- |")
        print(f"| client connections (half on each ferryd) | {stats.connected} of {CLIENTS} "
              f"(all connected in {connect_s:.1f} s) |")
        print(f"| calls answered while migrating (list, lookup, job info) | {calls} in "
              f"{elapsed:.1f} s ({calls / elapsed:.0f}/s) |")
        print(f"| the same clients with no migration running | {baseline_rate:.0f} calls/s |")
        print(f"| call errors | {len(stats.errors)} |")
        print(f"| job queries that raced a domain leaving | {stats.races} |")
        print(f"| migrations completed ({ROUNDS} rounds of {VMS} concurrent, {VM_MIB} MiB each) | "
              f"{migrations['tunnelled']} tunnelled + {migrations['proxy']} proxy of "
              f"{ROUNDS * VMS} |")
        for d in (a, b):
            print(f"| {d.name} RSS idle -> peak | {idle[d.name]:.0f} -> {peak[d.name]:.0f} MiB |")
        print(f"| daemons alive at the end | {'yes' if alive else 'NO'} |")
        for e in (stats.errors + mig_errors)[:20]:
            print("error:", e)
        growth = max(peak[d.name] - idle[d.name] for d in (a, b))
        ok = (not stats.errors and not mig_errors and alive and stats.connected == CLIENTS
              and growth < RSS_GROWTH_LIMIT_MIB)
        print(f"\nsoak {'PASSED' if ok else 'FAILED'} (RSS growth bound {RSS_GROWTH_LIMIT_MIB} MiB, "
              f"largest {growth:.0f} MiB)")
    finally:
        for d in (a, b):
            try:
                d.stop(60)
                report = d.sanitizer_report()
                if report:
                    print(report[-4000:])
                    ok = False
            finally:
                d.cleanup()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
