// Parity of every non-GEMM op, forward and backward, CPU (f32 reference) vs CUDA (f32 and bf16 storage).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/backend/cuda/cuda_backend.h"
#include "tests/core/backend_cuda/cuda_test_util.h"

namespace tessera::testing_cuda {
namespace {

#define ASSERT_OK(expr)                    \
  do {                                     \
    const absl::Status s_ = (expr);        \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_; \
  } while (0)

class OpsParity : public CudaParityTest, public ::testing::WithParamInterface<DType> {
 protected:
  DType dt() const { return GetParam(); }
};

TEST_P(OpsParity, CopyConvertAndFill) {
  const std::vector<float> v = Rand(300, -3, 3);
  Pair src = Both(v, {3, 100}, dt());
  // Convert to f32 and back to dt on the GPU: exact (values are already representable in dt).
  auto f = gpu_->Alloc({300}, DType::kF32);
  ASSERT_TRUE(f.ok());
  ASSERT_OK(gpu_->Copy(src.g, *f));
  ExpectClose(Get(*gpu_, *f), RoundTo(v, dt()), 0, "Copy to f32");
  auto back = gpu_->Alloc({3, 100}, dt());
  ASSERT_TRUE(back.ok());
  ASSERT_OK(gpu_->Copy(*f, *back));
  ExpectClose(Get(*gpu_, *back), RoundTo(v, dt()), 0, "Copy back");
  ASSERT_OK(gpu_->Fill(*back, 1.5f));
  ExpectClose(Get(*gpu_, *back), std::vector<float>(300, 1.5f), 0, "Fill");
  auto ints = gpu_->Alloc({7}, DType::kI32);
  ASSERT_TRUE(ints.ok());
  ASSERT_OK(gpu_->Fill(*ints, 3.0f));
  EXPECT_EQ(GetI(*gpu_, *ints), std::vector<int32_t>(7, 3));
  auto zero = gpu_->Zeros({0, 4}, dt());
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_TRUE(Get(*gpu_, *zero).empty());
}

TEST_P(OpsParity, AddAxpyScaleSumSquares) {
  const std::vector<int64_t> shape = {17, 33};
  Pair a = BothRand(shape, dt()), b = BothRand(shape, dt()), out = BothRand(shape, dt());
  ASSERT_OK(cpu_->Add(a.c, b.c, out.c));
  ASSERT_OK(gpu_->Add(a.g, b.g, out.g));
  Compare(out, dt(), "Add");
  ASSERT_OK(cpu_->Axpy(-0.75f, a.c, out.c));
  ASSERT_OK(gpu_->Axpy(-0.75f, a.g, out.g));
  Compare(out, dt(), "Axpy");
  ASSERT_OK(cpu_->Scale(out.c, 3.0f));
  ASSERT_OK(gpu_->Scale(out.g, 3.0f));
  Compare(out, dt(), "Scale");
  ASSERT_OK(cpu_->Add(a.c, b.c, a.c));  // out aliases a
  ASSERT_OK(gpu_->Add(a.g, b.g, a.g));
  Compare(a, dt(), "Add aliased");
  Pair big = BothRand({1000, 77}, dt());
  auto sc = cpu_->SumSquares(big.c);
  auto sg = gpu_->SumSquares(big.g);
  ASSERT_TRUE(sc.ok() && sg.ok()) << sg.status();
  EXPECT_NEAR(*sg, *sc, 1e-6 * *sc);
}

TEST_P(OpsParity, GatherScatterRowDot) {
  const int64_t n = 10, m = 14, d = 48;
  std::vector<int32_t> idx = RandInt(m, 0, n - 1);
  idx[3] = idx[4];  // repeats must accumulate in the scatter
  Pair id = BothI(idx, {m});
  Pair scale = Both(Rand(m), {m});
  Pair src = BothRand({n, d}, dt());
  for (bool with_scale : {false, true}) {
    Pair dst = BothRand({m, d}, dt());
    ASSERT_OK(cpu_->GatherRows(src.c, id.c, with_scale ? &scale.c : nullptr, dst.c));
    ASSERT_OK(gpu_->GatherRows(src.g, id.g, with_scale ? &scale.g : nullptr, dst.g));
    Compare(dst, dt(), with_scale ? "GatherRows scaled" : "GatherRows");

    Pair acc = BothRand({n, d}, dt());
    ASSERT_OK(cpu_->ScatterAddRows(dst.c, id.c, with_scale ? &scale.c : nullptr, acc.c));
    ASSERT_OK(gpu_->ScatterAddRows(dst.g, id.g, with_scale ? &scale.g : nullptr, acc.g));
    Compare(acc, dt(), with_scale ? "ScatterAddRows scaled" : "ScatterAddRows");
  }
  Pair a = BothRand({m, d}, dt());
  Pair out = BothRand({m});
  ASSERT_OK(cpu_->RowDotGather(a.c, src.c, id.c, out.c));
  ASSERT_OK(gpu_->RowDotGather(a.g, src.g, id.g, out.g));
  Compare(out, dt(), "RowDotGather");
}

TEST_F(CudaParityTest, LargeUploadsAreStagedOrderedAndLeaveTheHostBufferFree) {
  // CopyFromHost of >= 1 MiB goes through pinned staging on a copy stream (cuda_staged_copy.h): sizes of
  // exactly one chunk, several chunks with a ragged tail, and a view at an offset into a larger tensor.
  for (const int64_t floats : {int64_t{1} << 20, (int64_t{9} << 20) / 4 + 3, int64_t{300000}}) {
    std::vector<float> host = Rand(static_cast<size_t>(floats), -1000.0f, 1000.0f);
    const std::vector<float> want = host;
    Tensor big = Make(*gpu_, std::vector<float>(static_cast<size_t>(floats + 64), 7.0f), {floats + 64});
    Tensor view = big.Rows(32, floats);
    ASSERT_OK(gpu_->CopyFromHost(host.data(), host.size() * sizeof(float), view));
    std::fill(host.begin(), host.end(), -1.0f);  // the contract: the source may be reused at once
    ASSERT_OK(gpu_->Scale(view, 2.0f));            // queued on the compute stream right after the copy
    const std::vector<float> got = Get(*gpu_, big);
    for (int64_t i = 0; i < floats + 64; ++i) {
      const float expect = i < 32 || i >= floats + 32 ? 7.0f : 2.0f * want[i - 32];
      ASSERT_EQ(got[i], expect) << "floats=" << floats << " element " << i;
    }
  }
}

// A high-priority backend (the serving one) computes the same as the default one, beside it: both
// streams run on one device at once, each over the other's tensors once synchronized.
TEST_F(CudaParityTest, HighPriorityBackendComputesLikeTheDefaultOne) {
  BackendOptions o;
  o.high_priority = true;
  absl::StatusOr<std::unique_ptr<Backend>> hi = MakeCudaBackend(0, o);
  ASSERT_TRUE(hi.ok()) << hi.status();
  EXPECT_NE((*hi)->name().find("high-priority"), std::string::npos) << (*hi)->name();
  const std::vector<float> a = Rand(64 * 48), b = Rand(32 * 48);
  Tensor a_hi = Make(**hi, a, {64, 48}), b_hi = Make(**hi, b, {32, 48});
  Tensor c_hi = Make(**hi, std::vector<float>(64 * 32, 0.0f), {64, 32});
  Tensor a_lo = Make(*gpu_, a, {64, 48}), b_lo = Make(*gpu_, b, {32, 48});
  Tensor c_lo = Make(*gpu_, std::vector<float>(64 * 32, 0.0f), {64, 32});
  ASSERT_OK((*hi)->Matmul(a_hi, false, b_hi, true, c_hi));
  ASSERT_OK(gpu_->Matmul(a_lo, false, b_lo, true, c_lo));
  EXPECT_EQ(Get(**hi, c_hi), Get(*gpu_, c_lo));
}

TEST_F(CudaParityTest, ScatterAddRowsIsDeterministicAndInCpuOrder) {
  // 4096 rows into 16 destinations (256 each, in shuffled order): with atomics the summation order
  // changed from run to run; now every run gives the same bits, and the CPU's order (increasing i).
  const int64_t n = 16, m = 4096, d = 96;
  std::vector<int32_t> idx(m);
  for (int64_t i = 0; i < m; ++i) idx[i] = static_cast<int32_t>(i % n);
  std::shuffle(idx.begin(), idx.end(), rng_);
  Pair id = BothI(idx, {m});
  Pair scale = Both(Rand(m), {m});
  Pair src = Both(Rand(m * d, -100.0f, 100.0f), {m, d});  // large terms: order changes the rounding
  const std::vector<float> init = Rand(n * d);
  std::vector<float> first;
  for (int run = 0; run < 3; ++run) {
    Pair acc = Both(init, {n, d});
    ASSERT_OK(gpu_->ScatterAddRows(src.g, id.g, &scale.g, acc.g));
    const std::vector<float> got = Get(*gpu_, acc.g);
    if (run == 0) {
      first = got;
      ASSERT_OK(cpu_->ScatterAddRows(src.c, id.c, &scale.c, acc.c));
      Compare(acc, DType::kF32, "ScatterAddRows with many repeats");
    } else {
      ASSERT_EQ(got.size(), first.size());
      for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], first[i]) << "run " << run << " element " << i;
    }
  }
}

TEST_P(OpsParity, Embedding) {
  const int64_t v = 37, d = 40, n = 25;
  Pair table = BothRand({v, d}, dt());
  Pair ids = BothI(RandInt(n, 0, v - 1), {n});
  Pair out = BothRand({n, d}, dt());
  ASSERT_OK(cpu_->EmbeddingForward(table.c, ids.c, out.c));
  ASSERT_OK(gpu_->EmbeddingForward(table.g, ids.g, out.g));
  Compare(out, dt(), "EmbeddingForward");
  Pair dtable = BothRand({v, d});  // gradients accumulate in f32
  Pair dout = BothRand({n, d}, dt());
  ASSERT_OK(cpu_->EmbeddingBackward(ids.c, dout.c, dtable.c));
  ASSERT_OK(gpu_->EmbeddingBackward(ids.g, dout.g, dtable.g));
  Compare(dtable, dt(), "EmbeddingBackward");
}

TEST_P(OpsParity, RmsNorm) {
  for (int64_t d : {24, 128, 2048}) {
    const int64_t n = 9;
    Pair x = Both(Rand(n * d, -2, 2), {n, d}, dt());
    Pair w = Both(Rand(d, 0.5f, 1.5f), {d}, dt());
    Pair out = BothRand({n, d}, dt()), rstd = BothRand({n});
    ASSERT_OK(cpu_->RmsNormForward(x.c, w.c, 1e-6f, out.c, &rstd.c));
    ASSERT_OK(gpu_->RmsNormForward(x.g, w.g, 1e-6f, out.g, &rstd.g));
    Compare(out, dt(), "RmsNormForward d=" + std::to_string(d));
    Compare(rstd, DType::kF32, "RmsNorm rstd d=" + std::to_string(d));
    Pair dout = BothRand({n, d}, dt()), dx = BothRand({n, d}, dt()), dw = BothRand({d});
    ASSERT_OK(cpu_->RmsNormBackward(x.c, w.c, rstd.c, dout.c, dx.c, &dw.c));
    ASSERT_OK(gpu_->RmsNormBackward(x.g, w.g, rstd.g, dout.g, dx.g, &dw.g));
    Compare(dx, dt(), "RmsNormBackward dx d=" + std::to_string(d));
    Compare(dw, dt(), "RmsNormBackward dweight d=" + std::to_string(d));
  }
}

TEST_P(OpsParity, Rope) {
  const int64_t n = 11, h = 3, hd = 64;
  Pair x = BothRand({n, h, hd}, dt());
  std::vector<int32_t> pos = RandInt(n, 0, 4000);
  Pair p = BothI(pos, {n});
  for (bool inverse : {false, true}) {
    ASSERT_OK(cpu_->Rope(x.c, p.c, 1e6f, inverse));
    ASSERT_OK(gpu_->Rope(x.g, p.g, 1e6f, inverse));
    Compare(x, dt(), inverse ? "Rope inverse" : "Rope");
  }
}

TEST_P(OpsParity, AttentionWithCacheAndGqa) {
  const int64_t heads = 4, kvh = 2;
  for (int64_t hd : {64, 128}) {
    // Sequence A: 5 new queries over a 9-row cache (of 12 rows); sequence B: 7 queries, no cache.
    const int64_t nq = 12;
    Pair q = BothRand({nq, heads, hd}, dt());
    Pair ka = BothRand({12, kvh, hd}, dt()), va = BothRand({12, kvh, hd}, dt());
    Pair kb = BothRand({7, kvh, hd}, dt()), vb = BothRand({7, kvh, hd}, dt());
    auto seqs = [](Pair& k1, Pair& v1, Pair& k2, Pair& v2, bool gpu, Pair* dk1, Pair* dv1, Pair* dk2, Pair* dv2) {
      auto pick = [gpu](Pair* p) -> Tensor* { return p == nullptr ? nullptr : (gpu ? &p->g : &p->c); };
      std::vector<AttentionSeq> s(2);
      s[0] = AttentionSeq{0, 5, 9, gpu ? &k1.g : &k1.c, gpu ? &v1.g : &v1.c, pick(dk1), pick(dv1)};
      s[1] = AttentionSeq{5, 7, 7, gpu ? &k2.g : &k2.c, gpu ? &v2.g : &v2.c, pick(dk2), pick(dv2)};
      return s;
    };
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    Pair out = BothRand({nq, heads, hd}, dt()), lse = BothRand({nq, heads});
    ASSERT_OK(cpu_->AttentionForward(q.c, seqs(ka, va, kb, vb, false, nullptr, nullptr, nullptr, nullptr), scale,
                                     out.c, &lse.c));
    ASSERT_OK(gpu_->AttentionForward(q.g, seqs(ka, va, kb, vb, true, nullptr, nullptr, nullptr, nullptr), scale,
                                     out.g, &lse.g));
    Compare(out, dt(), "AttentionForward out hd=" + std::to_string(hd));
    Compare(lse, DType::kF32, "AttentionForward lse hd=" + std::to_string(hd), dt() == DType::kF32 ? 0 : 1e-3);

    // Backward from the CPU's forward results on both sides, so only the backward is compared.
    Pair out_ref = Both(Get(*cpu_, out.c), {nq, heads, hd}, dt());
    Pair lse_ref = Both(Get(*cpu_, lse.c), {nq, heads});
    Pair dout = BothRand({nq, heads, hd}, dt()), dq = BothRand({nq, heads, hd}, dt());
    Pair dka = BothRand({12, kvh, hd}), dva = BothRand({12, kvh, hd});
    Pair dkb = BothRand({7, kvh, hd}), dvb = BothRand({7, kvh, hd});
    ASSERT_OK(cpu_->AttentionBackward(q.c, seqs(ka, va, kb, vb, false, &dka, &dva, &dkb, &dvb), scale, out_ref.c,
                                      lse_ref.c, dout.c, dq.c));
    ASSERT_OK(gpu_->AttentionBackward(q.g, seqs(ka, va, kb, vb, true, &dka, &dva, &dkb, &dvb), scale, out_ref.g,
                                      lse_ref.g, dout.g, dq.g));
    Compare(dq, dt(), "AttentionBackward dq hd=" + std::to_string(hd));
    Compare(dka, dt(), "AttentionBackward dk (cache) hd=" + std::to_string(hd));
    Compare(dva, dt(), "AttentionBackward dv (cache) hd=" + std::to_string(hd));
    Compare(dkb, dt(), "AttentionBackward dk hd=" + std::to_string(hd));
    Compare(dvb, dt(), "AttentionBackward dv hd=" + std::to_string(hd));
  }
}

// Prefill/training shapes, where bf16 calls take the tiled tensor-core kernels (cuda_attention_tiled.cu):
// a 150-query sequence (two full 64-row tiles and a partial one), a 37-query prefill continuing a
// 63-row cache prefix, and a decode step reading the same cache (its dk/dv accumulate into the same
// gradient tensor as the prefill's), with two idle query rows. Both implementations are checked against
// the CPU; in bf16 the two must also differ somewhere, which shows the tiled kernels really ran.
TEST_P(OpsParity, AttentionTiledPrefillShapes) {
  const int64_t heads = 8, kvh = 2, nq = 190;
  for (int64_t hd : {64, 128}) {
    const std::string tag = " hd=" + std::to_string(hd);
    Pair q = Both(Rand(nq * heads * hd, -3, 3), {nq, heads, hd}, dt());
    Pair ka = Both(Rand(150 * kvh * hd, -3, 3), {150, kvh, hd}, dt()), va = BothRand({150, kvh, hd}, dt());
    Pair kc = Both(Rand(128 * kvh * hd, -3, 3), {128, kvh, hd}, dt()), vc = BothRand({128, kvh, hd}, dt());
    Pair dout = BothRand({nq, heads, hd}, dt());
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    auto seqs = [&](bool gpu, Pair* dka, Pair* dva, Pair* dkc, Pair* dvc) {
      auto pick = [gpu](Pair& p) { return gpu ? &p.g : &p.c; };
      auto pick_grad = [gpu](Pair* p) -> Tensor* { return p == nullptr ? nullptr : (gpu ? &p->g : &p->c); };
      return std::vector<AttentionSeq>{
          {0, 150, 150, pick(ka), pick(va), pick_grad(dka), pick_grad(dva)},
          {152, 37, 100, pick(kc), pick(vc), pick_grad(dkc), pick_grad(dvc)},
          {189, 1, 20, pick(kc), pick(vc), pick_grad(dkc), pick_grad(dvc)},
      };
    };
    Pair out = BothRand({nq, heads, hd}, dt()), lse = BothRand({nq, heads});
    ASSERT_OK(cpu_->AttentionForward(q.c, seqs(false, nullptr, nullptr, nullptr, nullptr), scale, out.c, &lse.c));
    std::vector<std::vector<float>> outs;
    for (AttentionImpl impl : {AttentionImpl::kTiled, AttentionImpl::kRowwise}) {
      const std::string itag = tag + (impl == AttentionImpl::kTiled ? " tiled" : " rowwise");
      ASSERT_OK(SetCudaAttentionImpl(*gpu_, impl));
      Pair o = out, l = lse;  // CPU results shared; fresh GPU outputs start from the same values
      o.g = Make(*gpu_, Get(*cpu_, out.c), {nq, heads, hd}, dt());
      l.g = Make(*gpu_, Get(*cpu_, lse.c), {nq, heads});
      ASSERT_OK(gpu_->AttentionForward(q.g, seqs(true, nullptr, nullptr, nullptr, nullptr), scale, o.g, &l.g));
      // Idle rows 150, 151 keep their initial values on both sides, so the whole tensors are compared.
      Compare(o, dt(), "AttentionForward out" + itag);
      Compare(l, DType::kF32, "AttentionForward lse" + itag, dt() == DType::kF32 ? 0 : 1e-3);
      outs.push_back(Get(*gpu_, o.g));

      // Backward from the CPU's forward results on both sides.
      Pair out_ref = Both(Get(*cpu_, out.c), {nq, heads, hd}, dt());
      Pair lse_ref = Both(Get(*cpu_, lse.c), {nq, heads});
      Pair dq = BothRand({nq, heads, hd}, dt());
      Pair dka = BothRand({150, kvh, hd}), dva = BothRand({150, kvh, hd});
      Pair dkc = BothRand({128, kvh, hd}), dvc = BothRand({128, kvh, hd});
      ASSERT_OK(cpu_->AttentionBackward(q.c, seqs(false, &dka, &dva, &dkc, &dvc), scale, out_ref.c, lse_ref.c,
                                        dout.c, dq.c));
      ASSERT_OK(gpu_->AttentionBackward(q.g, seqs(true, &dka, &dva, &dkc, &dvc), scale, out_ref.g, lse_ref.g,
                                        dout.g, dq.g));
      Compare(dq, dt(), "AttentionBackward dq (idle rows zero)" + itag);
      Compare(dka, dt(), "AttentionBackward dk" + itag);
      Compare(dva, dt(), "AttentionBackward dv" + itag);
      Compare(dkc, dt(), "AttentionBackward dk (cache shared by two sequences)" + itag);
      Compare(dvc, dt(), "AttentionBackward dv (cache shared by two sequences)" + itag);
    }
    ASSERT_OK(SetCudaAttentionImpl(*gpu_, AttentionImpl::kTiled));
    if (dt() == DType::kBF16) {
      EXPECT_NE(outs[0], outs[1]) << "bf16 prefill attention gave bitwise the row-wise result: the tiled kernels did "
                                     "not run" << tag;
    }
  }
}

TEST_P(OpsParity, Router) {
  for (bool normalize : {false, true}) {
    for (int64_t e : {8, 64, 100}) {
      const int64_t n = 13;
      const int k = e == 8 ? 2 : 8;
      Pair logits = Both(Rand(n * e, -4, 4), {n, e}, dt());
      Pair probs = BothRand({n, e}, dt()), w = BothRand({n, k});
      Pair idx = BothI(std::vector<int32_t>(n * k, -1), {n, k});
      ASSERT_OK(cpu_->RouterForward(logits.c, k, normalize, probs.c, idx.c, w.c));
      ASSERT_OK(gpu_->RouterForward(logits.g, k, normalize, probs.g, idx.g, w.g));
      const std::string tag = " e=" + std::to_string(e) + (normalize ? " normalized" : "");
      Compare(probs, dt(), "RouterForward probs" + tag);
      EXPECT_EQ(GetI(*gpu_, idx.g), GetI(*cpu_, idx.c)) << "RouterForward topk_idx" + tag;
      Compare(w, DType::kF32, "RouterForward topk_w" + tag, 1e-4);

      // Backward from the CPU's forward results on both sides.
      Pair p_ref = Both(Get(*cpu_, probs.c), {n, e}, dt());
      Pair w_ref = Both(Get(*cpu_, w.c), {n, k});
      Pair dw = BothRand({n, k}), dlogits = BothRand({n, e}, dt());
      ASSERT_OK(cpu_->RouterBackward(p_ref.c, idx.c, w_ref.c, normalize, dw.c, dlogits.c));
      ASSERT_OK(gpu_->RouterBackward(p_ref.g, idx.g, w_ref.g, normalize, dw.g, dlogits.g));
      Compare(dlogits, dt(), "RouterBackward" + tag);
    }
  }
}

TEST_P(OpsParity, SwiGlu) {
  const std::vector<int64_t> shape = {19, 96};
  Pair gate = Both(Rand(19 * 96, -6, 6), shape, dt()), up = BothRand(shape, dt()), out = BothRand(shape, dt());
  ASSERT_OK(cpu_->SwiGluForward(gate.c, up.c, out.c));
  ASSERT_OK(gpu_->SwiGluForward(gate.g, up.g, out.g));
  Compare(out, dt(), "SwiGluForward");
  Pair dout = BothRand(shape, dt()), dgate = BothRand(shape, dt()), dup = BothRand(shape, dt());
  ASSERT_OK(cpu_->SwiGluBackward(gate.c, up.c, dout.c, dgate.c, dup.c));
  ASSERT_OK(gpu_->SwiGluBackward(gate.g, up.g, dout.g, dgate.g, dup.g));
  Compare(dgate, dt(), "SwiGluBackward dgate");
  Compare(dup, dt(), "SwiGluBackward dup");
}

TEST_P(OpsParity, LogSoftmaxAndCrossEntropy) {
  for (int64_t v : {50, 5000}) {
    const int64_t n = 7;
    Pair logits = Both(Rand(n * v, -8, 8), {n, v}, dt());
    Pair out = BothRand({n, v}, dt());
    ASSERT_OK(cpu_->LogSoftmax(logits.c, out.c));
    ASSERT_OK(gpu_->LogSoftmax(logits.g, out.g));
    Compare(out, dt(), "LogSoftmax v=" + std::to_string(v));

    std::vector<int32_t> targets = RandInt(n, 0, static_cast<int32_t>(v - 1));
    targets[2] = -1;  // ignored position
    Pair t = BothI(targets, {n});
    Pair loss = BothRand({n}), lse = BothRand({n});
    ASSERT_OK(cpu_->CrossEntropyForward(logits.c, t.c, loss.c, &lse.c));
    ASSERT_OK(gpu_->CrossEntropyForward(logits.g, t.g, loss.g, &lse.g));
    Compare(loss, DType::kF32, "CrossEntropyForward loss v=" + std::to_string(v));
    Compare(lse, DType::kF32, "CrossEntropyForward lse v=" + std::to_string(v));
    EXPECT_EQ(Get(*gpu_, loss.g)[2], 0.0f);

    Pair dloss = BothRand({n}), dlogits = BothRand({n, v}, dt());
    ASSERT_OK(cpu_->CrossEntropyBackward(logits.c, t.c, lse.c, dloss.c, dlogits.c));
    ASSERT_OK(gpu_->CrossEntropyBackward(logits.g, t.g, lse.g, dloss.g, dlogits.g));
    Compare(dlogits, dt(), "CrossEntropyBackward v=" + std::to_string(v));
  }
}

TEST_P(OpsParity, AdamW) {
  const int64_t n = 1000;
  Pair param = BothRand({n}, dt()), m = BothRand({n}), v = Both(Rand(n, 0, 1), {n});
  for (int64_t step = 1; step <= 3; ++step) {
    Pair grad = BothRand({n}, dt());
    AdamWParams p;
    p.lr = 1e-2f;
    p.weight_decay = 0.1f;
    p.step = step;
    ASSERT_OK(cpu_->AdamW(param.c, grad.c, m.c, v.c, p));
    ASSERT_OK(gpu_->AdamW(param.g, grad.g, m.g, v.g, p));
    // A bf16 param is rounded after every step on the GPU but not on the CPU: compare the f32 state tightly.
    Compare(m, DType::kF32, "AdamW m step " + std::to_string(step));
    Compare(v, DType::kF32, "AdamW v step " + std::to_string(step));
    Compare(param, dt(), "AdamW param step " + std::to_string(step));
    if (dt() != DType::kF32) param = Both(Get(*gpu_, param.g), {n}, dt());  // keep the CPU on the rounded values
  }
}

std::string DtName(const ::testing::TestParamInfo<DType>& info) { return DTypeName(info.param); }

INSTANTIATE_TEST_SUITE_P(Dtypes, OpsParity, ::testing::Values(DType::kF32, DType::kBF16), DtName);

// ---- Error reporting -----------------------------------------------------------------------------------

TEST_F(CudaParityTest, OutOfRangeIndexIsRejectedByTheOp) {
  Pair src = BothRand({4, 8});
  Pair idx = BothI({0, 7, 1}, {3});
  auto dst = gpu_->Zeros({3, 8});
  ASSERT_TRUE(dst.ok());
  EXPECT_EQ(gpu_->GatherRows(src.g, idx.g, nullptr, *dst).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_->EmbeddingBackward(idx.g, *dst, src.g).code(), absl::StatusCode::kInvalidArgument);
  Pair targets = BothI({0, -1, 9}, {3});
  auto loss = gpu_->Zeros({3});
  ASSERT_TRUE(loss.ok());
  EXPECT_EQ(gpu_->CrossEntropyForward(src.g.Rows(0, 3), targets.g, *loss, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(gpu_->Synchronize().ok());
}

TEST_F(CudaParityTest, OutOfRangeIndexIsReportedAtSynchronizeWithoutEagerChecks) {
#if TESSERA_HAVE_CUDA
  ASSERT_OK(SetCudaEagerIndexChecks(*gpu_, false));
#endif
  Pair src = BothRand({4, 8});
  Pair idx = BothI({0, 7, 1}, {3});
  auto dst = gpu_->Zeros({3, 8});
  ASSERT_TRUE(dst.ok());
  ASSERT_OK(gpu_->GatherRows(src.g, idx.g, nullptr, *dst));  // enqueued; the kernel finds the bad index
  const absl::Status s = gpu_->Synchronize();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("GatherRows"), std::string::npos) << s;
  EXPECT_TRUE(gpu_->Synchronize().ok()) << "the error word must reset after being reported";
  // Row 0 and 2 were still gathered.
  const std::vector<float> got = Get(*gpu_, *dst), want = Get(*cpu_, src.c);
  for (int c = 0; c < 8; ++c) EXPECT_EQ(got[c], want[c]);
}

TEST_F(CudaParityTest, ShapeAndDeviceErrorsAreInvalidArgument) {
  Pair a = BothRand({4, 8}), b = BothRand({5, 8});
  auto c = gpu_->Alloc({4, 5}, DType::kF32);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(gpu_->Matmul(a.g, false, b.g, false, *c).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_->Add(a.g, b.g, a.g).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_->Add(a.c, a.g, a.g).code(), absl::StatusCode::kInvalidArgument);  // host tensor
  auto ints = gpu_->Alloc({4}, DType::kI32);
  ASSERT_TRUE(ints.ok());
  EXPECT_EQ(gpu_->Scale(*ints, 2.0f).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_OK(gpu_->Matmul(a.g, false, b.g, true, *c));  // still usable after rejected calls
}

TEST_F(CudaParityTest, HugeAllocationIsResourceExhausted) {
  auto t = gpu_->Alloc({int64_t{1} << 50}, DType::kF32);  // 4 PiB
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kResourceExhausted) << t.status();
  auto small = gpu_->Zeros({16});
  EXPECT_TRUE(small.ok()) << small.status();
  EXPECT_TRUE(gpu_->Synchronize().ok());
}

}  // namespace
}  // namespace tessera::testing_cuda
