"""Tunnelled peer-to-peer live migration between two ferryd, driven by the
stock virsh and python3-libvirt: progress, the verified memory digest, the
flag matrix, local and concurrent migrations, and every fault leaving the VM
running on exactly one side with an error that names the cause."""

import os
import re
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

MIB = 1 << 20


state = ft.domstate


names = ft.domain_names


class MigrationCase(ft.DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.a = self.start_daemon(name="source")
        self.b = self.start_daemon(name="destination")

    def start_vm(self, d, name, memory_mib=96, dirty_rate=None, seed=None, uuid=None):
        xml = ft.write_file(d.dir, name + ".xml",
                            ft.domain_xml(name, memory_mib=memory_mib, dirty_rate=dirty_rate,
                                          seed=seed, uuid=uuid))
        ft.virsh(d.tcp_uri, "define", xml)
        ft.virsh(d.tcp_uri, "start", name)

    def assert_runs_only_on(self, here, there, name):
        self.assertIn(name, names(here))
        self.assertNotIn(name, names(there))
        self.assertRegex(state(here, name), r"^running")

    def assert_no_stray_vmm(self, d):
        for pid in ft.vmm_pids(d):
            self.assertFalse(ft.pid_alive(pid) and not names(d), f"stray ferry-vmm {pid}")


class HappyPathTest(MigrationCase):
    def test_virsh_migrate_live_verbose_moves_the_vm(self):
        self.start_vm(self.a, "vm1", memory_mib=128, dirty_rate="20MiB")
        uuid = ft.virsh(self.a.tcp_uri, "domuuid", "vm1")[1].strip()
        fds_a = ft.fd_count(self.a.proc.pid)
        # 128 MiB at 64 MiB/s: long enough for virsh's 500 ms progress polls.
        rc, out, err = ft.migrate(self.a, self.b, "vm1", "--live", "--verbose", "--bandwidth", "64")
        self.assertEqual(rc, 0, err)
        progress = [int(x) for x in re.findall(r"Migration: \[\s*(\d+) %\]", err)]
        self.assertGreaterEqual(len(progress), 2, err)
        self.assertEqual(progress[-1], 100)
        # A new round can step back (freshly dirtied pages); values stay within 0..100.
        self.assertTrue(all(0 <= x <= 100 for x in progress), progress)

        self.assertEqual(state(self.b, "vm1"), "running (migrated)")
        self.assertEqual(ft.virsh(self.b.tcp_uri, "domuuid", "vm1")[1].strip(), uuid)
        self.assertEqual(state(self.a, "vm1"), "shut off (migrated)")  # still defined
        self.assertNotIn("vm1", names(self.a))

        src = ft.job_stats(self.a, "vm1")
        dst = ft.job_stats(self.b, "vm1")
        self.assertEqual(src["type"], 3)  # completed
        self.assertEqual(src["operation"], 5)  # migration out
        self.assertGreaterEqual(src["memory_iteration"], 2)  # the guest dirtied memory
        self.assertGreater(src["data_processed"], 128 * MIB)
        self.assertRegex(src["ferry_digest"], r"^[0-9a-f]{32}$")
        self.assertEqual(dst["ferry_digest"], src["ferry_digest"])
        self.assertIn("downtime", src)
        # The destination's completed job shows what it received (issue 11).
        self.assertEqual(dst["type"], 3)
        self.assertEqual(dst["operation"], 4)  # migration in
        self.assertGreater(dst["data_processed"], 128 * MIB)
        info = ft.virsh(self.b.tcp_uri, "domjobinfo", "--completed", "vm1")[1]
        self.assertRegex(info, r"Data processed:\s+\d+\.\d+ [MG]iB")
        self.assertTrue(ft.wait_for(lambda: ft.fd_count(self.a.proc.pid) <= fds_a, 5))

    def test_destination_vm_holds_the_digest_sent_at_stop_and_copy(self):
        # --suspend keeps the destination paused, so its memory is exactly what arrived.
        self.start_vm(self.a, "vm1", memory_mib=96, dirty_rate="30MiB")
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--suspend")
        self.assertEqual(rc, 0, err)
        self.assertEqual(state(self.b, "vm1"), "paused (migrating)")
        sent = ft.job_stats(self.a, "vm1")["ferry_digest"]
        _, qmp_path = ft.vmm_of(self.b, "vm1")
        self.b.kill(signal.SIGKILL)  # the VMM serves one monitor client: let us in
        q = ft.Qmp(qmp_path)
        try:
            self.assertEqual(q.execute("ferry-query-digest")["digest"], sent)
        finally:
            q.close()
        self.b.start()
        ft.virsh(self.b.tcp_uri, "resume", "vm1")
        self.assertEqual(state(self.b, "vm1"), "running (unpaused)")


class FlagsTest(MigrationCase):
    def test_non_live_migration_pauses_first(self):
        self.start_vm(self.a, "vm1", dirty_rate="30MiB")
        rc, _, err = ft.migrate(self.a, self.b, "vm1")
        self.assertEqual(rc, 0, err)
        src = ft.job_stats(self.a, "vm1")
        self.assertEqual(src["memory_dirty_rate"], 0)  # nothing dirtied: the guest was stopped
        self.assertEqual(state(self.b, "vm1"), "running (migrated)")

    def test_persistent_and_undefinesource(self):
        self.start_vm(self.a, "vm1")
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--persistent", "--undefinesource")
        self.assertEqual(rc, 0, err)
        self.assertRegex(ft.virsh(self.b.tcp_uri, "dominfo", "vm1")[1], r"Persistent:\s+yes")
        self.assertTrue(os.path.exists(os.path.join(self.b.dir, "config", "vm1.xml")))
        self.assertNotIn("vm1", names(self.a, "--all"))
        self.assertFalse(os.path.exists(os.path.join(self.a.dir, "config", "vm1.xml")))

    def test_without_persistent_the_destination_domain_is_transient(self):
        self.start_vm(self.a, "vm1")
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live")
        self.assertEqual(rc, 0, err)
        self.assertRegex(ft.virsh(self.b.tcp_uri, "dominfo", "vm1")[1], r"Persistent:\s+no")
        self.assertIn("vm1", names(self.a, "--all"))
        ft.virsh(self.b.tcp_uri, "destroy", "vm1")
        self.assertNotIn("vm1", names(self.b, "--all"))

    def test_dname_and_xml(self):
        self.start_vm(self.a, "vm1")
        xml = ft.virsh(self.a.tcp_uri, "dumpxml", "--migratable", "vm1")[1]
        xml = xml.replace("<name>vm1</name>", "<name>vm1</name>\n  <description>moved by ferry</description>")
        path = ft.write_file(self.a.dir, "dest.xml", xml)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--dname", "vm2", "--xml", path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(names(self.b), ["vm2"])
        self.assertIn("<description>moved by ferry</description>",
                      ft.virsh(self.b.tcp_uri, "dumpxml", "vm2")[1])

    def test_unsupported_flags_are_refused_by_name(self):
        self.start_vm(self.a, "vm1")
        for flag, text in [("--compressed", "COMPRESSED"), ("--auto-converge", "AUTO_CONVERGE"),
                           ("--postcopy", "POSTCOPY"), ("--copy-storage-all", "NON_SHARED_DISK")]:
            rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", flag)
            self.assertNotEqual(rc, 0, flag)
            self.assertIn(f"argument unsupported: migration flag {text}", err)
        self.assert_runs_only_on(self.a, self.b, "vm1")

    def test_accepted_no_op_flags(self):
        self.start_vm(self.a, "vm1")
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--abort-on-error",
                                "--change-protection", "--unsafe")
        self.assertEqual(rc, 0, err)
        self.assert_runs_only_on(self.b, self.a, "vm1")

    def test_bandwidth_is_enforced_by_the_tunnel(self):
        self.start_vm(self.a, "vm1", memory_mib=64)
        start = time.monotonic()
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--bandwidth", "32")
        self.assertEqual(rc, 0, err)
        # 64 MiB at 32 MiB/s cannot take under ~2 s (only a lower bound is checked).
        self.assertGreaterEqual(time.monotonic() - start, 1.8)
        self.assertLessEqual(ft.job_stats(self.a, "vm1")["memory_bps"], 36 * MIB)

    def test_bandwidth_that_overflows_bytes_is_refused(self):
        # 2^44 MiB/s is 2^64 bytes/s: wrapped, it read as 0 = unlimited (issue 10 item 11).
        self.start_vm(self.a, "vm1")
        too_big = str(1 << 44)
        rc, _, err = ft.virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", too_big, check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn(f"value too large: migration bandwidth {too_big} MiB/s", err)
        self.assertEqual(ft.virsh(self.a.tcp_uri, "migrate-getspeed", "vm1")[1].strip(), "0")
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--bandwidth", too_big)
        self.assertNotEqual(rc, 0)
        self.assertIn(f"value too large: migration bandwidth {too_big} MiB/s", err)
        self.assert_runs_only_on(self.a, self.b, "vm1")

    def test_migrate_setspeed_while_running(self):
        self.start_vm(self.a, "vm1", memory_mib=128)
        ft.virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", "16")
        self.assertEqual(ft.virsh(self.a.tcp_uri, "migrate-getspeed", "vm1")[1].strip(), "16")
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 4 * MIB))
        ft.virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", "0")  # lift the limit mid-way
        _, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0, err)
        self.assert_runs_only_on(self.b, self.a, "vm1")


PY_MIGRATE = r"""
import sys, libvirt
src = libvirt.open(sys.argv[1])
dom = src.lookupByName("vm1")
params = {libvirt.VIR_MIGRATE_PARAM_DEST_NAME: "pyvm", libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 200}
dom.migrateToURI3(sys.argv[2], params, libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER |
                  libvirt.VIR_MIGRATE_TUNNELLED | libvirt.VIR_MIGRATE_PERSIST_DEST)
dst = libvirt.open(sys.argv[2])
d = dst.lookupByName("pyvm")
assert d.state()[0] == libvirt.VIR_DOMAIN_RUNNING, d.state()
assert d.isPersistent() == 1
print("ok")
"""


class OtherClientsTest(MigrationCase):
    def test_python_migrate_to_uri3_with_params(self):
        self.start_vm(self.a, "vm1")
        p = subprocess.run(["/usr/bin/python3", "-c", PY_MIGRATE, self.a.tcp_uri, self.b.tcp_uri],
                           capture_output=True, text=True, timeout=180)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "ok")

    def test_local_migration_to_the_same_daemon(self):
        self.start_vm(self.a, "vm1", dirty_rate="10MiB")
        uuid = ft.virsh(self.a.tcp_uri, "domuuid", "vm1")[1].strip()
        old_pid, _ = ft.vmm_of(self.a, "vm1")
        p = subprocess.Popen(["virsh", "-c", self.a.tcp_uri, "migrate", "--live", "--p2p",
                              "--tunnelled", "vm1", self.a.tcp_uri],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = set()
        while p.poll() is None:  # the UUID is never listed twice, even mid-way
            listing = ft.virsh(self.a.tcp_uri, "list", "--all", "--uuid")[1].split()
            self.assertEqual(listing.count(uuid), 1, listing)
            seen.add(len(ft.instance_files(self.a)))
            time.sleep(0.05)
        self.assertEqual(p.returncode, 0, p.stderr.read())
        self.assertEqual(names(self.a), ["vm1"])
        self.assertEqual(state(self.a, "vm1"), "running (migrated)")
        new_pid, _ = ft.vmm_of(self.a, "vm1")
        self.assertNotEqual(new_pid, old_pid)
        self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(old_pid), 5))
        self.assertIn(2, seen)  # both instances coexisted

    def test_four_concurrent_migrations(self):
        for i in range(4):
            self.start_vm(self.a, f"vm{i}", memory_mib=48, dirty_rate="5MiB")
        procs = [ft.start_migration(self.a, self.b, f"vm{i}", "--live") for i in range(4)]
        for p in procs:
            _, err = p.communicate(timeout=300)
            self.assertEqual(p.returncode, 0, err)
        self.assertEqual(sorted(names(self.b)), [f"vm{i}" for i in range(4)])
        self.assertEqual(names(self.a), [])


class StallTest(ft.MigrationFaultsMixin, MigrationCase):
    def setUp(self):
        ft.DaemonTestCase.setUp(self)
        self.a = self.start_daemon(name="source", extra_conf="migration_stall_timeout = 2\n")
        self.b = self.start_daemon(name="destination")

    def test_frozen_destination_stalls_the_tunnel_before_keepalive_notices(self):
        # Keepalive would take 30 s (5 s x 5); the stall timeout is 2 s here.
        self.frozen_destination_stalls_the_source(tunnelled=True)


class FaultsTest(ft.MigrationFaultsMixin, MigrationCase):
    def test_domjobabort_mid_stream(self):
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        start = time.monotonic()
        ft.virsh(self.a.tcp_uri, "domjobabort", "vm1")
        _, err = p.communicate(timeout=60)
        self.assertLess(time.monotonic() - start, 15)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("operation aborted", err)
        self.check_vm_stayed_on_source()
        self.assertEqual(ft.job_stats(self.a, "vm1")["type"], 5)  # cancelled
        # and it can migrate again afterwards
        ft.virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", "0")
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live")
        self.assertEqual(rc, 0, err)

    def test_domjobabort_right_after_start(self):
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        ft.wait_for(lambda: "Job type:         Unbounded" in
                    ft.virsh(self.a.tcp_uri, "domjobinfo", "vm1", check=False)[1], 30, 0.02)
        ft.virsh(self.a.tcp_uri, "domjobabort", "vm1", check=False)
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.check_vm_stayed_on_source()

    def test_domjobabort_without_a_job(self):
        self.start_vm(self.a, "vm1")
        rc, _, err = ft.virsh(self.a.tcp_uri, "domjobabort", "vm1", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("no job is active on the domain", err)

    def test_destination_ferryd_killed_mid_stream(self):
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        incoming = ft.vmm_pids(self.b)
        self.b.kill(signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"destination ferryd at 127.0.0.1:{self.b.port} closed after", err)
        self.assertRegex(err, r"closed after [\d.]+ MiB sent")
        self.assertRegex(state(self.a, "vm1"), r"^running")
        self.b.start()  # the restarted destination drops the orphaned incoming VM
        self.assertNotIn("vm1", names(self.b, "--all"))
        for pid in incoming:
            self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(pid), 5), pid)

    def test_destination_ferryd_frozen_then_abort(self):
        self.abort_against_frozen_destination(tunnelled=True)

    def test_domjobabort_while_a_frozen_destination_holds_prepare(self):
        # The calls before the stream (open, prepare) wait up to 30 s on a stuck
        # peer; abort does not wait for them.
        self.start_vm(self.a, "vm1")
        self.b.kill(signal.SIGSTOP)
        try:
            p = ft.start_migration(self.a, self.b, "vm1", "--live")
            self.assertTrue(ft.wait_for(lambda: "Unbounded" in ft.virsh(
                self.a.tcp_uri, "domjobinfo", "vm1", check=False)[1], 20))
            ft.virsh(self.a.tcp_uri, "domjobabort", "vm1")
            aborted = time.monotonic()
            _, err = p.communicate(timeout=60)
            self.assertLess(time.monotonic() - aborted, 2.5)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("operation aborted", err)
            self.assertEqual(state(self.a, "vm1"), "running (migration canceled)")
        finally:
            self.b.kill(signal.SIGCONT)
        # Woken, the destination prepares (the calls were queued) and is told at
        # once to drop it again.
        self.assertTrue(ft.wait_for(
            lambda: "dropping the incoming VM of domain 'vm1': the source canceled" in self.b.log(),
            60), self.b.log())
        self.assertTrue(ft.wait_for(lambda: not ft.vmm_pids(self.b), 30))
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live")
        self.assertEqual(rc, 0, err)
        self.assert_runs_only_on(self.b, self.a, "vm1")

    def test_destination_vmm_killed_mid_stream(self):
        self.slow_vm()
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 16 * MIB))
        for pid in ft.vmm_pids(self.b):
            os.kill(pid, signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("destination VMM", err)
        self.check_vm_stayed_on_source()

    def test_prepare_refused_when_the_name_runs_there(self):
        self.start_vm(self.a, "vm1")
        self.start_vm(self.b, "vm1")  # another VM with that name (another UUID)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live")
        self.assertNotEqual(rc, 0)
        self.assertIn("migration failed in prepare phase: the destination refused:", err)
        self.assertIn("vm1", err)
        self.assertRegex(state(self.a, "vm1"), r"^running")
        self.assertEqual(len(ft.vmm_pids(self.b)), 1)

    def test_killing_virsh_does_not_stop_a_p2p_migration(self):
        self.start_vm(self.a, "vm1", memory_mib=128)
        ft.virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", "48")
        p = ft.start_migration(self.a, self.b, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 8 * MIB))
        p.kill()
        p.communicate()
        self.assertTrue(ft.wait_for(lambda: "vm1" in names(self.b), 60))
        self.assertEqual(state(self.a, "vm1"), "shut off (migrated)")


if __name__ == "__main__":
    unittest.main()
