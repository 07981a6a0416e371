#include "core/tensor/tensor.h"

#include <cassert>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kI32: return 4;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kI32: return "i32";
  }
  return "?";
}

const char* DeviceName(DeviceKind device) { return device == DeviceKind::kCpu ? "cpu" : "cuda"; }

Tensor::Tensor(std::shared_ptr<void> owner, void* data, std::vector<int64_t> shape, DType dtype,
               DeviceKind device)
    : owner_(std::move(owner)), data_(data), shape_(std::move(shape)), dtype_(dtype), device_(device), defined_(true) {}

int64_t Tensor::numel() const {
  if (shape_.empty()) return data_ ? 1 : 0;
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

Tensor Tensor::Rows(int64_t begin, int64_t count) const {
  assert(rank() >= 1 && begin >= 0 && count >= 0 && begin + count <= shape_[0]);
  const int64_t row_elems = shape_[0] == 0 ? 0 : numel() / shape_[0];
  std::vector<int64_t> shape = shape_;
  shape[0] = count;
  char* base = static_cast<char*>(data_) + static_cast<size_t>(begin * row_elems) * DTypeSize(dtype_);
  return Tensor(owner_, base, std::move(shape), dtype_, device_);
}

Tensor Tensor::Reshape(std::vector<int64_t> shape) const {
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) infer = static_cast<int>(i);
    else known *= shape[i];
  }
  if (infer >= 0) shape[infer] = known == 0 ? 0 : numel() / known;
  Tensor t(owner_, data_, std::move(shape), dtype_, device_);
  assert(t.numel() == numel());
  return t;
}

Tensor Tensor::Flat2D() const {
  const int64_t last = rank() == 0 ? 1 : shape_.back();
  return Reshape({last == 0 ? 0 : numel() / last, last});
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string Tensor::DebugString() const {
  return absl::StrCat(DTypeName(dtype_), ShapeString(shape_), "@", DeviceName(device_));
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) { mant <<= 1; --exp; }
      mant &= 0x3FF;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t F32ToF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000;
  const int32_t exp = static_cast<int32_t>((bits >> 23) & 0xFF) - 127 + 15;
  uint32_t mant = bits & 0x7FFFFF;
  if (((bits >> 23) & 0xFF) == 0xFF) return static_cast<uint16_t>(sign | 0x7C00 | (mant ? 0x200 : 0));
  if (exp >= 0x1F) return static_cast<uint16_t>(sign | 0x7C00);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    const uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;
  return static_cast<uint16_t>(half);
}

}  // namespace tessera
