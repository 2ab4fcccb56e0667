/* Named points where the tests' fault matrix holds a daemon still for a
 * moment, so that a fault (a cut link, a killed peer) lands in a chosen
 * phase of a migration instead of wherever the clock puts it. */
#pragma once

#include <glib.h>

/* Sleeps when FERRY_TEST_PAUSE names this point ("point:ms,point:ms"), after
 * logging "test pause at <point>" so the test knows the phase is reached.
 * "point:ms:PATH" ends the pause early once PATH exists: the test acts,
 * then releases the daemon, however slowly a loaded machine ran it.
 * FERRY_TEST_BUSY ("point:ms", the same form) keeps the process at work
 * there for ms first (a quarter of a CPU: its CPU time grows, as a VMM's
 * does while the kernel zeroes its memory).
 * Does nothing otherwise (two environment lookups). */
void ferry_fault_point(const char *name);
