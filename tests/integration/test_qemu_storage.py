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
connection in proxy mode, peer-to-peer or client-managed (virsh without
--p2p drives the five steps itself). virsh killed during a client-managed
migration's mirror: both daemons clean up, the guest stays on the source."""

import glob
import json
import os
import re
import subprocess
import sys
import time
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import guest  # noqa: E402
from test_qemu_migration import BOOT_TIMEOUT, NAME, VERIFY_TIMEOUT, QemuMigrationCase  # noqa: E402

DISK_MIB = 32     # the image
DISK_KIB = 8192   # what the guest writes and checks: 2048 blocks of 4 KiB
DISK_BLOCKS = DISK_KIB // 4


class QemuStorageTest(QemuMigrationCase):

    def boot_with_disk(self, d, data_mib=0, wss="8M", dirty_ms=100, disk_ms=50):
        """The guest on d with a raw virtio disk it writes all the time; its
        console is a socket (for `disk verify`) logged to a file. data_mib:
        that much random data after the guest's area (bytes to copy)."""
        guest.require()
        self.console = os.path.join(d.dir, "console-1.log")
        self.socket = os.path.join(d.dir, "console-1.sock")
        self.disk = os.path.join(d.dir, "disk-1.raw")
        with open(self.disk, "wb") as f:
            f.truncate(DISK_MIB << 20)
            f.seek(DISK_KIB << 10)
            for _ in range(data_mib):
                f.write(os.urandom(1 << 20))
        xml = guest.domain_xml(NAME, memory_mib=256, console_log=self.console, console_socket=self.socket,
                               cmdline=guest.kernel_cmdline(fill="64M", wss=wss, dirty_ms=dirty_ms, verify_s=2,
                                                            extra=f"ferry.disk_kib={DISK_KIB} ferry.disk_ms={disk_ms}"),
                               extra_devices=guest.disk_xml(self.disk))
        ft.virsh(self.local(d), "define", ft.write_file(d.dir, "mg.xml", xml))
        ft.virsh(self.local(d), "start", NAME)
        con = guest.Console(self.console)
        con.wait_ready(BOOT_TIMEOUT)
        con.wait_for(lambda ev: next((e for e in ev if e["kind"] == "disk ready"), None), BOOT_TIMEOUT,
                     "FERRY-GUEST disk ready")
        con.wait_verified(VERIFY_TIMEOUT)
        return con.last_counter()

    def disk_xml_for(self, src, dst, n, fmt="raw"):
        """The migratable XML with the console and the disk at paths of the destination's."""
        xml = ft.virsh(self.local(src), "dumpxml", "--migratable", NAME)[1]
        log, sock, disk = (os.path.join(dst.dir, f"{what}-{n}.{ext}")
                           for what, ext in (("console", "log"), ("console", "sock"), ("disk", fmt)))
        xml = xml.replace(self.console, log).replace(self.socket, sock).replace(self.disk, disk)
        self.console, self.socket, self.disk = log, sock, disk
        return ft.write_file(dst.dir, f"mg-{n}.xml", xml)

    def move(self, src, dst, duri, n, *flags, p2p=True):
        """virsh migrate --copy-storage-all: peer-to-peer, or client-managed
        (p2p=False: virsh itself calls begin, prepare on duri, perform...)."""
        old_disk = self.disk
        xml = self.disk_xml_for(src, dst, n)
        self.assertFalse(os.path.exists(self.disk))
        rc, out, err = self.virsh_env(self.local(src), "migrate", "--live", *(["--p2p"] if p2p else []),
                                      "--copy-storage-all", *flags, "--xml", xml, NAME, duri,
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
        before = self.verified_after_move(self.console, before)
        self.disk_verified_after_move()

        # Client-managed, virsh killed while the disk is mirrored: both
        # daemons clean up, the guest runs on here.
        self.virsh_killed_during_the_mirror(a, b)

        # Client-managed (no --p2p): virsh calls begin on A (the disks in its
        # cookie), prepare on B (which creates and exports them), perform on
        # A: the memory stream and the disk each on a data connection to B.
        self.move(a, b, self.tcp(b), 4, "--verbose", p2p=False)
        self.assertRegex(b.log(), r"created the image .*disk-4\.raw")
        self.assertRegex(b.log(), r"data connection for the migration of domain 'mg' from .* accepted")
        self.assertEqual(self.state(a, NAME), "shut off (migrated)")
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
        ft.virsh(self.local(b), "suspend", NAME)
        self.assertEqual(guest.disk_digest(self.disk, DISK_BLOCKS), int(r["digest"], 16))
        ft.virsh(self.local(b), "destroy", NAME)

    def virsh_killed_during_the_mirror(self, src, dst):
        """virsh migrate --copy-storage-all without --p2p (virsh drives the
        steps) at 1 MiB/s, virsh killed while the disk is mirrored: the
        source ends the mirror and runs the guest on (migration canceled);
        the destination ends its incoming QEMU, its NBD export and the image
        it created, within seconds (not after its orphan watchdog's grace)."""
        here = self.disk, self.console, self.socket
        xml = self.disk_xml_for(src, dst, 5)
        image = self.disk
        self.disk, self.console, self.socket = here
        e = dict(os.environ, LIBVIRT_AUTH_FILE=self.authfile)
        e.pop("LIBVIRT_DEFAULT_URI", None)
        mig = subprocess.Popen(["virsh", "-c", self.local(src), "migrate", "--live", "--copy-storage-all",
                                "--bandwidth", "1", "--xml", xml, NAME, self.tcp(dst)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        try:
            def mirroring():
                return self.job_stats(src, NAME).get("disk_processed", 0) > 0 and os.path.exists(image)
            self.assertTrue(ft.wait_for(mirroring, 120, 0.2), src.log()[-2000:] + dst.log()[-2000:])
            incoming = [int(ET.parse(path).getroot().get("pid"))
                        for path in ft.instance_files(dst, "qemu").values()]
            exports = glob.glob(os.path.join(dst.dir, "**", "*.nbd"), recursive=True)
            self.assertTrue(incoming)
            self.assertTrue(exports)
        finally:
            mig.kill()
            mig.communicate()
        killed = time.monotonic()
        self.assertTrue(ft.wait_for(lambda: self.state(src) == "running (migration canceled)", 30),
                        self.state(src) + src.log()[-2000:])
        self.assertIn("the client that drove the migration disconnected",
                      self.job_stats(src, NAME, completed=True).get("errmsg", ""))
        for pid in incoming:
            self.assertTrue(ft.wait_for(lambda: not ft.pid_alive(pid), 30), f"the incoming QEMU {pid} runs on")
        self.assertTrue(ft.wait_for(lambda: NAME not in self.names(dst), 30), dst.log()[-2000:])
        self.assertTrue(ft.wait_for(lambda: not os.path.exists(image), 30), "the destination kept its image")
        self.assertFalse([p for p in exports if os.path.exists(p)], "the destination kept its NBD socket")
        self.assertLess(time.monotonic() - killed, 30)
        # (The destination may notice its client gone, or its incoming QEMU
        # failing first on the stream the source ended: either way it cleans up.)
        self.assertRegex(dst.log(), rf"removed the image {re.escape(image)} created for a failed migration")
        self.assertEqual(self.state(src), "running (migration canceled)")

    def qemu_img_info(self, path):
        p = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    @guest.retry_on_guest_crash("end_attempt")
    def test_abort_during_the_mirror_then_copy_storage_inc_of_one_disk_over_its_backing_chain(self):
        a, b = self.daemon("A"), self.daemon("B")
        guest.require()
        # vda: a qcow2 overlay over a base image holding data of its own
        # beyond the guest's area; vdb: a second disk on "shared storage"
        # (the same path for both daemons), never copied.
        base = os.path.join(a.dir, "base.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, f"{DISK_MIB}M"], check=True)
        subprocess.run(["qemu-io", "-c", f"write -P 0x5a {DISK_KIB}k 4M", base], check=True,
                       capture_output=True)
        self.disk = os.path.join(a.dir, "disk-1.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", self.disk],
                       check=True)
        shared = os.path.join(a.dir, "shared.raw")
        with open(shared, "wb") as f:
            f.truncate(4 << 20)
        self.console = os.path.join(a.dir, "console-1.log")
        self.socket = os.path.join(a.dir, "console-1.sock")
        xml = guest.domain_xml(NAME, memory_mib=256, console_log=self.console, console_socket=self.socket,
                               cmdline=guest.kernel_cmdline(fill="64M", wss="8M", verify_s=2,
                                                            extra=f"ferry.disk_kib={DISK_KIB}"),
                               extra_devices=guest.disk_xml(self.disk, "qcow2") +
                               guest.disk_xml(shared, "raw", "vdb"))
        ft.virsh(self.local(a), "define", ft.write_file(a.dir, "mg.xml", xml))
        ft.virsh(self.local(a), "start", NAME)
        con = guest.Console(self.console)
        con.wait_ready(BOOT_TIMEOUT)
        con.wait_for(lambda ev: next((e for e in ev if e["kind"] == "disk ready"), None), BOOT_TIMEOUT,
                     "FERRY-GUEST disk ready")
        before = con.wait_verified(VERIFY_TIMEOUT)["counter"]
        env = {"LIBVIRT_AUTH_FILE": self.authfile}

        # --migrate-disks names a disk the guest does not have: refused naming it.
        rc, _, err = self.virsh_env(self.local(a), "migrate", "--live", "--p2p", "--tunnelled",
                                    "--copy-storage-inc", "--migrate-disks", "vdz", NAME, self.tls(b), env=env)
        self.assertNotEqual(rc, 0)
        self.assertIn("'vdz' is not a disk", err)
        self.assertEqual(self.state(a), "running (booted)")

        # domjobabort while the mirror runs (1 MiB/s): the source's disk and
        # guest as they were, the destination's image gone with its VM.
        src_disk, src_console, src_socket = self.disk, self.console, self.socket
        xml_path = self.disk_xml_for(a, b, 2, "qcow2")
        e = dict(os.environ, LIBVIRT_AUTH_FILE=self.authfile)
        e.pop("LIBVIRT_DEFAULT_URI", None)
        mig = subprocess.Popen(["virsh", "-c", self.local(a), "migrate", "--live", "--p2p", "--tunnelled",
                                "--copy-storage-inc", "--migrate-disks", "vda", "--bandwidth", "1",
                                "--xml", xml_path, NAME, self.tls(b)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        try:
            def mirroring():
                st = self.job_stats(a, NAME)
                return st.get("disk_processed", 0) > 0 and os.path.exists(self.disk)
            self.assertTrue(ft.wait_for(mirroring, 60, 0.2), self.job_stats(a, NAME))
            ft.virsh(self.local(a), "domjobabort", NAME)
            out, err = mig.communicate(timeout=120)
        finally:
            if mig.poll() is None:
                mig.kill()
                mig.wait()
        self.assertNotEqual(mig.returncode, 0)
        self.assertIn("abort", err.lower())
        self.assertEqual(self.state(a), "running (migration canceled)")
        self.assertTrue(ft.wait_for(lambda: not os.path.exists(self.disk), 30, 0.2),
                        "the destination kept the image it created")
        self.assertNotIn(NAME, self.names(b))
        self.assertEqual(self.qemu_img_info(src_disk).get("backing-filename"), base)
        self.disk, self.console, self.socket = src_disk, src_console, src_socket
        self.disk_verified_after_move()  # the source's disk holds all the guest wrote

        # --copy-storage-inc of vda only, tunnelled: the destination's new
        # overlay keeps the backing file, vdb stays where it is.
        xml_path = self.disk_xml_for(a, b, 3, "qcow2")
        rc, _, err = self.virsh_env(self.local(a), "migrate", "--live", "--p2p", "--tunnelled",
                                    "--copy-storage-inc", "--migrate-disks", "vda", "--xml", xml_path, NAME,
                                    self.tls(b), env=env)
        self.assertEqual(rc, 0, err + a.log()[-3000:] + b.log()[-3000:])
        self.assertEqual(self.state(b), "running (migrated)")
        info = self.qemu_img_info(self.disk)
        self.assertEqual(info.get("backing-filename"), base)
        # Only the top image moved: the base's 4 MiB of its own stayed out.
        self.assertLess(info["actual-size"], (DISK_KIB << 10) + (3 << 20))
        self.verified_after_move(self.console, before)
        self.disk_verified_after_move()
        con = guest.Console(self.console)
        sock = guest.ConsoleSocket(self.socket)
        try:
            guest.disk_command(con, sock.send, "disk stop")
            r = guest.disk_command(con, sock.send, "disk verify")
        finally:
            sock.close()
        ft.virsh(self.local(b), "suspend", NAME)
        flat = os.path.join(b.dir, "flat.raw")
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", self.disk, flat], check=True, timeout=120)
        self.assertEqual(guest.disk_digest(flat, DISK_BLOCKS), int(r["digest"], 16))
        with open(flat, "rb") as f:  # the base's own data, read through the chain
            f.seek(DISK_KIB << 10)
            self.assertEqual(f.read(4 << 20), b"\x5a" * (4 << 20))
        ft.virsh(self.local(b), "destroy", NAME)

    @guest.retry_on_guest_crash("end_attempt")
    def test_bandwidth_holds_for_the_sum_of_the_memory_and_disk_channels(self):
        """--bandwidth 4 with the disk on a channel of its own beside the
        memory stream (proxy mode: one data connection each): the bytes the
        destination's kernel received on both connections, sampled with ss
        every 0.2 s, stay within 4 MiB/s over every window of 8 s or more
        (plus one second's burst and a chunk per channel). Each channel
        counting on its own (the memory stream idle, with its budget
        growing, while the disk is mirrored first, then the two together)
        sends several times that."""
        a, b = self.daemon("A"), self.daemon("B")
        # 20 MiB to copy beyond the guest's 8; its memory dirtied slowly (1
        # MiB/s: a TCG guest migrated through many dirty iterations tends to
        # crash on the destination, QEMU.md), its disk too (64 KiB/s: the
        # mirror catches up at 4 MiB/s, in about 7 s, and the memory follows)
        self.boot_with_disk(a, data_mib=DISK_MIB - DISK_KIB // 1024 - 4, wss="1M", dirty_ms=1000,
                            disk_ms=1000)
        xml = self.disk_xml_for(a, b, 2)
        e = dict(os.environ, LIBVIRT_AUTH_FILE=self.authfile)
        e.pop("LIBVIRT_DEFAULT_URI", None)
        limit = 4 << 20
        mig = subprocess.Popen(["virsh", "-c", self.local(a), "migrate", "--live", "--p2p", "--copy-storage-all",
                                "--bandwidth", "4", "--xml", xml, NAME, self.tcp(b)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        samples = []  # (time before ss, time after, {peer: bytes received})
        try:
            listen = None

            def prepared():
                nonlocal listen
                m = re.search(r"prepared incoming migration of domain 'mg' \(tcp://([^)]*:\d+)\)", b.log())
                listen = m and m.group(1)
                return listen is not None
            self.assertTrue(ft.wait_for(prepared, 120, 0.1), b.log()[-2000:])
            window_s = 24  # the mirror (about 7 s at the limit), then the memory beside the disk's writes
            while mig.poll() is None:
                t0 = time.monotonic()
                # the address too: another test's socket on another address
                # (integration-faults' veth) may have the same port
                out = subprocess.run(["ss", "-tinH", "state", "established", "src", listen],
                                     capture_output=True, text=True, timeout=30).stdout
                t1 = time.monotonic()
                conns = dict(re.findall(r"\S+:\d+\s+(\S+:\d+)\s*\n\s.*?bytes_received:(\d+)", out))
                samples.append((t0, t1, {k: int(v) for k, v in conns.items()}))
                if sum(samples[-1][2].values()) and t1 - next(s[0] for s in samples if sum(s[2].values())) > window_s:
                    break
                time.sleep(0.2)
            ft.virsh(self.local(a), "migrate-setspeed", NAME, "0", check=False)  # measured: let it converge
            _, err = mig.communicate(timeout=300)
        finally:
            if mig.poll() is None:
                mig.kill()
                mig.communicate()
        self.assertEqual(mig.returncode, 0, err + self.post_mortem())
        self.assertEqual(self.state(b), "running (migrated)")
        last = samples[-1][2]
        self.assertEqual(len(last), 2, f"not the two data connections: {last}")
        # the disk's connection (its 28 MiB) and the memory's, which ran too
        self.assertTrue(all(v > (8 << 20) for v in last.values()), f"a channel carried little: {last}")
        worst = None
        for i, (b0, _, c0) in enumerate(samples):
            for _, a1, c1 in samples[i + 1:]:
                if a1 - b0 < 8:
                    continue
                # bytes of each connection are monotonic while it is open
                moved = sum(v - c0.get(k, 0) for k, v in c1.items())
                allowed = limit * (a1 - b0 + 1) + 2 * (1 << 20)
                if worst is None or moved - allowed > worst[0] - worst[1]:
                    worst = (moved, allowed, a1 - b0)
        self.assertIsNotNone(worst, "no window of 8 s was sampled")
        print("worst window: %.1f s, %.1f MiB moved, %.1f MiB allowed" % (worst[2], worst[0] / (1 << 20),
              worst[1] / (1 << 20)), file=sys.stderr)
        self.assertLessEqual(worst[0], worst[1], "over %.1f s the two channels moved %.1f MiB, above the "
                             "limit's %.1f MiB" % (worst[2], worst[0] / (1 << 20), worst[1] / (1 << 20)))
        self.verified_after_move(self.console, 0)
        self.disk_verified_after_move()
        ft.virsh(self.local(b), "destroy", NAME)

    def test_refused_for_ferry_vmm(self):
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
