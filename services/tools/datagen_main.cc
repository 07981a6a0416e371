// tessera-datagen: writes a synthetic tenant-task dataset (core/data/tasks.h) as JSON Lines on stdout,
// one {"prompt": ..., "completion": ...} per line. Used by the demo and for trying the product without
// data of one's own.
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "core/data/jsonl_dataset.h"
#include "core/data/tasks.h"

namespace {

constexpr char kUsage[] =
    "tessera-datagen: a synthetic tenant task as JSONL on stdout.\n\n"
    "Usage: tessera-datagen --task NAME --secret N [--count N] [--seed N]\n"
    "  --task NAME   one of: %s\n"
    "  --secret N    the tenant's secret: two secrets give two different mappings\n"
    "  --count N     examples (default 200)\n"
    "  --seed N      input draw (default 1; use another seed for a held-out evaluation set)\n";

}  // namespace

int main(int argc, char** argv) {
  std::string task;
  uint64_t secret = 0, seed = 1;
  int64_t count = 200;
  bool have_secret = false;
  std::string names = absl::StrJoin(tessera::data::Task::Names(), ", ");
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : ""; };
    bool ok = true;
    if (a == "--help") {
      std::printf(kUsage, names.c_str());
      return 0;
    } else if (a == "--task") {
      task = value();
    } else if (a == "--secret") {
      ok = absl::SimpleAtoi(value(), &secret);
      have_secret = true;
    } else if (a == "--count") {
      ok = absl::SimpleAtoi(value(), &count) && count > 0;
    } else if (a == "--seed") {
      ok = absl::SimpleAtoi(value(), &seed);
    } else {
      std::fprintf(stderr, "tessera-datagen: unknown argument \"%s\" (see --help)\n", a.c_str());
      return 2;
    }
    if (!ok) {
      std::fprintf(stderr, "tessera-datagen: bad value for %s\n", a.c_str());
      return 2;
    }
  }
  if (task.empty() || !have_secret) {
    std::fprintf(stderr, "tessera-datagen: --task and --secret are required (see --help)\n");
    return 2;
  }
  absl::StatusOr<tessera::data::Task> t = tessera::data::Task::Create(task, secret);
  if (!t.ok()) {
    std::fprintf(stderr, "tessera-datagen: %s\n", std::string(t.status().message()).c_str());
    return 2;
  }
  std::string out = tessera::data::ExamplesToJsonl(t->Generate(seed, count));
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}
