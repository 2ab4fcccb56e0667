"""--parallel with QEMU (issue 15): multifd between two ferryd, QEMU's
connection i riding channel i. The test guest (tests/guest/) proves after
each move that all its memory arrived; the daemons' logs show that every
connection came on a channel of its own."""

import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import guest  # noqa: E402
from test_qemu_migration import NAME, QemuMigrationCase  # noqa: E402


class QemuParallelTest(QemuMigrationCase):
    @guest.retry_on_guest_crash("end_attempt")
    def test_multifd_tunnelled_over_tls_and_proxy(self):
        a, b = self.daemon("A"), self.daemon("B")
        before = self.boot(a)

        # Tunnelled inside TLS + SASL: 4 channels, 3 more authenticated connections.
        self.migrate(a, b, self.tls(b), os.path.join(b.dir, "console-2.log"),
                     "--tunnelled", "--parallel-connections", "4")
        self.assertEqual(self.state(b), "running (migrated)")
        before = self.verified_after_move(self.console, before)
        self.assertRegex(a.log(), rf"migration of domain '{NAME}': the memory stream runs over 4 "
                                  r"channels \(QEMU's connections")
        opened = re.findall(rf"channel (\d+) of the incoming migration of domain '{NAME}' opened "
                            r"by (\S+)", b.log())
        self.assertEqual(sorted(int(i) for i, _ in opened), [1, 2, 3])
        self.assertEqual(len(set(p for _, p in opened)), 3)

        # Back in proxy mode over TCP: 2 data connections.
        self.migrate(b, a, self.tcp(a), os.path.join(a.dir, "console-3.log"),
                     "--parallel", "--parallel-connections", "2")
        self.assertEqual(self.state(a), "running (migrated)")
        self.verified_after_move(self.console, before)
        accepted = re.findall(rf"data connection for the migration of domain '{NAME}' from \S+ "
                              r"accepted \(channel (\d+)\)", a.log())
        self.assertEqual(sorted(int(i) for i in accepted), [0, 1])


if __name__ == "__main__":
    unittest.main()
