// The CPU backend's bf16/f16 storage stage (core/backend/cpu/cpu_narrow_storage.h), through
// MakeCpuBackend(). Contract checked (backend.h): a float argument stored as bf16/f16 is widened to f32,
// the op computes in f32 and each narrow output is rounded once (to nearest even) when stored.
//
// Method: every op runs twice on the same (bf16- or f16-representable) values, once with the narrow
// dtypes under test and once with all-f32 tensors. After the narrow run, every argument read back with
// ToHostF32 must equal, bit for bit, the f32 run's value of that argument rounded to the argument's
// dtype (inputs stay unchanged, outputs are rounded once; f32-only arguments such as rstd, lse, topk_w,
// gather scales, dtopk_w and AdamW m/v match exactly). Outputs that accumulate start from the same
// nonzero values in both runs (products served by the bf16 decode kernels: up to summation order, see
// ExpectNarrowMatchesF32). Refused dtype combinations must return INVALID_ARGUMENT naming the op
// and leave every argument bit-for-bit untouched.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/backend/backend.h"
#include "core/tensor/tensor.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

constexpr DType kF32 = DType::kF32, kBF16 = DType::kBF16, kF16 = DType::kF16, kI32 = DType::kI32;

// The value v takes when stored as `dt` (f32 and i32 store it unchanged).
float RoundTo(DType dt, float v) {
  if (dt == kBF16) return Bf16ToF32(F32ToBf16(v));
  if (dt == kF16) return F16ToF32(F32ToF16(v));
  return v;
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// One argument of an op: its dtype in the narrow run (the reference run uses f32, or i32 for indices),
// its shape and its initial values (indices as exact small integers).
struct Arg {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// The tensors of one run, by argument name.
class Args {
 public:
  Tensor& operator[](const std::string& name) { return t_.at(name); }
  std::map<std::string, Tensor>& all() { return t_; }

 private:
  std::map<std::string, Tensor> t_;
};

using Op = std::function<absl::Status(Backend&, Args&)>;

class NarrowStorageTest : public ::testing::Test {
 protected:
  Backend& be() { return *be_; }

  // n values uniform in [lo, hi), rounded through `dt` so that they are exactly representable.
  std::vector<float> Rand(int64_t n, float lo = -1.0f, float hi = 1.0f, DType dt = kBF16) {
    std::uniform_real_distribution<float> u(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = RoundTo(dt, u(rng_));
    return v;
  }
  std::vector<float> RandIdx(int64_t n, int32_t limit) {
    std::uniform_int_distribution<int32_t> u(0, limit - 1);
    std::vector<float> v(n);
    for (float& x : v) x = static_cast<float>(u(rng_));
    return v;
  }
  static int64_t Numel(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  // Arguments with random values: narrow (bf16 or f16), kept f32, index.
  Arg BF(std::string name, std::vector<int64_t> shape, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v = Rand(Numel(shape), lo, hi, kBF16);
    return {std::move(name), kBF16, std::move(shape), std::move(v)};
  }
  Arg HF(std::string name, std::vector<int64_t> shape, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v = Rand(Numel(shape), lo, hi, kF16);
    return {std::move(name), kF16, std::move(shape), std::move(v)};
  }
  Arg F32(std::string name, std::vector<int64_t> shape, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v = Rand(Numel(shape), lo, hi, kBF16);
    return {std::move(name), kF32, std::move(shape), std::move(v)};
  }
  static Arg I32(std::string name, std::vector<int32_t> ids) {
    std::vector<int64_t> shape = {static_cast<int64_t>(ids.size())};
    return {std::move(name), kI32, std::move(shape), std::vector<float>(ids.begin(), ids.end())};
  }
  static Arg I32(std::string name, std::vector<int64_t> shape, std::vector<float> ids) {
    return {std::move(name), kI32, std::move(shape), std::move(ids)};
  }

  // A tensor of `dt` holding `values` (exactly representable in dt).
  Tensor Make(DType dt, const std::vector<int64_t>& shape, const std::vector<float>& values) {
    absl::StatusOr<Tensor> t = be().Alloc(shape, dt);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return Tensor();
    std::vector<uint16_t> h16(values.size());
    std::vector<int32_t> hi(values.size());
    const void* src = values.data();
    if (dt == kBF16 || dt == kF16) {
      for (size_t i = 0; i < values.size(); ++i) h16[i] = dt == kBF16 ? F32ToBf16(values[i]) : F32ToF16(values[i]);
      src = h16.data();
    } else if (dt == kI32) {
      for (size_t i = 0; i < values.size(); ++i) hi[i] = static_cast<int32_t>(values[i]);
      src = hi.data();
    }
    absl::Status s = be().CopyFromHost(src, t->nbytes(), *t);
    EXPECT_TRUE(s.ok()) << s;
    return *t;
  }
  std::vector<float> Get(const Tensor& t) {
    if (t.dtype() == kI32) {
      absl::StatusOr<std::vector<int32_t>> v = be().ToHostI32(t);
      EXPECT_TRUE(v.ok()) << v.status();
      return v.ok() ? std::vector<float>(v->begin(), v->end()) : std::vector<float>();
    }
    absl::StatusOr<std::vector<float>> v = be().ToHostF32(t);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : std::vector<float>();
  }
  std::vector<uint8_t> Raw(const Tensor& t) {
    std::vector<uint8_t> b(t.nbytes());
    absl::Status s = be().CopyToHost(t, b.data(), b.size());
    EXPECT_TRUE(s.ok()) << s;
    return b;
  }

  // Runs `op` with the arguments stored as their dtypes and again with all-f32 tensors (i32 stays i32),
  // and checks every argument of the narrow run against the f32 run rounded to that argument's dtype.
  // Returns the narrow run's final values by name, for extra checks.
  // summation_order: the op is one the bf16 decode kernels serve (a @ b^T and grouped x @ W^T with bf16
  // operands and at most 8 rows: cpu_bf16_gemm.h), which sum in another order than the f32 kernels; its
  // values may then differ by the f32 rounding of that order (a few ulps of the largest value) and, in a
  // narrow output, by the one rounding flip that causes (1 ulp of the dtype). Inputs stay bitwise.
  std::map<std::string, std::vector<float>> ExpectNarrowMatchesF32(const std::string& what,
                                                                   const std::vector<Arg>& args, const Op& op,
                                                                   bool summation_order = false) {
    Args narrow, wide;
    for (const Arg& a : args) {
      EXPECT_EQ(static_cast<int64_t>(a.values.size()), Numel(a.shape)) << what << ": " << a.name;
      for (float v : a.values) {
        if (Bits(RoundTo(a.dtype, v)) != Bits(v)) {
          ADD_FAILURE() << what << ": test input " << a.name << " holds " << v << ", not representable in "
                        << DTypeName(a.dtype);
          break;
        }
      }
      narrow.all()[a.name] = Make(a.dtype, a.shape, a.values);
      wide.all()[a.name] = Make(a.dtype == kI32 ? kI32 : kF32, a.shape, a.values);
    }
    const absl::Status s_wide = op(be(), wide);
    EXPECT_TRUE(s_wide.ok()) << what << " (f32 run): " << s_wide;
    const absl::Status s_narrow = op(be(), narrow);
    EXPECT_TRUE(s_narrow.ok()) << what << " (narrow run): " << s_narrow;
    std::map<std::string, std::vector<float>> result;
    if (!s_wide.ok() || !s_narrow.ok()) return result;
    for (const Arg& a : args) {
      EXPECT_EQ(narrow[a.name].dtype(), a.dtype) << what << ": " << a.name;
      const std::vector<float> want = Get(wide[a.name]), got = Get(narrow[a.name]);
      if (got.size() != want.size()) {
        ADD_FAILURE() << what << ": " << a.name << " read back " << got.size() << " values, want " << want.size();
        continue;
      }
      float tol = 0.0f;
      if (summation_order) {
        float max_abs = 0.0f;
        for (float v : want) max_abs = std::max(max_abs, std::fabs(v));
        const float rel = a.dtype == kBF16 ? 0x1p-7f : a.dtype == kF16 ? 0x1p-10f : 0x1p-20f;
        tol = rel * max_abs;
      }
      int bad = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const float w = RoundTo(a.dtype, want[i]);
        const bool same = Bits(got[i]) == Bits(w) || (tol > 0.0f && std::fabs(got[i] - w) <= tol);
        if (!same && ++bad <= 3) {
          ADD_FAILURE() << what << ": " << a.name << " (" << DTypeName(a.dtype) << ")[" << i << "] = " << got[i]
                        << ", want " << w << " (f32 run: " << want[i] << ")";
        }
      }
      EXPECT_EQ(bad, 0) << what << ": " << a.name << " has " << bad << " of " << got.size() << " values wrong";
      result[a.name] = got;
    }
    return result;
  }

  // `op` must fail with INVALID_ARGUMENT naming `op_name` and leave every argument untouched.
  void ExpectRefused(const std::string& op_name, const std::vector<Arg>& args, const Op& op) {
    Args t;
    for (const Arg& a : args) t.all()[a.name] = Make(a.dtype, a.shape, a.values);
    std::map<std::string, std::vector<uint8_t>> before;
    for (auto& [name, tensor] : t.all()) before[name] = Raw(tensor);
    const absl::Status s = op(be(), t);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << op_name << ": " << s;
    EXPECT_NE(s.message().find(op_name), absl::string_view::npos) << "message does not name " << op_name << ": " << s;
    for (auto& [name, tensor] : t.all()) {
      EXPECT_TRUE(Raw(tensor) == before[name]) << op_name << ": " << name << " was modified by a refused call";
    }
  }

  std::unique_ptr<Backend> be_ = MakeCpuBackend();
  std::mt19937 rng_{20240611};
};

// ---- Element-wise ---------------------------------------------------------------------------------

TEST_F(NarrowStorageTest, ElementwiseBf16MatchesF32) {
  const int64_t n = 37;
  ExpectNarrowMatchesF32("Add", {BF("a", {n}), BF("b", {n}), BF("out", {n})},
                         [](Backend& be, Args& t) { return be.Add(t["a"], t["b"], t["out"]); });
  // out aliases a (allowed by the interface).
  ExpectNarrowMatchesF32("Add aliased", {BF("a", {n}), BF("b", {n})},
                         [](Backend& be, Args& t) { return be.Add(t["a"], t["b"], t["a"]); });
  ExpectNarrowMatchesF32("Axpy", {BF("x", {n}), BF("y", {n})},
                         [](Backend& be, Args& t) { return be.Axpy(0.37f, t["x"], t["y"]); });
  ExpectNarrowMatchesF32("Scale", {BF("x", {3, n})}, [](Backend& be, Args& t) { return be.Scale(t["x"], -1.3f); });
  ExpectNarrowMatchesF32("SwiGluForward", {BF("gate", {4, 9}, -4, 4), BF("up", {4, 9}), BF("out", {4, 9})},
                         [](Backend& be, Args& t) { return be.SwiGluForward(t["gate"], t["up"], t["out"]); });
  ExpectNarrowMatchesF32(
      "SwiGluBackward",
      {BF("gate", {4, 9}, -4, 4), BF("up", {4, 9}), BF("dout", {4, 9}), BF("dgate", {4, 9}), BF("dup", {4, 9})},
      [](Backend& be, Args& t) { return be.SwiGluBackward(t["gate"], t["up"], t["dout"], t["dgate"], t["dup"]); });
}

TEST_F(NarrowStorageTest, SumSquaresOfBf16EqualsF32) {
  const std::vector<float> v = Rand(20001, -3, 3);
  absl::StatusOr<double> narrow = be().SumSquares(Make(kBF16, {20001}, v));
  absl::StatusOr<double> wide = be().SumSquares(Make(kF32, {20001}, v));
  ASSERT_TRUE(narrow.ok()) << narrow.status();
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_GT(*wide, 0.0);
  EXPECT_EQ(*narrow, *wide);
}

// ---- Matmul ---------------------------------------------------------------------------------------

TEST_F(NarrowStorageTest, MatmulBf16MatchesF32) {
  const int64_t m = 5, k = 7, n = 6;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (float beta : {0.0f, 1.0f}) {
        const std::string what = "Matmul ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) +
                                 " beta=" + std::to_string(beta);
        ExpectNarrowMatchesF32(what,
                               {BF("a", ta ? std::vector<int64_t>{k, m} : std::vector<int64_t>{m, k}),
                                BF("b", tb ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}),
                                BF("c", {m, n})},
                               [&](Backend& be, Args& t) { return be.Matmul(t["a"], ta, t["b"], tb, t["c"], 0.75f, beta); },
                               /*summation_order=*/!ta && tb);
      }
    }
  }
}

// ---- Grouped expert matmul ------------------------------------------------------------------------

// Rows [0,3) use w0, rows [3,5) are a gap (no group), rows [5,9) use w1, row 9 uses w2.
std::vector<GemmGroup> Groups(Args& t, bool grads) {
  std::vector<GemmGroup> g = {{0, 3, &t["w0"], nullptr}, {5, 4, &t["w1"], nullptr}, {9, 1, &t["w2"], nullptr}};
  if (grads) {
    g[0].weight_grad = &t["gw0"];  // bf16
    g[2].weight_grad = &t["gw2"];  // f32 (mixed with bf16 x/dy); group 1 has no weight_grad
  }
  return g;
}

TEST_F(NarrowStorageTest, GroupedMatmulBf16MatchesF32AndLeavesGapRows) {
  const int64_t rows = 10, in = 6, out = 5;
  auto expect_gap_untouched = [&](const std::vector<float>& before, const std::vector<float>& after, int64_t cols,
                                  const std::string& what) {
    ASSERT_EQ(after.size(), before.size());
    for (int64_t i = 3 * cols; i < 5 * cols; ++i) {
      EXPECT_EQ(Bits(after[i]), Bits(before[i])) << what << ": gap element " << i << " changed";
    }
  };
  {
    std::vector<Arg> args = {BF("x", {rows, in}), BF("w0", {out, in}), BF("w1", {out, in}), BF("w2", {out, in}),
                             BF("y", {rows, out})};
    const std::vector<float> y0 = args.back().values;
    auto r = ExpectNarrowMatchesF32("GroupedMatmul", args, [](Backend& be, Args& t) {
      return be.GroupedMatmul(t["x"], Groups(t, false), t["y"]);
    }, /*summation_order=*/true);
    if (r.count("y")) expect_gap_untouched(y0, r["y"], out, "GroupedMatmul y");
  }
  {
    std::vector<Arg> args = {BF("dy", {rows, out}), BF("w0", {out, in}), BF("w1", {out, in}), BF("w2", {out, in}),
                             BF("dx", {rows, in})};
    const std::vector<float> dx0 = args.back().values;
    auto r = ExpectNarrowMatchesF32("GroupedMatmulInputGrad", args, [](Backend& be, Args& t) {
      return be.GroupedMatmulInputGrad(t["dy"], Groups(t, false), t["dx"]);
    });
    if (r.count("dx")) expect_gap_untouched(dx0, r["dx"], in, "GroupedMatmulInputGrad dx");
  }
  // Weight grads accumulate into nonzero bf16 (group 0) and f32 (group 2) gradients from bf16 x/dy; the
  // weights only fix the shape here and are kept f32 (bf16 weights: GroupedMatmulWeightGradAcceptsBf16Weights).
  ExpectNarrowMatchesF32("GroupedMatmulWeightGrad",
                         {BF("x", {rows, in}), BF("dy", {rows, out}), F32("w0", {out, in}), F32("w1", {out, in}),
                          F32("w2", {out, in}), BF("gw0", {out, in}), F32("gw2", {out, in})},
                         [](Backend& be, Args& t) { return be.GroupedMatmulWeightGrad(t["x"], t["dy"], Groups(t, true)); });
}

// ---- Rows and embedding ---------------------------------------------------------------------------

TEST_F(NarrowStorageTest, RowsAndEmbeddingBf16MatchF32) {
  const int64_t n = 6, m = 9, d = 5;
  const std::vector<int32_t> idx = {4, 0, 5, 4, 2, 2, 1, 3, 4};  // repeats: scatter adds up
  for (bool with_scale : {false, true}) {
    const std::string tag = with_scale ? " with scale" : " without scale";
    ExpectNarrowMatchesF32("GatherRows" + tag,
                           {BF("src", {n, d}), I32("idx", idx), F32("scale", {m}, 0.1f, 2.0f), BF("dst", {m, d})},
                           [&](Backend& be, Args& t) {
                             return be.GatherRows(t["src"], t["idx"], with_scale ? &t["scale"] : nullptr, t["dst"]);
                           });
    ExpectNarrowMatchesF32("ScatterAddRows" + tag,
                           {BF("src", {m, d}), I32("idx", idx), F32("scale", {m}, 0.1f, 2.0f), BF("dst", {n, d})},
                           [&](Backend& be, Args& t) {
                             return be.ScatterAddRows(t["src"], t["idx"], with_scale ? &t["scale"] : nullptr, t["dst"]);
                           });
  }
  ExpectNarrowMatchesF32("RowDotGather", {BF("a", {m, d}), BF("b", {n, d}), I32("idx", idx), BF("out", {m})},
                         [](Backend& be, Args& t) { return be.RowDotGather(t["a"], t["b"], t["idx"], t["out"]); });
  ExpectNarrowMatchesF32("EmbeddingForward", {BF("table", {n, d}), I32("ids", idx), BF("out", {m, d})},
                         [](Backend& be, Args& t) { return be.EmbeddingForward(t["table"], t["ids"], t["out"]); });
  // A bf16 table is staged row by row (only the ids' rows, cpu_narrow_storage.cc); f32 out as well.
  ExpectNarrowMatchesF32("EmbeddingForward bf16 table -> f32 out", {BF("table", {n, d}), I32("ids", idx), F32("out", {m, d})},
                         [](Backend& be, Args& t) { return be.EmbeddingForward(t["table"], t["ids"], t["out"]); });
  {  // an id out of range is refused (by the whole-table path's kernel), out untouched
    std::vector<int32_t> bad = idx;
    bad.back() = static_cast<int32_t>(n);
    ExpectRefused("EmbeddingForward", {BF("table", {n, d}), I32("ids", bad), BF("out", {m, d})},
                  [](Backend& be, Args& t) { return be.EmbeddingForward(t["table"], t["ids"], t["out"]); });
  }
  ExpectNarrowMatchesF32("EmbeddingBackward", {I32("ids", idx), BF("dout", {m, d}), BF("dtable", {n, d})},
                         [](Backend& be, Args& t) { return be.EmbeddingBackward(t["ids"], t["dout"], t["dtable"]); });
}

// ---- RMSNorm and RoPE -----------------------------------------------------------------------------

TEST_F(NarrowStorageTest, RmsNormAndRopeBf16MatchF32) {
  const int64_t n = 7, d = 12;
  ExpectNarrowMatchesF32("RmsNormForward",
                         {BF("x", {n, d}), BF("weight", {d}, 0.5f, 1.5f), BF("out", {n, d}), F32("rstd", {n})},
                         [](Backend& be, Args& t) { return be.RmsNormForward(t["x"], t["weight"], 1e-5f, t["out"], &t["rstd"]); });
  for (bool with_dweight : {false, true}) {
    ExpectNarrowMatchesF32(
        std::string("RmsNormBackward") + (with_dweight ? " with dweight" : " without dweight"),
        {BF("x", {n, d}), BF("weight", {d}, 0.5f, 1.5f), F32("rstd", {n}, 0.5f, 2.0f), BF("dout", {n, d}),
         BF("dx", {n, d}), BF("dweight", {d})},
        [&](Backend& be, Args& t) {
          return be.RmsNormBackward(t["x"], t["weight"], t["rstd"], t["dout"], t["dx"],
                                    with_dweight ? &t["dweight"] : nullptr);
        });
  }
  for (bool inverse : {false, true}) {
    ExpectNarrowMatchesF32(std::string("Rope") + (inverse ? " inverse" : " forward"),
                           {BF("x", {n, 3, 8}), I32("pos", {0, 1, 2, 3, 17, 100, 4095})},
                           [&](Backend& be, Args& t) { return be.Rope(t["x"], t["pos"], 10000.0f, inverse); });
  }
}

// ---- Attention ------------------------------------------------------------------------------------

// GQA H=4, KVH=2, head_dim 8. Sequence 0: query rows [0,17) over its own 17 keys (blocked kernel).
// Sequence 1: query rows [17,19), kv_len 6, reading a 7-row KV buffer (decode-style, per-row kernel).
std::vector<AttentionSeq> Seqs(Args& t, bool backward) {
  std::vector<AttentionSeq> s = {{0, 17, 17, &t["k0"], &t["v0"], nullptr, nullptr},
                                 {17, 2, 6, &t["k1"], &t["v1"], nullptr, nullptr}};
  if (backward) {
    s[0].dk = &t["dk0"], s[0].dv = &t["dv0"];
    s[1].dk = &t["dk1"], s[1].dv = &t["dv1"];
  }
  return s;
}

TEST_F(NarrowStorageTest, AttentionBf16MatchesF32) {
  const int64_t nq = 19, h = 4, kvh = 2, hd = 8;
  const float scale = 0.35355339f;
  ExpectNarrowMatchesF32("AttentionForward",
                         {BF("q", {nq, h, hd}), BF("k0", {17, kvh, hd}), BF("v0", {17, kvh, hd}), BF("k1", {7, kvh, hd}),
                          BF("v1", {7, kvh, hd}), BF("out", {nq, h, hd}), F32("lse", {nq, h})},
                         [&](Backend& be, Args& t) { return be.AttentionForward(t["q"], Seqs(t, false), scale, t["out"], &t["lse"]); });
  ExpectNarrowMatchesF32(
      "AttentionBackward",
      {BF("q", {nq, h, hd}), BF("k0", {17, kvh, hd}), BF("v0", {17, kvh, hd}), BF("k1", {7, kvh, hd}),
       BF("v1", {7, kvh, hd}), BF("out", {nq, h, hd}), F32("lse", {nq, h}, 2.0f, 4.0f), BF("dout", {nq, h, hd}),
       BF("dq", {nq, h, hd}), BF("dk0", {17, kvh, hd}), BF("dv0", {17, kvh, hd}), BF("dk1", {7, kvh, hd}),
       BF("dv1", {7, kvh, hd})},
      [&](Backend& be, Args& t) {
        return be.AttentionBackward(t["q"], Seqs(t, true), scale, t["out"], t["lse"], t["dout"], t["dq"]);
      });
}

// ---- Router, vocabulary, optimizer ----------------------------------------------------------------

TEST_F(NarrowStorageTest, RouterVocabAdamWBf16MatchF32) {
  const int64_t n = 6, e = 8, k = 2, v = 9;
  for (bool normalize : {false, true}) {
    const std::string tag = normalize ? " normalized" : " unnormalized";
    ExpectNarrowMatchesF32("RouterForward" + tag,
                           {BF("logits", {n, e}, -3, 3), BF("probs", {n, e}), I32("topk_idx", {n, k}, RandIdx(n * k, e)),
                            F32("topk_w", {n, k})},
                           [&](Backend& be, Args& t) {
                             return be.RouterForward(t["logits"], k, normalize, t["probs"], t["topk_idx"], t["topk_w"]);
                           });
    std::vector<float> idx;  // two distinct experts per row
    for (int64_t i = 0; i < n; ++i) idx.insert(idx.end(), {static_cast<float>(i % e), static_cast<float>((i + 3) % e)});
    ExpectNarrowMatchesF32("RouterBackward" + tag,
                           {BF("probs", {n, e}, 0.0f, 0.25f), I32("topk_idx", {n, k}, idx), F32("topk_w", {n, k}, 0.1f, 0.6f),
                            F32("dtopk_w", {n, k}), BF("dlogits", {n, e})},
                           [&](Backend& be, Args& t) {
                             return be.RouterBackward(t["probs"], t["topk_idx"], t["topk_w"], normalize, t["dtopk_w"],
                                                      t["dlogits"]);
                           });
  }
  ExpectNarrowMatchesF32("LogSoftmax", {BF("logits", {n, v}, -5, 5), BF("out", {n, v})},
                         [](Backend& be, Args& t) { return be.LogSoftmax(t["logits"], t["out"]); });
  const std::vector<int32_t> targets = {3, -1, 0, 8, 5, 1};  // row 1 ignored
  ExpectNarrowMatchesF32("CrossEntropyForward",
                         {BF("logits", {n, v}, -5, 5), I32("targets", targets), BF("loss", {n}), F32("lse", {n})},
                         [](Backend& be, Args& t) { return be.CrossEntropyForward(t["logits"], t["targets"], t["loss"], &t["lse"]); });
  auto r = ExpectNarrowMatchesF32(
      "CrossEntropyBackward",
      {BF("logits", {n, v}, -5, 5), I32("targets", targets), F32("lse", {n}, 2.0f, 6.0f), BF("dloss", {n}),
       BF("dlogits", {n, v})},
      [](Backend& be, Args& t) { return be.CrossEntropyBackward(t["logits"], t["targets"], t["lse"], t["dloss"], t["dlogits"]); });
  if (r.count("dlogits")) {
    for (int64_t j = 0; j < v; ++j) EXPECT_EQ(r["dlogits"][v + j], 0.0f) << "ignored row 1, column " << j;
  }
  AdamWParams p;
  p.lr = 0.01f, p.weight_decay = 0.1f, p.step = 3;
  ExpectNarrowMatchesF32("AdamW", {BF("param", {33}), BF("grad", {33}), F32("m", {33}), F32("v", {33}, 0.0f, 1.0f)},
                         [&](Backend& be, Args& t) { return be.AdamW(t["param"], t["grad"], t["m"], t["v"], p); });
}

// ---- Mixed storage and f16 ------------------------------------------------------------------------

TEST_F(NarrowStorageTest, MixedStorageWithinOneOp) {
  const int64_t n = 29;
  ExpectNarrowMatchesF32("Add f32 + bf16 -> bf16", {F32("a", {n}), BF("b", {n}), BF("out", {n})},
                         [](Backend& be, Args& t) { return be.Add(t["a"], t["b"], t["out"]); });
  ExpectNarrowMatchesF32("Add bf16 + f32 -> f32", {BF("a", {n}), F32("b", {n}), F32("out", {n})},
                         [](Backend& be, Args& t) { return be.Add(t["a"], t["b"], t["out"]); });
  ExpectNarrowMatchesF32("Axpy bf16 x into f32 y", {BF("x", {n}), F32("y", {n})},
                         [](Backend& be, Args& t) { return be.Axpy(-0.6f, t["x"], t["y"]); });
  for (bool tb : {false, true}) {
    ExpectNarrowMatchesF32("Matmul bf16 x bf16 -> f32 C, beta 1 tb=" + std::to_string(tb),
                           {BF("a", {4, 6}), BF("b", tb ? std::vector<int64_t>{5, 6} : std::vector<int64_t>{6, 5}),
                            F32("c", {4, 5})},
                           [&](Backend& be, Args& t) { return be.Matmul(t["a"], false, t["b"], tb, t["c"], 1.0f, 1.0f); },
                           /*summation_order=*/tb);
  }
  ExpectNarrowMatchesF32("GroupedMatmul bf16 x/weights -> f32 y",
                         {BF("x", {10, 6}), BF("w0", {5, 6}), BF("w1", {5, 6}), BF("w2", {5, 6}), F32("y", {10, 5})},
                         [](Backend& be, Args& t) { return be.GroupedMatmul(t["x"], Groups(t, false), t["y"]); },
                         /*summation_order=*/true);
}

TEST_F(NarrowStorageTest, F16StorageMatchesF32) {
  const int64_t n = 41;
  ExpectNarrowMatchesF32("Add f16", {HF("a", {n}), HF("b", {n}), HF("out", {n})},
                         [](Backend& be, Args& t) { return be.Add(t["a"], t["b"], t["out"]); });
  ExpectNarrowMatchesF32("Add f16 + bf16 -> f32", {HF("a", {n}), BF("b", {n}), F32("out", {n})},
                         [](Backend& be, Args& t) { return be.Add(t["a"], t["b"], t["out"]); });
  for (bool ta : {false, true}) {
    ExpectNarrowMatchesF32("Matmul f16 -> f16 C, beta 1 ta=" + std::to_string(ta),
                           {HF("a", ta ? std::vector<int64_t>{7, 5} : std::vector<int64_t>{5, 7}), HF("b", {7, 6}),
                            HF("c", {5, 6})},
                           [&](Backend& be, Args& t) { return be.Matmul(t["a"], ta, t["b"], false, t["c"], 0.5f, 1.0f); });
  }
  ExpectNarrowMatchesF32("Matmul f16 -> f32 C, beta 1", {HF("a", {5, 7}), HF("b", {6, 7}), F32("c", {5, 6})},
                         [](Backend& be, Args& t) { return be.Matmul(t["a"], false, t["b"], true, t["c"], 1.0f, 1.0f); });
}

// ---- Refusals -------------------------------------------------------------------------------------

TEST_F(NarrowStorageTest, RefusedDtypesLeaveOutputsUntouched) {
  ExpectRefused("Matmul", {BF("a", {4, 6}), F32("b", {6, 5}), BF("c", {4, 5})},
                [](Backend& be, Args& t) { return be.Matmul(t["a"], false, t["b"], false, t["c"], 1.0f, 1.0f); });
  ExpectRefused("Matmul", {BF("a", {4, 6}), F32("b", {6, 5}), F32("c", {4, 5})},
                [](Backend& be, Args& t) { return be.Matmul(t["a"], false, t["b"], false, t["c"], 1.0f, 0.0f); });
  ExpectRefused("Matmul", {BF("a", {4, 6}), BF("b", {6, 5}), HF("c", {4, 5})},
                [](Backend& be, Args& t) { return be.Matmul(t["a"], false, t["b"], false, t["c"], 1.0f, 1.0f); });
  ExpectRefused("GroupedMatmul",
                {BF("x", {10, 6}), F32("w0", {5, 6}), F32("w1", {5, 6}), F32("w2", {5, 6}), BF("y", {10, 5})},
                [](Backend& be, Args& t) { return be.GroupedMatmul(t["x"], Groups(t, false), t["y"]); });
  ExpectRefused("RmsNormForward", {BF("x", {3, 8}), BF("weight", {8}), BF("out", {3, 8}), BF("rstd", {3})},
                [](Backend& be, Args& t) { return be.RmsNormForward(t["x"], t["weight"], 1e-5f, t["out"], &t["rstd"]); });
  ExpectRefused("AdamW", {BF("param", {16}), BF("grad", {16}), BF("m", {16}), F32("v", {16}, 0.0f, 1.0f)},
                [](Backend& be, Args& t) { return be.AdamW(t["param"], t["grad"], t["m"], t["v"], AdamWParams{}); });
}

// ---- Regressions (both found by this suite in the first version of the stage) ----------------------

// A bf16 model passes the same groups (bf16 weights) to GroupedMatmulWeightGrad as to the forward; the
// weights only fix the shape there, and the f32 kernel needs them f32.
TEST_F(NarrowStorageTest, GroupedMatmulWeightGradAcceptsBf16Weights) {
  ExpectNarrowMatchesF32("GroupedMatmulWeightGrad bf16 weights",
                         {BF("x", {10, 6}), BF("dy", {10, 5}), BF("w0", {5, 6}), BF("w1", {5, 6}), BF("w2", {5, 6}),
                          BF("gw0", {5, 6}), F32("gw2", {5, 6})},
                         [](Backend& be, Args& t) { return be.GroupedMatmulWeightGrad(t["x"], t["dy"], Groups(t, true)); });
}

// Accumulating outputs shared by several groups / sequences (the f32 kernels support shared weight_grad
// and dk/dv) must get one stand-in between them, or every contribution but the last is lost.
TEST_F(NarrowStorageTest, SharedNarrowAccumulatorsSumEveryContribution) {
  ExpectNarrowMatchesF32("GroupedMatmulWeightGrad shared bf16 weight_grad",
                         {BF("x", {10, 6}), BF("dy", {10, 5}), F32("w", {5, 6}), BF("gw", {5, 6})},
                         [](Backend& be, Args& t) {
                           const GemmGroup g[] = {{0, 4, &t["w"], &t["gw"]}, {4, 6, &t["w"], &t["gw"]}};
                           return be.GroupedMatmulWeightGrad(t["x"], t["dy"], g);
                         });
  ExpectNarrowMatchesF32(
      "AttentionBackward shared bf16 dk/dv",
      {BF("q", {5, 2, 4}), BF("k", {3, 1, 4}), BF("v", {3, 1, 4}), BF("out", {5, 2, 4}), F32("lse", {5, 2}, 1.0f, 2.0f),
       BF("dout", {5, 2, 4}), BF("dq", {5, 2, 4}), BF("dk", {3, 1, 4}), BF("dv", {3, 1, 4})},
      [](Backend& be, Args& t) {
        const AttentionSeq s[] = {{0, 3, 3, &t["k"], &t["v"], &t["dk"], &t["dv"]},
                                  {3, 2, 3, &t["k"], &t["v"], &t["dk"], &t["dv"]}};
        return be.AttentionBackward(t["q"], s, 0.5f, t["out"], t["lse"], t["dout"], t["dq"]);
      });
}

}  // namespace
}  // namespace tessera
