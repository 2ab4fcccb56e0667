"""Several channels for one migration (issue 15): tunnelled, virsh's
--parallel-connections N (the parallel.connections parameter, or ferryd's
migration_parallel_connections default) opens N - 1 more authenticated
connections to the destination, one channel each; in proxy mode --parallel
--parallel-connections N opens N data connections. ferry-vmm's connection i
rides channel i. Each test checks on the destination VMM how many
connections its migration used, so it fails without the feature."""

import os
import re
import socket
import struct
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import ferrytest as ft  # noqa: E402

MIB = 1 << 20


def vmm_log(daemon, name):
    """The log of the VMMs of domain `name` on daemon (ferry-vmm --log)."""
    with open(os.path.join(daemon.dir, "log", name + ".log"), errors="replace") as f:
        return f.read()


def incoming_connections(daemon, name):
    """How many connections each incoming migration of `name` that completed
    on daemon used, as its VMM logged them, and the digests it verified."""
    return re.findall(r"incoming migration completed over (\d+) connections?: .* digest "
                      r"([0-9a-f]{32}) verified", vmm_log(daemon, name))


class ParallelCase(ft.MigrationFaultsMixin, ft.DaemonTestCase):
    def start_pair(self, dest_conf="", src_conf=""):
        self.a = self.start_daemon(name="source", extra_conf=src_conf)
        self.b = self.start_daemon(name="destination", extra_conf=dest_conf)

    def start_vm(self, d, name="vm1", memory_mib=128, dirty_rate="8MiB"):
        xml = ft.write_file(d.dir, name + ".xml",
                            ft.domain_xml(name, memory_mib=memory_mib, dirty_rate=dirty_rate))
        ft.virsh(d.tcp_uri, "define", xml)
        ft.virsh(d.tcp_uri, "start", name)

    def check_moved(self, src, dst, n, err, name="vm1"):
        """name moved from src to dst over n connections, its memory verified."""
        self.assertEqual(ft.domstate(dst, name), "running (migrated)", err)
        self.assertEqual(ft.domstate(src, name), "shut off (migrated)")
        s, d = ft.job_stats(src, name), ft.job_stats(dst, name)
        self.assertRegex(s["ferry_digest"], r"^[0-9a-f]{32}$")
        self.assertEqual(s["ferry_digest"], d["ferry_digest"])
        # Every channel's bytes count: at least all of the guest's memory.
        self.assertGreaterEqual(s["memory_processed"], 128 * MIB)
        self.assertEqual(incoming_connections(dst, name)[-1], (str(n), s["ferry_digest"]))

    def two_and_four(self, tunnelled, flags_of):
        """vm2 goes a -> b over 2 channels, vm4 over 4."""
        self.start_pair()
        for n in (2, 4):
            name = f"vm{n}"
            self.start_vm(self.a, name)
            rc, _, err = ft.migrate(self.a, self.b, name, "--live", *flags_of(n),
                                    tunnelled=tunnelled)
            self.assertEqual(rc, 0, err)
            self.check_moved(self.a, self.b, n, err, name)
            self.assertIn(f"migration of domain '{name}': the memory stream runs over {n} "
                          "channels", self.a.log())


class ParallelTest(ParallelCase):
    def test_tunnelled_2_and_4_channels(self):
        self.two_and_four(True, lambda n: ["--parallel-connections", str(n)])
        # Channels 1.. came each on a connection of its own.
        opened = re.findall(r"channel (\d+) of the incoming migration of domain 'vm4' opened by "
                            r"(\S+)", self.b.log())
        self.assertEqual(sorted(int(i) for i, _ in opened), [1, 2, 3])
        self.assertEqual(len(set(peer for _, peer in opened)), 3)

    def test_proxy_2_and_4_channels(self):
        self.two_and_four(False, lambda n: ["--parallel", "--parallel-connections", str(n)])
        accepted = re.findall(r"data connection for the migration of domain 'vm4' from \S+ "
                              r"accepted \(channel (\d+)\)", self.b.log())
        self.assertEqual(sorted(int(i) for i in accepted), [0, 1, 2, 3])

    def test_configured_default_for_tunnelled(self):
        self.start_pair(src_conf="migration_parallel_connections = 3\n")
        self.start_vm(self.a)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live")
        self.assertEqual(rc, 0, err)
        self.check_moved(self.a, self.b, 3, err)

    def test_count_without_parallel_in_proxy_mode_is_refused(self):
        self.start_pair()
        self.start_vm(self.a)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--parallel-connections", "2",
                                tunnelled=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("Turn parallel migration on to tune it", err)
        rc, _, err = ft.migrate(self.a, self.b, "vm1", "--live", "--parallel",
                                "--parallel-connections", "17", tunnelled=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("'parallel.connections' must be an int from 1 to 16", err)
        self.assertRegex(ft.domstate(self.a, "vm1"), r"^running")


if __name__ == "__main__":
    unittest.main()
