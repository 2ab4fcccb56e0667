"""A network blip during a QEMU migration (issue 11): the test guest moves
tunnelled over TLS+SASL from a ferryd in the root network namespace to one
in a namespace of the test's own; mid-stream every packet between them is
dropped (iptables inside the namespace) for longer than tcp_user_timeout,
so both daemons see their connection time out. Once the link is back the
source reconnects with its certificate and SASL credentials and the stream
goes on where the destination's QEMU stands: neither QEMU notices, and the
guest on the destination verifies all its memory after the move."""

import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import guest  # noqa: E402
from test_qemu_migration import NAME, QemuMigrationCase  # noqa: E402

# Longer than tcp_user_timeout (5 s): the connection breaks, it does not
# just ride the blip out on TCP's retransmissions.
BLIP_S = 7.0


class QemuResumeTest(QemuMigrationCase):
    def setUp(self):
        super().setUp()
        self.net = ft.Netns()
        self.addCleanup(self.net.close)
        # The destination's TLS certificate names its address in the namespace.
        self.cert = f"server-{self.net.dst_ip}"
        self.pki.sign(self.cert, "server", "ca",
                      f"organization = ferry\ncn = {self.net.dst_ip}\n"
                      f"ip_address = {self.net.dst_ip}\n"
                      "expiration_date = \"2091-01-01 00:00:00\"\n")
        self.authfile = self.write_authfile(f"resume-{self.net.dst_ip}.conf", "alice", "secret1",
                                            host=self.net.dst_ip)

    def tearDown(self):
        self.net.heal()
        super().tearDown()

    def ns_daemon(self, name, inside):
        """A ferryd as QemuMigrationCase.daemon makes them, listening on the
        namespace's address (inside) or the root side's."""
        port = ft.free_port()
        extra = (f'auth_tls = "sasl"\nauth_tcp = "sasl"\n'
                 f'migration_pki_dir = "{self.pki.client_dir()}"\n')
        d = self.start_daemon(name=name, host=self.net.dst_ip if inside else self.net.src_ip,
                              prefix=self.net.prefix if inside else None,
                              extra_conf=self.pki.server_conf(self.cert, port, extra),
                              env={"SASL_CONF_PATH": self.sasl_dir,
                                   "LIBVIRT_AUTH_FILE": self.authfile})
        d.tls_port = port
        if inside:
            self.assertTrue(ft.wait_for(lambda: port in self.net.listening_ports(), 60))
        return d

    def end_attempt(self):
        self.net.heal()
        super().end_attempt()

    @guest.retry_on_guest_crash("end_attempt")
    def test_tunnelled_over_tls_sasl_resumed_after_a_blip(self):
        a, b = self.ns_daemon("A", False), self.ns_daemon("B", True)
        before = self.boot(a)
        xml = self.dest_xml(a, b, os.path.join(b.dir, "console-2.log"))
        e = dict(os.environ, LIBVIRT_AUTH_FILE=self.authfile)
        e.pop("LIBVIRT_DEFAULT_URI", None)
        duri = f"qemu+tls://{self.net.dst_ip}:{b.tls_port}/system"
        mig = subprocess.Popen(["virsh", "-c", self.local(a), "migrate", "--live", "--p2p",
                                "--tunnelled", "--bandwidth", "20", "--xml", xml, NAME, duri],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        try:
            self.assertTrue(ft.wait_for(
                lambda: self.job_stats(a, NAME).get("data_processed", 0) >= 16 << 20, 120, 0.2))
            self.net.blip(BLIP_S)
            back = time.monotonic()
            # The limit made the blip come mid-stream; once the stream goes on,
            # it is lifted so that the move converges on any machine. At 20
            # MiB/s a guest that gets a quiet machine's CPU dirties about as
            # fast (5,000 pages/s) and one run iterated 300 s (2169 rounds,
            # 5.9 GiB) without QEMU judging the rest small enough to stop.
            if ft.wait_for(lambda: "resumed the migration stream" in a.log(), 60, 0.2):
                ft.virsh(self.local(a), "migrate-setspeed", NAME, "1000", check=False)
            try:
                out, err = mig.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                self.fail("virsh migrate did not return within 300 s of the link's return:\n" +
                          ft.hang_report([a, b], NAME, self.local))
        finally:
            if mig.poll() is None:
                mig.kill()
                mig.wait()
        self.assertEqual(mig.returncode, 0, err + a.log()[-3000:] + b.log()[-3000:])
        print(f"link back to the migration's end: {time.monotonic() - back:.2f} s", file=sys.stderr)
        self.assertEqual(self.state(b), "running (migrated)")
        self.verified_after_move(self.console, before)
        # The break was a timeout on the old connection, and the stream went
        # on over a new one: both sides count the reconnection.
        self.assertRegex(a.log(), r"closed after .*: Connection timed out; waiting up to 30 s")
        self.assertIn("resumed the migration stream with the destination ferryd", a.log())
        self.assertGreaterEqual(self.job_stats(a, NAME, completed=True)
                                .get("ferry_reconnections", 0), 1)
        self.assertGreaterEqual(self.job_stats(b, NAME, completed=True)
                                .get("ferry_reconnections", 0), 1)
        ft.virsh(self.local(b), "destroy", NAME)


if __name__ == "__main__":
    unittest.main()
