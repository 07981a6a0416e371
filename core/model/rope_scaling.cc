// RoPE scaling: inverse frequencies and attention factor (see rope_scaling.h), and its config.json
// parsing (families/family.h ParseRopeScaling).
#include "core/model/rope_scaling.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera {
namespace {

double YarnMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

}  // namespace

const char* RopeScalingName(RopeScaling::Type type) {
  switch (type) {
    case RopeScaling::Type::kNone: return "default";
    case RopeScaling::Type::kLinear: return "linear";
    case RopeScaling::Type::kLlama3: return "llama3";
    case RopeScaling::Type::kYarn: return "yarn";
  }
  return "?";
}

std::vector<float> RopeInverseFrequencies(const RopeScaling& s, double theta, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  const double dim = static_cast<double>(head_dim);
  std::vector<float> out(half);
  // transformers: base ** (arange(0, dim, 2).float() / dim) in float32.
  std::vector<float> pos_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    pos_freq[i] = static_cast<float>(std::pow(theta, static_cast<double>(static_cast<float>(2 * i) / static_cast<float>(dim))));
  }
  const double pi = 3.14159265358979323846;
  for (int64_t i = 0; i < half; ++i) {
    const float inv = 1.0f / pos_freq[i];
    switch (s.type) {
      case RopeScaling::Type::kNone:
        out[i] = inv;
        break;
      case RopeScaling::Type::kLinear:
        out[i] = static_cast<float>(inv / s.factor);
        break;
      case RopeScaling::Type::kLlama3: {
        const double old_len = s.original_max_position_embeddings;
        const double low_wavelen = old_len / s.low_freq_factor, high_wavelen = old_len / s.high_freq_factor;
        const double wavelen = 2.0 * pi / inv;
        double v = inv;
        if (wavelen > low_wavelen) {
          v = inv / s.factor;
        } else if (!(wavelen < high_wavelen)) {  // medium frequencies: smooth interpolation
          const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
          v = (1.0 - smooth) * inv / s.factor + smooth * inv;
        }
        out[i] = static_cast<float>(v);
        break;
      }
      case RopeScaling::Type::kYarn: {
        auto correction_dim = [&](double rotations) {
          return dim * std::log(s.original_max_position_embeddings / (rotations * 2.0 * pi)) / (2.0 * std::log(theta));
        };
        double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
        if (s.truncate) {
          low = std::floor(low);
          high = std::ceil(high);
        }
        low = std::max(low, 0.0);
        high = std::min(high, dim - 1.0);
        if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double extrapolation = 1.0 - ramp;
        const float interp = 1.0f / (static_cast<float>(s.factor) * pos_freq[i]);
        out[i] = static_cast<float>(interp * (1.0 - extrapolation) + inv * extrapolation);
        break;
      }
    }
  }
  return out;
}

double RopeAttentionFactor(const RopeScaling& s) {
  if (s.type != RopeScaling::Type::kYarn) return 1.0;
  if (s.attention_factor > 0.0) return s.attention_factor;
  if (s.mscale != 0.0 && s.mscale_all_dim != 0.0) {
    return YarnMscale(s.factor, s.mscale) / YarnMscale(s.factor, s.mscale_all_dim);
  }
  return YarnMscale(s.factor, 1.0);
}

double MlaSoftmaxFactor(const RopeScaling& s) {
  if (s.type != RopeScaling::Type::kYarn || s.mscale_all_dim == 0.0) return 1.0;
  const double m = YarnMscale(s.factor, s.mscale_all_dim);
  return m * m;
}

namespace families {

absl::Status ParseRopeScaling(const Json& j, int64_t max_position_embeddings, RopeScaling* out) {
  *out = RopeScaling();
  // transformers 5 keeps everything in rope_parameters; older configs (most of the Hub) in rope_scaling.
  const char* key = nullptr;
  for (const char* k : {"rope_parameters", "rope_scaling"}) {
    if (!Present(j, k)) continue;
    if (!j[k].is_object()) return BadType(k, "an object or null");
    const Json& r = j[k];
    for (const char* type_key : {"rope_type", "type"}) {
      if (Present(r, type_key) && r[type_key] != "default") key = k;
    }
    if (key != nullptr) break;
  }
  if (key == nullptr) return absl::OkStatus();
  const Json& r = j[key];
  const Json& type_v = Present(r, "rope_type") ? r["rope_type"] : r["type"];
  if (!type_v.is_string()) return BadType(absl::StrCat(key, ".rope_type"), "a string");
  const std::string type = type_v.get<std::string>();
  auto field = [&](const char* name) { return absl::StrCat(key, ".", name); };
  auto number = [&](const char* name, double def, double* dst) -> absl::Status {
    if (!Present(r, name)) {
      *dst = def;
      return absl::OkStatus();
    }
    if (!r[name].is_number()) return BadType(field(name), "a number");
    *dst = r[name].get<double>();
    return absl::OkStatus();
  };
  if (Present(r, "partial_rotary_factor") && r["partial_rotary_factor"] != 1.0) {
    return Unsupported(field("partial_rotary_factor"), "RoPE on part of the head");
  }
  if (type == "linear") {
    out->type = RopeScaling::Type::kLinear;
  } else if (type == "llama3") {
    out->type = RopeScaling::Type::kLlama3;
  } else if (type == "yarn") {
    out->type = RopeScaling::Type::kYarn;
  } else {
    return Unsupported(field("rope_type"), absl::StrCat("'", type, "' (supported: default, linear, llama3, yarn)"));
  }
  RETURN_IF_ERROR(number("factor", 0.0, &out->factor));
  RETURN_IF_ERROR(number("original_max_position_embeddings", 0.0, &out->original_max_position_embeddings));
  if (out->type == RopeScaling::Type::kLlama3) {
    RETURN_IF_ERROR(number("low_freq_factor", 1.0, &out->low_freq_factor));
    RETURN_IF_ERROR(number("high_freq_factor", 4.0, &out->high_freq_factor));
    if (!(out->original_max_position_embeddings > 0)) return Missing(field("original_max_position_embeddings"));
    if (!(out->high_freq_factor > out->low_freq_factor)) {
      return BadType(field("high_freq_factor"), "greater than low_freq_factor");
    }
  }
  if (out->type == RopeScaling::Type::kYarn) {
    if (!(out->original_max_position_embeddings > 0)) return Missing(field("original_max_position_embeddings"));
    if (out->factor == 0.0) out->factor = max_position_embeddings / out->original_max_position_embeddings;
    double beta_fast, beta_slow;
    RETURN_IF_ERROR(number("beta_fast", 0.0, &beta_fast));
    RETURN_IF_ERROR(number("beta_slow", 0.0, &beta_slow));
    out->beta_fast = beta_fast != 0.0 ? beta_fast : 32.0;  // transformers: `or 32`
    out->beta_slow = beta_slow != 0.0 ? beta_slow : 1.0;
    RETURN_IF_ERROR(number("mscale", 0.0, &out->mscale));
    RETURN_IF_ERROR(number("mscale_all_dim", 0.0, &out->mscale_all_dim));
    RETURN_IF_ERROR(number("attention_factor", 0.0, &out->attention_factor));
    ASSIGN_OR_RETURN(out->truncate, GetBoolOr(r, "truncate", true));
  }
  if (!(out->factor > 0)) return Missing(field("factor"));
  return absl::OkStatus();
}

void WriteRopeScaling(const ModelConfig& c, Json* j) {
  Json r;
  r["rope_theta"] = static_cast<double>(c.rope_theta);
  r["rope_type"] = RopeScalingName(c.rope_scaling.type);
  const RopeScaling& s = c.rope_scaling;
  if (s.type != RopeScaling::Type::kNone) r["factor"] = s.factor;
  if (s.type == RopeScaling::Type::kLlama3 || s.type == RopeScaling::Type::kYarn) {
    r["original_max_position_embeddings"] = s.original_max_position_embeddings;
  }
  if (s.type == RopeScaling::Type::kLlama3) {
    r["low_freq_factor"] = s.low_freq_factor;
    r["high_freq_factor"] = s.high_freq_factor;
  }
  if (s.type == RopeScaling::Type::kYarn) {
    r["beta_fast"] = s.beta_fast;
    r["beta_slow"] = s.beta_slow;
    r["truncate"] = s.truncate;
    if (s.mscale != 0.0) r["mscale"] = s.mscale;
    if (s.mscale_all_dim != 0.0) r["mscale_all_dim"] = s.mscale_all_dim;
    if (s.attention_factor != 0.0) r["attention_factor"] = s.attention_factor;
  }
  (*j)["rope_parameters"] = r;
}

}  // namespace families
}  // namespace tessera
