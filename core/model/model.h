// Model: the MoE decoder's forward pass (with tenant overlays and KV caches) and its backward.
//
// Forward call list (llm.c style, every op a Backend call):
//   h = embed[tokens]
//   per layer:  n = rmsnorm(h) ; q,k,v = n Wq^T, n Wk^T, n Wv^T ; q,k = qk_norm(q,k) ; rope(q,k)
//               h += o_proj(causal_gqa_attention(q, k, v))            (k/v from the KV cache if any)
//               n = rmsnorm(h) ; probs = softmax(n Wr^T) ; top-k (renormalized if norm_topk_prob)
//               h += sum_k w_k * down(silu(gate n) * up n)   for the chosen experts
//   logits = rmsnorm(h) lm_head^T
// The MoE runs as: route -> copy top-k to host -> plan (every (token, k) assignment is mapped to the
// weight it uses: its sequence's overlay slot when present, else the base expert; assignments sorted
// by (expert, overlay) so each distinct weight is one contiguous group) -> GatherRows ->
// GroupedMatmul gate & up -> SwiGLU -> GroupedMatmul down -> ScatterAddRows(weighted) into h. So a
// batch mixing tenants costs one grouped GEMM over (slot, overlay) groups actually used. With
// MoeRouting::kOnDevice the plan is formed on the device instead (same groups, same order).
//
// Batches: a batch is a list of sequences; each has its own tokens, overlay (nullptr = base) and KV
// cache (nullptr = a standalone sequence starting at position 0). With a cache, the tokens are
// appended after the cache's current length (prefill = many tokens, decode = one; a batch may mix
// both, which is what continuous batching needs). A sequence's result does not depend on the other
// sequences in the batch (up to float summation order inside BLAS: within 1e-5). A cache may be
// contiguous or paged (kv_cache.h): Forward reserves a paged cache's blocks for the new positions, and
// its attention reads them through the block table (Backend::SupportsPagedKv) or from a contiguous copy
// gathered per layer; either way the logits are those of a contiguous cache, bit for bit.
//
// Precision: with bf16 weight matrices (ModelWeights::WithMatrixDtype) every GEMM takes bf16 operands
// (on CUDA: tensor cores with fp32 accumulation; on the CPU: the f32 kernels on widened copies, the
// reference) and the activations feeding GEMMs are stored in bf16; the residual stream, norms'
// statistics, router probabilities, logits and all gradients that accumulate stay f32 (see model.cc).
// Overlays must be in the same dtype as the weights; KV caches may be either (bf16 halves their memory).
//
// Thread-safety: Forward/Backward are const and may run concurrently if the backend allows it; they
// mutate only the KV caches passed in (each cache must be used by one call at a time).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/kv_cache.h"
#include "core/model/overlay.h"
#include "core/model/weights.h"

namespace tessera {

struct MlaWeights;  // mla_attention.h

struct SequenceInput {
  absl::Span<const int32_t> tokens;       // >= 1 token, each in [0, vocab_size)
  const ExpertOverlay* overlay = nullptr;  // nullptr: base experts everywhere
  KvCache* cache = nullptr;                // nullptr: standalone, positions 0..n-1
};

enum class LogitsMode {
  kAll,   // logits for every token: [total_tokens, V], sequences in batch order
  kLast,  // logits of each sequence's last token only: [num_sequences, V]
  kNone,  // no LM head (e.g. expert selection needs only routing statistics)
};

// How the MoE layers find each assignment's weights. Both form the same groups in the same order, so
// they compute the same function (bitwise on the CPU).
enum class MoeRouting {
  // Each layer's top-k is copied to the host, which plans the groups (MoePlan). Any batch size; the
  // only form save_activations (Backward) accepts. On a GPU each layer's read-back drains the stream.
  kHostPlan,
  // The groups are formed on the device (MoeSortAssignments + GroupedMatmulByOffsets, moe_plan.h's
  // MoeDeviceTables): no host round trip until the forward's end, where the routing statistics and
  // group counts are read back in one transfer. Inference only; the CUDA kernels target small batches
  // (decode steps), the host plan with cuBLAS's grouped GEMM stays the faster choice for prefill.
  kOnDevice,
};

struct ForwardOptions {
  LogitsMode logits = LogitsMode::kLast;
  bool collect_routing = false;   // fill ForwardResult::routing
  // Keep every intermediate needed by Backward (memory ~ tokens * (layers * (8D + 3kF + ...))).
  // Requires logits == kAll and no KV caches in the batch.
  bool save_activations = false;
  MoeRouting moe_routing = MoeRouting::kHostPlan;
};

// Routing statistics of one sequence; arrays are [layer * num_experts + expert].
struct RoutingStats {
  int64_t num_layers = 0;
  int64_t num_experts = 0;
  int64_t tokens = 0;                    // tokens of the sequence in this forward
  std::vector<int64_t> tokens_routed;    // tokens whose top-k chose the slot
  std::vector<int64_t> overlay_tokens;   // of those, tokens served by the sequence's overlay
  std::vector<double> gate_weight_sum;   // sum of the (post-renormalization) gate weights
  std::vector<double> entropy_sum;       // [layer]: sum over tokens of the router softmax's entropy (nats)

  void Init(int64_t layers, int64_t experts);
  // Adds `other` (same shape) into this one (accumulating over batches).
  void Merge(const RoutingStats& other);
};

// Opaque saved intermediates of one forward (defined in model_internal.h).
struct Activations;

struct ForwardResult {
  Tensor logits;                       // see LogitsMode (undefined for kNone)
  std::vector<int64_t> seq_row_begin;  // first token row of each sequence in the flat batch
  std::vector<int64_t> seq_len;        // tokens of each sequence in this forward
  std::vector<RoutingStats> routing;   // per sequence, when collect_routing
  std::vector<int64_t> groups_per_layer;          // grouped-GEMM groups executed per layer
  std::vector<int64_t> overlay_groups_per_layer;  // of those, groups served by an overlay
  std::shared_ptr<Activations> activations;       // when save_activations
};

// What Backward computes weight gradients for.
struct TrainableSet {
  bool all_parameters = false;  // every parameter (pretraining / full fine-tune)
  std::vector<SlotId> slots;    // else: these expert slots only (the overlay's copies)

  static TrainableSet All() { return {true, {}}; }
  static TrainableSet Slots(std::vector<SlotId> s) { return {false, std::move(s)}; }
};

// Gradient buffers for a TrainableSet; frozen weights have none. Gradients accumulate across
// Backward calls (gradient accumulation over micro-batches) until Zero().
struct Gradients {
  TrainableSet trainable;
  // all_parameters: same layout as ModelWeights (lm_head is embed's tensor when tied). Else empty.
  ModelWeights full;
  // Slots mode: the gradient of each trainable slot's weights (gate [F,D], up [F,D], down [D,F]).
  std::map<SlotId, ExpertWeights> slots;
  // Slots mode: the one f32 allocation every slot gradient above is a view of (each view starting on a
  // 256-byte boundary; the padding between them stays zero), so zeroing, the global norm and clipping
  // are one op each instead of three per slot (a GPU launch and, for the norm, a synchronization each).
  Tensor flat;
  // Slots mode: whose copy of the slots these gradients are. Set: only assignments served by this
  // overlay's weights contribute (joint training runs several jobs' overlays, possibly holding the same
  // slot ids, in one batch; each job's gradients then come from its own rows only). nullptr: every
  // assignment routed to the slot, whichever weights served it.
  const ExpertOverlay* owner = nullptr;

  // Zero-initialized buffers. INVALID_ARGUMENT for an out-of-range or duplicate slot.
  static absl::StatusOr<Gradients> Create(const ModelConfig& config, const TrainableSet& trainable,
                                          Backend* backend);
  absl::Status Zero(Backend* backend);
  // Every gradient tensor with its parameter's HF name (for the optimizer and global-norm clipping).
  std::vector<NamedParam> Named(const ModelConfig& config);
  int64_t NumElements() const;
};

// Per-token loss targets for Backward: targets[i] is the token row i should predict (-1: no loss),
// rows as in ForwardResult (kAll). loss = sum_i w_i * CE_i with w_i = 1 / (number of targets >= 0),
// i.e. the mean over supervised rows (set the mask by writing -1). The loss mask for
// prompt/completion training is expressed by -1 on prompt rows.
struct LossTargets {
  absl::Span<const int32_t> targets;
};

class Model {
 public:
  // Validates the weights' shapes against the config. The model keeps the weights' handles.
  static absl::StatusOr<std::unique_ptr<Model>> Create(const ModelConfig& config, ModelWeights weights,
                                                       Backend* backend);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // The trainer updates parameters in place through these handles (between forwards).
  ModelWeights& mutable_weights() { return weights_; }
  Backend* backend() const { return backend_; }

  absl::StatusOr<ForwardResult> Forward(absl::Span<const SequenceInput> batch,
                                        const ForwardOptions& options = {}) const;

  // Score: for each sequence, log p(tokens[i+1] | tokens[..i]) for i in [0, n-1) (n-1 values;
  // preceded by the cache's context when a cache is given). Also advances caches like Forward.
  absl::StatusOr<std::vector<std::vector<float>>> ScoreTokens(absl::Span<const SequenceInput> batch,
                                                              std::vector<RoutingStats>* routing = nullptr) const;

  // Backward from a Forward run with save_activations. Computes the mean cross-entropy loss of
  // `targets` (see LossTargets), backpropagates through every layer (attention, norms, router
  // including the gate-weight path into the residual stream, experts, embedding) and ACCUMULATES
  // weight gradients into `grads` for its trainable set only. Returns the loss.
  //  - Slots mode: the gradient of slot s sums over every token routed to s (whichever weights
  //    served it); train with every sequence of the batch carrying the same overlay (the tenant's
  //    trainable copy, ExpertOverlay::CopyOfBase at start) so these are that overlay's gradients.
  //  - All-parameters mode: sequences must not carry overlays (FAILED_PRECONDITION otherwise).
  absl::StatusOr<double> Backward(const ForwardResult& forward, const LossTargets& targets,
                                  Gradients* grads) const;
  // Same from a given dL/dlogits ([total_tokens, V] on the backend: f32, or the weights' matrix dtype, which
  // the LM head GEMM then reads without a conversion).
  absl::Status BackwardFromLogits(const ForwardResult& forward, const Tensor& dlogits,
                                  Gradients* grads) const;
  // One backward pass filling several gradient sets at once (joint training: one per job, each with its
  // own `owner` overlay; the activation gradients are shared). Slots mode only, and when there is more
  // than one set every set needs a distinct non-null owner (INVALID_ARGUMENT otherwise).
  absl::Status BackwardFromLogits(const ForwardResult& forward, const Tensor& dlogits,
                                  absl::Span<Gradients* const> grads) const;

 private:
  Model() = default;
  // RoPE on q/k rows [N, heads, head_dim]: the backend's default rotation, or with the config's
  // rope_scaling frequencies (rope_scaling.h).
  absl::Status ApplyRope(Tensor& x, const Tensor& positions, bool inverse) const;

  ModelConfig config_;
  ModelWeights weights_;
  Backend* backend_ = nullptr;
  std::vector<float> rope_inv_freq_;  // with a rope_scaling or MLA only
  std::shared_ptr<const MlaWeights> mla_;  // MLA's derived tensors (mla_attention.h); null otherwise
  std::vector<std::vector<float>> router_bias_host_;  // [layer][E] with config.router_bias
};

}  // namespace tessera
