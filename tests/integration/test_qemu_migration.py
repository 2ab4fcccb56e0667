"""QEMU domains migrated between two ferryd with the stock virsh, the project's
test guest (tests/guest/) proving after every move that all its memory arrived:
tunnelled over TLS+SASL, proxy mode with and without --tls, a local migration
(two QEMU of one domain on one host), domjobabort mid-way, bandwidth, and the
flags ferry does not carry yet refused by name; ferry-probe measuring the
guest's dirty rate through QEMU.

Each destination writes the guest's console to a file of its own (the XML
given with --xml), so a verification pass that begins and ends in that file
checked every page after the move."""

import glob
import json
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import guest  # noqa: E402
from test_tls_sasl import SaslTestCase  # noqa: E402

NAME = "mg"
BOOT_TIMEOUT = 240  # a TCG boot and the workload's fill on two shared, loaded cores
VERIFY_TIMEOUT = 180
TRACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tools/ferry-trace")


class QemuMigrationCase(SaslTestCase):
    """Two SASL daemons and the test guest; no tests of its own (the QEMU
    migration modes of test_qemu_modes.py share it)."""

    def daemon(self, name):
        """A ferryd taking TLS and TCP clients with SASL, able to authenticate
        to its peer (LIBVIRT_AUTH_FILE) and with a certificate for --tls data."""
        d = self.tls_daemon(extra=f'auth_tls = "sasl"\nauth_tcp = "sasl"\n'
                                  f'migration_pki_dir = "{self.pki.client_dir()}"\n',
                            env={"SASL_CONF_PATH": self.sasl_dir, "LIBVIRT_AUTH_FILE": self.authfile})
        d.name = name
        return d

    def local(self, d):
        return f"qemu+unix:///system?socket={d.sock}"

    def tls(self, d):
        """The peer's URI as the source daemon uses it (its client files are
        its own migration_pki_dir: a client may not name files)."""
        return f"qemu+tls://127.0.0.1:{d.tls_port}/system"

    def tcp(self, d):
        return f"qemu+tcp://127.0.0.1:{d.port}/system"

    def dest_xml(self, src, dst, log):
        """The domain's migratable XML with the console in a file of the destination's."""
        xml = ft.virsh(self.local(src), "dumpxml", "--migratable", NAME)[1]
        xml = xml.replace(self.console, log)
        self.console = log
        return ft.write_file(dst.dir, os.path.basename(log) + ".xml", xml)

    def migrate(self, src, dst, duri, log, *flags, check=True):
        xml = self.dest_xml(src, dst, log)
        env = {"LIBVIRT_AUTH_FILE": self.authfile}
        rc, out, err = self.virsh_env(self.local(src), "migrate", "--live", "--p2p", *flags, "--xml", xml,
                                      NAME, duri, env=env)
        if check:
            self.assertEqual(rc, 0, err + src.log()[-3000:] + dst.log()[-3000:])
        return rc, out, err

    def virsh_env(self, uri, *args, env=None, timeout=300):
        e = dict(os.environ)
        e.pop("LIBVIRT_DEFAULT_URI", None)
        e.update(env or {})
        p = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=timeout,
                           env=e)
        return p.returncode, p.stdout, p.stderr

    def state(self, d, name=NAME):
        return ft.virsh(self.local(d), "domstate", "--reason", name, check=False)[1].strip()

    def names(self, d):
        return ft.virsh(self.local(d), "list", "--all", "--name")[1].split()

    def post_mortem(self):
        """For a failure's message: what each daemon says of the guest, the
        tails of its QEMU logs and of its own log."""
        out = ""
        for d in self.daemons:
            rc, listed, _ = ft.virsh(self.local(d), "list", "--all", "--name", check=False)
            out += f"\n--- {d.name}: " + (", ".join(f"{n}: {self.state(d, n)}" for n in listed.split())
                                         if rc == 0 else "not answering")
            for path in sorted(glob.glob(os.path.join(d.dir, "log", "qemu", "*.log"))):
                with open(path, errors="replace") as f:
                    out += f"\n--- {path}:\n" + f.read()[-1500:]
            out += f"\n--- {d.name}'s log:\n" + d.log()[-2000:]
        return out

    def verified_after_move(self, log, before):
        """The destination's guest checked all its memory after the move and
        its counter went on from where the source left it. A timeout says
        what the daemons and QEMU knew (a guest that went silent)."""
        try:
            r = guest.Console(log).wait_verified(VERIFY_TIMEOUT)
        except TimeoutError as e:
            raise TimeoutError(f"{e}{self.post_mortem()}") from None
        self.assertGreater(r["counter"], before)
        self.assertGreater(r["pages"], 0)
        return guest.Console(log).last_counter()

    def end_attempt(self):
        """Ends what a run crashed by its guest started (for the retry)."""
        try:
            self.tearDown()
        finally:
            self.daemons = []

    def boot(self, d, wss="8M", dirty_ms=100):
        """Defines and starts the guest on d; returns its counter once it has
        verified its memory a first time."""
        guest.require()
        self.console = os.path.join(d.dir, "console-1.log")
        xml = guest.domain_xml(NAME, memory_mib=256, console_log=self.console,
                               cmdline=guest.kernel_cmdline(fill="64M", wss=wss, dirty_ms=dirty_ms,
                                                            verify_s=2))
        ft.virsh(self.local(d), "define", ft.write_file(d.dir, "mg.xml", xml))
        ft.virsh(self.local(d), "start", NAME)
        con = guest.Console(self.console)
        con.wait_ready(BOOT_TIMEOUT)
        con.wait_verified(VERIFY_TIMEOUT)
        return con.last_counter()

    def job_stats(self, d, name, completed=False):
        """python3-libvirt's jobStats() of the current (or the last completed)
        job, over d's UNIX socket."""
        code = ("import json, sys, libvirt\n"
                "c = libvirt.open(sys.argv[1])\n"
                "flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED if sys.argv[3] == '1' else 0\n"
                "print(json.dumps(c.lookupByName(sys.argv[2]).jobStats(flags)))\n")
        p = subprocess.run(["/usr/bin/python3", "-c", code, self.local(d), name,
                            "1" if completed else "0"], capture_output=True, text=True, timeout=60)
        return json.loads(p.stdout) if p.returncode == 0 else {}


class QemuMigrationTest(QemuMigrationCase):
    # Two scenarios, each with a guest of its own: a TCG guest kernel oopses
    # now and then under load (QEMU.md), so each run of a guest stays short.

    @guest.retry_on_guest_crash("end_attempt")
    def test_tunnelled_over_tls_sasl_and_proxy_over_tls_with_memory_verified_by_the_guest(self):
        a, b = self.daemon("A"), self.daemon("B")
        before = self.boot(a)

        # ferry-probe reads the guest's dirty rate through the QEMU driver
        # (calc-dirty-rate, query-dirty-rate) and QEMU's downtime limit.
        p = subprocess.run([os.path.join(ft.BUILD, "src/tools/ferry-probe"), "-c", self.local(a),
                            self.tcp(b), NAME, "--no-throughput", "--dirty-seconds", "1"],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, LIBVIRT_AUTH_FILE=self.authfile))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"(?m)^pass  sasl: authenticated as 'alice'")
        self.assertRegex(p.stdout, r"(?m)^pass  destination vmm: QEMU \d+\.\d+\.\d+ on host ")
        self.assertRegex(p.stdout, r"(?m)^pass  destination memory: \d+ MiB free, domain 'mg' "
                                   r"needs 256 MiB$")
        self.assertRegex(p.stdout, r"(?m)^pass  dirty rate: domain 'mg' dirties [\d.]+ MiB/s of "
                                   r"256 MiB \(QEMU's calc-dirty-rate over 1 s\)$")
        self.assertEqual(self.state(a), "running (booted)")

        # Combinations ferry does not carry: refused by name, the guest stays
        # (post-copy over several channels: QEMU 7.2 takes no multifd with it;
        # disks beside several memory channels: not proven, refused).
        parallel_and = "PARALLEL (parallel.connections {}) is not supported together with {}"
        for flags, named in ((["--tunnelled", "--postcopy", "--parallel-connections", "2"],
                              parallel_and.format(2, "POSTCOPY")),
                             (["--tunnelled", "--postcopy", "--copy-storage-all"],
                              "POSTCOPY together with"),
                             (["--tunnelled", "--copy-storage-all", "--parallel-connections", "3"],
                              parallel_and.format(3, "NON_SHARED_DISK")),
                             (["--copy-storage-inc", "--parallel"],
                              parallel_and.format(2, "NON_SHARED_INC")),
                             (["--copy-storage-all", "--parallel", "--parallel-connections", "4"],
                              parallel_and.format(4, "NON_SHARED_DISK"))):
            rc, _, err = self.virsh_env(self.local(a), "migrate", "--live", "--p2p", *flags,
                                        NAME, self.tls(b), env={"LIBVIRT_AUTH_FILE": self.authfile})
            self.assertNotEqual(rc, 0)
            self.assertIn(named, err)
        self.assertEqual(self.state(a), "running (booted)")

        # Tunnelled inside the TLS + SASL connection, the definition moving along.
        self.migrate(a, b, self.tls(b), os.path.join(b.dir, "console-2.log"), "--tunnelled",
                     "--persistent", "--undefinesource", "--verbose")
        self.assertEqual(self.state(b), "running (migrated)")
        self.assertNotIn(NAME, self.names(a))  # undefined on the source
        self.assertIn("Persistent:     yes", ft.virsh(self.local(b), "dominfo", NAME)[1])
        before = self.verified_after_move(self.console, before)
        info = ft.virsh(self.local(b), "domjobinfo", "--completed", NAME)[1]
        self.assertRegex(info, r"Operation:\s+Incoming migration")
        # Its flight record (docs/debugging.md) holds both sides and the
        # connection's security as each daemon saw it.
        rec = sorted(glob.glob(os.path.join(a.flight_dir, f"*-{NAME}-source-*.flight.jsonl")))
        self.assertTrue(rec, a.flight_dir)
        trace = subprocess.run([TRACE, rec[-1]], capture_output=True, text=True, timeout=60)
        self.assertEqual(trace.returncode, 0, trace.stderr)
        self.assertIn("outcome: completed", trace.stdout)
        self.assertIn("with the destination's record", trace.stdout)
        self.assertRegex(trace.stdout, r"S  connection: .*security=TLS1\.[23] \S+, peer certificate \S")
        self.assertRegex(trace.stdout, r"D  connection: .*security=TLS1\.[23] .*SASL \S+ user '")

        # Proxy mode with the data connection in TLS, back to A, bandwidth-capped,
        # arriving paused (--suspend) until resumed.
        self.migrate(b, a, self.tls(a), os.path.join(a.dir, "console-3.log"), "--tls", "--bandwidth", "200",
                     "--suspend")
        self.assertRegex(a.log(), r"data connection for the migration of domain 'mg' from .* accepted \(TLS\)")
        self.assertTrue(self.state(a).startswith("paused"), self.state(a))
        ft.virsh(self.local(a), "resume", NAME)
        self.assertEqual(self.state(a), "running (unpaused)")
        self.verified_after_move(self.console, before)
        ft.virsh(self.local(a), "destroy", NAME)

    @guest.retry_on_guest_crash("end_attempt")
    def test_proxy_local_and_abort_with_memory_verified_by_the_guest(self):
        a, b = self.daemon("A"), self.daemon("B")
        before = self.boot(a)

        # Proxy mode in the clear (SASL on the TCP control connection).
        self.migrate(a, b, self.tcp(b), os.path.join(b.dir, "console-2.log"))
        self.assertEqual(self.state(b), "running (migrated)")
        before = self.verified_after_move(self.console, before)

        # A local migration: two QEMU of the domain on B during the move.
        self.migrate(b, b, self.tls(b), os.path.join(b.dir, "console-3.log"), "--tunnelled")
        self.assertEqual(self.names(b).count(NAME), 1)
        self.assertEqual(self.state(b), "running (migrated)")
        self.verified_after_move(self.console, before)

        # domjobabort mid-way (1 MiB/s keeps the stream going): the guest stays on B, intact.
        xml = self.dest_xml(b, a, os.path.join(a.dir, "console-4.log"))
        self.console = os.path.join(b.dir, "console-3.log")
        e = dict(os.environ, LIBVIRT_AUTH_FILE=self.authfile)
        e.pop("LIBVIRT_DEFAULT_URI", None)
        mig = subprocess.Popen(["virsh", "-c", self.local(b), "migrate", "--live", "--p2p", "--tunnelled",
                                "--bandwidth", "1", "--xml", xml, NAME, self.tls(a)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        try:
            def moving():
                out = ft.virsh(self.local(b), "domjobinfo", NAME, check=False)[1]
                return "Unbounded" in out and re.search(r"Data processed:\s+[1-9]", out)
            self.assertTrue(ft.wait_for(moving, 60, 0.2), ft.virsh(self.local(b), "domjobinfo", NAME)[1])
            ft.virsh(self.local(b), "domjobabort", NAME)
            out, err = mig.communicate(timeout=120)
        finally:
            if mig.poll() is None:
                mig.kill()
                mig.wait()
        self.assertNotEqual(mig.returncode, 0)
        self.assertIn("abort", err.lower())
        self.assertEqual(self.state(b), "running (migration canceled)")
        self.assertNotIn(NAME, ft.virsh(self.local(a), "list", "--name")[1].split())
        con = guest.Console(self.console)
        last = con.results()[-1]["pass"] if con.results() else 0
        r = con.wait_for(lambda ev: next((x for x in con.results() if x["pass"] > last + 1), None),
                         VERIFY_TIMEOUT, "a verification pass after the abort")
        self.assertEqual(r["kind"], "verify ok")
        ft.virsh(self.local(b), "destroy", NAME)



if __name__ == "__main__":
    unittest.main(verbosity=2)
