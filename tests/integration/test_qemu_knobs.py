"""The QEMU knobs of a migration, each observed in QEMU: migrate-setmaxdowntime
and migrate-compcache read back from QEMU (query-migrate-parameters), before
and during the migration; --auto-converge with auto_converge.initial and
--compressed (xbzrle) in the running job's statistics (QEMU's query-migrate);
migrate-setspeed and --dname; the guest verifies its memory after the move.
--abort-on-error: a guest QEMU stops on a disk I/O error during the migration
ends it, and stays paused on the error.

A TCG guest dirtying fast through many iterations crashes on the destination
in most runs, QEMU to QEMU without ferryd too (QEMU.md): the knobs are seen
in the fast dirtier's migration, which is then cancelled, and the move that
completes is the calmer guest's. A scenario whose guest kernel crashed runs
again (guest.retry_on_guest_crash), as the other QEMU tests do."""

import errno
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import guest  # noqa: E402
import test_qemu_migration as tqm  # noqa: E402

NAME = tqm.NAME
STORE_MIB = 32   # AbortOnErrorTest's tmpfs, filled by the test during the migration
IMAGE_MIB = 256  # the sparse image on it the guest writes, 640 KiB/s, each block once


class QemuKnobsTest(tqm.QemuMigrationCase):
    def boot_fast_dirtier(self, d):
        """The guest dirtying 48 MiB every 10 ms (faster than 8 MiB/s), with
        its console on a socket too (for `dirty`)."""
        guest.require()
        self.console = os.path.join(d.dir, "console-1.log")
        self.socket = os.path.join(d.dir, "console-1.sock")
        xml = guest.domain_xml(NAME, memory_mib=256, console_log=self.console, console_socket=self.socket,
                               cmdline=guest.kernel_cmdline(fill="64M", wss="48M", dirty_ms=10, verify_s=2))
        ft.virsh(self.local(d), "define", ft.write_file(d.dir, "mg.xml", xml))
        ft.virsh(self.local(d), "start", NAME)
        con = guest.Console(self.console)
        con.wait_ready(tqm.BOOT_TIMEOUT)
        con.wait_verified(tqm.VERIFY_TIMEOUT)
        return con.last_counter()

    def xml_for(self, src, dst, n):
        """The migratable XML with the console's log and socket at paths of dst."""
        xml = ft.virsh(self.local(src), "dumpxml", "--migratable", NAME)[1]
        log, sock = (os.path.join(dst.dir, f"console-{n}.{ext}") for ext in ("log", "sock"))
        return ft.write_file(dst.dir, f"mg-{n}.xml", xml.replace(self.console, log).replace(self.socket, sock)), log, sock

    def start_migration(self, src, dst, n, *flags):
        xml, log, sock = self.xml_for(src, dst, n)
        e = dict(os.environ, LIBVIRT_AUTH_FILE=self.authfile)
        e.pop("LIBVIRT_DEFAULT_URI", None)
        mig = subprocess.Popen(["virsh", "-c", self.local(src), "migrate", "--live", "--p2p", "--auto-converge",
                                "--compressed", "--comp-methods", "xbzrle", "--dname", "mg2", *flags,
                                "--xml", xml, NAME, self.tcp(dst)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        return mig, log, sock

    @guest.retry_on_guest_crash("end_attempt")
    def test_qemu_knobs_take_effect_with_memory_verified_by_the_guest(self):
        """migrate-setmaxdowntime / migrate-compcache read back from QEMU,
        --auto-converge with its initial throttle and --compressed (xbzrle)
        seen in the running job's statistics (QEMU's query-migrate),
        migrate-setspeed and --dname, then the guest verifies its memory.

        The throttled fast dirtier's migration is cancelled once the knobs
        were seen: a TCG guest migrated through many dirty iterations
        crashes on the destination in most runs, with QEMU alone too (no
        ferryd: QEMU.md). The move that completes is the calmer guest's
        (`dirty 100 8M`), with the same knobs."""
        a, b = self.daemon("A"), self.daemon("B")
        self.boot_fast_dirtier(a)
        get = lambda *args: ft.virsh(self.local(a), *args, NAME)[1].strip()  # noqa: E731
        self.assertEqual(get("migrate-getmaxdowntime"), "300")  # QEMU's default, asked of QEMU
        # 50 ms cannot fit the guest's working set: only throttling converges.
        ft.virsh(self.local(a), "migrate-setmaxdowntime", NAME, "50")
        self.assertEqual(get("migrate-getmaxdowntime"), "50")
        self.assertEqual(get("migrate-compcache"), "Compression cache: 64.000 MiB")
        ft.virsh(self.local(a), "migrate-compcache", NAME, "--size", str(32 << 20))
        self.assertEqual(get("migrate-compcache"), "Compression cache: 32.000 MiB")
        ft.virsh(self.local(a), "migrate-setspeed", NAME, "8")
        self.assertEqual(get("migrate-getspeed"), "8")

        mig, _, _ = self.start_migration(a, b, 2, "--auto-converge-initial", "40",
                                         "--auto-converge-increment", "15")
        try:
            seen = {}

            def throttled():
                st = self.job_stats(a, NAME)
                seen.update(st)
                return st.get("auto_converge_throttle", 0) >= 40 and "compression_cache" in st
            # The guest dirties faster than 8 MiB/s, and 50 ms cannot fit its
            # working set: QEMU throttles it, from 40 %. A guest whose kernel
            # crashed dirties nothing: that attempt proves nothing either way.
            if not ft.wait_for(throttled, 90, 0.5):
                guest.Console(self.console).check()
                self.fail(f"QEMU did not throttle the guest: {seen}")
            self.assertEqual(seen["compression_cache"], 32 << 20)
            # Changed during the migration, QEMU takes it at once.
            ft.virsh(self.local(a), "migrate-setmaxdowntime", NAME, "2000")
            self.assertEqual(get("migrate-getmaxdowntime"), "2000")
            ft.virsh(self.local(a), "domjobabort", NAME)
            _, err = mig.communicate(timeout=120)
        finally:
            if mig.poll() is None:
                mig.kill()
                mig.communicate()
        self.assertNotEqual(mig.returncode, 0)
        self.assertIn("abort", err.lower())
        self.assertEqual(self.state(a), "running (migration canceled)")
        self.assertNotIn("mg2", self.names(b))

        # The calmer guest moves with the same knobs (the domain keeps
        # 2000 ms, 32 MiB and 8 MiB/s, lifted at once by migrate-setspeed).
        con = guest.Console(self.console)
        sock = guest.ConsoleSocket(self.socket)
        try:  # open until the answer: QEMU drops what a closed client sent and it did not read yet
            sock.send("dirty 100 8M")
            con.wait_for(lambda ev: next((e for e in ev if e["kind"] == "dirty"), None), 60, "FERRY-GUEST dirty")
        finally:
            sock.close()
        before = con.wait_verified(tqm.VERIFY_TIMEOUT)["counter"]
        self.assertEqual(get("migrate-getmaxdowntime"), "2000")
        mig, self.console, _ = self.start_migration(a, b, 3)
        try:
            ft.virsh(self.local(a), "migrate-setspeed", NAME, "0")
            out, err = mig.communicate(timeout=300)
        finally:
            if mig.poll() is None:
                mig.kill()
                mig.communicate()
        self.assertEqual(mig.returncode, 0, err + a.log()[-3000:])
        self.assertEqual(self.state(b, "mg2"), "running (migrated)")
        done = ft.virsh(self.local(a), "domjobinfo", "--completed", NAME)[1]
        self.assertRegex(done, r"Compression cache:\s+32\.000 MiB")
        self.verified_after_move(self.console, before)
        ft.virsh(self.local(b), "destroy", "mg2")


class AbortOnErrorTest(tqm.QemuMigrationCase):
    """--abort-on-error as libvirt does it for QEMU. The guest writes its
    virtio disk (the test guest's disk writer, ferry_disk_writer=vda), whose
    image is a sparse file on a small tmpfs of the test's own; the test fills
    the tmpfs during the migration, QEMU stops the guest on ENOSPC (its
    default werror=enospc: run state io-error), and the source ends the
    migration, leaves the guest paused on the I/O error (resuming it would
    fail again) and refuses a new --abort-on-error migration while it is."""

    store = None

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            if self.store:
                subprocess.run(["umount", "-l", self.store], capture_output=True, timeout=30)
                os.rmdir(self.store)
                self.store = None

    def boot_writer(self, d):
        self.store = tempfile.mkdtemp(prefix="ferry-ioerr-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STORE_MIB}m", "tmpfs", self.store], check=True,
                       capture_output=True, timeout=30)
        image = os.path.join(self.store, "disk.img")
        with open(image, "wb") as f:
            f.truncate(IMAGE_MIB << 20)  # sparse: blocks come from the tmpfs as the guest writes
        self.console = os.path.join(d.dir, "console-1.log")
        xml = guest.domain_xml(NAME, memory_mib=256, console_log=self.console,
                               cmdline=guest.kernel_cmdline(fill="64M", wss="8M",
                                                            extra="ferry_disk_writer=vda"))
        disk = (f"    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n"
                f"      <source file='{image}'/>\n      <target dev='vda' bus='virtio'/>\n"
                f"    </disk>\n")
        xml = xml.replace("    <memballoon", disk + "    <memballoon")
        ft.virsh(self.local(d), "define", ft.write_file(d.dir, "mg.xml", xml))
        ft.virsh(self.local(d), "start", NAME)
        guest.Console(self.console).wait_ready(tqm.BOOT_TIMEOUT)
        # The writer is at work: the image takes blocks.
        self.assertTrue(ft.wait_for(lambda: os.stat(image).st_blocks > 0, 120, 0.5),
                        guest.Console(self.console).tail())
        return image

    def fill_store(self):
        """Takes every free block of the tmpfs: the guest's next write fails.
        Chunk by chunk, halving a chunk that does not fit: a tmpfs gives back
        all of a posix_fallocate that fails, so one call for all the free
        space allocated nothing whenever the writer took a block between
        statvfs and the call (the store then filled only by the writer's
        own 640 KiB/s, a minute later, and the resume found no room)."""
        filler = os.path.join(self.store, "filler")
        fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            page = os.statvfs(self.store).f_frsize
            size, chunk = 0, 1 << 20
            while chunk >= page:
                try:
                    os.posix_fallocate(fd, size, chunk)
                    size += chunk
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
        finally:
            os.close(fd)
        st = os.statvfs(self.store)
        self.assertEqual(st.f_bavail, 0, "the store still has room")
        return filler

    @guest.retry_on_guest_crash("end_attempt")
    def test_io_error_during_the_migration_ends_it_and_the_guest_stays_paused(self):
        a, b = self.daemon("A"), self.daemon("B")
        self.boot_writer(a)
        ft.virsh(self.local(a), "migrate-setspeed", NAME, "1")  # minutes of stream: time to act
        xml = self.dest_xml(a, b, os.path.join(b.dir, "console-2.log"))
        e = dict(os.environ, LIBVIRT_AUTH_FILE=self.authfile)
        e.pop("LIBVIRT_DEFAULT_URI", None)
        mig = subprocess.Popen(["virsh", "-c", self.local(a), "migrate", "--live", "--p2p",
                                "--abort-on-error", "--xml", xml, NAME, self.tcp(b)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        try:
            self.assertTrue(ft.wait_for(
                lambda: self.job_stats(a, NAME).get("memory_processed", 0) > 0, 120, 0.5))
            filler = self.fill_store()
            _, err = mig.communicate(timeout=120)
        finally:
            if mig.poll() is None:
                mig.kill()
                mig.communicate()
        guest.Console(self.console).check()  # a crashed guest writes nothing: try again
        self.assertNotEqual(mig.returncode, 0, "the migration went on over the I/O error")
        self.assertIn("the guest paused on a disk I/O error during the migration "
                      "(--abort-on-error)", err)
        self.assertEqual(self.state(a), "paused (I/O error)")
        self.assertNotIn(NAME, self.names(b))

        # Still paused on the error: a new --abort-on-error migration is refused.
        rc, _, err = self.migrate(a, b, self.tcp(b), os.path.join(b.dir, "console-3.log"),
                                  "--abort-on-error", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn(f"cannot migrate domain '{NAME}' with --abort-on-error: it is paused on an "
                      f"I/O error", err)

        # Room again, for all of the image: resumed, QEMU retries the write
        # and the guest runs on, and cannot fill the store again.
        os.unlink(filler)
        subprocess.run(["mount", "-o", f"remount,size={STORE_MIB + IMAGE_MIB}m", self.store], check=True,
                       capture_output=True, timeout=30)
        written = os.stat(os.path.join(self.store, "disk.img")).st_blocks
        ft.virsh(self.local(a), "resume", NAME)
        self.assertTrue(ft.wait_for(lambda: self.state(a) == "running (unpaused)", 30),
                        self.state(a))
        self.assertTrue(ft.wait_for(lambda: os.stat(os.path.join(self.store, "disk.img")).st_blocks > written,
                                    60, 0.5), "the guest wrote nothing after the resume")
        self.assertEqual(self.state(a), "running (unpaused)")
        ft.virsh(self.local(a), "destroy", NAME)


if __name__ == "__main__":
    unittest.main(verbosity=2)
