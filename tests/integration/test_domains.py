"""Domains on ferry-vmm, managed with the stock virsh and python3-libvirt:
lifecycle, errors, events, a daemon restart that leaves VMs running, a VMM
that dies, autostart and guest shutdown."""

import os
import signal
import subprocess
import sys
import time
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402


state = ft.domstate


class VirshLifecycleTest(ft.DaemonTestCase):
    def test_define_start_query_suspend_resume_destroy_undefine(self):
        d = self.start_daemon()
        uri = d.tcp_uri
        xml = ft.write_file(d.dir, "vm1.xml", ft.domain_xml("vm1", memory_mib=64, vcpus=2,
                                                            dirty_rate="4MiB"))
        ft.virsh(uri, "define", xml)
        self.assertRegex(ft.virsh(uri, "list", "--all")[1], r"-\s+vm1\s+shut off")
        self.assertEqual(state(d, "vm1"), "shut off (unknown)")

        ft.virsh(uri, "start", "vm1")
        self.assertRegex(ft.virsh(uri, "list")[1], r"1\s+vm1\s+running")
        self.assertEqual(state(d, "vm1"), "running (booted)")
        info = ft.virsh(uri, "dominfo", "vm1")[1]
        self.assertRegex(info, r"State:\s+running")
        self.assertRegex(info, r"CPU\(s\):\s+2")
        self.assertRegex(info, r"Max memory:\s+65536 KiB")
        self.assertRegex(info, r"Persistent:\s+yes")
        pid, _ = ft.vmm_of(d, "vm1")
        self.assertTrue(ft.pid_alive(pid))

        ft.virsh(uri, "suspend", "vm1")
        self.assertEqual(state(d, "vm1"), "paused (user)")
        self.assertRegex(ft.virsh(uri, "list", "--all")[1], r"vm1\s+paused")
        ft.virsh(uri, "resume", "vm1")
        self.assertEqual(state(d, "vm1"), "running (unpaused)")

        ft.virsh(uri, "destroy", "vm1")
        self.assertEqual(state(d, "vm1"), "shut off (destroyed)")
        self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(pid), 5))
        ft.virsh(uri, "undefine", "vm1")
        self.assertNotIn("vm1", ft.virsh(uri, "list", "--all")[1])
        self.assertFalse(os.path.exists(os.path.join(d.dir, "config", "vm1.xml")))

    def test_dumpxml_round_trips_through_define(self):
        d = self.start_daemon()
        uri = d.tcp_uri
        xml = ft.write_file(d.dir, "vm1.xml", ft.domain_xml("vm1", dirty_rate="1MiB", seed=7))
        ft.virsh(uri, "define", xml)
        first = ft.virsh(uri, "dumpxml", "vm1")[1]
        again = ft.write_file(d.dir, "again.xml", first)
        ft.virsh(uri, "define", again)
        self.assertEqual(ft.virsh(uri, "dumpxml", "vm1")[1], first)
        root = ET.fromstring(first)
        wl = root.find("metadata/{http://ferry.dev/xmlns/domain/1}workload")
        self.assertEqual(wl.get("dirty-rate"), "1MiB")
        self.assertEqual(wl.get("seed"), "7")

    def test_create_transient_domain(self):
        d = self.start_daemon()
        uri = d.tcp_uri
        xml = ft.write_file(d.dir, "t.xml", ft.domain_xml("tvm"))
        ft.virsh(uri, "create", xml)
        self.assertRegex(ft.virsh(uri, "list")[1], r"\d+\s+tvm\s+running")
        self.assertRegex(ft.virsh(uri, "dominfo", "tvm")[1], r"Persistent:\s+no")
        ft.virsh(uri, "destroy", "tvm")
        self.assertNotIn("tvm", ft.virsh(uri, "list", "--all")[1])

    def test_guest_shutdown(self):
        d = self.start_daemon()
        uri = d.tcp_uri
        ft.virsh(uri, "define", ft.write_file(d.dir, "v.xml", ft.domain_xml("vm1")))
        ft.virsh(uri, "start", "vm1")
        ft.virsh(uri, "shutdown", "vm1")
        self.assertTrue(ft.wait_for(lambda: state(d, "vm1") == "shut off (shutdown)", 10),
                        state(d, "vm1"))


class ErrorsTest(ft.DaemonTestCase):
    def expect_error(self, d, args, text):
        rc, _, err = ft.virsh(d.tcp_uri, *args, check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn(text, err)

    def test_errors_libvirt_users_expect(self):
        d = self.start_daemon()
        bad = ft.write_file(d.dir, "bad.xml", "<domain type='sim'><name>x</name>")
        self.expect_error(d, ["define", bad], "XML error:")
        nomem = ft.write_file(d.dir, "nomem.xml",
                              "<domain type='sim'><name>x</name><os><type>hvm</type></os></domain>")
        self.expect_error(d, ["define", nomem], "memory")

        u1, u2 = "11111111-2222-3333-4444-555555555555", "11111111-2222-3333-4444-666666666666"
        ft.virsh(d.tcp_uri, "define", ft.write_file(d.dir, "a.xml", ft.domain_xml("vm1", uuid=u1)))
        self.expect_error(d, ["define", ft.write_file(d.dir, "b.xml", ft.domain_xml("vm1", uuid=u2))],
                          f"operation failed: domain 'vm1' already exists with uuid {u1}")
        self.expect_error(d, ["define", ft.write_file(d.dir, "c.xml", ft.domain_xml("vm2", uuid=u1))],
                          f"operation failed: domain 'vm1' is already defined with uuid {u1}")

        ft.virsh(d.tcp_uri, "start", "vm1")
        # virsh refuses "start" of an active domain itself; ask the daemon directly.
        p = subprocess.run(["/usr/bin/python3", "-c",
                            "import sys, libvirt\n"
                            "try:\n  libvirt.open(sys.argv[1]).lookupByName('vm1').create()\n"
                            "except libvirt.libvirtError as e:\n  print(e.get_error_code(), e)",
                            d.tcp_uri], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.stdout.strip(),
                         "55 Requested operation is not valid: domain is already running")
        self.expect_error(d, ["undefine", "nope"], "failed to get domain 'nope'")
        p = subprocess.run(["/usr/bin/python3", "-c",
                            "import sys, libvirt\n"
                            "try:\n  libvirt.open(sys.argv[1]).lookupByName('nope')\n"
                            "except libvirt.libvirtError as e:\n  print(e.get_error_code(), e)",
                            d.tcp_uri], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.stdout.strip(), "42 Domain not found: no domain with matching name 'nope'")
        ft.virsh(d.tcp_uri, "destroy", "vm1")
        self.expect_error(d, ["destroy", "vm1"], "Requested operation is not valid: domain is not running")
        self.expect_error(d, ["suspend", "vm1"], "domain is not running")

    def test_vmm_that_cannot_start_gives_its_reason(self):
        d = self.start_daemon()
        ft.virsh(d.tcp_uri, "define", ft.write_file(d.dir, "big.xml",
                                                    ft.domain_xml("big", memory_mib=64, vcpus=999)))
        rc, _, err = ft.virsh(d.tcp_uri, "start", "big", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("failed to start", err)
        self.assertIn("vcpus", err)
        self.assertEqual(state(d, "big"), "shut off (failed)")


    def test_vmm_slow_to_start_is_waited_for_while_it_works(self):
        """A VMM that takes longer than the monitor wait (20 s) to start, as
        a large guest does while the kernel zeroes its memory on a loaded
        host, is waited for while its CPU time grows; one that sits still
        as long fails after the 20 s, naming the start."""
        d = self.start_daemon(env={"FERRY_TEST_BUSY": "vmm-start:24000"})
        ft.virsh(d.tcp_uri, "define", ft.write_file(d.dir, "slow.xml",
                                                    ft.domain_xml("slow", memory_mib=64)))
        start = time.monotonic()
        ft.virsh(d.tcp_uri, "start", "slow")
        self.assertGreater(time.monotonic() - start, 23)
        self.assertEqual(state(d, "slow"), "running (booted)")
        ft.virsh(d.tcp_uri, "destroy", "slow")

        stuck = self.start_daemon(name="stuck", env={"FERRY_TEST_PAUSE": "vmm-start:40000"})
        ft.virsh(stuck.tcp_uri, "define", ft.write_file(stuck.dir, "slow.xml",
                                                        ft.domain_xml("slow", memory_mib=64)))
        start = time.monotonic()
        rc, _, err = ft.virsh(stuck.tcp_uri, "start", "slow", check=False)
        took = time.monotonic() - start
        self.assertNotEqual(rc, 0)
        self.assertIn("failed to start", err)
        self.assertGreater(took, 19)
        self.assertLess(took, 35)


class VmmLogTest(ft.DaemonTestCase):
    def test_logs_by_domain_appended_over_starts_and_rotated_by_size(self):
        """Each domain's VMM logs to LOG_DIR/NAME.log (not one file per
        instance in the run dir): every start appends to it, the daemon notes
        why each instance ended, and once it reaches vmm_log_max_size it is
        rotated at the next start, keeping vmm_log_max_backups old files."""
        max_size = 1500
        d = self.start_daemon(extra_conf=f"vmm_log_max_size = {max_size}\nvmm_log_max_backups = 2\n")
        uri = d.tcp_uri
        ft.virsh(uri, "define", ft.write_file(d.dir, "lg.xml", ft.domain_xml("lg", memory_mib=16)))
        log = os.path.join(d.dir, "log", "lg.log")

        def read(path):
            with open(path) as f:
                return f.read()

        def run_once():
            ft.virsh(uri, "start", "lg")
            pid, _ = ft.vmm_of(d, "lg")
            ft.virsh(uri, "destroy", "lg")
            return pid

        pids = [run_once(), run_once()]
        text = read(log)
        self.assertEqual(text.count("shutting down, reason=destroyed"), 2, text)
        self.assertEqual(text.count("VM 'lg'"), 2, text)  # ferry-vmm's own lines, both runs
        self.assertEqual(os.stat(os.path.join(d.dir, "log")).st_mode & 0o777, 0o700)
        for i in range(40):
            if os.path.exists(log + ".1") and os.path.getsize(log) >= max_size:
                break
            pids.append(run_once())
        self.assertTrue(os.path.exists(log + ".1"), os.listdir(os.path.dirname(log)))
        # Rotated at a start once full: the old files hold whole runs and
        # are bounded by the limit plus one run's lines.
        for old in (log + ".0", log + ".1"):
            size = os.path.getsize(old)
            self.assertGreaterEqual(size, max_size)
            self.assertLess(size, 2 * max_size)
            self.assertTrue(read(old).rstrip().endswith("shutting down, reason=destroyed"), read(old))
        newest = read(log + ".0")
        run_once()  # the full lg.log rotates: .1 dropped, .0 -> .1
        self.assertEqual(read(log + ".1"), newest)
        self.assertEqual(sorted(f for f in os.listdir(os.path.dirname(log)) if f.startswith("lg.")),
                         ["lg.log", "lg.log.0", "lg.log.1"])
        self.assertEqual(read(log).count("shutting down"), 1)
        # Nothing per instance is left in the run dir.
        self.assertEqual([f for f in os.listdir(os.path.join(d.dir, "run")) if f.endswith(".log")], [])
        # A VMM that is killed is reported crashed; its log says so.
        ft.virsh(uri, "start", "lg")
        pid, _ = ft.vmm_of(d, "lg")
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(ft.wait_for(lambda: state(d, "lg") == "shut off (crashed)", 10))
        self.assertTrue(read(log).rstrip().endswith("shutting down, reason=crashed"))


PY_LIFECYCLE = r"""
import sys, libvirt
conn = libvirt.open(sys.argv[1])
xml = open(sys.argv[2]).read()
dom = conn.defineXML(xml)
assert dom.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF
dom.create()
assert dom.isActive() == 1 and dom.ID() > 0, dom.ID()
assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED], dom.state()
dom.suspend()
assert dom.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER]
dom.resume()
assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
assert "<name>pyvm</name>" in dom.XMLDesc(0)
assert [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)] == ["pyvm"]
dom.destroy()
assert dom.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED]
assert [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE)] == ["pyvm"]
dom.undefine()
t = conn.createXML(xml.replace("pyvm", "pytransient"), 0)
assert t.isPersistent() == 0
t.destroy()
try:
    conn.lookupByName("pytransient")
    raise SystemExit("transient domain still there")
except libvirt.libvirtError as e:
    assert e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN, e.get_error_code()
print("ok")
"""


class PythonLifecycleTest(ft.DaemonTestCase):
    def test_python_libvirt_lifecycle(self):
        d = self.start_daemon()
        xml = ft.write_file(d.dir, "py.xml", ft.domain_xml("pyvm"))
        p = subprocess.run(["/usr/bin/python3", "-c", PY_LIFECYCLE, d.tcp_uri, xml],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        self.assertEqual(p.stdout.strip(), "ok")


class EventsTest(ft.DaemonTestCase):
    def test_virsh_event_loop_sees_the_lifecycle(self):
        d = self.start_daemon()
        env = dict(os.environ)
        env.pop("LIBVIRT_DEFAULT_URI", None)
        ev = subprocess.Popen(["virsh", "-c", d.tcp_uri, "event", "--loop", "--all", "--timeout", "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            time.sleep(1.5)  # let it register its callbacks
            ft.virsh(d.tcp_uri, "define", ft.write_file(d.dir, "v.xml", ft.domain_xml("vm1")))
            ft.virsh(d.tcp_uri, "start", "vm1")
            ft.virsh(d.tcp_uri, "suspend", "vm1")
            ft.virsh(d.tcp_uri, "resume", "vm1")
            ft.virsh(d.tcp_uri, "destroy", "vm1")
            ft.virsh(d.tcp_uri, "undefine", "vm1")
            time.sleep(1)
        finally:
            ev.send_signal(signal.SIGINT)
            out, err = ev.communicate(timeout=30)
        expected = ["Defined Added", "Started Booted", "Suspended Paused", "Resumed Unpaused",
                    "Stopped Destroyed", "Undefined Removed"]
        lines = [l for l in out.splitlines() if "event 'lifecycle' for domain 'vm1'" in l]
        self.assertEqual([l.split(": ", 1)[1] for l in lines], expected, out + err)


class SurvivalTest(ft.DaemonTestCase):
    def test_vm_survives_kill_9_and_restart_of_ferryd(self):
        d = self.start_daemon()
        ft.virsh(d.tcp_uri, "define", ft.write_file(d.dir, "v.xml", ft.domain_xml("vm1", seed=5)))
        ft.virsh(d.tcp_uri, "start", "vm1")
        pid, qmp_path = ft.vmm_of(d, "vm1")

        def digest():
            # The VMM serves one monitor client at a time: ask while ferryd is away.
            q = ft.Qmp(qmp_path)
            try:
                return q.execute("ferry-query-digest")["digest"]
            finally:
                q.close()

        d.kill(signal.SIGKILL)
        self.assertTrue(ft.pid_alive(pid))
        before = digest()
        d.start()
        self.assertEqual(state(d, "vm1"), "running (booted)")
        self.assertRegex(ft.virsh(d.tcp_uri, "list")[1], r"1\s+vm1\s+running")
        self.assertEqual(ft.vmm_of(d, "vm1")[0], pid)
        d.kill(signal.SIGKILL)
        self.assertEqual(digest(), before)
        d.start()
        self.assertEqual(state(d, "vm1"), "running (booted)")
        # Still managed as before.
        ft.virsh(d.tcp_uri, "suspend", "vm1")
        self.assertEqual(state(d, "vm1"), "paused (user)")

        # And across an orderly restart too.
        self.assertEqual(d.stop(), 0)
        self.assertTrue(ft.pid_alive(pid))
        d.start()
        self.assertEqual(state(d, "vm1"), "paused (user)")
        ft.virsh(d.tcp_uri, "destroy", "vm1")
        self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(pid), 5))

    def test_killed_vmm_shows_shut_off_crashed_within_a_second(self):
        d = self.start_daemon()
        ft.virsh(d.tcp_uri, "define", ft.write_file(d.dir, "v.xml", ft.domain_xml("vm1")))
        ft.virsh(d.tcp_uri, "start", "vm1")
        pid, _ = ft.vmm_of(d, "vm1")
        os.kill(pid, signal.SIGKILL)
        start = time.monotonic()
        self.assertTrue(ft.wait_for(lambda: state(d, "vm1") == "shut off (crashed)", 5), state(d, "vm1"))
        self.assertLess(time.monotonic() - start, 1.5)
        ft.virsh(d.tcp_uri, "start", "vm1")  # and it can be started again
        self.assertEqual(state(d, "vm1"), "running (booted)")
        ft.virsh(d.tcp_uri, "destroy", "vm1")

    def test_vmm_that_died_while_ferryd_was_down_is_shut_off_crashed(self):
        d = self.start_daemon()
        ft.virsh(d.tcp_uri, "define", ft.write_file(d.dir, "v.xml", ft.domain_xml("vm1")))
        ft.virsh(d.tcp_uri, "start", "vm1")
        pid, _ = ft.vmm_of(d, "vm1")
        d.kill(signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        ft.wait_for(lambda: not ft.pid_alive(pid), 5)
        d.start()
        self.assertEqual(state(d, "vm1"), "shut off (crashed)")

    def test_autostart_domains_start_with_the_daemon(self):
        d = self.start_daemon()
        ft.virsh(d.tcp_uri, "define", ft.write_file(d.dir, "v.xml", ft.domain_xml("vm1")))
        ft.virsh(d.tcp_uri, "autostart", "vm1")
        self.assertRegex(ft.virsh(d.tcp_uri, "dominfo", "vm1")[1], r"Autostart:\s+enable")
        self.assertEqual(d.stop(), 0)
        d.start()
        self.assertEqual(state(d, "vm1"), "running (booted)")
        ft.virsh(d.tcp_uri, "destroy", "vm1")


if __name__ == "__main__":
    unittest.main()
