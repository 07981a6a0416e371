// libFuzzer target: the safetensors reader (core/io/safetensors.h) on arbitrary bytes.
// Contract checked: FromBytes either refuses the blob with a Status or every accessor stays inside it
// (ASan) and converts without UB (UBSan): RawBytes, ReadF32, ReadF32Into and the streamed ReadAs into
// each float dtype in small pieces, with the stored shape and with a wrong one.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tessera::DType;
  auto file = tessera::io::SafetensorsFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!file.ok()) return 0;
  const tessera::io::SafetensorsFile& f = **file;
  for (const std::string& name : f.names()) {
    const tessera::io::TensorInfo* t = f.Find(name);
    if (t == nullptr) __builtin_trap();  // names() and Find() disagree
    auto raw = f.RawBytes(name);
    if (raw.ok() && raw->size() != t->nbytes) __builtin_trap();
    auto floats = f.ReadF32(name);
    if (floats.ok()) {
      if (static_cast<int64_t>(floats->size()) != t->numel()) __builtin_trap();
      std::vector<float> dst(floats->size());
      (void)f.ReadF32Into(name, t->shape, dst.data());
    }
    std::vector<int64_t> wrong = t->shape;
    wrong.push_back(2);
    for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
      int64_t seen = 0;
      (void)f.ReadAs(name, t->shape, d, 6, [&](const void* p, int64_t first, int64_t count) {
        if (p == nullptr || first != seen || count <= 0) __builtin_trap();
        seen += count;
        return absl::OkStatus();
      });
      (void)f.ReadAs(name, wrong, d, 64, [](const void*, int64_t, int64_t) { return absl::OkStatus(); });
    }
  }
  (void)f.Find("absent");
  (void)f.ReadF32("absent");
  return 0;
}
