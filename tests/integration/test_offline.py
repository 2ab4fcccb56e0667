"""Offline migration (`virsh migrate --offline --persistent`): only the
persistent definition moves, peer-to-peer or client-managed; no VMM starts on
the destination, and, as in libvirt, a running domain keeps running on the
source. Without --persistent, or with --tunnelled, it is refused with
libvirt's words."""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

state = ft.domstate
names = ft.domain_names


def virsh_migrate(src, dst_uri, *args):
    e = dict(os.environ)
    e.pop("LIBVIRT_DEFAULT_URI", None)
    p = subprocess.run(["virsh", "-c", src.tcp_uri, "migrate", *args, dst_uri], capture_output=True,
                       text=True, timeout=120, env=e)
    return p.returncode, p.stdout, p.stderr


class OfflineTest(ft.DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.a = self.start_daemon(name="source")
        self.b = self.start_daemon(name="destination")
        xml = ft.write_file(self.a.dir, "vm1.xml", ft.domain_xml("vm1", memory_mib=64))
        ft.virsh(self.a.tcp_uri, "define", xml)
        self.uuid = ft.virsh(self.a.tcp_uri, "domuuid", "vm1")[1].strip()

    def test_client_managed_moves_the_definition(self):
        rc, _, err = virsh_migrate(self.a, self.b.tcp_uri, "--offline", "--persistent", "vm1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(state(self.b, "vm1"), "shut off (unknown)")
        self.assertEqual(ft.virsh(self.b.tcp_uri, "domuuid", "vm1")[1].strip(), self.uuid)
        self.assertIn("Persistent:     yes", ft.virsh(self.b.tcp_uri, "dominfo", "vm1")[1])
        self.assertEqual(names(self.a, "--all"), ["vm1"])  # the source keeps it without --undefinesource
        self.assertIn("defined by an offline migration", self.b.log())
        # The definition works: the destination starts it.
        ft.virsh(self.b.tcp_uri, "start", "vm1")
        self.assertEqual(state(self.b, "vm1"), "running (booted)")

    def test_p2p_with_undefinesource_and_dname(self):
        rc, _, err = virsh_migrate(self.a, self.b.tcp_uri, "--offline", "--persistent", "--p2p",
                                   "--undefinesource", "--dname", "vm2", "vm1")
        self.assertEqual(rc, 0, err + self.a.log()[-2000:])
        self.assertEqual(names(self.b, "--all"), ["vm2"])
        self.assertEqual(ft.virsh(self.b.tcp_uri, "domuuid", "vm2")[1].strip(), self.uuid)
        self.assertEqual(names(self.a, "--all"), [])
        self.assertIn("undefined after its offline migration", self.a.log())

    def test_client_managed_with_undefinesource(self):
        rc, _, err = virsh_migrate(self.a, self.b.tcp_uri, "--offline", "--persistent",
                                   "--undefinesource", "vm1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(names(self.b, "--all"), ["vm1"])
        self.assertEqual(names(self.a, "--all"), [])

    def test_running_domain_keeps_running_and_only_its_definition_moves(self):
        ft.virsh(self.a.tcp_uri, "start", "vm1")
        for mode in ((), ("--p2p",)):
            rc, _, err = virsh_migrate(self.a, self.b.tcp_uri, "--offline", "--persistent", *mode,
                                       "vm1")
            self.assertEqual(rc, 0, err)
            self.assertEqual(state(self.a, "vm1"), "running (booted)")
            self.assertEqual(state(self.b, "vm1"), "shut off (unknown)")
            self.assertEqual(ft.vmm_pids(self.b), [])  # no VMM on the destination
        # --undefinesource leaves the running source domain transient.
        rc, _, err = virsh_migrate(self.a, self.b.tcp_uri, "--offline", "--persistent",
                                   "--undefinesource", "vm1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(state(self.a, "vm1"), "running (booted)")
        self.assertIn("Persistent:     no", ft.virsh(self.a.tcp_uri, "dominfo", "vm1")[1])

    def test_refusals_in_libvirts_words(self):
        for mode in ((), ("--p2p",)):
            rc, _, err = virsh_migrate(self.a, self.b.tcp_uri, "--offline", *mode, "vm1")
            self.assertNotEqual(rc, 0)
            self.assertIn("offline migration must be specified with the persistent flag set", err)
        rc, _, err = virsh_migrate(self.a, self.b.tcp_uri, "--offline", "--persistent", "--p2p",
                                   "--tunnelled", "vm1")
        self.assertNotEqual(rc, 0)
        self.assertIn("tunnelled offline migration does not make sense", err)
        # An inactive domain cannot move live: the live path says so.
        rc, _, err = virsh_migrate(self.a, self.b.tcp_uri, "--live", "vm1")
        self.assertNotEqual(rc, 0)
        self.assertIn("domain is not running", err)
        self.assertEqual(names(self.b, "--all"), [])
        self.assertEqual(names(self.a, "--all"), ["vm1"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
