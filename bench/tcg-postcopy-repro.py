#!/usr/bin/env python3
"""QEMU -> QEMU post-copy of the test guest without ferry, to tell QEMU's
behaviour from ferry's (docs/qemu.md, "Post-copy and QEMU 7.2's TCG").

Two QEMU (TCG) run the test guest (tests/guest/: 64 MiB filled, 32 MiB
dirtied every 20 ms); the source migrates over UNIX sockets through a relay
that carries 10 MiB/s forward (as a slow link) and the return path back; it
switches to post-copy DELAY seconds after its second pass began, resumes the
destination, then watches the destination's guest for WATCH seconds. Prints
one RESULT line: OK (the guest verified its memory and did not crash) or
CRASH (its kernel oopsed: memory that arrived stale).

  FERRY_BUILD_DIR=build python3 bench/tcg-postcopy-repro.py [--memory-kib N] [--delay S] [--watch S]

--memory-kib 262144 (256 MiB) crashes once the delay is 1.5-3 s on QEMU 7.2
with TCG; 262152 (8 KiB more) does not."""

import argparse
import os
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/integration"))
import guest  # noqa: E402


class Relay:
    """src -> dst at `rate` bytes/s (an 8 MiB buffer, like a slow link's
    queue), dst -> src (the return path) as it comes."""

    def __init__(self, listen_path, target_path, rate):
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(listen_path)
        self.listener.listen(1)
        self.target, self.rate = target_path, rate
        self.cond, self.queue, self.eof = threading.Condition(), bytearray(), False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        a, _ = self.listener.accept()
        b = socket.socket(socket.AF_UNIX)
        b.connect(self.target)
        threading.Thread(target=self.read, args=(a,), daemon=True).start()
        threading.Thread(target=self.write, args=(b,), daemon=True).start()
        threading.Thread(target=self.back, args=(b, a), daemon=True).start()

    def read(self, a):
        while True:
            with self.cond:
                while len(self.queue) >= 8 << 20:
                    self.cond.wait()
            data = a.recv(65536)
            with self.cond:
                self.eof = not data
                self.queue += data
                self.cond.notify_all()
            if not data:
                return

    def write(self, b):
        t0, sent = time.monotonic(), 0
        while True:
            with self.cond:
                while not self.queue and not self.eof:
                    self.cond.wait()
                if not self.queue:
                    b.shutdown(socket.SHUT_WR)
                    return
                chunk = bytes(self.queue[:65536])
                del self.queue[:len(chunk)]
                self.cond.notify_all()
            b.sendall(chunk)
            sent += len(chunk)
            time.sleep(max(0.0, t0 + sent / self.rate - time.monotonic()))

    def back(self, b, a):
        while True:
            data = b.recv(65536)
            if not data:
                return
            a.sendall(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory-kib", type=int, default=262144)
    ap.add_argument("--delay", type=float, default=3.0, help="switch this long after pass 2 began")
    ap.add_argument("--watch", type=float, default=40.0)
    ap.add_argument("--rate-mib", type=float, default=10.0)
    args = ap.parse_args()
    guest.require()
    d = tempfile.mkdtemp(prefix="tcg-postcopy-")
    cmd = guest.kernel_cmdline(fill="64M", wss="32M", dirty_ms=20, verify_s=2)
    src = guest.QemuGuest(d, "src", cmdline=cmd)
    dst = guest.QemuGuest(d, "dst", cmdline=cmd, incoming=True)
    for g in (src, dst):
        g.args[g.args.index("-m") + 1] = f"size={args.memory_kib}k"
    result = "?"
    try:
        src.start()
        dst.start()
        src.console.wait_ready(240)
        src.console.wait_verified(180)
        caps = [{"capability": "events", "state": True}, {"capability": "postcopy-ram", "state": True}]
        for q in (src.qmp, dst.qmp):
            q.execute("migrate-set-capabilities", capabilities=caps)
        sock, relay_sock = os.path.join(d, "mig.sock"), os.path.join(d, "relay.sock")
        dst.qmp.execute("migrate-incoming", uri="unix:" + sock)
        Relay(relay_sock, sock, int(args.rate_mib * (1 << 20)))
        src.qmp.execute("migrate-set-parameters", **{"max-bandwidth": 0, "max-postcopy-bandwidth": 0})
        src.qmp.execute("migrate", uri="unix:" + relay_sock)
        while src.qmp.execute("query-migrate").get("ram", {}).get("dirty-sync-count", 0) < 2:
            time.sleep(0.05)
        time.sleep(args.delay)
        src.qmp.execute("migrate-start-postcopy")
        if dst.qmp.wait_event("MIGRATION", lambda x: x.get("status") == "postcopy-active", 120) is None:
            raise RuntimeError("the destination never reached postcopy-active")
        dst.qmp.execute("cont")
        if src.qmp.wait_event("MIGRATION", guest.migration_ended, 600) is None:
            raise RuntimeError("the migration did not end")
        src.stop()
        dst.console.wait_verified(180)
        end = time.monotonic() + args.watch
        while time.monotonic() < end:
            dst.console.check()
            time.sleep(0.5)
        result = f"OK memory={args.memory_kib}k delay={args.delay}s watched {args.watch:g}s"
    except guest.GuestCrashed as e:
        result = f"CRASH memory={args.memory_kib}k delay={args.delay}s\n{e}"
    finally:
        src.stop()
        dst.stop()
    print("RESULT", result)
    print("files in", d)


if __name__ == "__main__":
    main()
