// Progress of long CLI work (dataset uploads, version exports) on stderr, so stdout stays the result
// (text or --json) and scripts can parse it while a person still sees the transfer move.
//
// On a terminal: one line redrawn in place ("\r"), at most 10 times a second, ended by the final line.
// Elsewhere (logs, CI, pipes): a line at each further 10% of a known total, or every 16 MiB of an
// unknown one, then the final line, so a log shows the transfer without flooding. Disabled (--quiet):
// nothing.
//   upload train.jsonl: 1.0 MiB of 3.2 MiB (31%)
//   export v3: 12.5 MiB, 3 files
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/time/time.h"

namespace tessera::cli {

class Progress {
 public:
  // total_bytes < 0: unknown. `terminal`: redraw in place (default: whether `out` is a TTY).
  Progress(std::string what, int64_t total_bytes, bool enabled, std::FILE* out = stderr);
  Progress(std::string what, int64_t total_bytes, bool enabled, std::FILE* out, bool terminal);

  void Update(int64_t done_bytes, const std::string& detail = "");
  // The final line (always printed when enabled).
  void Done(int64_t done_bytes, const std::string& detail = "");

 private:
  std::string Line(int64_t done_bytes, const std::string& detail) const;
  void Print(const std::string& line, bool final);

  std::string what_;
  int64_t total_;
  bool enabled_;
  std::FILE* out_;
  bool terminal_;
  int64_t next_mark_ = 0;  // non-terminal: the byte count of the next line
  absl::Time last_draw_ = absl::InfinitePast();
};

// "3.2 MiB", "512 B", "1.5 GiB".
std::string FormatBytes(int64_t bytes);

}  // namespace tessera::cli
