"""Several channels for one migration (issue 15): tunnelled, virsh's
--parallel-connections N (the parallel.connections parameter, or ferryd's
migration_parallel_connections default) opens N - 1 more authenticated
connections to the destination, one channel each; in proxy mode --parallel
--parallel-connections N opens N data connections. ferry-vmm's connection i
rides channel i. Each test checks on the destination VMM how many
connections its migration used, so it fails without the feature."""

import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import types
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import test_tls_sasl as tls  # noqa: E402

MIB = 1 << 20


def vmm_log(daemon, name):
    """The log of the VMMs of domain `name` on daemon (ferry-vmm --log)."""
    with open(os.path.join(daemon.dir, "log", name + ".log"), errors="replace") as f:
        return f.read()


def incoming_connections(daemon, name):
    """How many connections each incoming migration of `name` that completed
    on daemon used, as its VMM logged them, and the digests it verified."""
    return re.findall(r"incoming migration completed over (\d+) connections?: .* digest "
                      r"([0-9a-f]{32}) verified", vmm_log(daemon, name))


class ParallelCase(ft.MigrationFaultsMixin, ft.DaemonTestCase):
    def start_pair(self, dest_conf="", src_conf=""):
        self.a = self.start_daemon(name="source", extra_conf=src_conf)
        self.b = self.start_daemon(name="destination", extra_conf=dest_conf)

    def start_vm(self, d, name="vm1", memory_mib=128, dirty_rate="8MiB"):
        xml = ft.write_file(d.dir, name + ".xml",
                            ft.domain_xml(name, memory_mib=memory_mib, dirty_rate=dirty_rate))
        ft.virsh(d.tcp_uri, "define", xml)
        ft.virsh(d.tcp_uri, "start", name)

    def check_moved(self, src, dst, n, err, name="vm1"):
        """name moved from src to dst over n connections, its memory verified."""
        self.assertEqual(ft.domstate(dst, name), "running (migrated)", err)
        self.assertEqual(ft.domstate(src, name), "shut off (migrated)")
        s, d = ft.job_stats(src, name), ft.job_stats(dst, name)
        self.assertRegex(s["ferry_digest"], r"^[0-9a-f]{32}$")
        self.assertEqual(s["ferry_digest"], d["ferry_digest"])
        # Every channel's bytes count: at least all of the guest's memory.
        self.assertGreaterEqual(s["memory_processed"], 128 * MIB)
        self.assertEqual(incoming_connections(dst, name)[-1], (str(n), s["ferry_digest"]))

    def two_and_four(self, tunnelled, flags_of):
        """vm2 goes a -> b over 2 channels, vm4 over 4."""
        self.start_pair()
        for n in (2, 4):
            name = f"vm{n}"
            self.start_vm(self.a, name)
            rc, _, err = ft.migrate(self.a, self.b, name, "--live", *flags_of(n),
                                    tunnelled=tunnelled)
            self.assertEqual(rc, 0, err)
            self.check_moved(self.a, self.b, n, err, name)
            self.assertIn(f"migration of domain '{name}': the memory stream runs over {n} "
                          "channels", self.a.log())


class ParallelTest(ParallelCase):
    def test_tunnelled_2_and_4_channels(self):
        self.two_and_four(True, lambda n: ["--parallel-connections", str(n)])
        # Channels 1.. came each on a connection of its own.
        opened = re.findall(r"channel (\d+) of the incoming migration of domain 'vm4' opened by "
                            r"(\S+)", self.b.log())
        self.assertEqual(sorted(int(i) for i, _ in opened), [1, 2, 3])
        self.assertEqual(len(set(peer for _, peer in opened)), 3)

    def test_proxy_2_and_4_channels(self):
        self.two_and_four(False, lambda n: ["--parallel", "--parallel-connections", str(n)])
        accepted = re.findall(r"data connection for the migration of domain 'vm4' from \S+ "
                              r"accepted \(channel (\d+)\)", self.b.log())
        self.assertEqual(sorted(int(i) for i in accepted), [0, 1, 2, 3])

    def test_configured_default_for_tunnelled(self):
        self.start_pair(src_conf="migration_parallel_connections = 3\n")
        self.start_vm(self.a)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live")
        self.assertEqual(rc, 0, err)
        self.check_moved(self.a, self.b, 3, err)

    def test_count_without_parallel_in_proxy_mode_is_refused(self):
        self.start_pair()
        self.start_vm(self.a)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--parallel-connections", "2",
                                tunnelled=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("Turn parallel migration on to tune it", err)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--parallel",
                                "--parallel-connections", "17", tunnelled=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("'parallel.connections' must be an int from 1 to 16", err)
        self.assertRegex(ft.domstate(self.a, "vm1"), r"^running")


    def test_bandwidth_limit_holds_for_the_sum(self):
        """migrate-setspeed 32 MiB/s over 4 channels: 128 MiB take at least
        about 4 s, not the 1 s four channels at 32 MiB/s each would take."""
        self.start_pair()
        self.start_vm(self.a, dirty_rate="0")
        ft.virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", "32")
        started = time.monotonic()
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--parallel-connections", "4")
        took = time.monotonic() - started
        self.assertEqual(rc, 0, err)
        self.check_moved(self.a, self.b, 4, err)
        self.assertGreater(took, 3.0)

    def test_abort_cuts_every_channel(self):
        self.start_pair()
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live", "--parallel-connections", "4")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        ft.virsh(self.a.tcp_uri, "domjobabort", "vm1")
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("operation aborted", err)
        self.check_vm_stayed_on_source()
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--parallel-connections", "2")
        self.assertEqual(rc, 0, err)

    def kill_channel(self, tunnelled, dest_conf, opened, port):
        """Channel 2 of 4 cut mid-way (its source end reset): the migration
        fails naming that channel, the VM stays on the source."""
        self.start_pair(dest_conf)
        self.slow_vm()
        flags = ["--parallel-connections", "4"] if tunnelled else \
            ["--parallel", "--parallel-connections", "4"]
        p = ft.start_migration(self.a, self.b, "vm1", "--live", *flags, tunnelled=tunnelled)
        if not ft.wait_data_processed(self.a, "vm1", 16 * MIB):
            p.kill()
            self.fail("the migration did not get going: " + p.communicate()[1])
        found = re.search(opened, self.b.log())
        self.assertTrue(found, self.b.log()[-3000:])
        port = port or self.b.port  # tunnelled: the destination's RPC port
        subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}", "sport", "=",
                        f":{found.group(1)}"], capture_output=True, timeout=10, check=True)
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.check_vm_stayed_on_source()
        return err

    def test_tunnelled_channel_cut_fails_the_migration_naming_it(self):
        err = self.kill_channel(True, "", r"channel 2 of the incoming migration of domain 'vm1' "
                                          r"opened by 127\.0\.0\.1:(\d+)", None)
        self.assertIn(f"destination ferryd at 127.0.0.1:{self.b.port} (channel 2)", err)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--parallel-connections", "4")
        self.assertEqual(rc, 0, err)

    def test_proxy_channel_cut_fails_the_migration_naming_it(self):
        port = ft.free_port()
        err = self.kill_channel(False, f"migration_port_min = {port}\nmigration_port_max = {port}\n",
                                r"data connection for the migration of domain 'vm1' from "
                                r"127\.0\.0\.1:(\d+) accepted \(channel 2\)", port)
        self.assertIn(f"data connection to the destination ferryd at 127.0.0.1:{port} (channel 2)",
                      err)


    def test_peer_without_the_term_gets_one_stream(self):
        """A destination that never hears the source ask for channels (a relay
        blanks the cookie's <parallel/> term, as a libvirt peer would ignore
        it) answers none: the source keeps one stream on one connection."""
        self.start_pair()
        self.start_vm(self.a)
        relay = CookieRelay(self.b.port)
        try:
            rc, _, err = ft.virsh(self.a.tcp_uri, "migrate", "--live", "--p2p", "--tunnelled",
                                  "--parallel-connections", "4", "vm1",
                                  f"sim+tcp://127.0.0.1:{relay.port}/system", check=False,
                                  timeout=180)
        finally:
            relay.stop()
        self.assertEqual(rc, 0, err)
        self.assertGreaterEqual(relay.blanked, 1)  # the source did ask (prepare, finish)
        self.assertEqual(relay.connections, 1)
        s = ft.job_stats(self.a, "vm1")
        self.assertEqual(incoming_connections(self.b, "vm1")[-1], ("1", s["ferry_digest"]))
        self.assertNotIn("the memory stream runs over", self.a.log())


class CookieRelay:
    """A TCP relay to a destination ferryd that blanks the <parallel .../>
    term of every message from the source (same length, whitespace), and
    counts the connections it relays."""

    TERM = re.compile(rb"<parallel connections='\d+'/>")

    def __init__(self, dest_port):
        self.dest_port = dest_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.blanked = 0
        self.threads = []
        self.socks = []
        self.accepter = threading.Thread(target=self.accept, daemon=True)
        self.accepter.start()

    def accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            d = socket.create_connection(("127.0.0.1", self.dest_port))
            self.socks += [c, d]
            for a, b, rewrite in ((c, d, True), (d, c, False)):
                t = threading.Thread(target=self.pump, args=(a, b, rewrite), daemon=True)
                t.start()
                self.threads.append(t)

    def blank(self, m):
        self.blanked += 1
        return b" " * len(m.group(0))

    def pump(self, a, b, rewrite):
        buf = b""
        try:
            while True:
                chunk = a.recv(1 << 20)
                if not chunk:
                    break
                if not rewrite:
                    b.sendall(chunk)
                    continue
                buf += chunk
                # whole RPC messages (a 4-byte length that counts itself)
                while len(buf) >= 4 and len(buf) >= struct.unpack(">I", buf[:4])[0]:
                    n = struct.unpack(">I", buf[:4])[0]
                    b.sendall(self.TERM.sub(self.blank, buf[:n]))
                    buf = buf[n:]
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.listener.close()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(10)
        for s in self.socks:
            s.close()
        self.accepter.join(10)


class ParallelTlsSaslTest(tls.SaslTestCase):
    """The same over TLS with SASL: every extra connection authenticates with
    the source's credentials and has a TLS session of its own."""

    def move(self, n, tunnelled):
        dest = self.sasl_daemon()
        src = self.start_daemon(extra_conf=f'migration_pki_dir = "{self.pki.client_dir()}"\n',
                                env={"LIBVIRT_AUTH_FILE": self.authfile})
        name = f"vm{n}"
        ft.virsh(src.tcp_uri, "define", ft.write_file(
            src.dir, "v.xml", ft.domain_xml(name, memory_mib=128, dirty_rate="8MiB")))
        ft.virsh(src.tcp_uri, "start", name)
        flags = ["--parallel-connections", str(n)] if tunnelled else \
            ["--tls", "--parallel", "--parallel-connections", str(n)]
        mode = ["--tunnelled"] if tunnelled else []
        duri = f"sim+tls://127.0.0.1:{dest.tls_port}/system"
        rc, _, err = ft.virsh(src.tcp_uri, "migrate", "--live", "--p2p", *mode, *flags, name,
                              duri, check=False, timeout=180)
        self.assertEqual(rc, 0, err)
        local = types.SimpleNamespace(tcp_uri=dest.unix_uri, dir=dest.dir)
        self.assertEqual(ft.domstate(local, name), "running (migrated)")
        digest = ft.job_stats(src, name)["ferry_digest"]
        self.assertEqual(ft.job_stats(local, name)["ferry_digest"], digest)
        self.assertEqual(incoming_connections(dest, name)[-1], (str(n), digest))
        return dest, name

    def test_tunnelled_over_tls_and_sasl_2_and_4_channels(self):
        for n in (2, 4):
            dest, name = self.move(n, True)
            opened = re.findall(rf"channel (\d+) of the incoming migration of domain '{name}' "
                                r"opened by (\S+)", dest.log())
            self.assertEqual(sorted(int(i) for i, _ in opened), list(range(1, n)))
            self.assertEqual(len(set(peer for _, peer in opened)), n - 1)

    def test_proxy_over_tls_2_and_4_channels(self):
        for n in (2, 4):
            dest, name = self.move(n, False)
            accepted = re.findall(rf"data connection for the migration of domain '{name}' from "
                                  r"\S+ accepted \(TLS\) \(channel (\d+)\)", dest.log())
            self.assertEqual(sorted(int(i) for i in accepted), list(range(n)))


if __name__ == "__main__":
    unittest.main()
