"""Stock virsh and python3-libvirt connect to ferryd over TCP and UNIX
sockets, query the host and list domains."""

import os
import socket
import struct
import subprocess
import sys
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402


class VirshConnectTest(ft.DaemonTestCase):
    def check_basic_commands(self, uri):
        _, out, _ = ft.virsh(uri, "version")
        self.assertIn("Running hypervisor: SIM 0.1.0", out)
        _, out, _ = ft.virsh(uri, "hostname")
        self.assertEqual(out.strip(), socket.gethostname())
        _, out, _ = ft.virsh(uri, "nodeinfo")
        self.assertRegex(out, r"CPU\(s\):\s+%d\b" % os.cpu_count())
        with open("/proc/meminfo") as f:
            meminfo = f.read().split()
        self.assertRegex(out, r"Memory size:\s+%s KiB" % meminfo[meminfo.index("MemTotal:") + 1])
        _, out, _ = ft.virsh(uri, "capabilities")
        caps = ET.fromstring(out)
        self.assertEqual(caps.find("host/cpu/arch").text, os.uname().machine)
        self.assertEqual(caps.find("guest/os_type").text, "hvm")
        _, out, _ = ft.virsh(uri, "list", "--all")
        self.assertRegex(out, r"Id\s+Name\s+State")
        _, out, _ = ft.virsh(uri, "uri")
        self.assertEqual(out.strip(), uri)

    def test_virsh_over_tcp(self):
        d = self.start_daemon()
        self.check_basic_commands(d.tcp_uri)

    def test_virsh_over_unix_socket(self):
        d = self.start_daemon()
        self.check_basic_commands(d.unix_uri)

    def test_virsh_read_only_socket_can_query(self):
        d = self.start_daemon()
        _, out, _ = ft.virsh(f"sim+unix:///system?socket={d.sock_ro}", "hostname")
        self.assertEqual(out.strip(), socket.gethostname())

    def test_unknown_driver_scheme_is_a_clear_error(self):
        d = self.start_daemon()
        rc, _, err = ft.virsh(f"xen+tcp://127.0.0.1:{d.port}/system", "version", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("no connection driver available for xen:///system", err)

    def test_unknown_path_is_a_clear_error(self):
        d = self.start_daemon()
        rc, _, err = ft.virsh(f"sim+tcp://127.0.0.1:{d.port}/nonsense", "version", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("unexpected path '/nonsense'", err)


PYTHON_CLIENT = r"""
import json, sys, libvirt
conn = libvirt.open(sys.argv[1])
print(json.dumps({
    "type": conn.getType(),
    "version": conn.getVersion(),
    "libversion": conn.getLibVersion(),
    "hostname": conn.getHostname(),
    "domains": [d.name() for d in conn.listAllDomains()],
    "num": conn.numOfDomains(),
    "defined": conn.listDefinedDomains(),
    "secure": conn.isSecure(),
    "info": conn.getInfo(),
}))
conn.close()
"""


class PythonLibvirtTest(ft.DaemonTestCase):
    def run_client(self, uri):
        import json
        p = subprocess.run(["/usr/bin/python3", "-c", PYTHON_CLIENT, uri], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def test_python_libvirt_over_tcp(self):
        d = self.start_daemon()
        r = self.run_client(d.tcp_uri)
        self.assertEqual(r["type"], "SIM")
        self.assertEqual(r["version"], 1000)
        self.assertEqual(r["libversion"], 9000000)
        self.assertEqual(r["hostname"], socket.gethostname())
        self.assertEqual(r["domains"], [])
        self.assertEqual(r["num"], 0)
        self.assertEqual(r["secure"], 0)  # plain TCP
        self.assertEqual(r["info"][2], os.cpu_count())

    def test_python_libvirt_over_unix(self):
        d = self.start_daemon()
        r = self.run_client(d.unix_uri)
        self.assertEqual(r["hostname"], socket.gethostname())
        self.assertEqual(r["secure"], 1)  # UNIX sockets are local


class WireTest(ft.DaemonTestCase):
    def test_unknown_procedure_answers_code_39_domain_7(self):
        d = self.start_daemon()
        c = ft.RawClient(d)
        c.open()
        hdr, body = c.call(9999)
        self.assertEqual(hdr[3], ft.REPLY)
        self.assertEqual(hdr[5], ft.ERROR)
        self.assertEqual(ft.decode_error(body), (39, 7, "unknown procedure: 9999"))
        c.close()

    def test_unknown_program_gets_an_error_reply(self):
        d = self.start_daemon()
        c = ft.RawClient(d)
        hdr, body = c.call(1, prog=0x12345678)
        self.assertEqual(hdr[5], ft.ERROR)
        code, dom, msg = ft.decode_error(body)
        self.assertEqual(code, 39)
        self.assertIn("Cannot find program 305419896 version 1", msg)
        # The connection still works.
        hdr, _ = c.call(66)
        self.assertEqual(hdr[5], ft.OK)
        c.close()

    def test_auth_list_reply_bytes(self):
        d = self.start_daemon()
        c = ft.RawClient(d)
        c.sock.sendall(bytes.fromhex("0000001c200080860000000100000042000000000000000000000000"))
        hdr, body = ft.recv_message(c.sock)
        raw = struct.pack(">IIIiIII", 28 + len(body), *hdr) + body
        self.assertEqual(raw.hex(), "00000024200080860000000100000042000000010000000000000000"
                                    "0000000100000000")
        c.close()

    def test_calls_before_open_are_refused(self):
        d = self.start_daemon()
        c = ft.RawClient(d)
        hdr, body = c.call(59)  # GET_HOSTNAME
        self.assertEqual(hdr[5], ft.ERROR)
        self.assertIn("connection not open", ft.decode_error(body)[2])
        c.close()

    def test_replies_carry_the_call_serial_and_procedure(self):
        d = self.start_daemon()
        c = ft.RawClient(d)
        c.open()
        c.serial = 4242
        hdr, body = c.call(59)
        self.assertEqual((hdr[2], hdr[3], hdr[4], hdr[5]), (59, ft.REPLY, 4242, ft.OK))
        c.close()


if __name__ == "__main__":
    unittest.main()
