"""Client-managed migration: `virsh migrate --live vm DEST_URI` without
--p2p. virsh itself calls begin, perform and confirm on the source ferryd and
prepare and finish on the destination; the bytes go over the destination's
relayed data connection (proxy mode), optionally in TLS (--tls). virsh killed
mid-way: both daemons clean up and the VM stays on the source."""

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
from test_proxy import ProxyCase  # noqa: E402
from test_tls_sasl import SaslTestCase  # noqa: E402

MIB = 1 << 20
state = ft.domstate
names = ft.domain_names


def start_client_migration(src_uri, dst_uri, name, *flags, env=None):
    e = dict(os.environ)
    e.pop("LIBVIRT_DEFAULT_URI", None)
    e.update(env or {})
    return subprocess.Popen(["virsh", "-c", src_uri, "migrate", *flags, name, dst_uri],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)


def client_migrate(src_uri, dst_uri, name, *flags, env=None, timeout=180):
    p = start_client_migration(src_uri, dst_uri, name, *flags, env=env)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class ClientManagedCase(ProxyCase):
    """A source and a destination daemon, as proxy mode's tests have them."""


class ClientManagedTest(ClientManagedCase):
    def test_virsh_migrate_without_p2p(self):
        self.start_pair()
        self.start_vm(self.a, memory_mib=128, dirty_rate="20MiB")
        uuid_a = ft.virsh(self.a.tcp_uri, "domuuid", "vm1")[1].strip()
        rc, _, err = client_migrate(self.a.tcp_uri, self.b.tcp_uri, "vm1", "--live", "--verbose",
                                    "--persistent")
        self.assertEqual(rc, 0, err + self.a.log()[-2000:] + self.b.log()[-2000:])
        self.assertEqual([int(x) for x in re.findall(r"\[\s*(\d+) %\]", err)][-1], 100)
        self.assertEqual(state(self.b, "vm1"), "running (migrated)")
        self.assertEqual(ft.virsh(self.b.tcp_uri, "domuuid", "vm1")[1].strip(), uuid_a)
        self.assertIn("Persistent:     yes", ft.virsh(self.b.tcp_uri, "dominfo", "vm1")[1])
        src, dst = ft.job_stats(self.a, "vm1"), ft.job_stats(self.b, "vm1")
        self.assertRegex(src["ferry_digest"], r"^[0-9a-f]{32}$")
        self.assertEqual(src["ferry_digest"], dst["ferry_digest"])
        # The source performed without a peer connection of its own: the
        # client confirmed, and the bytes went through the destination's relay.
        self.assertIn("waiting for the client's confirm", self.a.log())
        self.assertIn("migrated (client-managed", self.a.log())
        self.assertIn("accepted", self.b.log())

    def test_tunnelled_without_p2p_is_refused_by_the_client(self):
        self.start_pair()
        self.start_vm(self.a)
        rc, _, err = client_migrate(self.a.tcp_uri, self.b.tcp_uri, "vm1", "--live", "--tunnelled")
        self.assertNotEqual(rc, 0)
        self.assertIn("cannot perform tunnelled migration without using peer2peer flag", err)
        self.assertEqual(state(self.a, "vm1"), "running (booted)")
        self.assertEqual(names(self.b, "--all"), [])

    def test_domjobabort_mid_stream(self):
        self.start_pair()
        self.slow_vm()
        p = start_client_migration(self.a.tcp_uri, self.b.tcp_uri, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 8 * MIB))
        ft.virsh(self.a.tcp_uri, "domjobabort", "vm1")
        _, err = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("operation aborted", err)
        self.check_vm_stayed_on_source()

    def test_virsh_killed_mid_stream_both_daemons_clean_up(self):
        port = ft.free_port()
        self.start_pair(f"migration_port_min = {port}\nmigration_port_max = {port}\n")
        self.slow_vm()
        p = start_client_migration(self.a.tcp_uri, self.b.tcp_uri, "vm1", "--live")
        self.assertTrue(ft.wait_data_processed(self.a, "vm1", 8 * MIB))
        incoming = ft.vmm_pids(self.b)
        self.assertTrue(incoming)
        self.assertTrue(port_open(port))  # the destination's data listener
        p.kill()
        p.communicate()
        killed = time.monotonic()
        # The source aborts the perform of the client that went and runs its VM.
        self.assertTrue(ft.wait_for(lambda: state(self.a, "vm1") == "running (migration canceled)",
                                    10), state(self.a, "vm1"))
        self.assertIn("the client that drove the migration disconnected",
                      ft.job_stats(self.a, "vm1")["errmsg"])
        # The destination drops the incoming VM and its listener at once, not
        # after its orphan watchdog's grace.
        for pid in incoming:
            self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(pid), 10), pid)
        self.assertTrue(ft.wait_for(lambda: "vm1" not in names(self.b, "--all"), 10))
        self.assertLess(time.monotonic() - killed, 10)
        self.assertIn("dropping the incoming VM of domain 'vm1': the client that drove the "
                      "migration disconnected", self.b.log())
        self.assertFalse(ft.wait_for(lambda: port_open(port), 1))
        # And the VM migrates again afterwards.
        ft.virsh(self.a.tcp_uri, "migrate-setspeed", "vm1", "0")
        rc, _, err = client_migrate(self.a.tcp_uri, self.b.tcp_uri, "vm1", "--live")
        self.assertEqual(rc, 0, err)
        self.assertEqual(state(self.b, "vm1"), "running (migrated)")


class ClientManagedTlsTest(SaslTestCase):
    """virsh reaches both daemons over TLS with SASL; --tls puts the data
    connection in TLS too."""

    def test_over_tls_sasl_with_tls_data(self):
        extra = f'auth_tls = "sasl"\nmigration_pki_dir = "{self.pki.client_dir()}"\n'
        a = self.tls_daemon(extra=extra, env={"SASL_CONF_PATH": self.sasl_dir})
        b = self.tls_daemon(extra=extra, env={"SASL_CONF_PATH": self.sasl_dir})
        pki = self.pki.client_dir()
        env = {"LIBVIRT_AUTH_FILE": self.authfile}
        ua, ub = self.tls_uri(a, pki), self.tls_uri(b, pki)
        xml = ft.write_file(a.dir, "vm1.xml", ft.domain_xml("vm1", memory_mib=64))
        rc, _, err = client_migrate(ua, ub, "vm1", "--live", env=env)  # before it exists
        self.assertNotEqual(rc, 0)
        e = dict(os.environ, **env)
        for args in (("define", xml), ("start", "vm1")):
            subprocess.run(["virsh", "-c", ua, *args], check=True, env=e, capture_output=True)
        rc, _, err = client_migrate(ua, ub, "vm1", "--live", "--tls", env=env)
        self.assertEqual(rc, 0, err + a.log()[-2000:] + b.log()[-2000:])
        self.assertRegex(b.log(), r"data connection for the migration of domain 'vm1' from .* "
                                  r"accepted \(TLS\)")
        out = subprocess.run(["virsh", "-c", ub, "domstate", "--reason", "vm1"], env=e,
                             capture_output=True, text=True).stdout.strip()
        self.assertEqual(out, "running (migrated)")


if __name__ == "__main__":
    unittest.main(verbosity=2)
