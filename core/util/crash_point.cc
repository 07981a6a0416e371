#include "core/util/crash_point.h"

#include <unistd.h>

#include <atomic>
#include <mutex>

namespace tessera::util {
namespace {

// Fast path: both false in production, so CrashPoint is a load and a branch.
std::atomic<bool> g_active{false};

struct State {
  std::mutex mu;
  std::string armed;
  int remaining = 0;
  bool tracing = false;
  std::vector<std::string> trace;
};

State& S() {
  static State* s = new State();  // never destroyed: points may run during static destruction
  return *s;
}

void UpdateActive(State& s) { g_active.store(!s.armed.empty() || s.tracing, std::memory_order_relaxed); }

}  // namespace

void CrashPoint(const char* name) {
  if (!g_active.load(std::memory_order_relaxed)) return;
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.tracing) s.trace.emplace_back(name);
  if (!s.armed.empty() && s.armed == name && --s.remaining == 0) _exit(kCrashPointExitCode);
}

void ArmCrashPoint(const std::string& name, int hit) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.armed = name;
  s.remaining = hit < 1 ? 1 : hit;
  UpdateActive(s);
}

void DisarmCrashPoints() {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.armed.clear();
  UpdateActive(s);
}

void TraceCrashPoints(bool on) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.tracing = on;
  s.trace.clear();
  UpdateActive(s);
}

std::vector<std::string> TracedCrashPoints() {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.trace;
}

}  // namespace tessera::util
