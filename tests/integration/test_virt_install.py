"""virt-install (Debian's virtinst) creates and starts a QEMU guest on a ferryd,
then the stock virsh and python3-libvirt look at it: domblklist, domiflist,
domstats, dommemstat, vcpuinfo, vcpucount, domdisplay, screenshot, console.

The guest is the project's test guest (tests/guest/), booted directly from
its kernel and initramfs (`--import --boot kernel=...`), with user networking
and one disk. The disk is a loop device: virt-install manages a disk *file*
through a libvirt storage pool (it defines a 'dir' pool for the file's
directory), and ferryd has no storage pools; a path under /dev it leaves
alone (docs/qemu.md). `--channel none`: virt-install's default guest-agent
channel has no socket path, which ferryd does not pick for it."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import guest  # noqa: E402
from test_qemu import ConsoleReader  # noqa: E402

import libvirt  # noqa: E402

libvirt.registerErrorHandler(lambda ctx, err: None, None)

BOOT_TIMEOUT = 180  # a TCG boot on two shared, loaded cores
DISK_BYTES = 64 * 1024 * 1024
MEMORY_MIB = 256


def ppm_header(data):
    """(width, height, header length) of a binary PPM (P6)."""
    m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+255\s", data)
    if not m:
        raise AssertionError(f"not a binary PPM: {data[:20]!r}")
    return int(m.group(1)), int(m.group(2)), m.end()


class LoopDevice:
    """A block device backed by a sparse file, detached by its path."""

    def __init__(self, directory):
        backing = os.path.join(directory, "disk.img")
        with open(backing, "wb") as f:
            f.truncate(DISK_BYTES)
        self.path = subprocess.run(["losetup", "--find", "--show", backing], capture_output=True,
                                   text=True, check=True).stdout.strip()

    def detach(self):
        subprocess.run(["losetup", "--detach", self.path], capture_output=True)


class VirtInstallTest(ft.DaemonTestCase):
    def setUp(self):
        super().setUp()
        guest.require()
        if not shutil.which("virt-install"):
            raise RuntimeError("virt-install is missing (package virtinst, scripts/setup)")
        self.tmp = tempfile.mkdtemp(prefix="ferry-virt-install-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.disk = LoopDevice(self.tmp)
        self.addCleanup(self.disk.detach)

    def virt_install(self, uri, name, *extra):
        vnc = os.path.join(self.tmp, f"{name}.vnc")
        cmdline = guest.kernel_cmdline(fill="32M", wss="4M", verify_s=0)
        args = ["virt-install", "--connect", uri, "--name", name,
                "--memory", str(MEMORY_MIB), "--vcpus", "1,maxvcpus=2", "--import",
                "--boot", f"kernel={guest.KERNEL},initrd={guest.INITRD},kernel_args={cmdline}",
                "--disk", f"path={self.disk.path},bus=virtio",
                "--network", "user,model=virtio",
                "--virt-type", "qemu", "--machine", "pc", "--osinfo", "linux2020",
                "--graphics", f"vnc,listens0.type=socket,listens0.socket={vnc}",
                "--video", "vga", "--channel", "none", "--noautoconsole", *extra]
        # HOME: virt-install keeps its log and cache there.
        env = dict(os.environ, HOME=self.tmp)
        env.pop("LIBVIRT_DEFAULT_URI", None)
        p = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
        return p, vnc

    def test_virt_install_then_virsh_commands(self):
        d = self.start_daemon()
        uri = f"qemu+tcp://{d.host}:{d.port}/system"
        p, vnc = self.virt_install(uri, "vi1")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("Domain creation completed", p.stdout)
        try:
            self.check_guest(d, uri, vnc)
        finally:
            # While the daemon still runs: a guest outlives its daemon by design.
            ft.virsh(uri, "destroy", "vi1", check=False)
        ft.virsh(uri, "undefine", "vi1")
        self.assertEqual(d.stop(), 0)
        self.assertIsNone(d.sanitizer_report())

    def check_guest(self, d, uri, vnc):
        self.assertRegex(ft.virsh(uri, "domstate", "vi1")[1], r"running")

        # The serial console virt-install added carries the guest's output.
        console = ConsoleReader(uri, "vi1")
        try:
            console.wait_for("FERRY-GUEST ready", BOOT_TIMEOUT)
        finally:
            console.close()

        # What virt-install asked for beyond the devices, on QEMU's command line.
        pid, _ = ft.vmm_of(d, "vi1", "qemu")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = " ".join(f.read().decode().split("\0"))
        for needle in ("hpet=off", "driftfix=slew", "PIIX4_PM.disable_s3=1",
                       "PIIX4_PM.disable_s4=1", "qemu-xhci,id=usb,p2=15,p3=15", "usb-tablet",
                       f"file={self.disk.path}", "cache=none", "discard=unmap", "aio=native",
                       "-netdev user", "virtio-net-pci", f"-vnc unix:{vnc}", "-device VGA"):
            self.assertIn(needle, cmd)

        live = ET.fromstring(ft.virsh(uri, "dumpxml", "vi1")[1])
        self.assertEqual(live.find("currentMemory").text, str(MEMORY_MIB * 1024))
        mac = live.find("devices/interface/mac").get("address")

        out = ft.virsh(uri, "domblklist", "vi1")[1]
        self.assertRegex(out, rf"\n\s*vda\s+{re.escape(self.disk.path)}\s*\n")
        out = ft.virsh(uri, "domiflist", "vi1")[1]
        self.assertRegex(out, rf"\n\s*-\s+user\s+-\s+virtio\s+{mac}\s*\n")

        stats = self.domstats(uri, "vi1")
        self.assertEqual(stats["state.state"], "1")  # running
        self.assertGreater(int(stats["cpu.time"]), 0)
        self.assertEqual(stats["balloon.current"], str(MEMORY_MIB * 1024))  # the XML's
        self.assertEqual(stats["balloon.maximum"], str(MEMORY_MIB * 1024))
        self.assertGreater(int(stats["balloon.rss"]), 0)
        self.assertEqual(stats["vcpu.current"], "1")  # one of two plugged in
        self.assertEqual(stats["vcpu.maximum"], "2")
        self.assertEqual(stats["vcpu.0.state"], "1")
        self.assertGreater(int(stats["vcpu.0.time"]), 0)
        self.assertEqual(stats["net.count"], "1")
        self.assertEqual(stats["block.count"], "1")
        self.assertEqual(stats["block.0.name"], "vda")
        self.assertEqual(stats["block.0.path"], self.disk.path)
        self.assertEqual(stats["block.0.capacity"], str(DISK_BYTES))
        self.assertEqual(stats["block.0.physical"], str(DISK_BYTES))
        # The firmware read the boot sector: QEMU counted it.
        self.assertGreaterEqual(int(stats["block.0.rd.reqs"]), 1)
        self.assertGreaterEqual(int(stats["block.0.rd.bytes"]), 512)
        # Groups picked one by one, as virsh asks them.
        only = self.domstats(uri, "vi1", "--vcpu")
        self.assertEqual(set(k.split(".")[0] for k in only), {"vcpu"})

        out = ft.virsh(uri, "dommemstat", "vi1")[1]
        self.assertRegex(out, rf"(?m)^actual {MEMORY_MIB * 1024}$")
        self.assertRegex(out, r"(?m)^rss [1-9]\d*$")

        out = ft.virsh(uri, "vcpuinfo", "vi1")[1]
        self.assertEqual(re.findall(r"(?m)^VCPU:\s+(\d+)$", out), ["0"])
        self.assertEqual(re.findall(r"(?m)^State:\s+(\S+)$", out), ["running"])
        self.assertRegex(out, r"(?m)^CPU time:\s+\d+\.\ds$")
        out = ft.virsh(uri, "vcpucount", "vi1")[1]
        for row in (r"maximum\s+config\s+2", r"maximum\s+live\s+2", r"current\s+config\s+1",
                    r"current\s+live\s+1"):
            self.assertRegex(out, row)

        # domblkstat: the disk by target or by path.
        for disk in ("vda", self.disk.path):
            out = ft.virsh(uri, "domblkstat", "vi1", disk)[1]
            self.assertGreaterEqual(int(re.search(r"rd_req (\d+)", out).group(1)),
                                    int(stats["block.0.rd.reqs"]))
        rc, _, err = ft.virsh(uri, "domblkstat", "vi1", "vdz", check=False)
        self.assertIn("invalid path: vdz not assigned to domain", err)

        # domdisplay names the VNC socket, and a VNC server answers there.
        self.assertEqual(ft.virsh(uri, "domdisplay", "vi1")[1].strip(), f"vnc+unix://{vnc}")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(vnc)
            self.assertTrue(s.recv(12).startswith(b"RFB 003."))

        # A screenshot of the VGA text console: 720x400, and not blank.
        shot = os.path.join(self.tmp, "shot.ppm")
        out = ft.virsh(uri, "screenshot", "vi1", shot)[1]
        self.assertIn("image/x-portable-pixmap", out)
        with open(shot, "rb") as f:
            data = f.read()
        width, height, header = ppm_header(data)
        self.assertEqual((width, height), (720, 400))
        self.assertEqual(len(data), header + width * height * 3)
        self.assertGreater(len(set(data[header:][i:i + 3] for i in range(0, width * height * 3, 3))),
                           1)

        self.check_python_libvirt(uri, "vi1")

    def domstats(self, uri, name, *groups):
        out = ft.virsh(uri, "domstats", *groups, name)[1]
        return dict(line.strip().split("=", 1) for line in out.splitlines() if "=" in line)

    def check_python_libvirt(self, uri, name):
        conn = libvirt.open(uri)
        try:
            self.check_python_libvirt_on(conn, name)
        finally:
            conn.close()

    def check_python_libvirt_on(self, conn, name):
        dom = conn.lookupByName(name)
        mem = dom.memoryStats()
        self.assertEqual(mem["actual"], MEMORY_MIB * 1024)
        self.assertGreater(mem["rss"], 0)
        info, maps = dom.vcpus()
        self.assertEqual([v[0] for v in info], [0])
        self.assertEqual([v[1] for v in info], [libvirt.VIR_VCPU_RUNNING])
        self.assertGreater(info[0][2], 0)  # CPU time
        self.assertEqual(len(maps), 1)
        self.assertTrue(any(maps[0]))  # it may run somewhere
        self.assertEqual(dom.vcpusFlags(libvirt.VIR_DOMAIN_VCPU_MAXIMUM), 2)
        self.assertEqual(dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE), 1)
        records = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_BALLOON |
                                         libvirt.VIR_DOMAIN_STATS_BLOCK)
        (rdom, stats), = [(r, s) for r, s in records if r.name() == name]
        self.assertEqual(stats["balloon.current"], MEMORY_MIB * 1024)
        self.assertEqual(stats["block.0.name"], "vda")
        self.assertNotIn("state.state", stats)
        # Groups ferryd does not have: skipped, or refused when enforced.
        stats = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_PERF)[0][1]
        self.assertEqual(stats, {})
        with self.assertRaisesRegex(libvirt.libvirtError, "Stats types bits 0x40 are not supported"):
            conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_PERF,
                                    libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ENFORCE_STATS)
        self.assertEqual(dom.info()[3], 1)  # nrVirtCpu: the vCPUs plugged in
        with self.assertRaisesRegex(libvirt.libvirtError, "VIR_DOMAIN_VCPU_GUEST"):
            dom.vcpusFlags(libvirt.VIR_DOMAIN_VCPU_GUEST)
        with self.assertRaisesRegex(libvirt.libvirtError, "no screen 1"):
            dom.screenshot(conn.newStream(0), 1)


class RefusalsTest(ft.DaemonTestCase):
    """What ferryd does not do is refused naming it, without a guest."""

    def test_screenshot_needs_a_running_domain_with_video(self):
        guest.require()
        d = self.start_daemon()
        uri = f"qemu+tcp://{d.host}:{d.port}/system"
        conn = libvirt.open(uri)
        self.addCleanup(conn.close)
        log = os.path.join(d.dir, "console.log")
        dom = conn.defineXML(guest.domain_xml("nv", console_log=log, cmdline=guest.kernel_cmdline(
            fill="16M", wss="4M", verify_s=0)))
        with self.assertRaisesRegex(libvirt.libvirtError, "domain is not running"):
            dom.screenshot(conn.newStream(0), 0)
        dom.create()
        with self.assertRaisesRegex(libvirt.libvirtError, "has no video device"):
            dom.screenshot(conn.newStream(0), 0)
        rc, _, err = ft.virsh(uri, "domdisplay", "nv", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("No graphical display found", err)
        # The sim driver has no vCPU threads or screens to show.
        sim = libvirt.open(d.tcp_uri)
        self.addCleanup(sim.close)
        s = sim.defineXML(ft.domain_xml("s1"))
        s.create()
        with self.assertRaisesRegex(libvirt.libvirtError, "not supported"):
            s.vcpus()
        stats = sim.domainListGetStats([s], 0)[0][1]
        self.assertEqual(stats["state.state"], libvirt.VIR_DOMAIN_RUNNING)
        self.assertEqual(stats["vcpu.current"], s.info()[3])
        self.assertNotIn("vcpu.maximum", stats)
        self.assertEqual(stats["balloon.maximum"], s.maxMemory())
        s.destroy()
        dom.destroy()


if __name__ == "__main__":
    unittest.main(verbosity=2)
