"""QEMU domains in the migration modes beyond peer-to-peer: client-managed
(virsh drives both daemons, over TCP and TLS + SASL, and killed mid-way) and
offline (the definition only). The guest verifies its memory after each move."""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import guest  # noqa: E402
import test_qemu_migration as tqm  # noqa: E402

NAME = tqm.NAME


class QemuModesTest(tqm.QemuMigrationCase):
    def test_offline_moves_the_qemu_definition_only(self):
        """--offline --persistent: the definition of a QEMU domain (inactive,
        then running) moves, client-managed over TCP + SASL and peer-to-peer
        over TLS + SASL; no QEMU starts on the destination."""
        a, b = self.daemon("A"), self.daemon("B")
        guest.require()
        log = os.path.join(a.dir, "console-1.log")
        ft.virsh(self.local(a), "define", ft.write_file(a.dir, "mg.xml", guest.domain_xml(
            NAME, memory_mib=64, console_log=log, cmdline=guest.kernel_cmdline())))
        uuid = ft.virsh(self.local(a), "domuuid", NAME)[1].strip()
        rc, _, err = self.virsh_env(self.local(a), "migrate", "--offline", "--persistent", NAME, self.tcp(b),
                                    env={"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.state(b), "shut off (unknown)")
        self.assertEqual(ft.virsh(self.local(b), "domuuid", NAME)[1].strip(), uuid)
        self.assertIn("<type arch='x86_64'", ft.virsh(self.local(b), "dumpxml", NAME)[1])
        rc, _, err = self.virsh_env(self.local(a), "migrate", "--offline", "--persistent", "--p2p",
                                    "--undefinesource", "--dname", "mg2", NAME, self.tls(b),
                                    env={"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertNotEqual(rc, 0)  # the UUID is defined there as 'mg': refused as libvirt does
        self.assertIn("already defined with uuid", err)
        ft.virsh(self.local(b), "undefine", NAME)
        rc, _, err = self.virsh_env(self.local(a), "migrate", "--offline", "--persistent", "--p2p",
                                    "--undefinesource", "--dname", "mg2", NAME, self.tls(b),
                                    env={"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.names(b), ["mg2"])
        self.assertEqual(self.names(a), [])
        self.assertEqual(ft.instance_files(b, "qemu"), {})

    @guest.retry_on_guest_crash("end_attempt")
    def test_client_managed_over_tcp_and_tls_sasl_and_virsh_killed_with_memory_verified(self):
        """virsh migrate without --p2p: virsh drives both daemons itself (SASL
        on both connections), the bytes ride the destination's data connection."""
        a, b = self.daemon("A"), self.daemon("B")
        before = self.boot(a)
        env = {"LIBVIRT_AUTH_FILE": self.authfile}

        # Over TCP + SASL, data in the clear.
        xml = self.dest_xml(a, b, os.path.join(b.dir, "console-2.log"))
        rc, _, err = self.virsh_env(self.local(a), "migrate", "--live", "--xml", xml, NAME, self.tcp(b),
                                    env=env)
        self.assertEqual(rc, 0, err + a.log()[-3000:] + b.log()[-3000:])
        self.assertIn("migrated (client-managed", a.log())
        self.assertEqual(self.state(b), "running (migrated)")
        before = self.verified_after_move(self.console, before)

        # virsh killed mid-way (1 MiB/s keeps the stream going): B runs the
        # guest again, A drops its incoming QEMU, both at once.
        xml = self.dest_xml(b, a, os.path.join(a.dir, "console-3.log"))
        self.console = os.path.join(b.dir, "console-2.log")
        client_tls = f"qemu+tls://127.0.0.1:{a.tls_port}/system?pkipath={self.pki.client_dir()}"
        e = dict(os.environ, **env)
        e.pop("LIBVIRT_DEFAULT_URI", None)
        mig = subprocess.Popen(["virsh", "-c", self.local(b), "migrate", "--live", "--tls", "--bandwidth", "1",
                                "--xml", xml, NAME, client_tls],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        try:
            def moving():
                out = ft.virsh(self.local(b), "domjobinfo", NAME, check=False)[1]
                return "Unbounded" in out and re.search(r"Data processed:\s+[1-9]", out)
            self.assertTrue(ft.wait_for(moving, 60, 0.2), ft.virsh(self.local(b), "domjobinfo", NAME)[1])
        finally:
            mig.kill()
            mig.communicate()
        self.assertTrue(ft.wait_for(lambda: self.state(b) == "running (migration canceled)", 10), self.state(b))
        self.assertTrue(ft.wait_for(lambda: NAME not in ft.virsh(self.local(a), "list", "--name")[1].split(), 10))
        # Whichever the destination notices first: the client's disconnection,
        # or the stream the source cut on its abort (its QEMU's load fails).
        self.assertRegex(a.log(), r"dropping the incoming VM of domain 'mg': the client that drove "
                                  r"the migration disconnected|domain 'mg' crashed: .*load of "
                                  r"migration failed")
        ft.virsh(self.local(b), "migrate-setspeed", NAME, "0")

        # Over TLS + SASL (virsh's own certificates), data in TLS (--tls).
        xml = self.dest_xml(b, a, os.path.join(a.dir, "console-4.log"))
        rc, _, err = self.virsh_env(self.local(b), "migrate", "--live", "--tls", "--xml", xml, NAME, client_tls,
                                    env=env)
        self.assertEqual(rc, 0, err + a.log()[-3000:] + b.log()[-3000:])
        self.assertRegex(a.log(), r"data connection for the migration of domain 'mg' from .* accepted \(TLS\)")
        self.assertEqual(self.state(a), "running (migrated)")
        self.assertNotIn(NAME, self.names(b))  # it came transient, it left
        self.verified_after_move(self.console, before)
        ft.virsh(self.local(a), "destroy", NAME)


if __name__ == "__main__":
    unittest.main(verbosity=2)
