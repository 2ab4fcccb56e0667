"""Disks without shared storage (virsh migrate --copy-storage-all/-inc,
--migrate-disks) between two ferryd with the stock virsh and the project's
test guest, which writes its disk (O_DIRECT) all through the migration and
keeps every block's generation in RAM: after each move its `disk verify`
reads every block back on the destination and checks it against what it
wrote, its memory verification pass checks all its RAM, and at the end the
digest of the destination's image file (recomputed here from the blocks)
equals the digest of what the guest wrote.

The destination's disk is a path of its own (--xml), missing before the
migration: ferryd creates it (same format and size) and exports it over NBD;
the disk's bytes ride a second channel beside the memory stream, tunnelled
inside the TLS+SASL connection of the daemons or over a second data
connection in proxy mode."""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import guest  # noqa: E402
from test_qemu_migration import BOOT_TIMEOUT, NAME, VERIFY_TIMEOUT, QemuMigrationCase  # noqa: E402

DISK_MIB = 32     # the image
DISK_KIB = 8192   # what the guest writes and checks: 2048 blocks of 4 KiB
DISK_BLOCKS = DISK_KIB // 4


class QemuStorageTest(QemuMigrationCase):

    def boot_with_disk(self, d):
        """The guest on d with a raw virtio disk it writes all the time; its
        console is a socket (for `disk verify`) logged to a file."""
        guest.require()
        self.console = os.path.join(d.dir, "console-1.log")
        self.socket = os.path.join(d.dir, "console-1.sock")
        self.disk = os.path.join(d.dir, "disk-1.raw")
        with open(self.disk, "wb") as f:
            f.truncate(DISK_MIB << 20)
        xml = guest.domain_xml(NAME, memory_mib=256, console_log=self.console, console_socket=self.socket,
                               cmdline=guest.kernel_cmdline(fill="64M", wss="8M", verify_s=2,
                                                            extra=f"ferry.disk_kib={DISK_KIB}"),
                               extra_devices=guest.disk_xml(self.disk))
        ft.virsh(self.local(d), "define", ft.write_file(d.dir, "mg.xml", xml))
        ft.virsh(self.local(d), "start", NAME)
        con = guest.Console(self.console)
        con.wait_ready(BOOT_TIMEOUT)
        con.wait_for(lambda ev: next((e for e in ev if e["kind"] == "disk ready"), None), BOOT_TIMEOUT,
                     "FERRY-GUEST disk ready")
        con.wait_verified(VERIFY_TIMEOUT)
        return con.last_counter()

    def disk_xml_for(self, src, dst, n):
        """The migratable XML with the console and the disk at paths of the destination's."""
        xml = ft.virsh(self.local(src), "dumpxml", "--migratable", NAME)[1]
        log, sock, disk = (os.path.join(dst.dir, f"{what}-{n}.{ext}")
                           for what, ext in (("console", "log"), ("console", "sock"), ("disk", "raw")))
        xml = xml.replace(self.console, log).replace(self.socket, sock).replace(self.disk, disk)
        self.console, self.socket, self.disk = log, sock, disk
        return ft.write_file(dst.dir, f"mg-{n}.xml", xml)

    def move(self, src, dst, duri, n, *flags):
        old_disk = self.disk
        xml = self.disk_xml_for(src, dst, n)
        self.assertFalse(os.path.exists(self.disk))
        rc, out, err = self.virsh_env(self.local(src), "migrate", "--live", "--p2p", "--copy-storage-all",
                                      *flags, "--xml", xml, NAME, duri,
                                      env={"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertEqual(rc, 0, err + src.log()[-3000:] + dst.log()[-3000:])
        self.assertEqual(self.state(dst), "running (migrated)")
        # The destination made the image: the source's format and size.
        self.assertEqual(os.path.getsize(self.disk), DISK_MIB << 20)
        self.assertTrue(os.path.exists(old_disk))  # the source's stays
        return old_disk

    def disk_verified_after_move(self):
        """The guest, now on the destination, read every block it wrote back."""
        con = guest.Console(self.console)
        sock = guest.ConsoleSocket(self.socket)
        try:
            r = guest.disk_command(con, sock.send, "disk verify")
        finally:
            sock.close()
        self.assertEqual(r["blocks"], DISK_BLOCKS)
        return r

    @guest.retry_on_guest_crash("end_attempt")
    def test_copy_storage_all_tunnelled_and_proxy_with_disk_and_memory_verified_by_the_guest(self):
        a, b = self.daemon("A"), self.daemon("B")
        before = self.boot_with_disk(a)
        first = self.disk_verified_after_move()  # before any move: the baseline

        # Tunnelled inside the TLS + SASL connection: the disk on channel 1.
        self.move(a, b, self.tls(b), 2, "--tunnelled", "--verbose")
        self.assertRegex(b.log(), r"created the image .*disk-2\.raw")
        before = self.verified_after_move(self.console, before)
        r = self.disk_verified_after_move()
        self.assertGreater(r["writes"], first["writes"])  # it wrote during the move
        rec = a.log()
        self.assertRegex(rec, r"migrated to the destination ferryd")
        # The completed job counted the disk's bytes.
        info = ft.virsh(self.local(a), "domjobinfo", "--completed", "--rawstats", NAME, check=False)[1]
        m = re.search(r"disk_total\s*:\s*(\d+)", info) or re.search(r"disk_total=(\d+)", info)
        if m:
            self.assertGreaterEqual(int(m.group(1)), DISK_MIB << 20)

        # Proxy mode with the data connections in TLS, back to A (a new image there).
        self.move(b, a, self.tls(a), 3, "--tls")
        self.assertRegex(a.log(), r"data connection for the migration of domain 'mg' from .* accepted \(TLS\)")
        self.verified_after_move(self.console, before)
        self.disk_verified_after_move()

        # The writes end; the destination's image holds exactly what the guest wrote.
        con = guest.Console(self.console)
        sock = guest.ConsoleSocket(self.socket)
        try:
            guest.disk_command(con, sock.send, "disk stop")
            r = guest.disk_command(con, sock.send, "disk verify")
        finally:
            sock.close()
        ft.virsh(self.local(a), "suspend", NAME)
        self.assertEqual(guest.disk_digest(self.disk, DISK_BLOCKS), int(r["digest"], 16))
        ft.virsh(self.local(a), "destroy", NAME)

    def test_refused_for_ferry_vmm_and_without_p2p(self):
        a = self.daemon("A")
        # ferry-vmm copies no disks: refused by name, whatever the guest.
        sim = f"sim+unix:///system?socket={a.sock}"
        ft.virsh(sim, "define", ft.write_file(a.dir, "s.xml", ft.domain_xml("s1")))
        ft.virsh(sim, "start", "s1")
        rc, _, err = self.virsh_env(sim, "migrate", "--live", "--p2p", "--tunnelled", "--copy-storage-all",
                                    "s1", self.tls(a).replace("qemu", "sim"),
                                    env={"LIBVIRT_AUTH_FILE": self.authfile})
        self.assertNotEqual(rc, 0)
        self.assertIn("NON_SHARED_DISK is not supported by ferry-vmm", err)
        self.assertIn("running", ft.virsh(sim, "domstate", "s1")[1])
        ft.virsh(sim, "destroy", "s1")


if __name__ == "__main__":
    unittest.main(verbosity=2)
