"""The migration knobs libvirt users reach for, on sim domains (ferry-vmm):
migrate-setmaxdowntime / migrate-getmaxdowntime read back from the VMM,
--timeout N --timeout-suspend (virsh pauses the guest mid-migration, which
then completes), the keepalive of the connection to the destination
(migration_keepalive_interval / _count, qemu.conf's keepalive_* under
their own names), and what ferry-vmm cannot do refused by name:
--auto-converge, --compressed, migrate-compcache, post-copy. QEMU's side of
the knobs is in test_qemu_migration.py."""

import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

state = ft.domstate
names = ft.domain_names


class KnobsTest(ft.DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.a = self.start_daemon(name="source")
        self.b = self.start_daemon(name="destination")

    def start_vm(self, name="vm1", memory_mib=64, dirty_rate=None):
        xml = ft.write_file(self.a.dir, name + ".xml",
                            ft.domain_xml(name, memory_mib=memory_mib, dirty_rate=dirty_rate))
        ft.virsh(self.a.tcp_uri, "define", xml)
        ft.virsh(self.a.tcp_uri, "start", name)

    def test_max_downtime_is_the_vmms(self):
        self.start_vm()
        self.assertEqual(ft.virsh(self.a.tcp_uri, "migrate-getmaxdowntime", "vm1")[1].strip(), "300")
        ft.virsh(self.a.tcp_uri, "migrate-setmaxdowntime", "vm1", "750")
        self.assertEqual(ft.virsh(self.a.tcp_uri, "migrate-getmaxdowntime", "vm1")[1].strip(), "750")
        rc, _, err = ft.virsh(self.a.tcp_uri, "migrate-setmaxdowntime", "vm1", "3000000",
                              check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("out of range", err)
        ft.virsh(self.a.tcp_uri, "destroy", "vm1")
        rc, _, err = ft.virsh(self.a.tcp_uri, "migrate-getmaxdowntime", "vm1", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("domain is not running", err)

    def test_what_ferry_vmm_cannot_do_is_refused_by_name(self):
        self.start_vm()
        for p2p in ((), ("--p2p",)):
            for flags, named in ((("--auto-converge",), "AUTO_CONVERGE is not supported by ferry-vmm"),
                                 (("--compressed",), "COMPRESSED is not supported by ferry-vmm"),
                                 (("--postcopy",), "POSTCOPY is not supported by ferry-vmm"),
                                 (("--postcopy-bandwidth", "5"),
                                  "'bandwidth.postcopy' is not supported by ferry-vmm")):
                rc, _, err = ft.virsh(self.a.tcp_uri, "migrate", "--live", *p2p, *flags, "vm1",
                                      self.b.tcp_uri, check=False)
                self.assertNotEqual(rc, 0, flags)
                self.assertIn(named, err)
        # A tuning parameter without its flag: libvirt's words.
        rc, _, err = ft.virsh(self.a.tcp_uri, "migrate", "--live", "--p2p", "--auto-converge-initial",
                              "30", "vm1", self.b.tcp_uri, check=False)
        self.assertIn("Turn auto convergence on to tune it", err)
        for args in (("migrate-compcache", "vm1"), ("migrate-compcache", "vm1", "--size", "1048576")):
            rc, _, err = ft.virsh(self.a.tcp_uri, *args, check=False)
            self.assertNotEqual(rc, 0)
            self.assertIn("ferry-vmm does not compress migration data", err)
        rc, _, err = ft.virsh(self.a.tcp_uri, "migrate-postcopy", "vm1", check=False)
        self.assertIn("post-copy can only be started while outgoing migration is in progress", err)
        rc, _, err = ft.virsh(self.a.tcp_uri, "domjobabort", "--postcopy", "vm1", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("current job is not outgoing migration in post-copy mode", err)
        rc, _, err = ft.virsh(self.a.tcp_uri, "migrate", "--live", "--p2p", "--postcopy",
                              "--timeout", "1", "--timeout-postcopy", "vm1", self.b.tcp_uri,
                              check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("POSTCOPY", err)
        self.assertEqual(state(self.a, "vm1"), "running (booted)")
        self.assertEqual(names(self.b, "--all"), [])

    def test_timeout_suspend_pauses_the_guest_and_the_migration_completes(self):
        """virsh migrate --timeout N --timeout-suspend: virsh pauses the guest
        N s into the migration (DOMAIN_SUSPEND during the job: paused,
        reason migrating) and the now-converging migration completes."""
        # 256 MiB at 24 MiB/s: about 10 s of stream; virsh pauses the guest after 3 s.
        self.start_vm(memory_mib=256, dirty_rate="4MiB")
        ft.virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", "24")
        p = subprocess.Popen(["virsh", "-c", self.a.tcp_uri, "migrate", "--live", "--p2p",
                              "--timeout", "3", "--timeout-suspend", "--abort-on-error", "vm1",
                              self.b.tcp_uri],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.assertTrue(ft.wait_for(lambda: state(self.a, "vm1") == "paused (migrating)", 30),
                            state(self.a, "vm1"))
            _, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.assertEqual(p.returncode, 0, err)
        # Paused by the timeout, not asked to arrive paused: it runs there.
        self.assertEqual(state(self.b, "vm1"), "running (migrated)")
        self.assertEqual(state(self.a, "vm1"), "shut off (migrated)")

    def test_migration_keepalive_drops_a_frozen_destination(self):
        """migration_keepalive_interval = 1, _count = 1 on a source: a
        destination frozen mid-stream (proxy mode: the RPC connection is
        idle meanwhile) is dropped after about 2 s of silence, before the
        10 s migration_stall_timeout, naming the one unanswered PING."""
        a = self.start_daemon(name="source-ka", extra_conf="migration_keepalive_interval = 1\n"
                                                          "migration_keepalive_count = 1\n")
        xml = ft.write_file(a.dir, "vm1.xml", ft.domain_xml("vm1", memory_mib=256,
                                                              dirty_rate="4MiB"))
        ft.virsh(a.tcp_uri, "define", xml)
        ft.virsh(a.tcp_uri, "start", "vm1")
        ft.virsh(a.tcp_uri, "migrate-setspeed", "vm1", "8")
        p = ft.start_migration(a, self.b, "vm1", "--live", tunnelled=False)
        try:
            self.assertTrue(ft.wait_data_processed(a, "vm1", 4 << 20, timeout=60))
            self.b.kill(signal.SIGSTOP)
            frozen = time.monotonic()
            _, err = p.communicate(timeout=60)
            failed = time.monotonic() - frozen
        finally:
            self.b.kill(signal.SIGCONT)
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("keepalive timeout: no answer to 1 pings", a.log())
        # The control connection's loss is the cause, not the data
        # connection's own timeout that follows it seconds later; a frozen
        # peer is not waited for even where proxy mode would resume.
        self.assertIn("the connection to the destination ferryd", err)
        self.assertIn("keepalive timeout: no answer to 1 pings", err)
        self.assertLess(failed, 9, err)
        self.assertTrue(ft.wait_for(lambda: state(a, "vm1").startswith("running"), 15))


if __name__ == "__main__":
    unittest.main(verbosity=2)
