"""virt-install (Debian's virtinst) creates and starts a QEMU guest on a ferryd,
then the stock virsh and python3-libvirt look at it: domblklist, domiflist,
domstats, dommemstat, vcpuinfo, vcpucount, domdisplay, screenshot, console.

The guest is the project's test guest (tests/guest/), booted directly from
its kernel and initramfs (`--import --boot kernel=...`), with user networking
and one disk: a qcow2 file virt-install creates (`--disk path=DIR/FILE,size=N`)
through ferryd's storage pools (it defines and starts a `dir` pool for DIR,
then creates the volume), or an existing file it finds there. virt-install
picks everything else itself: the q35 machine with its PCIe root ports, and a
guest-agent channel whose socket ferryd places in its run dir."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402
import guest  # noqa: E402
from test_qemu import ConsoleReader  # noqa: E402

import libvirt  # noqa: E402

libvirt.registerErrorHandler(lambda ctx, err: None, None)

BOOT_TIMEOUT = 180  # a TCG boot on two shared, loaded cores
DISK_BYTES = 64 * 1024 * 1024
DISK_GIB = "0.0625"  # virt-install's size= is in GiB: 64 MiB
MEMORY_MIB = 256


def ppm_header(data):
    """(width, height, header length) of a binary PPM (P6)."""
    m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+255\s", data)
    if not m:
        raise AssertionError(f"not a binary PPM: {data[:20]!r}")
    return int(m.group(1)), int(m.group(2)), m.end()


class VirtInstallTest(ft.DaemonTestCase):
    def setUp(self):
        super().setUp()
        guest.require()
        if not shutil.which("virt-install"):
            raise RuntimeError("virt-install is missing (package virtinst, scripts/setup)")
        self.tmp = tempfile.mkdtemp(prefix="ferry-virt-install-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        # The disks' directory: virt-install makes a storage pool of it, named after it.
        self.images = os.path.join(self.tmp, "images")
        os.mkdir(self.images)

    def virt_install(self, uri, name, disk, *extra):
        vnc = os.path.join(self.tmp, f"{name}.vnc")
        cmdline = guest.kernel_cmdline(fill="32M", wss="4M", verify_s=0)
        args = ["virt-install", "--connect", uri, "--name", name,
                "--memory", str(MEMORY_MIB), "--vcpus", "1,maxvcpus=2", "--import",
                "--boot", f"kernel={guest.KERNEL},initrd={guest.INITRD},kernel_args={cmdline}",
                "--disk", disk, "--network", "user,model=virtio",
                "--virt-type", "qemu", "--osinfo", "linux2020",
                "--graphics", f"vnc,listens0.type=socket,listens0.socket={vnc}",
                "--video", "vga", "--noautoconsole", *extra]
        # HOME: virt-install keeps its log and cache there.
        env = dict(os.environ, HOME=self.tmp)
        env.pop("LIBVIRT_DEFAULT_URI", None)
        p = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
        return p, vnc

    def test_virt_install_then_virsh_commands(self):
        d = self.start_daemon()
        uri = f"qemu+tcp://{d.host}:{d.port}/system"
        self.disk = os.path.join(self.images, "vi1.qcow2")
        p, vnc = self.virt_install(uri, "vi1",
                                   f"path={self.disk},size={DISK_GIB},format=qcow2,bus=virtio")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("Domain creation completed", p.stdout)
        try:
            self.check_storage(uri)
            self.check_guest(d, uri, vnc)
        finally:
            # While the daemon still runs: a guest outlives its daemon by design.
            ft.virsh(uri, "destroy", "vi1", check=False)
        # The channel's socket in the run dir went with the guest.
        self.assertEqual([f for f in os.listdir(os.path.join(d.dir, "run", "qemu"))
                          if ".channel" in f], [])
        ft.virsh(uri, "undefine", "vi1")
        self.assertEqual(d.stop(), 0)
        self.assertIsNone(d.sanitizer_report())

    def check_storage(self, uri):
        """virt-install made a pool of the directory and a qcow2 volume in it."""
        with open(self.disk, "rb") as f:
            head = f.read(32)
        self.assertEqual(head[:4], b"QFI\xfb")
        self.assertEqual(int.from_bytes(head[24:32], "big"), DISK_BYTES)
        out = ft.virsh(uri, "pool-list", "--all")[1]
        self.assertRegex(out, r"\n\s*images\s+active\s+yes\s*\n")  # autostart, as virtinst sets
        out = ft.virsh(uri, "vol-list", "images")[1]
        self.assertRegex(out, rf"\n\s*vi1\.qcow2\s+{re.escape(self.disk)}\s*\n")
        out = ft.virsh(uri, "vol-info", self.disk)[1]
        self.assertRegex(out, r"Capacity:\s+64\.00 MiB")

    def test_virt_install_with_an_existing_disk_file(self):
        """A file already there: virt-install finds it as a volume of the pool
        it makes for the directory, and the domain uses it as it is."""
        d = self.start_daemon()
        uri = f"qemu+tcp://{d.host}:{d.port}/system"
        disk = os.path.join(self.images, "existing.img")
        with open(disk, "wb") as f:
            f.truncate(DISK_BYTES)
        p, _ = self.virt_install(uri, "vi2", f"path={disk},bus=virtio")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        try:
            self.assertRegex(ft.virsh(uri, "domstate", "vi2")[1], r"running")
            live = ET.fromstring(ft.virsh(uri, "dumpxml", "vi2")[1])
            self.assertEqual(live.find("devices/disk/source").get("file"), disk)
            self.assertEqual(live.find("devices/disk/driver").get("type"), "raw")
            self.assertRegex(ft.virsh(uri, "domblklist", "vi2")[1],
                             rf"\n\s*vda\s+{re.escape(disk)}\s*\n")
            self.assertEqual(os.path.getsize(disk), DISK_BYTES)  # not recreated
            self.assertRegex(ft.virsh(uri, "vol-list", "images")[1],
                             rf"\n\s*existing\.img\s+{re.escape(disk)}\s*\n")
        finally:
            ft.virsh(uri, "destroy", "vi2", check=False)
        ft.virsh(uri, "undefine", "vi2")

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
        for needle in ("-machine q35", "hpet=off", "driftfix=slew", "ICH9-LPC.disable_s3=1",
                       "ICH9-LPC.disable_s4=1", "qemu-xhci,id=usb,p2=15,p3=15", "usb-tablet",
                       f"file={self.disk},format=qcow2", "discard=unmap",
                       "pcie-root-port,id=pci.1,chassis=1,port=0x10,bus=pcie.0",
                       "-netdev user", "virtio-net-pci", f"-vnc unix:{vnc}", "-device VGA",
                       "name=org.qemu.guest_agent.0"):
            self.assertIn(needle, cmd)
        # The guest-agent channel virt-install adds without a path: a socket
        # in the run dir, where QEMU listens.
        channel = re.search(r"socket,id=charchannel0,path=(\S+?),server=on", cmd).group(1)
        self.assertEqual(os.path.dirname(channel), os.path.join(d.dir, "run", "qemu"))
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(channel)

        live = ET.fromstring(ft.virsh(uri, "dumpxml", "vi1")[1])
        self.assertEqual(live.find("currentMemory").text, str(MEMORY_MIB * 1024))
        mac = live.find("devices/interface/mac").get("address")

        out = ft.virsh(uri, "domblklist", "vi1")[1]
        self.assertRegex(out, rf"\n\s*vda\s+{re.escape(self.disk)}\s*\n")
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
        self.assertEqual(stats["block.0.path"], self.disk)
        self.assertEqual(stats["block.0.capacity"], str(DISK_BYTES))  # the image's virtual size
        self.assertEqual(stats["block.0.physical"], str(os.path.getsize(self.disk)))
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
        for disk in ("vda", self.disk):
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


def cpulist(text):
    """The CPUs of a list such as "0-2,5"."""
    cpus = set()
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def online_cpus():
    with open("/sys/devices/system/cpu/online") as f:
        return cpulist(f.read())


class InterfaceStatsAndPinningTest(ft.DaemonTestCase):
    """virsh domifstat reads a tap's counters (and refuses, naming why, an
    interface with no host device); virsh vcpupin shows and sets where each
    running vCPU's thread may run. The guest need not boot: it starts paused."""

    def test_domifstat_and_vcpupin(self):
        guest.require()
        d = self.start_daemon()
        uri = f"qemu+tcp://{d.host}:{d.port}/system"
        conn = libvirt.open(uri)
        self.addCleanup(conn.close)
        # A tap of this test's own, in no bridge and with no address: QEMU makes it.
        tap = "fy" + uuid.uuid4().hex[:10]
        devices = (f"    <interface type='ethernet'><mac address='52:54:00:f3:00:01'/>"
                   f"<target dev='{tap}'/><model type='virtio'/></interface>\n"
                   "    <interface type='user'><mac address='52:54:00:f3:00:02'/>"
                   "<model type='virtio'/></interface>\n")
        xml = guest.domain_xml("ifs", console_log=os.path.join(d.dir, "ifs.log"), vcpus=2)
        dom = conn.defineXML(xml.replace("    <memballoon", devices + "    <memballoon"))
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        try:
            self.check_domifstat(uri, dom, tap)
            self.check_vcpupin(uri, d, dom)
        finally:
            dom.destroy()
        # Stopped: the config pins every vCPU everywhere, and changing it is refused.
        everywhere = online_cpus()
        out = ft.virsh(uri, "vcpupin", "ifs")[1]
        self.assertEqual([cpulist(c) for c in re.findall(r"(?m)^\s*\d+\s+(\S+)\s*$", out)],
                         [everywhere, everywhere])
        rc, _, err = ft.virsh(uri, "vcpupin", "ifs", "0", "0", "--config", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("ferryd pins running vCPUs only", err)
        # Without flags virsh pins the running vCPUs (virDomainPinVcpu), as libvirt.
        rc, _, err = ft.virsh(uri, "vcpupin", "ifs", "0", "0", check=False)
        self.assertIn("domain is not running", err)
        # The sim driver has no vCPU threads or host devices.
        sim = libvirt.open(d.tcp_uri)
        self.addCleanup(sim.close)
        s = sim.defineXML(ft.domain_xml("s1"))
        for call in (lambda: s.vcpuPinInfo(0), lambda: s.pinVcpu(0, (True,)),
                     lambda: s.interfaceStats("vnet0")):
            with self.assertRaisesRegex(libvirt.libvirtError, "not supported"):
                call()

    def sysfs(self, tap, counter):
        with open(f"/sys/class/net/{tap}/statistics/{counter}") as f:
            return int(f.read())

    def check_domifstat(self, uri, dom, tap):
        # Up, without IPv6 (no router solicitations of its own): only the
        # frames sent below cross it, from the host to the guest.
        disable = f"/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"
        if os.path.exists(disable):
            with open(disable, "w") as f:
                f.write("1")
        subprocess.run(["ip", "link", "set", "dev", tap, "up"], check=True)
        # Frames go out once the kernel activated the link's queue (linkwatch,
        # asynchronous): send until one was counted. (QEMU does not read a
        # paused guest's tap, so no more than the first get through.)
        frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"ferry" * 12
        deadline = time.monotonic() + 20
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((tap, 0))
            while self.sysfs(tap, "tx_packets") < 1:
                self.assertLess(time.monotonic(), deadline, "the tap never carried a frame")
                s.send(frame)
                time.sleep(0.05)
        before = {c: self.sysfs(tap, c) for c in ("tx_packets", "tx_bytes", "rx_packets")}
        for device in (tap, "52:54:00:f3:00:01"):
            out = ft.virsh(uri, "domifstat", "ifs", device)[1]
            stats = dict(re.findall(r"(?m)^\S+ (\w+) (-?\d+)$", out))
            after = {c: self.sysfs(tap, c) for c in ("tx_packets", "tx_bytes", "rx_packets")}
            # The host's transmit is the guest's receive.
            self.assertTrue(before["tx_packets"] <= int(stats["rx_packets"]) <= after["tx_packets"],
                            (stats, before, after))
            self.assertTrue(before["tx_bytes"] <= int(stats["rx_bytes"]) <= after["tx_bytes"])
            self.assertTrue(before["rx_packets"] <= int(stats["tx_packets"]) <= after["rx_packets"])
        rx_bytes, rx_packets = dom.interfaceStats(tap)[:2]
        self.assertGreaterEqual(rx_packets, 1)
        self.assertGreaterEqual(rx_bytes, len(frame))
        rc, _, err = ft.virsh(uri, "domifstat", "ifs", "52:54:00:f3:00:02", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("is <interface type='user'> (QEMU's user networking): it has no host device",
                      err)
        rc, _, err = ft.virsh(uri, "domifstat", "ifs", "nosuch", check=False)
        self.assertIn("invalid path, 'nosuch' is not a known interface", err)

    def check_vcpupin(self, uri, d, dom):
        pid, _ = ft.vmm_of(d, "ifs", "qemu")
        allowed = online_cpus() & os.sched_getaffinity(pid)
        out = ft.virsh(uri, "vcpupin", "ifs")[1]
        rows = re.findall(r"(?m)^\s*(\d+)\s+(\S+)\s*$", out)
        self.assertEqual([(int(v), cpulist(c)) for v, c in rows], [(0, allowed), (1, allowed)])
        ft.virsh(uri, "vcpupin", "ifs", "1", "0")
        out = ft.virsh(uri, "vcpupin", "ifs")[1]
        rows = re.findall(r"(?m)^\s*(\d+)\s+(\S+)\s*$", out)
        self.assertEqual([(int(v), cpulist(c)) for v, c in rows], [(0, allowed), (1, {0})])
        # The kernel agrees: the thread QEMU named "CPU 1/TCG" may run on CPU 0 only.
        threads = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                threads[f.read().strip()] = int(tid)
        vcpu1 = next(t for name, t in threads.items() if name.startswith("CPU 1/"))
        self.assertEqual(os.sched_getaffinity(vcpu1), {0})
        # vcpuinfo's affinity is the same.
        info, maps = dom.vcpus()
        self.assertEqual([i for i, on in enumerate(maps[1]) if on], [0])
        self.assertEqual(dom.vcpuPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)[1][0], True)
        # The old API pins live too; the config cannot be changed.
        dom.pinVcpu(1, tuple(c in allowed for c in range(max(allowed) + 1)))
        self.assertEqual(os.sched_getaffinity(vcpu1), allowed)
        rc, _, err = ft.virsh(uri, "vcpupin", "ifs", "0", "0", "--config", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("vCPU pinning in the domain's config (VIR_DOMAIN_AFFECT_CONFIG", err)
        rc, _, err = ft.virsh(uri, "vcpupin", "ifs", "5", "0", check=False)
        self.assertNotEqual(rc, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
