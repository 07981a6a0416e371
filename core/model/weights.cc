// ModelWeights: allocation, HF checkpoint loading, seeded random init, saving (see weights.h).
#include "core/model/weights.h"

#include <cmath>
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/io/checkpoint.h"
#include "core/io/safetensors.h"
#include "core/model/fused_experts.h"
#include "core/model/hf_names.h"
#include "core/model/overlay.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// N(0,1) values for elements [begin, end) of stream `stream`. Elements come in blocks of 4096, each
// block seeded from (stream, block index) and filled by a xorshift generator with Box-Muller pairs, so
// any element's value depends only on (stream, its index): the fill can be split across threads in
// any way and stays deterministic.
constexpr int64_t kNormalBlock = 4096;
void FillNormalBlock(uint64_t stream, int64_t block, float* out, int64_t count) {
  uint64_t x = SplitMix64(stream ^ SplitMix64(static_cast<uint64_t>(block) + 1)) | 1;
  auto next = [&x]() {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (int64_t i = 0; i < count; i += 2) {
    const double u1 = (static_cast<double>(next() >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    const double u2 = static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0);
    const double r = std::sqrt(-2.0 * std::log(u1));
    out[i] = static_cast<float>(r * std::cos(6.283185307179586 * u2));
    if (i + 1 < count) out[i + 1] = static_cast<float>(r * std::sin(6.283185307179586 * u2));
  }
}

}  // namespace

std::vector<int64_t> ExpertPartShape(const ModelConfig& c, int part) {
  if (part == 2) return {c.hidden_size, c.expert_dim};
  return {c.expert_dim, c.hidden_size};
}

absl::StatusOr<ExpertWeights> AllocateExpertWeights(const ModelConfig& c, DType dtype, Backend* backend) {
  ExpertWeights w;
  ASSIGN_OR_RETURN(w.gate, backend->Alloc(ExpertPartShape(c, 0), dtype));
  ASSIGN_OR_RETURN(w.up, backend->Alloc(ExpertPartShape(c, 1), dtype));
  ASSIGN_OR_RETURN(w.down, backend->Alloc(ExpertPartShape(c, 2), dtype));
  return w;
}

namespace {

// Builds every tensor of `c` with `make(shape)` (allocation, or shape-only placeholders).
absl::StatusOr<ModelWeights> BuildWeights(const ModelConfig& c,
                                          const std::function<absl::StatusOr<Tensor>(std::vector<int64_t>)>& make) {
  RETURN_IF_ERROR(c.Validate());
  ModelWeights w;
  const int64_t d = c.hidden_size;
  ASSIGN_OR_RETURN(w.embed, make({c.vocab_size, d}));
  ASSIGN_OR_RETURN(w.final_norm, make({d}));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    ASSIGN_OR_RETURN(w.lm_head, make({c.vocab_size, d}));
  }
  w.layers.resize(c.num_layers);
  for (LayerWeights& l : w.layers) {
    ASSIGN_OR_RETURN(l.input_norm, make({d}));
    if (c.mla()) {
      if (c.q_lora_rank > 0) {
        ASSIGN_OR_RETURN(l.q_a_proj, make({c.q_lora_rank, d}));
        ASSIGN_OR_RETURN(l.q_a_norm, make({c.q_lora_rank}));
      }
      ASSIGN_OR_RETURN(l.q_proj, make({c.q_dim(), c.q_lora_rank > 0 ? c.q_lora_rank : d}));
      ASSIGN_OR_RETURN(l.kv_a_proj, make({c.kv_lora_rank + c.qk_rope_head_dim, d}));
      ASSIGN_OR_RETURN(l.kv_a_norm, make({c.kv_lora_rank}));
      ASSIGN_OR_RETURN(l.kv_b_proj, make({c.num_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}));
    } else {
      ASSIGN_OR_RETURN(l.q_proj, make({c.q_dim(), d}));
      ASSIGN_OR_RETURN(l.k_proj, make({c.kv_dim(), d}));
      ASSIGN_OR_RETURN(l.v_proj, make({c.kv_dim(), d}));
    }
    ASSIGN_OR_RETURN(l.o_proj, make({d, c.o_in_dim()}));
    if (c.qk_norm == QkNorm::kPerHead) {
      ASSIGN_OR_RETURN(l.q_norm, make({c.head_dim}));
      ASSIGN_OR_RETURN(l.k_norm, make({c.head_dim}));
    } else if (c.qk_norm == QkNorm::kFull) {
      ASSIGN_OR_RETURN(l.q_norm, make({c.q_dim()}));
      ASSIGN_OR_RETURN(l.k_norm, make({c.kv_dim()}));
    }
    ASSIGN_OR_RETURN(l.post_norm, make({d}));
    const int64_t li = &l - w.layers.data();
    if (!c.IsDenseLayer(li)) {
      ASSIGN_OR_RETURN(l.router, make({c.num_experts, d}));
      l.experts.resize(c.num_experts);
      for (ExpertWeights& e : l.experts) {
        ASSIGN_OR_RETURN(e.gate, make(ExpertPartShape(c, 0)));
        ASSIGN_OR_RETURN(e.up, make(ExpertPartShape(c, 1)));
        ASSIGN_OR_RETURN(e.down, make(ExpertPartShape(c, 2)));
      }
      if (c.shared_expert_gate) { ASSIGN_OR_RETURN(l.shared_gate, make({1, d})); }
      if (c.router_bias) { ASSIGN_OR_RETURN(l.router_bias, make({c.num_experts})); }
    }
    if (c.qkv_bias) {
      ASSIGN_OR_RETURN(l.q_bias, make({c.q_dim()}));
      ASSIGN_OR_RETURN(l.k_bias, make({c.kv_dim()}));
      ASSIGN_OR_RETURN(l.v_bias, make({c.kv_dim()}));
    }
    if (const int64_t mf = c.MlpDim(li); mf > 0) {
      ASSIGN_OR_RETURN(l.mlp.gate, make({mf, d}));
      ASSIGN_OR_RETURN(l.mlp.up, make({mf, d}));
      ASSIGN_OR_RETURN(l.mlp.down, make({d, mf}));
    }
  }
  return w;
}

}  // namespace

absl::StatusOr<ModelWeights> ModelWeights::Allocate(const ModelConfig& c, Backend* backend, DType matrix_dtype) {
  if (backend == nullptr) return absl::InvalidArgumentError("ModelWeights: backend is null");
  if (matrix_dtype != DType::kF32 && matrix_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("ModelWeights: weight matrices may be f32 or bf16, not ", DTypeName(matrix_dtype)));
  }
  return BuildWeights(c, [backend, matrix_dtype](std::vector<int64_t> shape) {
    const DType dtype = shape.size() == 2 ? matrix_dtype : DType::kF32;
    return backend->Alloc(std::move(shape), dtype);
  });
}

absl::Status ModelWeights::CheckShapes(const ModelConfig& c, DeviceKind device, DType matrix_dtype) const {
  if (static_cast<int64_t>(layers.size()) != c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("weights have ", layers.size(), " layers, config has ", c.num_layers));
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    if (static_cast<int64_t>(layers[i].experts.size()) != (c.IsDenseLayer(i) ? 0 : c.num_experts)) {
      return absl::InvalidArgumentError(absl::StrCat("weights' expert count of layer ", i, " does not match the config"));
    }
  }
  ASSIGN_OR_RETURN(ModelWeights want, BuildWeights(c, [](std::vector<int64_t> shape) -> absl::StatusOr<Tensor> {
    return Tensor(nullptr, nullptr, std::move(shape), DType::kF32, DeviceKind::kCpu);
  }));
  std::vector<NamedParam> expected = want.Parameters(c);
  std::vector<NamedParam> have = const_cast<ModelWeights&>(*this).Parameters(c);
  for (size_t i = 0; i < expected.size(); ++i) {
    const Tensor& t = *have[i].tensor;
    const DType want_dtype = expected[i].tensor->rank() == 2 ? matrix_dtype : DType::kF32;
    if (!t.defined() || t.shape() != expected[i].tensor->shape() || t.dtype() != want_dtype || t.device() != device) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", expected[i].name, "' must be ",
                                                     DTypeName(want_dtype),
                                                     ShapeString(expected[i].tensor->shape()), " on ",
                                                     DeviceName(device), ", got ",
                                                     t.defined() ? t.DebugString() : "undefined"));
    }
  }
  if (!lm_head.defined()) return absl::InvalidArgumentError("lm_head is undefined");
  return absl::OkStatus();
}

std::vector<NamedParam> ModelWeights::Parameters(const ModelConfig& c) {
  using hf::LayerTensor;
  std::vector<NamedParam> out;
  out.push_back({hf::EmbedName(), &embed});
  for (int64_t i = 0; i < static_cast<int64_t>(layers.size()); ++i) {
    LayerWeights& l = layers[i];
    auto name = [&](LayerTensor t) { return hf::LayerTensorName(c.family, i, t); };
    out.push_back({name(LayerTensor::kInputNorm), &l.input_norm});
    if (c.mla()) {
      if (c.q_lora_rank > 0) {
        out.push_back({name(LayerTensor::kQAProj), &l.q_a_proj});
        out.push_back({name(LayerTensor::kQANorm), &l.q_a_norm});
        out.push_back({name(LayerTensor::kQBProj), &l.q_proj});
      } else {
        out.push_back({name(LayerTensor::kQProj), &l.q_proj});
      }
      out.push_back({name(LayerTensor::kKvAProj), &l.kv_a_proj});
      out.push_back({name(LayerTensor::kKvANorm), &l.kv_a_norm});
      out.push_back({name(LayerTensor::kKvBProj), &l.kv_b_proj});
    } else {
      out.push_back({name(LayerTensor::kQProj), &l.q_proj});
      out.push_back({name(LayerTensor::kKProj), &l.k_proj});
      out.push_back({name(LayerTensor::kVProj), &l.v_proj});
    }
    out.push_back({name(LayerTensor::kOProj), &l.o_proj});
    if (c.qk_norm != QkNorm::kNone) {
      out.push_back({name(LayerTensor::kQNorm), &l.q_norm});
      out.push_back({name(LayerTensor::kKNorm), &l.k_norm});
    }
    out.push_back({name(LayerTensor::kPostNorm), &l.post_norm});
    if (!c.IsDenseLayer(i)) out.push_back({name(LayerTensor::kRouter), &l.router});
    for (int64_t e = 0; e < static_cast<int64_t>(l.experts.size()); ++e) {
      out.push_back({hf::ExpertName(c.family, i, e, hf::ExpertPart::kGate), &l.experts[e].gate});
      out.push_back({hf::ExpertName(c.family, i, e, hf::ExpertPart::kUp), &l.experts[e].up});
      out.push_back({hf::ExpertName(c.family, i, e, hf::ExpertPart::kDown), &l.experts[e].down});
    }
    // Features of some families only (config.h), after the tensors every family has.
    if (c.qkv_bias) {
      out.push_back({name(LayerTensor::kQBias), &l.q_bias});
      out.push_back({name(LayerTensor::kKBias), &l.k_bias});
      out.push_back({name(LayerTensor::kVBias), &l.v_bias});
    }
    if (c.MlpDim(i) > 0) {
      const bool dense = c.IsDenseLayer(i);
      out.push_back({hf::MlpName(c.family, i, dense, hf::ExpertPart::kGate), &l.mlp.gate});
      out.push_back({hf::MlpName(c.family, i, dense, hf::ExpertPart::kUp), &l.mlp.up});
      out.push_back({hf::MlpName(c.family, i, dense, hf::ExpertPart::kDown), &l.mlp.down});
    }
    if (c.shared_expert_gate && !c.IsDenseLayer(i)) out.push_back({name(LayerTensor::kSharedGate), &l.shared_gate});
    if (c.router_bias && !c.IsDenseLayer(i)) out.push_back({name(LayerTensor::kRouterBias), &l.router_bias});
  }
  out.push_back({hf::FinalNormName(), &final_norm});
  if (!c.tie_word_embeddings) out.push_back({hf::LmHeadName(), &lm_head});
  return out;
}

absl::StatusOr<ModelWeights> ModelWeights::Load(const ModelConfig& c, const io::Checkpoint& ckpt,
                                                Backend* backend, DType matrix_dtype) {
  ASSIGN_OR_RETURN(ModelWeights w, Allocate(c, backend, matrix_dtype));
  FusedExpertLoader fused;
  for (const NamedParam& p : w.Parameters(c)) {
    if (fused.Defer(c, ckpt, p)) continue;  // a slice of a fused expert tensor: streamed below
    Tensor flat = p.tensor->Reshape({p.tensor->numel()});
    const size_t elem = DTypeSize(flat.dtype());
    RETURN_IF_ERROR(ckpt.ReadAs(p.name, p.tensor->shape(), flat.dtype(), kLoadPieceBytes,
                                [&](const void* data, int64_t first, int64_t count) {
                                  Tensor piece = flat.Rows(first, count);
                                  return backend->CopyFromHost(data, static_cast<size_t>(count) * elem, piece);
                                }));
  }
  RETURN_IF_ERROR(fused.Load(ckpt, kLoadPieceBytes, backend));
  return w;
}

absl::StatusOr<ModelWeights> ModelWeights::LoadFromPath(const ModelConfig& c, const std::string& path,
                                                        Backend* backend, DType matrix_dtype) {
  ASSIGN_OR_RETURN(auto ckpt, io::Checkpoint::Open(path));
  return Load(c, *ckpt, backend, matrix_dtype);
}

absl::StatusOr<ModelWeights> ModelWeights::RandomInit(const ModelConfig& c, uint64_t seed,
                                                      Backend* backend) {
  ASSIGN_OR_RETURN(ModelWeights w, Allocate(c, backend));
  const float std_dev = 0.02f;
  const float out_scale = 1.0f / std::sqrt(2.0f * static_cast<float>(c.num_layers));
  std::vector<float> host;
  for (const NamedParam& p : w.Parameters(c)) {
    host.resize(p.tensor->numel());
    const bool is_norm = p.tensor->rank() == 1;
    if (is_norm) {
      const bool is_bias = (p.name.size() > 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0) ||
                           p.name.find("e_score_correction_bias") != std::string::npos;
      std::fill(host.begin(), host.end(), is_bias ? 0.0f : 1.0f);
    } else {
      const bool is_out = p.name.find("o_proj") != std::string::npos ||
                          p.name.find("down_proj") != std::string::npos ||
                          p.name.find(".w2.") != std::string::npos;
      const float s = std_dev * (is_out ? out_scale : 1.0f);
      // The stream depends on the seed and the parameter's name only: adding parameters elsewhere
      // does not change this one's values.
      uint64_t stream = SplitMix64(seed);
      for (char ch : p.name) stream = SplitMix64(stream ^ static_cast<uint8_t>(ch));
      float* data = host.data();
      const int64_t total = static_cast<int64_t>(host.size());
      const int64_t blocks = (total + kNormalBlock - 1) / kNormalBlock;
      ParallelFor(blocks, 4, [&](int64_t b, int64_t e) {
        for (int64_t blk = b; blk < e; ++blk) {
          float* out = data + blk * kNormalBlock;
          const int64_t count = std::min(kNormalBlock, total - blk * kNormalBlock);
          FillNormalBlock(stream, blk, out, count);
          for (int64_t i = 0; i < count; ++i) out[i] *= s;
        }
      });
    }
    RETURN_IF_ERROR(backend->CopyFromHost(host.data(), host.size() * sizeof(float), *p.tensor));
  }
  return w;
}

absl::Status ModelWeights::Save(const ModelConfig& c, Backend* backend, const std::string& path,
                                const std::map<std::string, std::string>& metadata) const {
  ModelWeights& self = const_cast<ModelWeights&>(*this);  // Parameters() hands out mutable pointers
  std::vector<NamedParam> params = self.Parameters(c);
  std::vector<std::vector<float>> host(params.size());
  std::vector<io::HostTensor> tensors;
  FusedExpertWriter fused;
  for (size_t i = 0; i < params.size(); ++i) {
    ASSIGN_OR_RETURN(host[i], backend->ToHostF32(*params[i].tensor));
    if (fused.Take(c, params[i].name, host[i])) continue;  // written as its fused tensor below
    tensors.push_back({params[i].name, DType::kF32, params[i].tensor->shape(), host[i].data()});
  }
  fused.AppendTo(&tensors);
  return io::WriteSafetensorsFile(path, tensors, metadata);
}

absl::StatusOr<ModelWeights> ModelWeights::MergedWith(const ModelConfig& c, const ExpertOverlay& overlay) const {
  if (!(overlay.config() == c)) {
    return absl::InvalidArgumentError("MergedWith: the overlay was built for another config");
  }
  if (static_cast<int64_t>(layers.size()) != c.num_layers) {
    return absl::InvalidArgumentError("MergedWith: weights do not match the config");
  }
  ModelWeights out = *this;
  for (const auto& [slot, w] : overlay.slots()) out.layers[slot.layer].experts[slot.expert] = w;
  return out;
}

absl::StatusOr<ModelWeights> ModelWeights::WithMatrixDtype(const ModelConfig& c, DType dtype,
                                                           Backend* backend) const {
  if (backend == nullptr) return absl::InvalidArgumentError("WithMatrixDtype: backend is null");
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("WithMatrixDtype: weight matrices may be f32 or bf16, not ",
                                                   DTypeName(dtype)));
  }
  if (static_cast<int64_t>(layers.size()) != c.num_layers) {
    return absl::InvalidArgumentError("WithMatrixDtype: weights do not match the config");
  }
  ModelWeights out = *this;  // shares every handle; the matrices are replaced below
  for (NamedParam& p : out.Parameters(c)) {
    Tensor& t = *p.tensor;
    if (t.rank() != 2 || t.dtype() == dtype) continue;
    ASSIGN_OR_RETURN(Tensor converted, backend->Alloc(t.shape(), dtype));
    RETURN_IF_ERROR(backend->Copy(t, converted));
    t = std::move(converted);
  }
  if (c.tie_word_embeddings) out.lm_head = out.embed;
  return out;
}

absl::StatusOr<ModelWeights> ModelWeights::Clone(const ModelConfig& c, Backend* backend) const {
  ASSIGN_OR_RETURN(ModelWeights out, Allocate(c, backend));
  ModelWeights& self = const_cast<ModelWeights&>(*this);
  std::vector<NamedParam> src = self.Parameters(c);
  std::vector<NamedParam> dst = out.Parameters(c);
  for (size_t i = 0; i < src.size(); ++i) RETURN_IF_ERROR(backend->Copy(*src[i].tensor, *dst[i].tensor));
  return out;
}

}  // namespace tessera
