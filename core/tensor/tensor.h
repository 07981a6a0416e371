// Tensor: a shaped, typed view of memory owned by a backend (host RAM or device memory).
//
// Memory contract: a Tensor holds a shared reference to its allocation (`owner`), so views (Rows,
// Reshape) keep the allocation alive and copying a Tensor is cheap (no data copy). Data is dense,
// row-major, with no strides: every view is a contiguous range of its parent. Whether `data()` may be
// dereferenced on the host depends on `device()`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace tessera {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32 };
enum class DeviceKind : uint8_t { kCpu, kCuda };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);
const char* DeviceName(DeviceKind device);

class Tensor {
 public:
  Tensor() = default;
  // Wraps `data` (which `owner` keeps alive) as a tensor of `shape`.
  Tensor(std::shared_ptr<void> owner, void* data, std::vector<int64_t> shape, DType dtype,
         DeviceKind device);

  bool defined() const { return defined_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  DType dtype() const { return dtype_; }
  DeviceKind device() const { return device_; }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T> T* data() { return static_cast<T*>(data_); }
  template <typename T> const T* data() const { return static_cast<const T*>(data_); }

  // View of rows [begin, begin + count) along dim 0.
  Tensor Rows(int64_t begin, int64_t count) const;
  // View with a new shape of the same element count (one dim may be -1).
  Tensor Reshape(std::vector<int64_t> shape) const;
  // Rank-2 view [numel / last_dim, last_dim].
  Tensor Flat2D() const;

  const std::shared_ptr<void>& owner() const { return owner_; }
  std::string DebugString() const;  // e.g. "f32[4,128]@cpu"

 private:
  std::shared_ptr<void> owner_;
  void* data_ = nullptr;
  std::vector<int64_t> shape_;
  DType dtype_ = DType::kF32;
  DeviceKind device_ = DeviceKind::kCpu;
  bool defined_ = false;
};

// Shape formatting for error messages: "[4,128]".
std::string ShapeString(const std::vector<int64_t>& shape);

// Host-side bf16/f16 <-> f32 conversion (round-to-nearest-even for f32 -> bf16; NaN stays a quiet NaN).
// The bf16 pair is inline: the CPU backend converts whole tensors element by element, and a call per
// element kept those loops from vectorizing (a bf16 prefill spent 9% of its time in the two calls).
inline float Bf16ToF32(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;  // NaN
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}
float F16ToF32(uint16_t v);
uint16_t F32ToF16(float f);

}  // namespace tessera
