"""The migration flight recorder (docs/debugging.md): every migration leaves a
record on both daemons; the source's holds both sides on one clock; the
installed ferry-trace names what happened. Each failure is made on purpose
with real daemons, the stock virsh and python3-libvirt, and the record's
timeline must name its cause: destination VMM killed, destination daemon
frozen, link cut, bandwidth-limited link, slow destination VMM, abort by the
user; plus a successful migration whose record has both sides."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import test_tls_sasl as tls  # noqa: E402

MIB = 1 << 20
SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
TRACE = os.path.join(SOURCE_DIR, "tools/ferry-trace")


def records(d, side=None, domain="vm1"):
    pattern = f"*-{domain}-{side or '*'}-*.flight.jsonl"
    return sorted(glob.glob(os.path.join(d.flight_dir, pattern)))


def wait_record(d, side, contains=None, timeout=40):
    """The newest record of `side` in d's directory (with `contains` in it)."""
    found = []

    def ready():
        rs = records(d, side)
        if not rs:
            return False
        with open(rs[-1]) as f:
            text = f.read()
        if contains and contains not in text:
            return False
        found[:] = [rs[-1]]
        return True
    if not ft.wait_for(ready, timeout, 0.2):
        raise AssertionError(f"no {side} record{' with ' + contains if contains else ''} in "
                             f"{d.flight_dir}: {os.listdir(d.flight_dir) if os.path.isdir(d.flight_dir) else '-'}")
    return found[0]


def trace(*args):
    # FERRY_FLIGHT_KEEP=DIR keeps a copy of each record read (docs/debugging.md's
    # walk-through pastes them).
    keep = os.environ.get("FERRY_FLIGHT_KEEP")
    if keep and args and args[0].endswith(".flight.jsonl"):
        os.makedirs(keep, exist_ok=True)
        shutil.copy(args[0], keep)
    p = subprocess.run([TRACE, *args], capture_output=True, text=True,
                       timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"ferry-trace {args}: {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p.stdout


def section(text, title):
    m = re.search(rf"(?ms)^{title}\n(.*?)(?:\n\n|\Z)", text)
    return m.group(1) if m else ""


class FlightCase(ft.DaemonTestCase):
    src_conf = ""

    def setUp(self):
        super().setUp()
        self.a = self.start_daemon(name="source", extra_conf=self.src_conf)
        self.b = self.start_daemon(name="destination")

    def start_vm(self, d, name, memory_mib=96, dirty_rate=None):
        xml = ft.write_file(d.dir, name + ".xml",
                            ft.domain_xml(name, memory_mib=memory_mib, dirty_rate=dirty_rate))
        ft.virsh(d.tcp_uri, "define", xml)
        ft.virsh(d.tcp_uri, "start", name)

    def slow_vm(self, memory_mib=192):
        # 192 MiB at 32 MiB/s: about 6 s of stream to act in.
        self.start_vm(self.a, "vm1", memory_mib=memory_mib, dirty_rate="4MiB")
        ft.virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", "32")


class SuccessTest(FlightCase):
    def test_record_holds_both_sides_and_names_the_bandwidth_limit(self):
        # 8 MiB/s: a fraction of what even a loaded host's VMMs take (about
        # 30 MiB/s with a load average of 30), so the limit is what holds it.
        self.start_vm(self.a, "vm1", memory_mib=32)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--bandwidth", "8")
        self.assertEqual(rc, 0, err)
        path = wait_record(self.a, "source", '"side":"destination"')
        self.assertTrue(records(self.b, "destination"), "the destination keeps its own record")

        # The file: a versioned header per side, both sides' samples, the offset.
        with open(path) as f:
            lines = [json.loads(ln) for ln in f if ln.strip()]
        headers = [ln for ln in lines if ln.get("format") == "ferry-flight-record"]
        self.assertEqual(sorted(h["side"] for h in headers), ["destination", "source"])
        self.assertTrue(all(h["version"] == 1 for h in headers))
        self.assertEqual(headers[0]["id"], headers[1]["id"])
        for side in ("source", "destination"):
            self.assertTrue(any(ln.get("ev") == "sample" and ln["side"] == side
                                for ln in lines), side)
        # Plain TCP: no cipher, so nothing waited on one.
        self.assertTrue(all(ln["w_crypto"] == 0 for ln in lines if ln.get("ev") == "sample"))
        peer = [ln for ln in lines if ln.get("ev") == "peer_record"]
        self.assertEqual(len(peer), 1)
        self.assertLess(abs(peer[0]["clock_offset_us"]), 1_000_000)  # one host: one clock

        text = trace(path)
        self.assertIn("outcome: completed", text)
        self.assertRegex(text, r"with the destination's record .* offset [-+][\d.]+ ms "
                               r"\+- [\d.]+ ms")
        timeline = section(text, r"Timeline \(seconds; S = source, D = destination\)")
        for what in (r"S  terms: mode=tunnel, channels=1, flow=credit, packet_size=262144",
                     r"D  terms: mode=tunnel", r"S  phase perform start",
                     r"D  handshake: finish \(cancelled=0\) received",
                     r"S  handshake: finish \(cancelled=0\) answered", r"S  end: completed",
                     r"D  end: completed", r"S  connection: .*security=plain TCP"):
            self.assertRegex(timeline, what)
        self.assertIn("the bandwidth limit was the bottleneck", section(text, "Bottleneck"))

        # virsh and python3-libvirt show the summary as typed parameters.
        raw = ft.virsh(self.a.tcp_uri, "domjobinfo", "--completed", "--rawstats", "vm1")[1]
        self.assertRegex(raw, r"ferry_stall_bandwidth_limit: [1-9]\d*")
        self.assertIn("ferry_stall_encryption: 0\n", raw)
        self.assertIn("ferry_bottleneck: the migration's bandwidth limit", raw)
        stats = ft.job_stats(self.a, "vm1")
        self.assertEqual(stats["ferry_flight_record"], path)
        for k in ("ferry_stall_source_vmm", "ferry_stall_destination_vmm", "ferry_stall_network",
                  "ferry_stall_credit", "ferry_stall_bandwidth_limit"):
            self.assertIsInstance(stats[k], int, k)
        self.assertIn("ferry_bottleneck", ft.job_stats(self.b, "vm1"))

        # Found by domain, and drawn.
        listing = trace("--list", "vm1", "--dir", self.a.flight_dir)
        self.assertIn(path, listing)
        self.assertRegex(listing, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+vm1\s+source\s+completed")
        self.assertIn("no flight records of other", trace("--list", "other", "--dir",
                                                          self.a.flight_dir))
        svg, png = os.path.join(self.a.dir, "t.svg"), os.path.join(self.a.dir, "t.png")
        trace(path, "--plot", svg)
        trace(path, "--plot", png)
        with open(svg) as f:
            self.assertIn("<svg", f.read(4096))
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_records_are_bounded_and_the_recorder_can_be_off(self):
        self.a.stop()
        self.b.stop()
        self.a = self.start_daemon(name="source2", extra_conf="flight_records_max = 2\n")
        self.b = self.start_daemon(name="destination2", extra_conf="flight_recorder = 0\n")
        self.start_vm(self.a, "vm1", memory_mib=32)
        for i in range(3):  # the second one in proxy mode
            src, dst = (self.a, self.b) if i % 2 == 0 else (self.b, self.a)
            rc, _, err = ft.migrate(src, dst, "vm1", "--live", tunnelled=i != 1)
            self.assertEqual(rc, 0, err)
            # Record names carry the second they started: distinct seconds
            # make "the newest two" unambiguous.
            time.sleep(1.1)
        # a: source twice, destination once: two kept. b records nothing.
        self.assertTrue(ft.wait_for(lambda: len(os.listdir(self.a.flight_dir)) == 2, 10),
                        os.listdir(self.a.flight_dir))
        self.assertFalse(os.path.exists(self.b.flight_dir) and os.listdir(self.b.flight_dir))
        # Without the destination's record the source's says where to look.
        text = trace(records(self.a, "source")[-1])
        self.assertIn("the destination's record is not included", text)
        # The proxy-mode migration's destination record (a's) names its terms.
        listing = trace("--list", "--dir", self.a.flight_dir)
        self.assertRegex(listing, r"vm1\s+destination\s+completed\s+proxy\s")
        self.assertRegex(trace(records(self.a, "destination")[-1]),
                         r"D  terms: mode=proxy, channels=1, data_connection=tcp://")
        self.assertNotIn("ferry_bottleneck", ft.job_stats(self.b, "vm1"))


class FailureTest(FlightCase):
    src_conf = "migration_stall_timeout = 2\n"

    def test_destination_vmm_killed(self):
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        for pid in ft.vmm_pids(self.b):
            os.kill(pid, signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        path = wait_record(self.a, "source", '"side":"destination"')
        text = trace(path)
        happened = section(text, "What happened")
        self.assertIn("cause: the destination VMM failed", happened)
        # The destination's own error, with its errno and offset.
        self.assertRegex(happened, r"destination error \(stream\): cannot (write to|read from) "
                                   r"the destination VMM after .*\[errno \d+ E[A-Z]+\]")
        self.assertIn("outcome: failed", text)

    def test_destination_daemon_frozen(self):
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        self.b.kill(signal.SIGSTOP)
        try:
            _, err = p.communicate(timeout=60)
            self.assertIn("the migration stalled", err)
            path = wait_record(self.a, "source")
        finally:
            self.b.kill(signal.SIGCONT)
        happened = section(trace(path), "What happened")
        self.assertIn("cause: the data stood still", happened)
        self.assertRegex(happened, r"no bytes for [1-9][\d.]* s before the failure; last heard "
                                   r"from the destination [1-9][\d.]* s before")
        # Woken, the destination writes its own record of the same migration.
        dpath = wait_record(self.b, "destination", '"ev":"end"')
        self.assertIn("outcome: failed", trace(dpath))

    def test_abort_by_the_user(self):
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        ft.virsh(self.a.tcp_uri, "domjobabort", "vm1")
        _, err = p.communicate(timeout=60)
        self.assertIn("operation aborted", err)
        # The destination is told in the background; its record follows.
        path = wait_record(self.a, "source", '"side":"destination"')
        text = trace(path)
        self.assertIn("cause: the user aborted the migration", section(text, "What happened"))
        self.assertIn("outcome: cancelled", text)
        timeline = section(text, r"Timeline \(seconds; S = source, D = destination\)")
        self.assertIn("S  ABORT requested: job 'migration out' canceled by client", timeline)
        self.assertIn("S  handshake: the destination confirmed the end of the stream", timeline)
        self.assertIn("D  handshake: finish (cancelled=1) received", timeline)
        self.assertIn("D  end: cancelled", timeline)
        self.assertTrue(ft.wait_for(lambda: "ferry_flight_record" in ft.job_stats(self.a, "vm1"),
                                    10))

    def test_slow_destination_vmm(self):
        # Big enough that the move outlasts the stutter's first look for the VMM.
        self.start_vm(self.a, "vm1", memory_mib=256)
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        done = threading.Event()
        stopped = []

        def stutter():
            # The incoming VMM runs 0.01 s in every 0.2 s: a slow destination
            # host. The periods are short against one of ferry-vmm's 64 MiB
            # commands (several seconds here), so the pumps' waits average over
            # many of them: with 0.1 s in 0.5 s a command spanned about one
            # period, and the destination's wait for the next command (its VMM
            # stopped on the last 4 MiB, the source VMM waiting for that OK)
            # could outweigh its wait on the VMM under load (one make check).
            while not done.is_set():
                pids = ft.vmm_pids(self.b)
                if not pids:
                    done.wait(0.02)  # look often until the incoming VMM appears
                    continue
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGSTOP)
                        stopped.append(pid)
                    except OSError:
                        pass
                done.wait(0.19)
                for pid in set(stopped):
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except OSError:
                        pass
                done.wait(0.01)
        t = threading.Thread(target=stutter)
        t.start()
        try:
            _, err = p.communicate(timeout=120)
        finally:
            done.set()
            t.join()
            for pid in set(stopped):
                try:
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass
        self.assertEqual(p.returncode, 0, err)
        self.assertTrue(stopped, "the incoming VMM was never seen")
        text = trace(wait_record(self.a, "source", '"side":"destination"'))
        self.assertRegex(section(text, "Bottleneck"),
                         r"the destination VMM accepted data at [\d.]+ MiB/s while the network "
                         r"carried [\d.]+ MiB/s: the destination host was the bottleneck")


def side_waits(path, side):
    """The last sample of `side` in a record: cumulative waits since the start."""
    with open(path) as f:
        lines = [json.loads(ln) for ln in f if ln.strip()]
    samples = [ln for ln in lines if ln.get("ev") == "sample" and ln["side"] == side]
    return samples[-1]


class EncryptionTest(tls.SaslTestCase):
    """Over TLS the pumps' time waiting on the cipher is its own cause, apart
    from the network: TLS + SASL between the daemons (tunnelled), and an
    encrypted data connection (proxy mode, --tls). The records also hold the
    negotiated security each side saw."""

    def pair(self):
        pkidir = self.pki.client_dir()
        dest = self.sasl_daemon()
        src = self.start_daemon(name="source", extra_conf=f'migration_pki_dir = "{pkidir}"\n',
                                env={"LIBVIRT_AUTH_FILE": self.authfile})
        xml = ft.write_file(src.dir, "vm1.xml", ft.domain_xml("vm1", memory_mib=64))
        ft.virsh(src.tcp_uri, "define", xml)
        ft.virsh(src.tcp_uri, "start", "vm1")
        return src, dest, f"sim+tls://127.0.0.1:{dest.tls_port}/system"

    def check_record(self, src, mode):
        path = wait_record(src, "source", '"side":"destination"')
        waits = {side: side_waits(path, side)["w_crypto"] for side in ("source", "destination")}
        # The source waited for its connection to encrypt (credit held back
        # while the writer encrypted) or the destination for its to decrypt.
        self.assertGreater(waits["source"] + waits["destination"], 0, waits)
        text = trace(path)
        self.assertIn(f"mode {mode}", text)
        self.assertRegex(section(text, "Bottleneck"),
                         r"its sending pump waited on: .*encryption \d+%")
        self.assertRegex(section(text, "Bottleneck"), r"and on decryption \d+% of its")
        stats = ft.job_stats(src, "vm1")
        self.assertEqual(stats["ferry_stall_encryption"], waits["source"] // 1000, stats)
        return text

    def test_tunnel_over_tls_and_sasl(self):
        src, dest, duri = self.pair()
        rc, _, err = ft.virsh(src.tcp_uri, "migrate", "--live", "--p2p", "--tunnelled", "vm1",
                              duri, check=False, timeout=180)
        self.assertEqual(rc, 0, err)
        text = self.check_record(src, "tunnel")
        timeline = section(text, r"Timeline \(seconds; S = source, D = destination\)")
        # The negotiated terms as each side saw them: TLS version and cipher,
        # the peer's certificate DN (the source checked the server's), the
        # SASL mechanism and user (the destination authenticated the source).
        for side, dn in (("S", r"O=ferry,CN=127\.0\.0\.1"), ("D", "C=GB,O=x,CN=y")):
            self.assertRegex(timeline, rf"{side}  connection: .*security=TLS1\.[23] \S+, peer "
                                       rf"certificate {dn}, SASL (SCRAM-SHA-256|DIGEST-MD5) "
                                       rf"user 'alice'")

    def test_proxy_mode_over_tls(self):
        src, dest, duri = self.pair()
        rc, _, err = ft.virsh(src.tcp_uri, "migrate", "--live", "--p2p", "--tls", "vm1", duri,
                              check=False, timeout=180)
        self.assertEqual(rc, 0, err)
        self.check_record(src, "proxy")


class NetnsFlightCase(FlightCase):
    """The destination on another 'host': its own network namespace over a
    veth pair with addresses of its own (unique per run, as test_proxy's),
    shaped to `rate` with tbf."""

    rate = "1gbit"

    def setUp(self):
        ft.DaemonTestCase.setUp(self)
        tag = uuid.uuid4().hex[:6]
        self.ns = f"ferry-{tag}"
        self.veth = f"fv{tag}"
        n = int(tag, 16) % 16384
        net = f"10.214.{n // 64}"
        self.src_ip, self.dst_ip = f"{net}.{(n % 64) * 4 + 1}", f"{net}.{(n % 64) * 4 + 2}"
        cmds = [
            ["ip", "netns", "add", self.ns],
            ["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.veth + "p"],
            ["ip", "link", "set", self.veth + "p", "netns", self.ns],
            ["ip", "addr", "add", self.src_ip + "/30", "dev", self.veth],
            ["ip", "link", "set", self.veth, "up"],
            ["ip", "netns", "exec", self.ns, "ip", "addr", "add", self.dst_ip + "/30", "dev",
             self.veth + "p"],
            ["ip", "netns", "exec", self.ns, "ip", "link", "set", self.veth + "p", "up"],
            ["tc", "qdisc", "add", "dev", self.veth, "root", "tbf", "rate", self.rate, "burst",
             "256kb", "latency", "50ms"],
        ]
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True, timeout=30)
        self.a = self.start_daemon(name="source", host=self.src_ip,
                                   extra_conf="migration_stall_timeout = 2\n")
        self.b = self.start_daemon(name="destination", host=self.dst_ip,
                                   prefix=["ip", "netns", "exec", self.ns])

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            subprocess.run(["ip", "link", "del", self.veth], capture_output=True, timeout=30)
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)


class LinkCutTest(NetnsFlightCase):
    def test_link_cut(self):
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        subprocess.run(["ip", "link", "set", self.veth, "down"], check=True, timeout=30)
        _, err = p.communicate(timeout=60)
        self.assertIn("the migration stalled", err)
        happened = section(trace(wait_record(self.a, "source")), "What happened")
        self.assertIn("cause: the data stood still: the destination daemon or the link stopped "
                      "answering", happened)
        self.assertRegex(happened, r"no bytes for [1-9][\d.]* s before the failure; last heard "
                                   r"from the destination [1-9][\d.]* s before")
        # The destination saw the source go silent and wrote that down too.
        dtext = trace(wait_record(self.b, "destination", '"ev":"end"', timeout=60))
        self.assertIn("outcome: failed", dtext)


class ShapedLinkTest(NetnsFlightCase):
    rate = "64mbit"  # about 7.6 MiB/s: well below what a loaded host's VMMs take

    def test_bandwidth_limited_link(self):
        self.start_vm(self.a, "vm1", memory_mib=32)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live")
        self.assertEqual(rc, 0, err)
        text = trace(wait_record(self.a, "source", '"side":"destination"'))
        self.assertRegex(section(text, "Bottleneck"),
                         r"the destination waited for data while the source waited to send "
                         r"\([\d.]+ MiB/s\): the network was the bottleneck")


if __name__ == "__main__":
    unittest.main()
