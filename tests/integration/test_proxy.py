"""Proxy mode: virsh migrate --live --p2p without --tunnelled. The destination
ferryd relays a data connection of its own to its VMM, the source ferryd
relays its VMM's socket to it (splice, no copy), and every failure names its
hop. Includes a destination in its own network namespace behind a veth pair
that the test creates."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

MIB = 1 << 20


state = ft.domstate


names = ft.domain_names


class ProxyCase(ft.MigrationFaultsMixin, ft.DaemonTestCase):
    def start_pair(self, dest_conf="", src_conf=""):
        self.a = self.start_daemon(name="source", extra_conf=src_conf)
        self.b = self.start_daemon(name="destination", extra_conf=dest_conf)

    def start_vm(self, d, name="vm1", memory_mib=96, dirty_rate=None):
        xml = ft.write_file(d.dir, name + ".xml",
                            ft.domain_xml(name, memory_mib=memory_mib, dirty_rate=dirty_rate))
        ft.virsh(d.tcp_uri, "define", xml)
        ft.virsh(d.tcp_uri, "start", name)


class ProxyTest(ProxyCase):
    def test_virsh_migrate_p2p_without_tunnelled(self):
        self.start_pair()
        self.start_vm(self.a, memory_mib=128, dirty_rate="20MiB")
        uuid_a = ft.virsh(self.a.tcp_uri, "domuuid", "vm1")[1].strip()
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--verbose", tunnelled=False)
        self.assertEqual(rc, 0, err)
        self.assertEqual([int(x) for x in re.findall(r"\[\s*(\d+) %\]", err)][-1], 100)
        self.assertEqual(state(self.b, "vm1"), "running (migrated)")
        self.assertEqual(ft.virsh(self.b.tcp_uri, "domuuid", "vm1")[1].strip(), uuid_a)
        self.assertEqual(state(self.a, "vm1"), "shut off (migrated)")
        src, dst = ft.job_stats(self.a, "vm1"), ft.job_stats(self.b, "vm1")
        self.assertRegex(src["ferry_digest"], r"^[0-9a-f]{32}$")
        self.assertEqual(src["ferry_digest"], dst["ferry_digest"])
        self.assertIn("accepted", self.b.log())  # the data connection went through the relay

    def test_migrate_uri_and_listen_address_are_honoured(self):
        self.start_pair()
        self.start_vm(self.a)
        port = ft.free_port()
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--migrateuri",
                                f"tcp://127.0.0.1:{port}", "--listen-address", "127.0.0.1",
                                tunnelled=False)
        self.assertEqual(rc, 0, err)
        self.assertIn(f"(tcp://127.0.0.1:{port})", self.b.log())  # listened where asked
        self.assertEqual(names(self.b), ["vm1"])

    def test_foreign_connection_to_the_relay_port_is_refused_and_the_migration_goes_on(self):
        port = ft.free_port()
        self.start_pair(f"migration_port_min = {port}\nmigration_port_max = {port}\n")
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live", tunnelled=False)
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 4 * MIB))
        # A stranger (wrong token) knocks on the data port mid-migration.
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"FERRYDC1" + b"0" * 32)
        self.assertEqual(s.recv(1), b"")  # closed without the 0x01 welcome
        s.close()
        ft.virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", "0")
        _, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0, err)
        self.assertIn(f"refused a connection from 127.0.0.1:", self.b.log())
        self.assertIn("does not carry the token of this migration", self.b.log())
        self.assertEqual(state(self.b, "vm1"), "running (migrated)")

    def test_domjobabort_mid_stream(self):
        self.start_pair()
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live", tunnelled=False)
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        start = time.monotonic()
        ft.virsh(self.a.tcp_uri, "domjobabort", "vm1")
        _, err = p.communicate(timeout=60)
        self.assertLess(time.monotonic() - start, 15)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("operation aborted", err)
        self.check_vm_stayed_on_source()

    def test_destination_ferryd_frozen_then_abort(self):
        self.start_pair()
        self.abort_against_frozen_destination(tunnelled=False)

    def test_frozen_destination_stalls_the_source_which_keeps_its_vm(self):
        # The data connection of a stopped peer stays open: only the missing
        # bytes tell (before, the source waited for TCP, about 15 minutes).
        self.start_pair(src_conf="migration_stall_timeout = 2\n")
        # The stall (2 s); the frozen peer is told in the background.
        self.frozen_destination_stalls_the_source(tunnelled=False)
        # Woken, the destination hears the cancel and drops its incoming VM.
        self.assertTrue(ft.wait_for(
            lambda: "dropping the incoming VM of domain 'vm1'" in self.b.log(), 60))
        self.assertTrue(ft.wait_for(lambda: not ft.vmm_pids(self.b), 30))
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", tunnelled=False)
        self.assertEqual(rc, 0, err)

    def test_frozen_source_is_dropped_by_the_destination(self):
        self.start_pair(dest_conf="migration_stall_timeout = 2\n")
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live", tunnelled=False)
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        incoming = ft.vmm_pids(self.b)
        self.a.kill(signal.SIGSTOP)
        try:
            # Stall (2 s), then the grace the source has to cancel (15 s).
            for pid in incoming:
                self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(pid), 40), pid)
            self.assertIn("no data from the source for 2 s", self.b.log())
        finally:
            self.a.kill(signal.SIGCONT)
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.check_vm_stayed_on_source()
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", tunnelled=False)
        self.assertEqual(rc, 0, err)

    def test_data_connection_reset_mid_stream_is_resumed(self):
        """The source's end of the data connection killed (its peer gets a
        reset): the source reconnects with the resume token, both relays
        resend from the other's count, and the guest's memory verifies."""
        port = ft.free_port()
        self.start_pair(f"migration_port_min = {port}\nmigration_port_max = {port}\n")
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live", tunnelled=False)
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}"],
                       capture_output=True, timeout=10, check=True)
        _, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(ft.domstate(self.b, "vm1"), "running (migrated)")
        src, dst = ft.job_stats(self.a, "vm1"), ft.job_stats(self.b, "vm1")
        self.assertEqual(src["ferry_digest"], dst["ferry_digest"])
        self.assertEqual(src.get("ferry_reconnections"), 1, src)
        self.assertEqual(dst.get("ferry_reconnections"), 1, dst)
        self.assertIn("ferry_resent_bytes", src)
        self.assertIn("resumed the data connection to the destination ferryd", self.a.log())

    def test_data_connection_reset_mid_stream_names_the_hop(self):
        port = ft.free_port()
        # Not resumed (migration_resume_timeout 0): the reset fails it.
        self.start_pair(f"migration_port_min = {port}\nmigration_port_max = {port}\n"
                        "migration_resume_timeout = 0\n")
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live", tunnelled=False)
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        # Kill the source's end of the data connection: its peer gets a reset.
        subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}"],
                       capture_output=True, timeout=10, check=True)
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"data connection to the destination ferryd at 127.0.0.1:{port}", err)
        self.assertRegex(err, r"after [\d.]+ MiB sent")
        self.check_vm_stayed_on_source()

    def test_destination_vmm_killed_names_the_destination_hop(self):
        self.start_pair()
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live", tunnelled=False)
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        for pid in ft.vmm_pids(self.b):
            os.kill(pid, signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("destination VMM", err)
        self.check_vm_stayed_on_source()

    def test_destination_ferryd_killed_mid_stream(self):
        self.start_pair()
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live", tunnelled=False)
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        incoming = ft.vmm_pids(self.b)
        self.b.kill(signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("destination ferryd", err)
        self.assertRegex(state(self.a, "vm1"), r"^running")
        self.b.start()
        self.assertNotIn("vm1", names(self.b, "--all"))
        for pid in incoming:
            self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(pid), 5), pid)


class NetnsTest(ProxyCase):
    """The destination is another host: its own network namespace, reached over
    a veth pair with addresses the test picks, shaped with tbf (netem is not in
    this kernel)."""

    def setUp(self):
        super().setUp()
        # a 1 Gbit/s link with a queue: the data really crosses a shaped link
        self.link = ft.ShapedLink("1gbit", octet=213)
        self.ns, self.src_ip, self.dst_ip = self.link.ns, self.link.src_ip, self.link.dst_ip

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.link.remove()

    def run_case(self, tunnelled):
        self.a = self.start_daemon(name="source", host=self.src_ip)
        self.b = self.start_daemon(name="destination", host=self.dst_ip,
                                   prefix=["ip", "netns", "exec", self.ns])
        self.start_vm(self.a, memory_mib=96, dirty_rate="10MiB")
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--verbose", tunnelled=tunnelled)
        self.assertEqual(rc, 0, err)
        progress = [int(x) for x in re.findall(r"\[\s*(\d+) %\]", err)]
        # A new round can step back (freshly dirtied pages); values stay sane and end at 100.
        self.assertTrue(all(0 <= x <= 100 for x in progress), progress)
        self.assertGreaterEqual(len(progress), 2, err)
        self.assertEqual(progress[-1], 100)
        self.assertEqual(state(self.b, "vm1"), "running (migrated)")
        src = ft.job_stats(self.a, "vm1")
        self.assertEqual(src["ferry_digest"], ft.job_stats(self.b, "vm1")["ferry_digest"])
        self.assertGreaterEqual(src["data_processed"], src["memory_total"])
        # Nothing can beat the shaped link: 1 Gbit/s is ~119 MiB/s.
        self.assertLess(src["memory_bps"], 130 * MIB)

    def test_proxy_mode_across_a_veth_link(self):
        self.run_case(tunnelled=False)

    def test_tunnelled_across_a_veth_link(self):
        self.run_case(tunnelled=True)


if __name__ == "__main__":
    unittest.main()
