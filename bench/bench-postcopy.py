#!/usr/bin/python3
"""Post-copy benchmark (issue 12): the project's test guest (tests/guest/) in
QEMU under TCG dirties memory faster than a bandwidth-limited link carries
it; two ferryd (QEMU driver, tunnelled over TCP) move it pre-copy only, then
with post-copy (`--postcopy --postcopy-after-precopy`). Reports, for each,
whether it completed, the total time, the downtime QEMU reports, for
post-copy the time between the source's `Suspended Post-copy` and the
destination's `Resumed Post-copy` events (the source daemon notices the
switch within its 200 ms poll, so the guest's real pause is at most that plus
200 ms) and the pages the destination asked for. The guest verifies all its
memory after the move.

Run by bench/run (BENCH_ONLY=postcopy, or within the whole run), never by
make check. Knobs: BENCH_PC_MEMORY (MiB, 512), BENCH_PC_FILL (256M),
BENCH_PC_WSS (64M), BENCH_PC_DIRTY_MS (20), BENCH_PC_BANDWIDTH (MiB/s, 20),
BENCH_PC_PRECOPY_S (how long pre-copy may try before it counts as not
converged and is aborted, 120). Every process it starts is ended by PID."""

import os
import subprocess
import sys
import threading
import time

try:
    import libvirt
except ImportError:
    raise SystemExit("bench: needs python3-libvirt: run it with /usr/bin/python3 (bench/run does)")

HERE = os.path.dirname(os.path.abspath(__file__))
MEMORY = int(os.environ.get("BENCH_PC_MEMORY", "512"))
FILL = os.environ.get("BENCH_PC_FILL", "256M")
WSS = os.environ.get("BENCH_PC_WSS", "64M")
DIRTY_MS = int(os.environ.get("BENCH_PC_DIRTY_MS", "20"))
BANDWIDTH = int(os.environ.get("BENCH_PC_BANDWIDTH", "20"))
PRECOPY_S = float(os.environ.get("BENCH_PC_PRECOPY_S", "120"))
NAME = "pcbench"


class Events:
    """Lifecycle events of one daemon, with the monotonic time they arrived."""

    def __init__(self, uri):
        self.conn = libvirt.open(uri)
        self.seen = []
        self.conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self.on_event, None)

    def on_event(self, conn, dom, event, detail, opaque):
        self.seen.append((time.monotonic(), event, detail))

    def first(self, event, detail, after=0.0):
        return next((t for t, e, d in self.seen if e == event and d == detail and t >= after), None)

    def close(self):
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass


def run_event_loop(stop):
    while not stop.is_set():
        libvirt.virEventRunDefaultImpl()


def virsh(uri, *args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def migrate(a, b, xml_path, flags, ev_a, ev_b, guest, console_log, sock):
    """One migration A -> B; its figures. Pre-copy that does not converge
    within PRECOPY_S is aborted (the guest stays on A)."""
    uri_a = f"qemu+unix:///system?socket={a.sock}"
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    start = time.monotonic()
    p = subprocess.Popen(["virsh", "-c", uri_a, "migrate", "--live", "--p2p", "--tunnelled", *flags,
                          "--bandwidth", str(BANDWIDTH), "--xml", xml_path, NAME,
                          f"qemu+tcp://127.0.0.1:{b.port}/system"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = p.communicate(timeout=PRECOPY_S)
    except subprocess.TimeoutExpired:
        virsh(uri_a, "domjobabort", NAME)
        out, err = p.communicate(timeout=120)
        c = libvirt.open(uri_a)
        try:
            s = c.lookupByName(NAME).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        finally:
            c.close()
        return {"completed": False, "total_s": time.monotonic() - start,
                "moved_mib": s.get("data_processed", 0) / (1 << 20), "iterations": s.get("memory_iteration")}
    total = time.monotonic() - start
    if p.returncode != 0:
        raise RuntimeError(f"virsh migrate failed: {err.strip()}")
    c = libvirt.open(uri_a)
    try:
        s = c.lookupByName(NAME).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    finally:
        c.close()
    # Post-copy: the source's Suspended Post-copy to the destination's Resumed
    # Post-copy. Pre-copy gives no event at its switchover (QEMU stops the
    # guest itself): its QEMU downtime is the figure.
    suspended = ev_a.first(libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY, start)
    resumed = ev_b.first(libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY, start)
    con = guest.ConsoleSocket(sock)
    try:
        verified = guest.request_verification(guest.Console(console_log), con.send, timeout=600)["kind"]
    except guest.GuestCrashed:
        # TCG's rare guest oops (QEMU.md): the migration's figures stand
        verified = "guest kernel crashed after the move (TCG)"
    finally:
        con.close()
    return {"completed": True, "total_s": total, "downtime_ms": s.get("downtime"),
            "stopped_ms": (resumed - suspended) * 1000 if suspended and resumed else None,
            "moved_mib": s.get("data_processed", 0) / (1 << 20), "iterations": s.get("memory_iteration"),
            "postcopy_requests": s.get("memory_postcopy_requests"), "verified": verified}


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: bench-postcopy.py BUILD_DIR")
    build = os.path.abspath(sys.argv[1])
    os.environ["FERRY_BUILD_DIR"] = build
    sys.path.insert(0, os.path.join(HERE, "../tests/integration"))
    import ferrytest as ft
    import guest
    try:
        guest.require()
    except RuntimeError as e:
        raise SystemExit(f"bench: {e}")
    sys.stdout.reconfigure(line_buffering=True)
    libvirt.virEventRegisterDefaultImpl()
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    stop = threading.Event()
    loop = threading.Thread(target=run_event_loop, args=(stop,), daemon=True)
    loop.start()
    daemons, events = [], []
    results = {}
    try:
        a, b = ft.Daemon(name="A"), ft.Daemon(name="B")
        daemons += [a, b]
        a.start(timeout=60)
        b.start(timeout=60)
        uri_a = f"qemu+unix:///system?socket={a.sock}"
        cmdline = guest.kernel_cmdline(fill=FILL, wss=WSS, dirty_ms=DIRTY_MS, verify_s=0)
        log = os.path.join(a.dir, "console.log")
        sock = os.path.join(a.dir, "console.sock")
        xml = guest.domain_xml(NAME, memory_mib=MEMORY, console_log=log, console_socket=sock, cmdline=cmdline)
        uri_b = f"qemu+unix:///system?socket={b.sock}"
        path = ft.write_file(a.dir, "guest.xml", xml)
        r = virsh(uri_a, "define", path)
        if r.returncode != 0:
            raise RuntimeError(f"virsh define: {r.stderr.strip()}")
        events += [Events(uri_a), Events(uri_b)]
        print(f"Post-copy: a {MEMORY} MiB TCG guest ({FILL} filled, one word per page of a {WSS} working "
              f"set rewritten every {DIRTY_MS} ms), migrated tunnelled between two ferryd at "
              f"--bandwidth {BANDWIDTH} MiB/s", file=sys.stderr)
        dlog, dsock = os.path.join(b.dir, "console.log"), os.path.join(b.dir, "console.sock")
        dxml = ft.write_file(a.dir, "dest.xml", xml.replace(log, dlog).replace(sock, dsock))
        # Each mode moves a freshly booted guest from A to B.
        for mode, flags in (("pre-copy only", []), ("post-copy", ["--postcopy", "--postcopy-after-precopy"])):
            for uri in (uri_a, uri_b):
                virsh(uri, "destroy", NAME)
            for f in (log, dlog):
                if os.path.exists(f):
                    os.unlink(f)
            r = virsh(uri_a, "start", NAME)
            if r.returncode != 0:
                raise RuntimeError(f"virsh start: {r.stderr.strip()}")
            guest.Console(log).wait_ready(600)
            results[mode] = migrate(a, b, dxml, flags, events[0], events[1], guest, dlog, dsock)
            print(f"  {mode}: {results[mode]}", file=sys.stderr)
    finally:
        stop.set()
        for e in events:
            e.close()
        for d in daemons:
            for uri in (f"qemu+unix:///system?socket={d.sock}",):
                if d.proc and d.proc.poll() is None:
                    virsh(uri, "destroy", NAME, timeout=60)
            d.stop()
            d.cleanup()
    report(results)
    return 0


def fmt(v, spec, unit=""):
    return "-" if v is None else f"{v:{spec}}{unit}"


def report(results):
    print(f"Post-copy: {MEMORY} MiB TCG guest dirtying a {WSS} working set every {DIRTY_MS} ms, "
          f"ferry tunnelled (TCP) at {BANDWIDTH} MiB/s, measured once")
    header = ["mode", "completed", "total", "QEMU downtime", "switch events", "moved", "passes",
              "post-copy requests", "memory verified"]
    rows = []
    for name, r in results.items():
        rows.append([name, "yes" if r["completed"] else f"no (aborted after {PRECOPY_S:.0f} s)",
                     fmt(r["total_s"], ".1f", " s"), fmt(r.get("downtime_ms"), "d", " ms"),
                     fmt(r.get("stopped_ms"), ".0f", " ms"), fmt(r["moved_mib"], ".0f", " MiB"),
                     fmt(r.get("iterations"), "d"), fmt(r.get("postcopy_requests"), "d"),
                     r.get("verified", "-")])
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
