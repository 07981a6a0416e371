// The CLI progress lines (services/cli/progress.h): non-terminal output gets a line per 10% of a known
// total (or per 16 MiB of an unknown one) and the final line; a terminal gets lines redrawn in place;
// disabled prints nothing.
#include "services/cli/progress.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"

namespace tessera::cli {
namespace {

// What `run` writes through a Progress on a memory stream.
std::string Capture(const std::function<void(std::FILE*)>& run) {
  char* buf = nullptr;
  size_t size = 0;
  std::FILE* f = open_memstream(&buf, &size);
  run(f);
  std::fclose(f);
  std::string out(buf, size);
  free(buf);
  return out;
}

TEST(ProgressTest, LogOutputHasALinePerTenthAndTheFinalLine) {
  const int64_t total = 10 << 20;
  std::string out = Capture([&](std::FILE* f) {
    Progress p("upload train.jsonl", total, true, f, /*terminal=*/false);
    for (int64_t done = 0; done <= total; done += 256 << 10) p.Update(done);
    p.Done(total, "validating");
  });
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 11u) << out;  // 0%, 10%, ..., 90%, then the final line
  EXPECT_EQ(lines[0], "upload train.jsonl: 0 B of 10.0 MiB (0%)");
  EXPECT_EQ(lines[1], "upload train.jsonl: 1.0 MiB of 10.0 MiB (10%)");
  EXPECT_EQ(lines.back(), "upload train.jsonl: 10.0 MiB of 10.0 MiB (100%), validating");
}

TEST(ProgressTest, UnknownTotalPrintsEvery16MiB) {
  std::string out = Capture([&](std::FILE* f) {
    Progress p("export v3", -1, true, f, false);
    for (int64_t done = 0; done <= (40 << 20); done += 1 << 20) p.Update(done, "2 files");
    p.Done(40 << 20, "5 files");
  });
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << out;  // 0, 16 MiB, 32 MiB, final
  EXPECT_EQ(lines[1], "export v3: 16.0 MiB, 2 files");
  EXPECT_EQ(lines[3], "export v3: 40.0 MiB, 5 files");
}

TEST(ProgressTest, TerminalRedrawsInPlaceAndDisabledIsSilent) {
  std::string out = Capture([&](std::FILE* f) {
    Progress p("upload x", 100, true, f, /*terminal=*/true);
    p.Update(50);
    p.Done(100);
  });
  EXPECT_EQ(out.find('\n'), out.size() - 1) << "one line, ended only by the final draw";
  EXPECT_EQ(out[0], '\r');
  EXPECT_NE(out.find("(100%)"), std::string::npos);
  EXPECT_EQ(Capture([](std::FILE* f) {
              Progress p("upload x", 100, false, f, false);
              p.Update(50);
              p.Done(100);
            }),
            "");
}

TEST(ProgressTest, FormatBytes) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(int64_t{3} << 30), "3.0 GiB");
}

}  // namespace
}  // namespace tessera::cli
