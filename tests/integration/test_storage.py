"""Storage pools: a ferryd keeps `dir` pools (a directory of disk files) as
libvirt's storage driver does, for virt-install's `--disk path=/dir/file`
and `virsh pool-*`/`vol-*`. python3-libvirt and the stock virsh drive them:
define, build, start, volumes created as qcow2 (qemu-img) and raw files,
looked up by name, path and key, deleted; pools kept across a daemon
restart (autostart and running ones); and every refusal by name."""

import os
import shutil
import struct
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

import libvirt

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

libvirt.registerErrorHandler(lambda ctx, err: None, None)

MIB = 1024 * 1024


def qcow2_virtual_size(path):
    with open(path, "rb") as f:
        head = f.read(32)
    assert head[:4] == b"QFI\xfb", f"{path} is not a qcow2 image"
    return struct.unpack(">Q", head[24:32])[0]


class StorageCase(ft.DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="ferry-storage-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def open(self, d, scheme="qemu", readonly=False):
        uri = f"{scheme}+tcp://{d.host}:{d.port}/system"
        conn = libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
        self.addCleanup(conn.close)
        return conn

    def assert_error(self, call, code, text, domain=None):
        with self.assertRaises(libvirt.libvirtError) as cm:
            call()
        e = cm.exception
        self.assertEqual(e.get_error_code(), code, e.get_error_message())
        if domain is not None:
            self.assertEqual(e.get_error_domain(), domain, e.get_error_message())
        self.assertIn(text, e.get_error_message())

    def pool_xml(self, name, path, extra=""):
        return (f"<pool type='dir'><name>{name}</name>"
                f"<target><path>{path}</path>{extra}</target></pool>")


class PoolLifecycleTest(StorageCase):
    def test_pool_and_volumes_with_python_libvirt(self):
        d = self.start_daemon()
        conn = self.open(d)
        target = os.path.join(self.tmp, "images")
        pool = conn.storagePoolDefineXML(self.pool_xml("images", target + "/"))
        self.assertEqual(pool.name(), "images")
        self.assertEqual((pool.isActive(), pool.isPersistent(), pool.autostart()), (0, 1, 0))
        self.assertEqual(pool.info(), [libvirt.VIR_STORAGE_POOL_INACTIVE, 0, 0, 0])
        self.assertEqual(conn.listDefinedStoragePools(), ["images"])
        self.assertEqual(conn.numOfDefinedStoragePools(), 1)
        self.assertEqual(conn.numOfStoragePools(), 0)
        # Its directory does not exist yet: starting fails, building makes it.
        self.assert_error(lambda: pool.create(0), libvirt.VIR_ERR_SYSTEM_ERROR,
                          f"cannot open directory '{target}'")
        pool.build(0)
        self.assertTrue(os.path.isdir(target))
        pool.create(0)
        state, capacity, allocation, available = pool.info()
        self.assertEqual(state, libvirt.VIR_STORAGE_POOL_RUNNING)
        st = os.statvfs(target)
        self.assertEqual(capacity, st.f_frsize * st.f_blocks)
        self.assertGreater(available, 0)
        self.assertEqual(conn.listStoragePools(), ["images"])
        xml = ET.fromstring(pool.XMLDesc(0))
        self.assertEqual(xml.get("type"), "dir")
        self.assertEqual(xml.find("target/path").text, target)  # no trailing '/'
        self.assertEqual(xml.find("uuid").text, pool.UUIDString())
        self.assertEqual(xml.find("capacity").text, str(capacity))
        inactive = ET.fromstring(pool.XMLDesc(libvirt.VIR_STORAGE_XML_INACTIVE))
        self.assertEqual(inactive.find("capacity").text, "0")  # as libvirt: no sizes

        # Lookups of the pool, by every key libvirt has.
        self.assertEqual(conn.storagePoolLookupByName("images").UUIDString(), pool.UUIDString())
        self.assertEqual(conn.storagePoolLookupByUUIDString(pool.UUIDString()).name(), "images")
        self.assertEqual(conn.storagePoolLookupByTargetPath(target).name(), "images")
        for flags, names in ((0, ["images"]),
                             (libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE, ["images"]),
                             (libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_INACTIVE, []),
                             (libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_PERSISTENT, ["images"]),
                             (libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_TRANSIENT, []),
                             (libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_NO_AUTOSTART, ["images"]),
                             (libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_DIR, ["images"]),
                             (libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_LOGICAL, [])):
            self.assertEqual([p.name() for p in conn.listAllStoragePools(flags)], names, flags)

        # A qcow2 volume, made by qemu-img, as virt-install asks for one.
        vol = pool.createXML(
            "<volume><name>a.qcow2</name><capacity unit='MiB'>64</capacity>"
            "<allocation>0</allocation><target><format type='qcow2'/>"
            "<features><lazy_refcounts/></features></target></volume>",
            libvirt.VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA)
        path = os.path.join(target, "a.qcow2")
        self.assertEqual((vol.name(), vol.path(), vol.key()), ("a.qcow2", path, path))
        self.assertEqual(qcow2_virtual_size(path), 64 * MIB)
        vtype, vcap, valloc = vol.info()
        self.assertEqual((vtype, vcap), (libvirt.VIR_STORAGE_VOL_FILE, 64 * MIB))
        self.assertEqual(valloc, os.stat(path).st_blocks * 512)
        self.assertEqual(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2],
                         os.path.getsize(path))
        vxml = ET.fromstring(vol.XMLDesc(0))
        self.assertEqual(vxml.find("target/format").get("type"), "qcow2")
        self.assertEqual(vxml.find("capacity").text, str(64 * MIB))
        self.assertEqual(vxml.find("target/permissions/mode").text, "0600")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

        # A raw one, allocated.
        raw = pool.createXML("<volume><name>b.img</name><capacity>1048576</capacity>"
                             "<allocation unit='KiB'>1024</allocation></volume>", 0)
        rpath = os.path.join(target, "b.img")
        self.assertEqual(os.path.getsize(rpath), MIB)
        self.assertGreaterEqual(os.stat(rpath).st_blocks * 512, MIB)
        self.assertEqual(raw.info()[1], MIB)
        self.assertEqual(ET.fromstring(raw.XMLDesc(0)).find("target/format").get("type"), "raw")
        self.assert_error(lambda: pool.createXML(
            "<volume><name>b.img</name><capacity>1</capacity></volume>", 0),
            libvirt.VIR_ERR_STORAGE_VOL_EXIST, "storage volume 'b.img' exists already",
            libvirt.VIR_FROM_STORAGE)

        # The directory is read at every call: a file put there is a volume at once.
        with open(os.path.join(target, "c.img"), "wb") as f:
            f.truncate(4096)
        os.mkdir(os.path.join(target, "subdir"))  # not a volume
        self.assertEqual(sorted(pool.listVolumes()), ["a.qcow2", "b.img", "c.img"])
        self.assertEqual(pool.numOfVolumes(), 3)
        self.assertEqual([v.name() for v in pool.listAllVolumes()], ["a.qcow2", "b.img", "c.img"])
        pool.refresh(0)
        self.assertEqual(conn.storageVolLookupByPath(rpath).name(), "b.img")
        self.assertEqual(conn.storageVolLookupByPath(target + "//b.img").name(), "b.img")
        self.assertEqual(conn.storageVolLookupByKey(path).name(), "a.qcow2")
        self.assertEqual(pool.storageVolLookupByName("c.img").path(),
                         os.path.join(target, "c.img"))
        self.assertEqual(vol.storagePoolLookupByVolume().name(), "images")
        self.assert_error(lambda: pool.storageVolLookupByName("subdir"),
                          libvirt.VIR_ERR_NO_STORAGE_VOL,
                          "Storage volume not found: no storage vol with matching name 'subdir'",
                          libvirt.VIR_FROM_STORAGE)

        # The pool is the daemon's, whatever driver a connection opened.
        sim = self.open(d, "sim")
        self.assertEqual([p.name() for p in sim.listAllStoragePools()], ["images"])

        raw.delete(0)
        self.assertFalse(os.path.exists(rpath))
        self.assert_error(lambda: conn.storageVolLookupByPath(rpath),
                          libvirt.VIR_ERR_NO_STORAGE_VOL, f"matching path '{rpath}'")

        # A stopped pool has no volumes to show; its files stay.
        pool.destroy()
        self.assertEqual(pool.isActive(), 0)
        self.assert_error(pool.listVolumes, libvirt.VIR_ERR_OPERATION_INVALID,
                          "storage pool 'images' is not active")
        self.assert_error(lambda: conn.storageVolLookupByPath(path),
                          libvirt.VIR_ERR_NO_STORAGE_VOL, "no storage vol")
        self.assertTrue(os.path.exists(path))
        # delete removes only an empty directory.
        self.assert_error(lambda: pool.delete(0), libvirt.VIR_ERR_SYSTEM_ERROR,
                          "cannot remove directory")
        for name in os.listdir(target):
            p = os.path.join(target, name)
            os.rmdir(p) if os.path.isdir(p) else os.unlink(p)
        pool.delete(0)
        self.assertFalse(os.path.exists(target))
        pool.undefine()
        self.assertEqual(conn.listAllStoragePools(), [])
        self.assert_error(lambda: conn.storagePoolLookupByName("images"),
                          libvirt.VIR_ERR_NO_STORAGE_POOL,
                          "no storage pool with matching name 'images'", libvirt.VIR_FROM_STORAGE)

    def test_pools_survive_a_daemon_restart(self):
        d = self.start_daemon()
        conn = libvirt.open(f"qemu+tcp://{d.host}:{d.port}/system")
        dirs = {n: os.path.join(self.tmp, n) for n in ("auto", "running", "stopped", "transient")}
        for p in dirs.values():
            os.mkdir(p)
        auto = conn.storagePoolDefineXML(self.pool_xml("auto", dirs["auto"]))
        auto.setAutostart(1)
        conn.storagePoolDefineXML(self.pool_xml("running", dirs["running"])).create(0)
        conn.storagePoolDefineXML(self.pool_xml("stopped", dirs["stopped"]))
        transient = conn.storagePoolCreateXML(self.pool_xml("transient", dirs["transient"]), 0)
        self.assertEqual(transient.isPersistent(), 0)
        self.assert_error(lambda: transient.setAutostart(1), libvirt.VIR_ERR_OPERATION_INVALID,
                          "cannot set autostart for transient storage pool 'transient'")
        conn.close()
        self.assertEqual(d.stop(), 0)
        d.start()
        conn = self.open(d)
        state = {p.name(): (p.isActive(), p.isPersistent(), p.autostart())
                 for p in conn.listAllStoragePools()}
        self.assertEqual(state, {"auto": (1, 1, 1), "running": (1, 1, 0),
                                 "stopped": (0, 1, 0), "transient": (1, 0, 0)})
        # Undefining a running pool leaves it running, transient.
        running = conn.storagePoolLookupByName("running")
        running.undefine()
        self.assertEqual((running.isActive(), running.isPersistent()), (1, 0))
        running.destroy()
        self.assertNotIn("running", [p.name() for p in conn.listAllStoragePools()])

    def test_virsh_pool_and_vol_commands(self):
        d = self.start_daemon()
        uri = f"qemu+tcp://{d.host}:{d.port}/system"
        target = os.path.join(self.tmp, "vp")
        ft.virsh(uri, "pool-define-as", "vp", "dir", "--target", target)
        ft.virsh(uri, "pool-build", "vp")
        ft.virsh(uri, "pool-start", "vp")
        ft.virsh(uri, "pool-autostart", "vp")
        out = ft.virsh(uri, "pool-list", "--all")[1]
        self.assertRegex(out, r"\n\s*vp\s+active\s+yes\s*\n")
        out = ft.virsh(uri, "pool-info", "vp")[1]
        self.assertRegex(out, r"State:\s+running")
        self.assertRegex(out, r"Persistent:\s+yes")
        self.assertRegex(out, r"Autostart:\s+yes")
        self.assertIn(f"<path>{target}</path>", ft.virsh(uri, "pool-dumpxml", "vp")[1])
        ft.virsh(uri, "vol-create-as", "vp", "v1.qcow2", "16M", "--format", "qcow2")
        ft.virsh(uri, "vol-create-as", "vp", "v2.img", "1M")
        out = ft.virsh(uri, "vol-list", "vp")[1]
        self.assertRegex(out, rf"\n\s*v1\.qcow2\s+{target}/v1\.qcow2\s*\n")
        self.assertRegex(out, rf"\n\s*v2\.img\s+{target}/v2\.img\s*\n")
        out = ft.virsh(uri, "vol-info", "--pool", "vp", "v1.qcow2")[1]
        self.assertRegex(out, r"Type:\s+file")
        self.assertRegex(out, r"Capacity:\s+16\.00 MiB")
        self.assertEqual(ft.virsh(uri, "vol-path", "--pool", "vp", "v2.img")[1].strip(),
                         f"{target}/v2.img")
        self.assertIn("<format type='qcow2'/>",
                      ft.virsh(uri, "vol-dumpxml", f"{target}/v1.qcow2")[1])
        self.assertEqual(qcow2_virtual_size(f"{target}/v1.qcow2"), 16 * MIB)
        ft.virsh(uri, "vol-delete", "--pool", "vp", "v1.qcow2")
        ft.virsh(uri, "vol-delete", f"{target}/v2.img")
        self.assertEqual(os.listdir(target), [])
        ft.virsh(uri, "pool-destroy", "vp")
        ft.virsh(uri, "pool-delete", "vp")
        self.assertFalse(os.path.exists(target))
        ft.virsh(uri, "pool-undefine", "vp")
        self.assertNotIn("vp", ft.virsh(uri, "pool-list", "--all")[1])


class RefusalsTest(StorageCase):
    """What ferryd's storage does not do is refused naming it."""

    def test_refused_by_name(self):
        d = self.start_daemon()
        conn = self.open(d)
        os.mkdir(os.path.join(self.tmp, "p"))
        pool = conn.storagePoolCreateXML(self.pool_xml("p", os.path.join(self.tmp, "p")), 0)
        vol = pool.createXML("<volume><name>v</name><capacity>4096</capacity></volume>", 0)
        unsupported = libvirt.VIR_ERR_CONFIG_UNSUPPORTED
        cases = [
            (lambda: conn.storagePoolDefineXML(
                "<pool type='logical'><name>l</name><target><path>/dev/vg</path></target></pool>"),
             unsupported, "storage pool type 'logical': ferryd has only 'dir' pools"),
            (lambda: conn.storagePoolDefineXML(
                "<pool type='dir'><name>s</name><source><device path='/dev/sdb'/></source>"
                f"<target><path>{self.tmp}/s</path></target></pool>"),
             unsupported, "does not support <device> (in <pool>/source/device)"),
            (lambda: conn.storagePoolDefineXML(
                f"<pool type='dir'><name>o</name><target><path>{self.tmp}/o</path>"
                "<permissions><owner>107</owner></permissions></target></pool>"),
             unsupported, "does not support <owner> (in <pool>/target/permissions/owner)"),
            (lambda: conn.storagePoolDefineXML(self.pool_xml("p2", f"{self.tmp}/p")),
             libvirt.VIR_ERR_OPERATION_FAILED, "Storage source conflict with pool: 'p'"),
            (lambda: conn.storagePoolDefineXML(self.pool_xml("rel", "relative/dir")),
             libvirt.VIR_ERR_XML_ERROR, "target path 'relative/dir' is not absolute"),
            (lambda: conn.storagePoolDefineXML(self.pool_xml("a/b", f"{self.tmp}/ab")),
             libvirt.VIR_ERR_XML_ERROR, "invalid storage pool name 'a/b'"),
            (lambda: pool.createXML("<volume><name>x.vmdk</name><capacity>1</capacity>"
                                    "<target><format type='vmdk'/></target></volume>", 0),
             unsupported, "volume format 'vmdk': ferryd creates 'raw' and 'qcow2' files"),
            (lambda: pool.createXML("<volume><name>x</name><capacity>1</capacity>"
                                    "<backingStore><path>/b</path></backingStore></volume>", 0),
             unsupported, "does not support <backingStore>"),
            (lambda: pool.createXML("<volume type='block'><name>x</name><capacity>1</capacity>"
                                    "</volume>", 0),
             unsupported, "<volume type='block'>: a dir pool's volumes are files"),
            (lambda: pool.createXML("<volume><name>x</name><capacity>1</capacity><target>"
                                    "<permissions><owner>4242</owner></permissions></target>"
                                    "</volume>", 0),
             unsupported, "<volume/target/permissions/owner> '4242'"),
            (lambda: pool.createXML("<volume><name>x</name><capacity>1</capacity></volume>",
                                    libvirt.VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA),
             libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
             "VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA is for qcow2 volumes"),
            (lambda: pool.createXML("<volume><name>../x</name><capacity>1</capacity></volume>", 0),
             libvirt.VIR_ERR_XML_ERROR, "invalid storage volume name '../x'"),
            (lambda: pool.createXMLFrom("<volume><name>c</name><capacity>1</capacity></volume>",
                                        vol, 0),
             libvirt.VIR_ERR_NO_SUPPORT, "virStorageVolCreateXMLFrom: ferryd does not clone"),
            (lambda: vol.wipe(0), libvirt.VIR_ERR_NO_SUPPORT, "virStorageVolWipe:"),
            (lambda: vol.wipePattern(libvirt.VIR_STORAGE_VOL_WIPE_ALG_ZERO, 0),
             libvirt.VIR_ERR_NO_SUPPORT, "virStorageVolWipePattern:"),
            (lambda: vol.resize(8192, 0), libvirt.VIR_ERR_NO_SUPPORT, "virStorageVolResize:"),
            (lambda: vol.upload(conn.newStream(0), 0, 1, 0), libvirt.VIR_ERR_NO_SUPPORT,
             "virStorageVolUpload:"),
            (lambda: vol.download(conn.newStream(0), 0, 1, 0), libvirt.VIR_ERR_NO_SUPPORT,
             "virStorageVolDownload:"),
            (lambda: vol.delete(libvirt.VIR_STORAGE_VOL_DELETE_ZEROED),
             libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, "virStorageVolDelete flags 0x1 (zeroed"),
            (lambda: conn.findStoragePoolSources("logical", None, 0), libvirt.VIR_ERR_NO_SUPPORT,
             "virConnectFindStoragePoolSources: a dir pool has no source to discover"),
            (lambda: pool.build(libvirt.VIR_STORAGE_POOL_BUILD_OVERWRITE),
             libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, "virStoragePoolBuild flags 0x8"),
            (lambda: pool.delete(libvirt.VIR_STORAGE_POOL_DELETE_ZEROED),
             libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, "virStoragePoolDelete flags 0x1"),
        ]
        for call, code, text in cases:
            with self.subTest(text=text):
                self.assert_error(call, code, text)
        self.assertEqual(pool.listVolumes(), ["v"])  # nothing was made or lost

        # A read-only connection sees the pools and changes nothing.
        ro = self.open(d, readonly=True)
        rpool = ro.storagePoolLookupByName("p")
        self.assertEqual(rpool.listVolumes(), ["v"])
        for call in (lambda: ro.storagePoolDefineXML(self.pool_xml("r", f"{self.tmp}/r")),
                     lambda: rpool.createXML("<volume><name>w</name><capacity>1</capacity>"
                                             "</volume>", 0),
                     lambda: rpool.storageVolLookupByName("v").delete(0),
                     rpool.destroy):
            self.assert_error(call, libvirt.VIR_ERR_OPERATION_DENIED, "read only access prevents")
        self.assertEqual(pool.listVolumes(), ["v"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
