// A corpus of malformed safetensors files: each must be rejected at Open with a Status whose message
// says what is wrong, and random damage to a valid file must never crash the reader.
#include <cstring>
#include <fstream>
#include <random>

#include "core/io/safetensors.h"
#include "gtest/gtest.h"
#include "tests/core/io/test_util.h"

namespace tessera::io {
namespace {

using testing::RawSafetensors;

struct BadCase {
  std::string label;
  std::string bytes;
  std::string needle;  // expected substring of the error message
};

std::string Floats(int n) { return std::string(static_cast<size_t>(n) * 4, '\x01'); }

std::string ValidFile() {
  std::vector<float> a(12), b(5);
  for (int i = 0; i < 12; ++i) a[i] = static_cast<float>(i);
  for (int i = 0; i < 5; ++i) b[i] = -static_cast<float>(i);
  std::vector<HostTensor> t = {{"model.embed.weight", DType::kF32, {3, 4}, a.data()},
                               {"model.norm.weight", DType::kF32, {5}, b.data()}};
  return *SerializeSafetensors(t, {{"format", "pt"}});
}

std::vector<BadCase> Corpus() {
  const std::string valid = ValidFile();
  std::string huge_len(8, '\0');
  uint64_t big = 1ull << 62;
  std::memcpy(huge_len.data(), &big, 8);
  std::string len_past_eof = valid;
  uint64_t past = valid.size();  // header "length" larger than what follows
  std::memcpy(len_past_eof.data(), &past, 8);

  auto one = [](const std::string& entry, const std::string& data) {
    return RawSafetensors("{\"t\":" + entry + "}", data);
  };
  return {
      {"empty file", "", "too short"},
      {"shorter than the length prefix", std::string("\x10\x00\x00", 3), "too short"},
      {"truncated in the data", valid.substr(0, valid.size() - 3), "past the data section"},
      {"truncated in the header", valid.substr(0, 40), "past the end of the file"},
      {"header length past EOF", len_past_eof, "past the end of the file"},
      {"header length 2^62", huge_len + "{}", "past the end of the file"},
      {"header not JSON", RawSafetensors("{\"t\": {dtype: F32}", ""), "not valid JSON"},
      {"header empty", RawSafetensors("", ""), "not valid JSON"},
      {"header binary garbage", RawSafetensors(std::string("\xff\xfe\x00\x01", 4), ""), "not valid JSON"},
      {"JSON array", RawSafetensors("[1,2,3]", ""), "expected an object"},
      {"JSON string", RawSafetensors("\"hello\"", ""), "expected an object"},
      {"entry not an object", one("[1]", ""), "entry is array"},
      {"missing dtype", one("{\"shape\":[1],\"data_offsets\":[0,4]}", Floats(1)), "dtype"},
      {"unknown dtype", one("{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}", Floats(1)),
       "unsupported safetensors dtype 'Q4'"},
      {"dtype not a string", one("{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}", Floats(1)), "dtype"},
      {"negative shape", one("{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}", Floats(1)),
       "not a non-negative integer"},
      {"float shape", one("{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}", Floats(1)),
       "not a non-negative integer"},
      {"string shape", one("{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}", Floats(2)),
       "not a non-negative integer"},
      {"shape not an array", one("{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}", Floats(4)), "shape"},
      {"shape overflows", one("{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}",
                              Floats(1)), "overflows"},
      {"offsets missing", one("{\"dtype\":\"F32\",\"shape\":[1]}", Floats(1)), "data_offsets"},
      {"offsets wrong arity", one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}", Floats(1)),
       "data_offsets"},
      {"negative offset", one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}", Floats(1)),
       "data_offsets"},
      {"offsets out of range", one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", Floats(1)),
       "past the data section"},
      {"begin > end", one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}", Floats(3)),
       "begin 8 > end 4"},
      {"size != numel * dtype", one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}", Floats(2)),
       "holds 4 bytes but F32[2] needs 8"},
      {"bf16 size mismatch", one("{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,8]}", Floats(2)),
       "needs 6"},
      {"overlapping tensors",
       RawSafetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      Floats(3)),
       "overlap"},
      {"identical ranges",
       RawSafetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                      Floats(1)),
       "overlap"},
      {"duplicate tensor name",
       RawSafetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                      Floats(2)),
       "'a' more than once"},
      {"metadata not an object", RawSafetensors("{\"__metadata__\":[\"x\"]}", ""), "__metadata__"},
      {"metadata value not a string", RawSafetensors("{\"__metadata__\":{\"steps\":3}}", ""),
       "__metadata__ value for 'steps'"},
      {"deeply nested JSON", RawSafetensors(std::string(200000, '[') + std::string(200000, ']'), ""),
       "expected an object"},
      {"shape beyond int64", one("{\"dtype\":\"F32\",\"shape\":[99999999999999999999999],"
                                 "\"data_offsets\":[0,4]}", Floats(1)),
       "not a non-negative integer"},
      {"shape 1e400 (number overflow)",
       one("{\"dtype\":\"F32\",\"shape\":[1e400],\"data_offsets\":[0,4]}", Floats(1)), "not valid JSON"},
      {"offset beyond uint64", one("{\"dtype\":\"F32\",\"shape\":[1],"
                                   "\"data_offsets\":[0,184467440737095516160]}", Floats(1)),
       "data_offsets"},
      {"empty tensor name",
       RawSafetensors("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", Floats(1)),
       "empty tensor name"},
  };
}

TEST(SafetensorsCorruption, EveryCorpusEntryIsRejectedWithAUsefulMessage) {
  for (const BadCase& c : Corpus()) {
    auto f = SafetensorsFile::FromBytes(c.bytes, "case.safetensors");
    ASSERT_FALSE(f.ok()) << c.label << " was accepted";
    EXPECT_TRUE(f.status().code() == absl::StatusCode::kInvalidArgument ||
                f.status().code() == absl::StatusCode::kDataLoss)
        << c.label << ": " << f.status();
    EXPECT_NE(f.status().message().find(c.needle), std::string::npos)
        << c.label << ": message '" << f.status().message() << "' lacks '" << c.needle << "'";
    EXPECT_NE(f.status().message().find("case.safetensors"), std::string::npos) << c.label;
  }
}

TEST(SafetensorsCorruption, CorpusOnDiskIsRejectedByOpen) {
  const auto dir = testing::ScratchDir();
  int i = 0;
  for (const BadCase& c : Corpus()) {
    const auto path = dir / ("bad" + std::to_string(i++) + ".safetensors");
    std::ofstream(path, std::ios::binary) << c.bytes;
    auto f = SafetensorsFile::Open(path.string());
    ASSERT_FALSE(f.ok()) << c.label;
    EXPECT_NE(f.status().message().find(c.needle), std::string::npos) << c.label << ": " << f.status();
  }
}

TEST(SafetensorsCorruption, ValidFileBaselineAndBenignVariantsAreAccepted) {
  ASSERT_TRUE(SafetensorsFile::FromBytes(ValidFile()).ok());
  // Zero-size tensors may share an offset with anything; extra keys in an entry are ignored.
  auto f = SafetensorsFile::FromBytes(RawSafetensors(
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
      "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4],\"extra\":1}}  ",
      Floats(1)));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->size(), 2u);
}

// Random byte flips and truncations of a valid file: Open may accept or reject, but must not crash,
// and whatever it accepts must be fully readable within bounds.
TEST(SafetensorsCorruption, RandomDamageNeverCrashes) {
  const std::string valid = ValidFile();
  std::mt19937 rng(12345);
  int accepted = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string bytes = valid;
    switch (iter % 3) {
      case 0: {
        int flips = 1 + static_cast<int>(rng() % 4);
        for (int k = 0; k < flips; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
        break;
      }
      case 1:
        bytes.resize(rng() % bytes.size());
        break;
      case 2: {
        size_t pos = 8 + rng() % (bytes.size() - 8);
        bytes[pos] = "0123456789-.[]{}\",:e"[rng() % 20];
        break;
      }
    }
    auto f = SafetensorsFile::FromBytes(std::move(bytes));
    if (!f.ok()) {
      EXPECT_FALSE(f.status().message().empty());
      continue;
    }
    ++accepted;
    for (const std::string& name : (*f)->names()) {
      const TensorInfo* info = (*f)->Find(name);
      ASSERT_NE(info, nullptr);
      auto raw = (*f)->RawBytes(name);
      ASSERT_TRUE(raw.ok());
      volatile uint8_t sink = 0;
      for (uint8_t b : *raw) sink = sink ^ b;
      if (info->dtype != DType::kI32) {
        auto v = (*f)->ReadF32(name);
        ASSERT_TRUE(v.ok());
        EXPECT_EQ(static_cast<int64_t>(v->size()), info->numel());
      }
    }
  }
  EXPECT_GT(accepted, 0) << "data-only flips should leave some files valid";
}

}  // namespace
}  // namespace tessera::io
