// SafetensorsFile::ReadAs / ConvertFloat: pieces in order and bounded, conversion equal to the scalar
// rounding helpers, errors naming the tensor, and the mapped pages released after each piece.
#include <fstream>
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "core/io/safetensors.h"
#include "gtest/gtest.h"
#include "tests/core/io/test_util.h"

namespace tessera::io {
namespace {

// Values that exercise rounding (ties, subnormal-ish, large) in both 16-bit formats.
std::vector<float> Values(int n) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = (static_cast<float>(i % 97) - 48.0f) * 0.0123457f + 1e-3f * static_cast<float>(i);
  return v;
}

struct Piece {
  int64_t first, count;
  std::vector<uint8_t> bytes;
};

absl::StatusOr<std::vector<Piece>> Collect(const SafetensorsFile& f, const std::string& name,
                                           std::vector<int64_t> shape, DType dtype, size_t piece_bytes) {
  std::vector<Piece> out;
  absl::Status s = f.ReadAs(name, shape, dtype, piece_bytes, [&](const void* data, int64_t first, int64_t count) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    out.push_back({first, count, std::vector<uint8_t>(p, p + count * DTypeSize(dtype))});
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

TEST(ReadAs, ConvertsEveryPairLikeTheScalarHelpersInBoundedOrderedPieces) {
  const std::vector<float> f32 = Values(1000);
  std::vector<uint16_t> bf16(f32.size()), f16(f32.size());
  for (size_t i = 0; i < f32.size(); ++i) {
    bf16[i] = F32ToBf16(f32[i]);
    f16[i] = F32ToF16(f32[i]);
  }
  std::vector<HostTensor> tensors = {{"a.f32", DType::kF32, {10, 100}, f32.data()},
                                     {"b.bf16", DType::kBF16, {10, 100}, bf16.data()},
                                     {"c.f16", DType::kF16, {10, 100}, f16.data()}};
  const std::string path = (testing::ScratchDir() / "m.safetensors").string();
  ASSERT_TRUE(WriteSafetensorsFile(path, tensors).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();

  // The widened value of every stored element, then the expected element in each target dtype.
  auto stored = [&](const std::string& name, size_t i) {
    if (name == "a.f32") return f32[i];
    if (name == "b.bf16") return Bf16ToF32(bf16[i]);
    return F16ToF32(f16[i]);
  };
  for (const std::string name : {"a.f32", "b.bf16", "c.f16"}) {
    for (DType to : {DType::kF32, DType::kBF16, DType::kF16}) {
      SCOPED_TRACE(name + " -> " + DTypeName(to));
      const size_t piece_bytes = 300;  // not a multiple of either element size
      auto pieces = Collect(**file, name, {10, 100}, to, piece_bytes);
      ASSERT_TRUE(pieces.ok()) << pieces.status();
      int64_t next = 0;
      for (const Piece& p : *pieces) {
        EXPECT_EQ(p.first, next);
        EXPECT_LE(p.count * static_cast<int64_t>(DTypeSize(to)), static_cast<int64_t>(piece_bytes));
        for (int64_t j = 0; j < p.count; ++j) {
          const size_t i = static_cast<size_t>(p.first + j);
          const float w = stored(name, i);
          if (to == DType::kF32) {
            float got;
            std::memcpy(&got, p.bytes.data() + 4 * j, 4);
            ASSERT_EQ(got, w) << i;
          } else {
            uint16_t got;
            std::memcpy(&got, p.bytes.data() + 2 * j, 2);
            ASSERT_EQ(got, to == DType::kBF16 ? F32ToBf16(w) : F32ToF16(w)) << i;
          }
        }
        next += p.count;
      }
      EXPECT_EQ(next, 1000);
    }
  }
}

TEST(ReadAs, ErrorsNameTheTensorAndFile) {
  std::vector<float> f32 = Values(6);
  std::vector<int32_t> ids = {1, 2, 3};
  std::vector<HostTensor> tensors = {{"w", DType::kF32, {2, 3}, f32.data()}, {"ids", DType::kI32, {3}, ids.data()}};
  const std::string path = (testing::ScratchDir() / "m.safetensors").string();
  ASSERT_TRUE(WriteSafetensorsFile(path, tensors).ok());
  auto file = *SafetensorsFile::Open(path);
  auto noop = [](const void*, int64_t, int64_t) { return absl::OkStatus(); };

  absl::Status missing = file->ReadAs("nope", {2, 3}, DType::kF32, 64, noop);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("'nope'"), std::string_view::npos) << missing;
  absl::Status shape = file->ReadAs("w", {3, 2}, DType::kF32, 64, noop);
  EXPECT_EQ(shape.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(shape.message().find("[2,3]"), std::string_view::npos) << shape;
  EXPECT_NE(shape.message().find(path), std::string_view::npos) << shape;
  EXPECT_EQ(file->ReadAs("ids", {3}, DType::kF32, 64, noop).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(file->ReadAs("w", {2, 3}, DType::kI32, 64, noop).code(), absl::StatusCode::kInvalidArgument);
  // A sink's error stops the read and comes back unchanged.
  int calls = 0;
  absl::Status stopped = file->ReadAs("w", {2, 3}, DType::kF32, 8, [&](const void*, int64_t, int64_t) {
    ++calls;
    return absl::ResourceExhaustedError("device full");
  });
  EXPECT_EQ(stopped, absl::ResourceExhaustedError("device full"));
  EXPECT_EQ(calls, 1);
}

// RssFile (file pages mapped into this process) from /proc/self/status, in bytes.
int64_t RssFileBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("RssFile:", 0) == 0) return std::stoll(line.substr(8)) * 1024;
  }
  return -1;
}

TEST(ReadAs, ReleasesTheMappedPagesOfEveryPiece) {
  if (RssFileBytes() < 0) GTEST_SKIP() << "no RssFile in /proc/self/status";
  const int64_t n = int64_t{24} << 20;  // 48 MiB of bf16
  std::vector<uint16_t> bf16(static_cast<size_t>(n), F32ToBf16(0.25f));
  std::vector<HostTensor> tensors = {{"big", DType::kBF16, {n}, bf16.data()}};
  const std::string path = (testing::ScratchDir() / "big.safetensors").string();
  ASSERT_TRUE(WriteSafetensorsFile(path, tensors).ok());
  bf16 = {};
  auto file = *SafetensorsFile::Open(path);
  const int64_t before = RssFileBytes();
  int64_t peak = 0;
  uint64_t sum = 0;
  ASSERT_TRUE(file->ReadAs("big", {n}, DType::kBF16, size_t{1} << 20, [&](const void* data, int64_t, int64_t count) {
                    const uint16_t* p = static_cast<const uint16_t*>(data);
                    for (int64_t i = 0; i < count; i += 1024) sum += p[i];  // touch every page
                    peak = std::max(peak, RssFileBytes() - before);
                    return absl::OkStatus();
                  }).ok());
  EXPECT_EQ(sum, static_cast<uint64_t>(F32ToBf16(0.25f)) * static_cast<uint64_t>(n / 1024));
  // Without the release every page read stays mapped: 48 MiB. With it, about one piece (1 MiB) plus
  // the kernel's fault-around.
  EXPECT_LT(peak, int64_t{8} << 20) << "peak RssFile growth " << peak;
  EXPECT_LT(RssFileBytes() - before, int64_t{8} << 20);
}

}  // namespace
}  // namespace tessera::io
