// RoPE scaling (config.json "rope_scaling", or transformers 5's "rope_parameters"): the per-pair inverse
// frequencies and the cos/sin multiplier, computed as transformers' modeling_rope_utils does:
//   linear : inv_freq_i = theta^(-2i/d) / factor
//   llama3 : wavelengths above original_max_position_embeddings / low_freq_factor divided by factor,
//            below .. / high_freq_factor kept, smoothly interpolated in between
//   yarn   : interpolation (1/factor) and extrapolation blended by a linear ramp over the dimensions
//            between the correction range of beta_fast / beta_slow rotations (truncated to integers
//            unless truncate = false); cos and sin multiplied by attention_factor (default
//            0.1 ln(factor) + 1, or mscale(factor, mscale) / mscale(factor, mscale_all_dim))
// "dynamic" (NTK scaling that changes with the sequence length), "longrope" and partial rotary factors
// are refused by name (UNIMPLEMENTED) by the config parser.
#pragma once

#include <cstdint>
#include <vector>

namespace tessera {

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3, kYarn };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  double original_max_position_embeddings = 0.0;  // llama3, yarn
  double beta_fast = 32.0, beta_slow = 1.0;       // yarn
  double mscale = 0.0, mscale_all_dim = 0.0;      // yarn (0: absent)
  double attention_factor = 0.0;                  // yarn (0: derived)
  bool truncate = true;                           // yarn
  bool operator==(const RopeScaling&) const = default;
};

const char* RopeScalingName(RopeScaling::Type type);  // "default", "linear", "llama3", "yarn"

// head_dim / 2 inverse frequencies for `theta` (float32 values, as transformers keeps them).
std::vector<float> RopeInverseFrequencies(const RopeScaling& s, double theta, int64_t head_dim);
// The multiplier of cos and sin (1 except for yarn). Scaling both q and k by it scales the attention
// scores by its square, which is how the model applies it.
double RopeAttentionFactor(const RopeScaling& s);
// Multi-head latent attention's extra softmax factor (transformers' yarn_apply_mscale): with a yarn
// mscale_all_dim, mscale(factor, mscale_all_dim)^2 multiplies the whole q.k scale (the nope dims too);
// 1 otherwise.
double MlaSoftmaxFactor(const RopeScaling& s);

}  // namespace tessera
