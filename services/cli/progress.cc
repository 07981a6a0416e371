#include "services/cli/progress.h"

#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace tessera::cli {
namespace {

constexpr int64_t kUnknownTotalStep = int64_t{16} << 20;

}  // namespace

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

Progress::Progress(std::string what, int64_t total_bytes, bool enabled, std::FILE* out)
    : Progress(std::move(what), total_bytes, enabled, out, enabled && isatty(fileno(out)) == 1) {}

Progress::Progress(std::string what, int64_t total_bytes, bool enabled, std::FILE* out, bool terminal)
    : what_(std::move(what)), total_(total_bytes), enabled_(enabled), out_(out), terminal_(terminal) {}

std::string Progress::Line(int64_t done, const std::string& detail) const {
  std::string line = absl::StrCat(what_, ": ", FormatBytes(done));
  if (total_ >= 0) {
    const int64_t pct = total_ == 0 ? 100 : std::min<int64_t>(100, done * 100 / total_);
    absl::StrAppend(&line, " of ", FormatBytes(total_), " (", pct, "%)");
  }
  if (!detail.empty()) absl::StrAppend(&line, ", ", detail);
  return line;
}

void Progress::Print(const std::string& line, bool final) {
  if (terminal_) {
    // Pad over a longer previous line.
    std::fprintf(out_, "\r%-79s%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void Progress::Update(int64_t done, const std::string& detail) {
  if (!enabled_) return;
  if (terminal_) {
    const absl::Time now = absl::Now();
    if (now - last_draw_ < absl::Milliseconds(100)) return;
    last_draw_ = now;
    Print(Line(done, detail), false);
    return;
  }
  if (done < next_mark_ || (total_ >= 0 && done >= total_)) return;  // the end is Done's line
  Print(Line(done, detail), false);
  const int64_t step = total_ > 0 ? std::max<int64_t>(1, total_ / 10) : kUnknownTotalStep;
  next_mark_ = (done / step + 1) * step;
}

void Progress::Done(int64_t done, const std::string& detail) {
  if (!enabled_) return;
  Print(Line(done, detail), true);
}

}  // namespace tessera::cli
