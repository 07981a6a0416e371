// Round trips through SerializeSafetensors / SafetensorsFile for every dtype, the exact byte layout of
// the writer, and typed-read errors.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/io/file_util.h"
#include "core/io/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/io/test_util.h"

namespace tessera::io {
namespace {

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(static_cast<int32_t>(rng() % 20001) - 10000) / 997.0f;
  return v;
}

TEST(SafetensorsRoundTrip, EveryDTypeThroughFileAndMemory) {
  const std::vector<float> f32 = RandomFloats(3 * 5, 1);
  const std::vector<float> src16 = RandomFloats(2 * 7, 2);
  std::vector<uint16_t> bf16, f16;
  for (float x : src16) {
    bf16.push_back(F32ToBf16(x));
    f16.push_back(F32ToF16(x));
  }
  const std::vector<int32_t> i32 = {-5, 0, 7, 2147483647, -2147483647 - 1, 42};
  const float scalar = 3.25f;
  const std::vector<HostTensor> tensors = {
      {"w.f32", DType::kF32, {3, 5}, f32.data()},
      {"w.bf16", DType::kBF16, {2, 7}, bf16.data()},
      {"w.f16", DType::kF16, {14}, f16.data()},
      {"ids", DType::kI32, {2, 3}, i32.data()},
      {"scalar", DType::kF32, {}, &scalar},
      {"empty", DType::kF32, {0, 4}, nullptr},
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "x\"y"}};
  const auto path = testing::ScratchDir() / "all.safetensors";
  ASSERT_TRUE(WriteSafetensorsFile(path.string(), tensors, meta).ok());

  absl::StatusOr<std::string> bytes = SerializeSafetensors(tensors, meta);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto from_disk = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(from_disk.ok()) << from_disk.status();
  auto from_mem = SafetensorsFile::FromBytes(*bytes);
  ASSERT_TRUE(from_mem.ok()) << from_mem.status();
  EXPECT_EQ(*ReadFileToString(path.string()), *bytes);

  for (const SafetensorsFile* f : {from_disk->get(), from_mem->get()}) {
    EXPECT_EQ(f->metadata(), meta);
    EXPECT_EQ(f->names(),
              (std::vector<std::string>{"empty", "ids", "scalar", "w.bf16", "w.f16", "w.f32"}));
    const TensorInfo* info = f->Find("w.bf16");
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, DType::kBF16);
    EXPECT_EQ(info->shape, (std::vector<int64_t>{2, 7}));
    EXPECT_EQ(info->nbytes, 28u);
    EXPECT_EQ(f->Find("missing"), nullptr);

    EXPECT_EQ(*f->ReadF32("w.f32"), f32);  // bit-exact
    std::vector<float> got_bf16 = *f->ReadF32("w.bf16");
    std::vector<float> got_f16 = *f->ReadF32("w.f16");
    for (size_t i = 0; i < src16.size(); ++i) {
      EXPECT_EQ(got_bf16[i], Bf16ToF32(bf16[i]));
      EXPECT_EQ(got_f16[i], F16ToF32(f16[i]));
      // bf16 keeps 8 mantissa bits, f16 11: relative errors 2^-9 and 2^-12 (round to nearest).
      EXPECT_NEAR(got_bf16[i], src16[i], std::abs(src16[i]) * 0x1p-8f + 1e-30f);
      EXPECT_NEAR(got_f16[i], src16[i], std::abs(src16[i]) * 0x1p-11f + 0x1p-24f);
    }
    EXPECT_EQ(*f->ReadF32("scalar"), std::vector<float>{3.25f});
    EXPECT_TRUE(f->ReadF32("empty")->empty());
    auto raw = f->RawBytes("ids");
    ASSERT_TRUE(raw.ok());
    ASSERT_EQ(raw->size(), i32.size() * 4);
    EXPECT_EQ(std::memcmp(raw->data(), i32.data(), raw->size()), 0);

    std::vector<float> dst(15, -1.0f);
    EXPECT_TRUE(f->ReadF32Into("w.f32", {3, 5}, dst.data()).ok());
    EXPECT_EQ(dst, f32);
  }
}

TEST(SafetensorsRoundTrip, WriterLayoutIsHfCompatibleAndDeterministic) {
  const std::vector<float> a = {1, 2, 3}, b = {4, 5};
  // Given out of order: the output must not depend on input order.
  std::vector<HostTensor> t1 = {{"zeta", DType::kF32, {3}, a.data()}, {"alpha", DType::kF32, {2}, b.data()}};
  std::vector<HostTensor> t2 = {t1[1], t1[0]};
  std::string s1 = *SerializeSafetensors(t1, {{"format", "pt"}});
  std::string s2 = *SerializeSafetensors(t2, {{"format", "pt"}});
  EXPECT_EQ(s1, s2);

  uint64_t n;
  std::memcpy(&n, s1.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "header must be padded to 8 bytes";
  std::string header = s1.substr(8, n);
  // Padding after the JSON object is spaces only (what HF's writer does).
  EXPECT_EQ(header.find_first_not_of(' ', header.find_last_of('}') + 1), std::string::npos);
  auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["alpha"]["data_offsets"], nlohmann::json({0, 8}));
  EXPECT_EQ(j["zeta"]["data_offsets"], nlohmann::json({8, 20}));
  EXPECT_EQ(j["zeta"]["dtype"], "F32");
  EXPECT_EQ(j["__metadata__"]["format"], "pt");
  EXPECT_EQ(s1.size(), 8 + n + 20);
  float first;
  std::memcpy(&first, s1.data() + 8 + n, 4);
  EXPECT_EQ(first, 4.0f);  // alpha's data comes first

  // No metadata -> no __metadata__ key.
  auto j2 = nlohmann::json::parse(SerializeSafetensors(t1, {})->substr(8, n));
  EXPECT_FALSE(j2.contains("__metadata__"));
}

TEST(SafetensorsRoundTrip, WriterRejectsBadInput) {
  const float x = 1;
  auto bad = [&](std::vector<HostTensor> t, std::string needle) {
    absl::StatusOr<std::string> s = SerializeSafetensors(t, {});
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(needle), std::string::npos) << s.status();
  };
  bad({{"a", DType::kF32, {1}, &x}, {"a", DType::kF32, {1}, &x}}, "'a' given more than once");
  bad({{"", DType::kF32, {1}, &x}}, "empty name");
  bad({{"__metadata__", DType::kF32, {1}, &x}}, "reserved");
  bad({{"neg", DType::kF32, {-1, 2}, &x}}, "negative dim");
  bad({{"null", DType::kF32, {2}, nullptr}}, "data is null");
  bad({{"huge", DType::kF32, {int64_t{1} << 40, int64_t{1} << 40}, &x}}, "overflows");
}

TEST(SafetensorsRoundTrip, TypedReadErrorsNameTheTensorAndShapes) {
  const std::vector<float> w(6, 1.0f);
  const std::vector<int32_t> ids = {1, 2};
  std::vector<HostTensor> t = {{"layer.w", DType::kF32, {2, 3}, w.data()},
                               {"ids", DType::kI32, {2}, ids.data()}};
  auto f = SafetensorsFile::FromBytes(*SerializeSafetensors(t, {}), "mem.safetensors");
  ASSERT_TRUE(f.ok());
  std::vector<float> dst(6);

  absl::Status s = (*f)->ReadF32Into("layer.w", {3, 2}, dst.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("layer.w"), std::string::npos) << s;
  EXPECT_NE(s.message().find("[2,3]"), std::string::npos) << s;
  EXPECT_NE(s.message().find("[3,2]"), std::string::npos) << s;

  s = (*f)->ReadF32Into("layer.missing", {2, 3}, dst.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("layer.missing"), std::string::npos) << s;
  EXPECT_EQ((*f)->ReadF32("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*f)->RawBytes("nope").status().code(), absl::StatusCode::kNotFound);

  auto as_float = (*f)->ReadF32("ids");
  EXPECT_EQ(as_float.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(as_float.status().message().find("ids"), std::string::npos);
}

TEST(SafetensorsRoundTrip, OpenMissingFileIsNotFound) {
  auto f = SafetensorsFile::Open((testing::ScratchDir() / "nope.safetensors").string());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("nope.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace tessera::io
