"""What a management tool asks at connect: python3-libvirt calls every list
and count procedure of the objects ferry does not have (networks,
interfaces, node devices, network filters, secrets, snapshots, checkpoints)
and gets empty answers, lookups get libvirt's "not found" error of the object
type, creation is refused naming the object, and domain capabilities answer
for each driver. Storage pools, which a fresh daemon has none of, answer the
same way here (test_storage.py creates some). The stock virsh commands that
enumerate these run too."""

import os
import re
import shutil
import struct
import subprocess
import sys
import unittest
import uuid as uuidlib
import xml.etree.ElementTree as ET

import libvirt

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

# The drivers of a ferryd, by URI scheme, with the domain type their domain
# capabilities name by default (the QEMU driver: TCG unless KVM can run here).
DRIVERS = [("sim", "sim"), ("qemu", None)]
QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"


def quiet(*_):
    """libvirt prints every error to stderr by default; the tests check them."""


libvirt.registerErrorHandler(quiet, None)


class MgmtTestCase(ft.DaemonTestCase):
    def open(self, d, scheme="sim", readonly=False):
        uri = f"{scheme}+tcp://127.0.0.1:{d.port}/system"
        conn = libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
        self.addCleanup(conn.close)
        return conn

    def assert_libvirt_error(self, call, code, domain, text):
        with self.assertRaises(libvirt.libvirtError) as cm:
            call()
        e = cm.exception
        self.assertEqual(e.get_error_code(), code, e.get_error_message())
        self.assertEqual(e.get_error_domain(), domain, e.get_error_message())
        self.assertIn(text, e.get_error_message())
        return e


class EmptyListsTest(MgmtTestCase):
    """Every list answers empty and every count 0, through the old per-kind
    procedures (num/list/list-defined) and the LIST_ALL ones."""

    def test_lists_and_counts(self):
        d = self.start_daemon()
        for scheme, _ in DRIVERS:
            with self.subTest(driver=scheme):
                self.check_lists_and_counts(self.open(d, scheme))

    def check_lists_and_counts(self, conn):
        counts = {
            "numOfNetworks": conn.numOfNetworks,
            "numOfDefinedNetworks": conn.numOfDefinedNetworks,
            "numOfStoragePools": conn.numOfStoragePools,
            "numOfDefinedStoragePools": conn.numOfDefinedStoragePools,
            "numOfInterfaces": conn.numOfInterfaces,
            "numOfDefinedInterfaces": conn.numOfDefinedInterfaces,
            "numOfNWFilters": conn.numOfNWFilters,
            "numOfSecrets": conn.numOfSecrets,
            "numOfDevices": lambda: conn.numOfDevices(None, 0),
            "numOfDevices(pci)": lambda: conn.numOfDevices("pci", 0),
        }
        for name, call in counts.items():
            self.assertEqual(call(), 0, name)
        lists = {
            "listNetworks": conn.listNetworks,
            "listDefinedNetworks": conn.listDefinedNetworks,
            "listStoragePools": conn.listStoragePools,
            "listDefinedStoragePools": conn.listDefinedStoragePools,
            "listInterfaces": conn.listInterfaces,
            "listDefinedInterfaces": conn.listDefinedInterfaces,
            "listNWFilters": conn.listNWFilters,
            "listSecrets": conn.listSecrets,
            "listDevices": lambda: conn.listDevices(None, 0),
            "listAllNetworks": conn.listAllNetworks,
            "listAllNetworks(active)": lambda: conn.listAllNetworks(
                libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE),
            "listAllStoragePools": conn.listAllStoragePools,
            "listAllInterfaces": conn.listAllInterfaces,
            "listAllDevices": conn.listAllDevices,
            "listAllNWFilters": conn.listAllNWFilters,
            "listAllNWFilterBindings": conn.listAllNWFilterBindings,
            "listAllSecrets": conn.listAllSecrets,
        }
        for name, call in lists.items():
            self.assertEqual(list(call()), [], name)

    def test_snapshot_and_checkpoint_lists_of_a_domain(self):
        d = self.start_daemon()
        conn = self.open(d)
        dom = conn.defineXML(ft.domain_xml("snaps"))
        self.assertEqual(dom.snapshotNum(), 0)
        self.assertEqual(dom.snapshotListNames(), [])
        self.assertEqual(dom.listAllSnapshots(), [])
        self.assertEqual(dom.hasCurrentSnapshot(), 0)
        self.assertEqual(dom.listAllCheckpoints(), [])
        self.assert_libvirt_error(dom.snapshotCurrent, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
                                  libvirt.VIR_FROM_DOMAIN_SNAPSHOT,
                                  "does not have a current snapshot")
        self.assert_libvirt_error(lambda: dom.snapshotLookupByName("s1"),
                                  libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
                                  libvirt.VIR_FROM_DOMAIN_SNAPSHOT,
                                  "Domain snapshot not found: no domain snapshot with matching "
                                  "name 's1'")
        self.assert_libvirt_error(lambda: dom.checkpointLookupByName("c1"),
                                  libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT,
                                  libvirt.VIR_FROM_DOMAIN_CHECKPOINT,
                                  "Domain checkpoint not found: no domain checkpoint with "
                                  "matching name 'c1'")
        # A domain that is gone is "Domain not found", as for every domain call.
        dom.undefine()
        self.assert_libvirt_error(dom.listAllSnapshots, libvirt.VIR_ERR_NO_DOMAIN,
                                  libvirt.VIR_FROM_DOMAIN, "Domain not found")
        self.assert_libvirt_error(dom.listAllCheckpoints, libvirt.VIR_ERR_NO_DOMAIN,
                                  libvirt.VIR_FROM_DOMAIN, "Domain not found")

    def test_negative_list_size_is_refused(self):
        """maxnames comes from the client: out of range is an error, not an allocation."""
        d = self.start_daemon()
        c = ft.RawClient(d)
        self.addCleanup(c.close)
        c.open()
        for proc in (38, 36, 72, 74, 127, 138, 140, 179):  # the LIST_* taking maxnames
            hdr, payload = c.call(proc, (-1).to_bytes(4, "big", signed=True))
            self.assertEqual(hdr[5], ft.ERROR, proc)
            self.assertIn("out of range", ft.decode_error(payload)[2], proc)


class NotFoundTest(MgmtTestCase):
    """Each lookup fails with the code and error domain libvirt gives for its type."""

    def test_lookups(self):
        d = self.start_daemon()
        for scheme, _ in DRIVERS:
            with self.subTest(driver=scheme):
                self.check_lookups(self.open(d, scheme))

    def check_lookups(self, conn):
        u = str(uuidlib.uuid4())
        cases = [
            (lambda: conn.networkLookupByName("nosuch"), libvirt.VIR_ERR_NO_NETWORK,
             libvirt.VIR_FROM_NETWORK, "Network not found: no network with matching name 'nosuch'"),
            (lambda: conn.networkLookupByUUIDString(u), libvirt.VIR_ERR_NO_NETWORK,
             libvirt.VIR_FROM_NETWORK, f"no network with matching uuid '{u}'"),
            (lambda: conn.storagePoolLookupByName("nosuch"), libvirt.VIR_ERR_NO_STORAGE_POOL,
             libvirt.VIR_FROM_STORAGE, "Storage pool not found: no storage pool with matching "
             "name 'nosuch'"),
            (lambda: conn.storagePoolLookupByUUIDString(u), libvirt.VIR_ERR_NO_STORAGE_POOL,
             libvirt.VIR_FROM_STORAGE, u),
            (lambda: conn.storageVolLookupByPath("/nosuch.img"), libvirt.VIR_ERR_NO_STORAGE_VOL,
             libvirt.VIR_FROM_STORAGE, "Storage volume not found: no storage vol with matching "
             "path '/nosuch.img'"),
            (lambda: conn.storageVolLookupByKey("k"), libvirt.VIR_ERR_NO_STORAGE_VOL,
             libvirt.VIR_FROM_STORAGE, "key 'k'"),
            (lambda: conn.nodeDeviceLookupByName("pci_0000_00_00_0"),
             libvirt.VIR_ERR_NO_NODE_DEVICE, libvirt.VIR_FROM_NODEDEV,
             "Node device not found: no node device with matching name 'pci_0000_00_00_0'"),
            (lambda: conn.interfaceLookupByName("eth0"), libvirt.VIR_ERR_NO_INTERFACE,
             libvirt.VIR_FROM_INTERFACE, "Interface not found: no interface with matching "
             "name 'eth0'"),
            (lambda: conn.interfaceLookupByMACString("52:54:00:00:00:01"),
             libvirt.VIR_ERR_NO_INTERFACE, libvirt.VIR_FROM_INTERFACE, "52:54:00:00:00:01"),
            (lambda: conn.nwfilterLookupByName("clean-traffic"), libvirt.VIR_ERR_NO_NWFILTER,
             libvirt.VIR_FROM_NWFILTER, "Network filter not found: no network filter with "
             "matching name 'clean-traffic'"),
            (lambda: conn.nwfilterLookupByUUIDString(u), libvirt.VIR_ERR_NO_NWFILTER,
             libvirt.VIR_FROM_NWFILTER, u),
            (lambda: conn.nwfilterBindingLookupByPortDev("vnet0"),
             libvirt.VIR_ERR_NO_NWFILTER_BINDING, libvirt.VIR_FROM_NWFILTER, "'vnet0'"),
            (lambda: conn.secretLookupByUUIDString(u), libvirt.VIR_ERR_NO_SECRET,
             libvirt.VIR_FROM_SECRET, f"Secret not found: no secret with matching uuid '{u}'"),
            (lambda: conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_VOLUME, "/v"),
             libvirt.VIR_ERR_NO_SECRET, libvirt.VIR_FROM_SECRET, "usage '/v'"),
        ]
        for call, code, domain, text in cases:
            self.assert_libvirt_error(call, code, domain, text)

    def test_creation_is_refused_naming_the_object(self):
        d = self.start_daemon()
        conn = self.open(d)
        dom = conn.defineXML(ft.domain_xml("refused"))
        cases = [
            (lambda: conn.networkDefineXML("<network/>"), "virtual networks"),
            (lambda: conn.networkCreateXML("<network/>"), "virtual networks"),
            (lambda: conn.nodeDeviceCreateXML("<device/>"), "node devices"),
            (lambda: conn.interfaceDefineXML("<interface/>"), "host interfaces"),
            (lambda: conn.secretDefineXML("<secret/>"), "secrets"),
            (lambda: conn.nwfilterDefineXML("<filter/>"), "network filters"),
            (lambda: conn.nwfilterBindingCreateXML("<filterbinding/>"),
             "network filter bindings"),
            (lambda: dom.snapshotCreateXML("<domainsnapshot/>"), "domain snapshots"),
            (lambda: dom.checkpointCreateXML("<domaincheckpoint/>"), "domain checkpoints"),
        ]
        for call, objects in cases:
            self.assert_libvirt_error(call, libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_FROM_DOMAIN,
                                      f"ferryd manages no {objects}")

    def test_creation_on_a_read_only_connection_is_denied_first(self):
        """The libvirt client refuses these itself when read-only; a raw client
        shows the daemon does too, before decoding the arguments."""
        d = self.start_daemon()
        c = ft.RawClient(d)
        self.addCleanup(c.close)
        c.call(66)
        hdr, body = c.call(1, struct.pack(">I", 1) + ft.xdr_string("sim:///system") +
                           struct.pack(">I", 1))  # VIR_CONNECT_RO
        self.assertEqual(hdr[5], ft.OK)
        hdr, body = c.call(283, struct.pack(">iI", 1, 0))  # LIST_ALL_NETWORKS still answers
        self.assertEqual(hdr[5], ft.OK)
        self.assertEqual(body, struct.pack(">II", 0, 0))
        hdr, body = c.call(41, ft.xdr_string("<network/>"))  # NETWORK_DEFINE_XML
        self.assertEqual(hdr[5], ft.ERROR)
        code, _, msg = ft.decode_error(body)
        self.assertEqual(code, libvirt.VIR_ERR_OPERATION_DENIED)
        self.assertIn("read only access prevents NETWORK_DEFINE_XML", msg)


class DomainCapabilitiesTest(MgmtTestCase):
    def test_sim_domain_capabilities(self):
        d = self.start_daemon()
        conn = self.open(d)
        caps = ET.fromstring(conn.getDomainCapabilities())
        self.assertEqual(caps.tag, "domainCapabilities")
        self.assertEqual(caps.find("domain").text, "sim")
        self.assertEqual(caps.find("arch").text, "x86_64")
        self.assertTrue(caps.find("path").text.endswith("ferry-vmm"), caps.find("path").text)
        self.assertEqual(caps.find("vcpu").get("max"), "4096")
        # The same with every filter naming what the driver has.
        same = ET.fromstring(conn.getDomainCapabilities(caps.find("path").text, "x86_64", None,
                                                        "sim"))
        self.assertEqual(ET.tostring(same), ET.tostring(caps))

    def test_filters_the_driver_cannot_answer_are_refused_naming_them(self):
        d = self.start_daemon()
        conn = self.open(d)
        for args, text in [((None, "aarch64", None, None), "architecture 'aarch64'"),
                           ((None, None, None, "kvm"), "virttype 'kvm'"),
                           ((None, None, "pc-q35-7.2", None), "machine type 'pc-q35-7.2'"),
                           (("/usr/bin/qemu-system-x86_64", None, None, None),
                            "emulator '/usr/bin/qemu-system-x86_64'"),
                           ((None, None, None, None, 1), "unsupported flags (0x1)")]:
            self.assert_libvirt_error(lambda: conn.getDomainCapabilities(*args),
                                      libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_DOMAIN, text)


def qemu_query(*args):
    """What the installed QEMU prints for `-cpu help` and the like."""
    return subprocess.run([QEMU, *args], capture_output=True, text=True, check=True).stdout


def qemu_domain_xml(name, devices="", cpu=""):
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            f"<os><type arch='x86_64'>hvm</type></os>{cpu}<devices>{devices}</devices></domain>")


class QemuDomainCapabilitiesTest(MgmtTestCase):
    """The QEMU driver's domain capabilities come from the installed QEMU and
    list only what the driver runs: every value it offers is accepted."""

    def kvm_usable(self, conn):
        caps = ET.fromstring(conn.getCapabilities())
        return "kvm" in [t.get("type") for t in caps.findall("guest/arch/domain")]

    def test_from_the_installed_qemu(self):
        d = self.start_daemon()
        conn = self.open(d, "qemu")
        caps = ET.fromstring(conn.getDomainCapabilities(None, None, None, "qemu"))
        self.assertEqual(caps.find("path").text, QEMU)
        self.assertEqual(caps.find("domain").text, "qemu")
        self.assertEqual(caps.find("arch").text, "x86_64")
        # The default machine, by its full name (`-machine help`: "pc ... (alias of ...)").
        alias = re.search(r"^pc\s.*\(alias of (\S+)\)", qemu_query("-machine", "help"), re.M)
        self.assertEqual(caps.find("machine").text, alias.group(1))
        self.assertEqual(caps.find("vcpu").get("max"), "255")  # i440fx's cpu-max
        q35 = ET.fromstring(conn.getDomainCapabilities(None, "x86_64", "q35", "qemu"))
        self.assertTrue(q35.find("machine").text.startswith("pc-q35-"), q35.find("machine").text)
        self.assertEqual(q35.find("vcpu").get("max"), "288")
        # The CPU models are QEMU's (`-cpu help`), usable under TCG or not.
        models = {m.text: m.get("usable") for m in caps.findall("cpu/mode[@name='custom']/model")}
        help_models = set(re.findall(r"^x86 (\S+)", qemu_query("-cpu", "help"), re.M))
        self.assertEqual(set(models), help_models - {"host", "max", "base"})
        self.assertEqual(models["qemu64"], "yes")
        self.assertIn("no", models.values())  # TCG lacks some features (avx512 ...)
        modes = {m.get("name"): m.get("supported") for m in caps.findall("cpu/mode")}
        self.assertEqual(modes, {"host-passthrough": "no", "maximum": "yes", "host-model": "no",
                                 "custom": "yes"})

        def values(path):
            return [v.text for v in caps.findall(path + "/value")]
        self.assertEqual(values("devices/disk/enum[@name='diskDevice']"), ["disk", "cdrom"])
        self.assertEqual(sorted(values("devices/disk/enum[@name='bus']")),
                         ["ide", "sata", "scsi", "virtio"])
        self.assertEqual(values("devices/graphics/enum[@name='type']"), ["vnc"])
        self.assertIn("virtio", values("devices/video/enum[@name='modelType']"))
        self.assertEqual(caps.find("devices/hostdev").get("supported"), "no")

        # Everything offered is accepted by the driver.
        n = 0
        def accepted(devices="", cpu=""):
            nonlocal n
            n += 1
            conn.defineXML(qemu_domain_xml(f"c{n}", devices, cpu)).undefine()
        for bus in values("devices/disk/enum[@name='bus']"):
            for device in values("devices/disk/enum[@name='diskDevice']"):
                if device == "cdrom" and bus == "virtio":
                    continue  # QEMU has no virtio cdrom (libvirt refuses it too)
                dev = {"virtio": "vda", "ide": "hdc", "sata": "sda", "scsi": "sda"}[bus]
                accepted(f"<disk type='file' device='{device}'><source file='/dev/null'/>"
                         f"<target dev='{dev}' bus='{bus}'/></disk>")
        for model in values("devices/video/enum[@name='modelType']"):
            accepted(f"<video><model type='{model}'/></video>")
        for typ in values("devices/graphics/enum[@name='type']"):
            accepted(f"<graphics type='{typ}'/>")
        for model in [m for m, usable in models.items() if usable == "yes"][:10]:
            accepted(cpu=f"<cpu mode='custom'><model>{model}</model></cpu>")
        accepted(cpu="<cpu mode='maximum'/>")
        accepted("<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>")

    def test_filters_the_driver_cannot_answer_are_refused_naming_them(self):
        d = self.start_daemon()
        conn = self.open(d, "qemu")
        cases = [((None, "aarch64", None, None), "architecture 'aarch64'"),
                 ((None, None, None, "xen"), "virttype 'xen'"),
                 ((None, None, "nosuch-machine", None), "machine type 'nosuch-machine'"),
                 (("/usr/bin/qemu-system-aarch64", None, None, None),
                  "emulator '/usr/bin/qemu-system-aarch64'"),
                 ((None, None, None, None, 1), "unsupported flags (0x1)")]
        if not self.kvm_usable(conn):
            cases.append(((None, None, None, "kvm"), "virttype 'kvm' is not supported by the "
                          "QEMU driver: /dev/kvm"))
        for args, text in cases:
            self.assert_libvirt_error(lambda: conn.getDomainCapabilities(*args),
                                      libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_DOMAIN, text)
        # The emulator by its path or its name is the driver's.
        for emulator in (QEMU, os.path.basename(QEMU)):
            caps = ET.fromstring(conn.getDomainCapabilities(emulator, None, None, None))
            self.assertEqual(caps.find("path").text, QEMU)


class VirshTest(MgmtTestCase):
    """The stock virsh commands that enumerate objects, against a real ferryd."""

    def test_virsh_lists(self):
        d = self.start_daemon()
        uri = d.tcp_uri
        ft.virsh(uri, "define", ft.write_file(d.dir, "v.xml", ft.domain_xml("v")))
        for cmd, header in [(["net-list", "--all"], r"Name\s+State\s+Autostart\s+Persistent"),
                            (["pool-list", "--all"], r"Name\s+State\s+Autostart"),
                            (["iface-list", "--all"], r"Name\s+State\s+MAC Address"),
                            (["nwfilter-list"], r"UUID\s+Name"),
                            (["nwfilter-binding-list"], r"Port Dev\s+Filter"),
                            (["secret-list"], r"UUID\s+Usage"),
                            (["snapshot-list", "v"], r"Name\s+Creation Time\s+State"),
                            (["checkpoint-list", "v"], r"Name\s+Creation Time")]:
            _, out, err = ft.virsh(uri, *cmd)
            lines = [ln for ln in out.splitlines() if ln.strip()]
            # A header, its rule, and no rows.
            self.assertEqual(len(lines), 2, f"{cmd}: {out!r} {err!r}")
            self.assertRegex(lines[0], header, cmd)
            self.assertRegex(lines[1], r"^-+$", cmd)
        _, out, _ = ft.virsh(uri, "nodedev-list")
        self.assertEqual(out.strip(), "")
        _, out, _ = ft.virsh(uri, "snapshot-list", "v", "--name")
        self.assertEqual(out.strip(), "")

    def test_virsh_not_found(self):
        d = self.start_daemon()
        for cmd, text in [(["net-info", "nosuch"],
                           "Network not found: no network with matching name 'nosuch'"),
                          (["pool-info", "nosuch"],
                           "Storage pool not found: no storage pool with matching name 'nosuch'"),
                          (["nodedev-dumpxml", "nosuch"], "Node device not found"),
                          (["iface-dumpxml", "nosuch"], "Interface not found"),
                          (["nwfilter-dumpxml", "nosuch"], "Network filter not found"),
                          (["secret-dumpxml", str(uuidlib.uuid4())], "Secret not found"),
                          (["vol-info", "/nosuch.img"], "Storage volume not found")]:
            rc, _, err = ft.virsh(d.tcp_uri, *cmd, check=False)
            self.assertEqual(rc, 1, cmd)
            self.assertIn(text, err, cmd)
        rc, _, err = ft.virsh(d.tcp_uri, "net-define", ft.write_file(d.dir, "n.xml", "<network/>"),
                              check=False)
        self.assertEqual(rc, 1)
        self.assertIn("ferryd manages no virtual networks", err)

    def test_virsh_domcapabilities(self):
        d = self.start_daemon()
        _, out, _ = ft.virsh(d.tcp_uri, "domcapabilities")
        caps = ET.fromstring(out)
        self.assertEqual(caps.find("domain").text, "sim")
        rc, _, err = ft.virsh(d.tcp_uri, "domcapabilities", "--arch", "ppc64le", check=False)
        self.assertEqual(rc, 1)
        self.assertIn("architecture 'ppc64le' is not supported by the sim driver", err)
        qemu_uri = f"qemu+tcp://127.0.0.1:{d.port}/system"
        _, out, _ = ft.virsh(qemu_uri, "domcapabilities", "--virttype", "qemu", "--machine", "pc")
        caps = ET.fromstring(out)
        self.assertEqual(caps.find("path").text, QEMU)
        self.assertTrue(caps.find("machine").text.startswith("pc-i440fx-"))
        rc, _, err = ft.virsh(qemu_uri, "domcapabilities", "--arch", "ppc64le", check=False)
        self.assertEqual(rc, 1)
        self.assertIn("architecture 'ppc64le' is not supported by the QEMU driver", err)


if __name__ == "__main__":
    unittest.main()
