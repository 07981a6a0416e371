// Crash injection at named points, for crash-consistency tests (tests/services/publish_crash_test.cc).
//
// Contract: CrashPoint("name") does nothing unless a test armed that name in this process with
// ArmCrashPoint; then its `hit`-th passage calls _exit(kCrashPointExitCode) at once: no destructors, no
// stdio flush, no SQLite rollback or COMMIT, exactly what a power cut or SIGKILL leaves behind for
// everything the process had not yet handed to the kernel. Arming is a C++ call only (no flag or
// environment variable), so a production server can never be told to crash; the cost of an unarmed
// point is one relaxed atomic load.
//
// Tracing: with TraceCrashPoints(true) every passage is recorded (name, in order), so a test can run the
// path once unarmed, learn every point on it, then crash at each in turn -- a point added later to the
// path is covered without editing the test.
#pragma once

#include <string>
#include <vector>

namespace tessera::util {

inline constexpr int kCrashPointExitCode = 86;

void CrashPoint(const char* name);

// Arms `name`: its hit-th passage (1 = the first) exits the process. Replaces any armed point.
void ArmCrashPoint(const std::string& name, int hit = 1);
void DisarmCrashPoints();

void TraceCrashPoints(bool on);
// The points passed since tracing was turned on, in order (repeats included).
std::vector<std::string> TracedCrashPoints();

}  // namespace tessera::util
