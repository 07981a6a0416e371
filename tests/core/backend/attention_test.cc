// Causal GQA attention on every available backend against a double reference: several sequences
// per call, q_len < kv_len (KV cache / decode), caches with more rows than kv_len, rows of q in no
// sequence, MHA/GQA/MQA head mappings. The backward (dq, dk, dv, with dk/dv accumulating, also into
// a K/V cache shared by two sequences) is checked against central differences of the double
// reference of L = sum(R .* out). Sliding windows (AttentionSeq::window) against the same reference with
// the window's mask (query at p sees keys p - window < j <= p): windows smaller and larger than the
// sequence, crossing the 64-key blocks of a blocked kernel, and decode steps across the window's edge.
// Tolerances: forward atol 1e-5 + rtol 1e-4 (out), 1e-5 (lse); gradients atol 2e-5 + rtol 1e-3.
#include <optional>

#include "tests/core/backend/backend_test_util.h"

namespace tessera::testing {
namespace {

struct KvStore {
  int64_t rows;
  std::vector<double> k, v;  // [rows, kvh, hd]
};
struct SeqSpec {
  int64_t q_begin, q_len, kv_len;
  int store;
  int64_t window = 0;
};
struct Problem {
  int64_t nq, h, kvh, hd;
  double scale;
  std::vector<SeqSpec> seqs;
  std::vector<KvStore> stores;
  std::vector<double> q;
};

Problem MakeProblem(int64_t nq, int64_t h, int64_t kvh, int64_t hd, std::vector<int64_t> store_rows,
                    std::vector<SeqSpec> seqs, uint64_t seed) {
  Problem p{nq, h, kvh, hd, 1.0 / std::sqrt(static_cast<double>(hd)), std::move(seqs), {}, {}};
  p.q = RandomValues(nq * h * hd, seed, -2, 2);
  for (size_t i = 0; i < store_rows.size(); ++i) {
    p.stores.push_back({store_rows[i], RandomValues(store_rows[i] * kvh * hd, seed + 10 + i, -2, 2),
                        RandomValues(store_rows[i] * kvh * hd, seed + 20 + i)});
  }
  return p;
}

// out (rows of sequences only; others 0) and lse.
void RefAttention(const Problem& p, const std::vector<double>& q, const std::vector<KvStore>& stores,
                  std::vector<double>* out, std::vector<double>* lse) {
  out->assign(p.nq * p.h * p.hd, 0.0);
  lse->assign(p.nq * p.h, 0.0);
  for (const SeqSpec& s : p.seqs) {
    const KvStore& st = stores[s.store];
    for (int64_t i = 0; i < s.q_len; ++i) {
      const int64_t row = s.q_begin + i, keys = s.kv_len - s.q_len + i + 1;
      for (int64_t hh = 0; hh < p.h; ++hh) {
        const int64_t g = hh / (p.h / p.kvh);
        std::vector<double> sc(keys);
        double m = -1e300;
        // The mask, spelled as transformers does: causal (j <= pos) and, with a window, j > pos - window.
        auto visible = [&](int64_t j) { return s.window == 0 || j > (keys - 1) - s.window; };
        for (int64_t j = 0; j < keys; ++j) {
          if (!visible(j)) {
            sc[j] = -INFINITY;
            continue;
          }
          double d = 0;
          for (int64_t t = 0; t < p.hd; ++t) d += q[(row * p.h + hh) * p.hd + t] * st.k[(j * p.kvh + g) * p.hd + t];
          sc[j] = d * p.scale;
          m = std::max(m, sc[j]);
        }
        double l = 0;
        for (int64_t j = 0; j < keys; ++j) l += visible(j) ? std::exp(sc[j] - m) : 0.0;
        for (int64_t j = 0; j < keys; ++j) {
          if (!visible(j)) continue;
          const double w = std::exp(sc[j] - m) / l;
          for (int64_t t = 0; t < p.hd; ++t) (*out)[(row * p.h + hh) * p.hd + t] += w * st.v[(j * p.kvh + g) * p.hd + t];
        }
        (*lse)[row * p.h + hh] = m + std::log(l);
      }
    }
  }
}

class AttentionTest : public BackendTest {
 protected:
  void CheckForward(const std::vector<Problem>& problems);
  void CheckBackward(const std::vector<Problem>& problems);
};
TESSERA_INSTANTIATE_BACKEND_TEST(AttentionTest);

class AttentionRunner {
 public:
  AttentionRunner(BackendTest* t, Backend& be, const Problem& p) : p_(p) {
    (void)t;
    for (const KvStore& st : p.stores) {
      k_.push_back(*be.FromHost(ToF32(st.k), {st.rows, p.kvh, p.hd}));
      v_.push_back(*be.FromHost(ToF32(st.v), {st.rows, p.kvh, p.hd}));
      dk_.push_back(*be.FromHost(ToF32(RandomValues(st.k.size(), 77)), {st.rows, p.kvh, p.hd}));
      dv_.push_back(*be.FromHost(ToF32(RandomValues(st.v.size(), 78)), {st.rows, p.kvh, p.hd}));
    }
    for (const SeqSpec& s : p.seqs) {
      seqs_.push_back({s.q_begin, s.q_len, s.kv_len, &k_[s.store], &v_[s.store], &dk_[s.store], &dv_[s.store],
                       s.window});
    }
  }
  std::vector<AttentionSeq>& seqs() { return seqs_; }
  std::vector<Tensor> k_, v_, dk_, dv_;

 private:
  const Problem& p_;
  std::vector<AttentionSeq> seqs_;
};

std::vector<int64_t> CoveredRows(const Problem& p) {
  std::vector<int64_t> rows;
  for (const SeqSpec& s : p.seqs) {
    for (int64_t i = 0; i < s.q_len; ++i) rows.push_back(s.q_begin + i);
  }
  return rows;
}

template <typename T>
std::vector<T> SelectRows(const std::vector<T>& v, const std::vector<int64_t>& rows, int64_t width) {
  std::vector<T> out;
  for (int64_t r : rows) out.insert(out.end(), v.begin() + r * width, v.begin() + (r + 1) * width);
  return out;
}

void AttentionTest::CheckForward(const std::vector<Problem>& problems) {
  Backend& be = this->be();
  for (size_t pi = 0; pi < problems.size(); ++pi) {
    const Problem& p = problems[pi];
    AttentionRunner run(this, be, p);
    Tensor out = Garbage({p.nq, p.h, p.hd}), lse = Garbage({p.nq, p.h});
    ASSERT_TRUE(be.AttentionForward(Up(p.q, {p.nq, p.h, p.hd}), run.seqs(), static_cast<float>(p.scale), out, &lse).ok());
    std::vector<double> want_out, want_lse;
    RefAttention(p, p.q, p.stores, &want_out, &want_lse);
    const std::vector<int64_t> rows = CoveredRows(p);
    const std::string tag = " problem " + std::to_string(pi);
    ExpectClose(SelectRows(Down(out), rows, p.h * p.hd), SelectRows(want_out, rows, p.h * p.hd), 1e-5, 1e-4,
                "AttentionForward out" + tag);
    ExpectClose(SelectRows(Down(lse), rows, p.h), SelectRows(want_lse, rows, p.h), 1e-5, 1e-5,
                "AttentionForward lse" + tag);
    Tensor out2 = Garbage({p.nq, p.h, p.hd});  // lse is optional
    ASSERT_TRUE(be.AttentionForward(Up(p.q, {p.nq, p.h, p.hd}), run.seqs(), static_cast<float>(p.scale), out2, nullptr).ok());
    ExpectClose(SelectRows(Down(out2), rows, p.h * p.hd), SelectRows(want_out, rows, p.h * p.hd), 1e-5, 1e-4,
                "AttentionForward without lse" + tag);
  }
}

TEST_P(AttentionTest, ForwardMatchesReference) {
  std::vector<Problem> problems;
  // Training-style: one sequence, q_len == kv_len.
  problems.push_back(MakeProblem(17, 4, 2, 8, {17}, {{0, 17, 17, 0}}, 1));
  // Prefix cache, decode step, gap row (4), cache with spare rows; GQA group 2.
  problems.push_back(MakeProblem(11, 6, 3, 16, {10, 40, 5}, {{0, 3, 7, 0}, {3, 1, 33, 1}, {5, 5, 5, 2}, {10, 1, 1, 2}}, 2));
  // MHA and MQA, odd head_dim.
  problems.push_back(MakeProblem(7, 3, 3, 7, {9}, {{0, 7, 9, 0}}, 3));
  problems.push_back(MakeProblem(7, 4, 1, 5, {7}, {{0, 7, 7, 0}}, 4));
  // Larger: two sequences sharing one cache tensor, head_dim 64.
  problems.push_back(MakeProblem(98, 8, 2, 64, {130}, {{0, 65, 65, 0}, {65, 33, 130, 0}}, 5));
  // Wide heads (smaller query blocks in a blocked kernel), prefill continuing a cache.
  problems.push_back(MakeProblem(40, 2, 1, 128, {90}, {{0, 40, 90, 0}}, 6));
  problems.push_back(MakeProblem(37, 4, 2, 256, {37}, {{0, 37, 37, 0}}, 7));
  CheckForward(problems);
}

TEST_P(AttentionTest, SlidingWindowForwardMatchesReference) {
  std::vector<Problem> problems;
  // Training-style prefill, windows of 4 and 5 (smaller than the sequence), and one larger than it.
  problems.push_back(MakeProblem(17, 4, 2, 8, {17}, {{0, 17, 17, 0, 4}}, 21));
  problems.push_back(MakeProblem(30, 4, 2, 8, {17, 13}, {{0, 17, 17, 0, 5}, {17, 13, 13, 1, 40}}, 22));
  // Window 1: each query sees only itself.
  problems.push_back(MakeProblem(9, 2, 1, 4, {9}, {{0, 9, 9, 0, 1}}, 23));
  // Decode steps and a prefill continuing a cache, past the window's edge; a full-attention sequence
  // beside windowed ones in the same call.
  problems.push_back(MakeProblem(11, 6, 3, 16, {10, 40, 5},
                                 {{0, 3, 7, 0, 5}, {3, 1, 33, 1, 6}, {5, 5, 5, 2}, {10, 1, 1, 2, 3}}, 24));
  // Blocked-kernel sizes: windows crossing 64-key blocks, a prefill continuing a 90-key cache, head_dim 128.
  problems.push_back(MakeProblem(98, 8, 2, 64, {130}, {{0, 65, 65, 0, 70}, {65, 33, 130, 0, 50}}, 25));
  problems.push_back(MakeProblem(40, 2, 1, 128, {90}, {{0, 40, 90, 0, 3}}, 26));
  problems.push_back(MakeProblem(130, 2, 1, 16, {130}, {{0, 130, 130, 0, 64}}, 27));
  CheckForward(problems);
}

// Decoding one token at a time with a window gives, at every step, the prefill's row for that position
// (the windowed cache decode equals the windowed prefill), across the window's edge.
TEST_P(AttentionTest, SlidingWindowDecodeStepsEqualPrefill) {
  const int64_t n = 12, window = 5, h = 4, kvh = 2, hd = 8;
  Problem p = MakeProblem(n, h, kvh, hd, {n}, {{0, n, n, 0, window}}, 31);
  AttentionRunner run(this, be(), p);
  Tensor q = Up(p.q, {n, h, hd});
  Tensor full = Garbage({n, h, hd});
  ASSERT_TRUE(be().AttentionForward(q, run.seqs(), static_cast<float>(p.scale), full, nullptr).ok());
  const std::vector<float> want = Down(full);
  for (int64_t t = 0; t < n; ++t) {
    AttentionSeq step = run.seqs()[0];
    step.q_begin = t;
    step.q_len = 1;
    step.kv_len = t + 1;
    Tensor out = Garbage({n, h, hd});
    ASSERT_TRUE(be().AttentionForward(q, {step}, static_cast<float>(p.scale), out, nullptr).ok());
    const std::vector<float> got = Down(out);
    for (int64_t c = 0; c < h * hd; ++c) {
      EXPECT_NEAR(got[t * h * hd + c], want[t * h * hd + c], 1e-5) << "step " << t;
    }
  }
  // And past the edge, keys older than the window do not matter: changing them changes nothing.
  Problem p2 = p;
  for (int64_t j = 0; j < n - window; ++j) {
    for (int64_t c = 0; c < kvh * hd; ++c) {
      p2.stores[0].k[j * kvh * hd + c] += 3.0;
      p2.stores[0].v[j * kvh * hd + c] -= 2.0;
    }
  }
  AttentionRunner run2(this, be(), p2);
  AttentionSeq last = run2.seqs()[0];
  last.q_begin = n - 1;
  last.q_len = 1;
  Tensor out = Garbage({n, h, hd});
  ASSERT_TRUE(be().AttentionForward(q, {last}, static_cast<float>(p.scale), out, nullptr).ok());
  const std::vector<float> got = Down(out);
  for (int64_t c = 0; c < h * hd; ++c) EXPECT_NEAR(got[(n - 1) * h * hd + c], want[(n - 1) * h * hd + c], 1e-5);
}

TEST_P(AttentionTest, BackwardMatchesFiniteDifferences) {
  std::vector<Problem> problems;
  // Separate caches (parallel over (sequence, kv head)), q_len < kv_len, spare cache rows, row 7 idle.
  problems.push_back(MakeProblem(8, 4, 2, 4, {6, 4}, {{0, 3, 5, 0}, {3, 4, 4, 1}}, 11));
  // Two sequences accumulating into the same cache gradient, MQA, odd head_dim.
  problems.push_back(MakeProblem(10, 3, 1, 3, {6, 4}, {{0, 3, 5, 0}, {3, 4, 4, 1}, {7, 2, 6, 0}}, 12));
  // Long sequences (several query and key blocks if a backend blocks by 64), with and without a
  // shared cache, q_len < kv_len, an idle row.
  problems.push_back(MakeProblem(88, 2, 1, 2, {90, 20}, {{0, 70, 85, 0}, {70, 17, 20, 1}}, 13));
  problems.push_back(MakeProblem(91, 2, 2, 2, {90, 20}, {{0, 70, 85, 0}, {70, 17, 20, 1}, {88, 3, 6, 0}}, 14));
  CheckBackward(problems);
}

TEST_P(AttentionTest, SlidingWindowBackwardMatchesFiniteDifferences) {
  std::vector<Problem> problems;
  // Windows smaller than the sequences (4, 2), one larger (9 > 7), a decode row past the edge; two
  // sequences accumulating into one cache gradient.
  problems.push_back(MakeProblem(8, 4, 2, 4, {6, 4}, {{0, 3, 5, 0, 2}, {3, 4, 4, 1, 9}}, 41));
  problems.push_back(MakeProblem(10, 3, 1, 3, {8, 4}, {{0, 7, 7, 0, 4}, {7, 1, 8, 0, 3}, {8, 2, 4, 1, 2}}, 42));
  // Blocked-kernel sizes: windows 5 and 70 across 64-key blocks, q_len < kv_len, an idle row.
  problems.push_back(MakeProblem(91, 2, 2, 2, {90, 20}, {{0, 70, 85, 0, 70}, {70, 17, 20, 1, 5}, {88, 3, 6, 0, 2}}, 43));
  CheckBackward(problems);
}

void AttentionTest::CheckBackward(const std::vector<Problem>& problems) {
  for (size_t pi = 0; pi < problems.size(); ++pi) {
    const Problem& p = problems[pi];
    const std::string tag = " problem " + std::to_string(pi);
    AttentionRunner run(this, be(), p);
    std::vector<double> r = RandomValues(p.nq * p.h * p.hd, 5);
    Tensor tq = Up(p.q, {p.nq, p.h, p.hd}), out = Garbage({p.nq, p.h, p.hd}), lse = Garbage({p.nq, p.h});
    ASSERT_TRUE(be().AttentionForward(tq, run.seqs(), static_cast<float>(p.scale), out, &lse).ok());
    std::vector<std::vector<float>> dk0, dv0;
    for (size_t s = 0; s < p.stores.size(); ++s) {
      dk0.push_back(Down(run.dk_[s]));
      dv0.push_back(Down(run.dv_[s]));
    }
    Tensor dq = Garbage({p.nq, p.h, p.hd});
    absl::Status st = be().AttentionBackward(tq, run.seqs(), static_cast<float>(p.scale), out, lse,
                                                Up(r, {p.nq, p.h, p.hd}), dq);
    ASSERT_TRUE(st.ok()) << st;
    auto loss = [&](const std::vector<double>& q, const std::vector<KvStore>& stores) {
      std::vector<double> o, l;
      RefAttention(p, q, stores, &o, &l);
      return DotD(r, o);
    };
    ExpectClose(Down(dq), NumericalGrad([&](const std::vector<double>& q) { return loss(q, p.stores); }, p.q),
                2e-5, 1e-3, "dq" + tag);
    for (size_t s = 0; s < p.stores.size(); ++s) {
      auto lk = [&](const std::vector<double>& k) {
        auto stores = p.stores;
        stores[s].k = k;
        return loss(p.q, stores);
      };
      auto lv = [&](const std::vector<double>& v) {
        auto stores = p.stores;
        stores[s].v = v;
        return loss(p.q, stores);
      };
      std::vector<double> gk = NumericalGrad(lk, p.stores[s].k), gv = NumericalGrad(lv, p.stores[s].v);
      for (size_t i = 0; i < gk.size(); ++i) gk[i] += dk0[s][i];  // accumulates
      for (size_t i = 0; i < gv.size(); ++i) gv[i] += dv0[s][i];
      ExpectClose(Down(run.dk_[s]), gk, 2e-5, 1e-3, "dk store " + std::to_string(s) + tag);
      ExpectClose(Down(run.dv_[s]), gv, 2e-5, 1e-3, "dv store " + std::to_string(s) + tag);
    }
  }
}

TEST_P(AttentionTest, RejectsBadArguments) {
  Problem p = MakeProblem(4, 4, 2, 8, {6}, {{0, 4, 6, 0}}, 1);
  AttentionRunner run(this, be(), p);
  Tensor q = Up(p.q, {4, 4, 8}), out = Garbage({4, 4, 8}), lse = Garbage({4, 4});
  auto fwd = [&](std::vector<AttentionSeq> seqs, Tensor* l = nullptr) {
    return be().AttentionForward(q, seqs, 0.3f, out, l).code();
  };
  AttentionSeq good = run.seqs()[0];
  EXPECT_EQ(fwd({good}), absl::StatusCode::kOk);
  AttentionSeq s = good;
  s.kv_len = 3;  // shorter than q_len
  EXPECT_EQ(fwd({s}), absl::StatusCode::kInvalidArgument);
  s = good;
  s.kv_len = 7;  // more than the cache holds
  EXPECT_EQ(fwd({s}), absl::StatusCode::kInvalidArgument);
  s = good;
  s.q_begin = 1;  // past the end of q
  EXPECT_EQ(fwd({s}), absl::StatusCode::kInvalidArgument);
  AttentionSeq a = good, b = good;
  a.q_len = 3, b.q_begin = 2, b.q_len = 2;  // overlapping query rows
  EXPECT_EQ(fwd({a, b}), absl::StatusCode::kInvalidArgument);
  Tensor k3 = Garbage({6, 3, 8});  // 4 heads % 3 kv heads != 0
  s = good;
  s.k = &k3;
  s.v = &k3;
  EXPECT_EQ(fwd({s}), absl::StatusCode::kInvalidArgument);
  Tensor k_hd = Garbage({6, 2, 4});
  s = good;
  s.k = &k_hd;
  EXPECT_EQ(fwd({s}), absl::StatusCode::kInvalidArgument);
  s = good;
  s.v = nullptr;
  EXPECT_EQ(fwd({s}), absl::StatusCode::kInvalidArgument);
  s = good;
  s.window = -1;
  EXPECT_EQ(fwd({s}), absl::StatusCode::kInvalidArgument);
  Tensor bad_lse = Garbage({4, 2});
  EXPECT_EQ(fwd({good}, &bad_lse), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(fwd({good}, &lse), absl::StatusCode::kOk);
  Tensor dq = Garbage({4, 4, 8});
  s = good;
  s.dk = nullptr;
  EXPECT_EQ(be().AttentionBackward(q, {s}, 0.3f, out, lse, out, dq).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().AttentionBackward(q, {good}, 0.3f, out, bad_lse, out, dq).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().AttentionBackward(q, {good}, 0.3f, out, lse, out, dq).code(), absl::StatusCode::kOk);
}

// Paged keys/values (AttentionSeq::blocks): on a backend with paged attention the same problem with its
// keys scattered over a block pool in scrambled order gives bit for bit the contiguous result -- decode
// rows (the per-row kernel reads through the table), a few rows, and a prefill (the blocked kernel, on a
// gathered copy), with and without a window; a table that does not cover kv_len or points outside the
// pool is refused, and so is a paged backward. A backend without paged attention refuses paged sequences
// (Model::Forward gives it contiguous copies).
TEST_P(AttentionTest, PagedKeysGiveTheContiguousResultBitForBit) {
  Backend& be = this->be();
  const int64_t h = 4, kvh = 2, hd = 8, bt = 4, kv_len = 45, blocks = 16;
  const std::vector<int32_t> table = {7, 2, 11, 0, 15, 5, 9, 1, 13, 3, 6, 12};  // 12 blocks: 48 positions
  const std::vector<double> k = RandomValues(kv_len * kvh * hd, 5, -2, 2), v = RandomValues(kv_len * kvh * hd, 6);
  std::vector<double> pk(blocks * bt * kvh * hd, 0.0), pv(pk.size(), 0.0);
  const int64_t row = kvh * hd;
  for (int64_t j = 0; j < kv_len; ++j) {
    const int64_t r = table[j / bt] * bt + j % bt;
    std::copy_n(k.begin() + j * row, row, pk.begin() + r * row);
    std::copy_n(v.begin() + j * row, row, pv.begin() + r * row);
  }
  Tensor ck = Up(k, {kv_len, kvh, hd}), cv = Up(v, {kv_len, kvh, hd});
  Tensor sk = Up(pk, {blocks * bt, kvh, hd}), sv = Up(pv, {blocks * bt, kvh, hd});
  for (int64_t q_len : {1, 3, 20}) {
    for (int64_t window : {0, 7}) {
      SCOPED_TRACE(::testing::Message() << "q_len " << q_len << " window " << window);
      Tensor q = Up(RandomValues(q_len * h * hd, 9 + q_len), {q_len, h, hd});
      AttentionSeq flat{0, q_len, kv_len, &ck, &cv, nullptr, nullptr, window};
      AttentionSeq paged{0, q_len, kv_len, &sk, &sv, nullptr, nullptr, window, table, bt};
      Tensor want = Garbage({q_len, h, hd}), got = Garbage({q_len, h, hd});
      Tensor want_lse = Garbage({q_len, h}), got_lse = Garbage({q_len, h});
      ASSERT_TRUE(be.AttentionForward(q, {flat}, 0.35f, want, &want_lse).ok());
      const absl::Status st = be.AttentionForward(q, {paged}, 0.35f, got, &got_lse);
      if (!be.SupportsPagedKv()) {
        EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
        continue;
      }
      ASSERT_TRUE(st.ok()) << st;
      EXPECT_EQ(Down(got), Down(want));
      EXPECT_EQ(Down(got_lse), Down(want_lse));
    }
  }
  if (!be.SupportsPagedKv()) return;
  Tensor q = Up(RandomValues(h * hd, 3), {1, h, hd}), out = Garbage({1, h, hd});
  const std::vector<int32_t> short_table(table.begin(), table.begin() + 11);  // 44 positions < 45
  AttentionSeq uncovered{0, 1, kv_len, &sk, &sv, nullptr, nullptr, 0, short_table, bt};
  EXPECT_EQ(be.AttentionForward(q, {uncovered}, 0.35f, out, nullptr).code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> outside = table;
  outside[3] = static_cast<int32_t>(blocks);
  AttentionSeq beyond{0, 1, kv_len, &sk, &sv, nullptr, nullptr, 0, outside, bt};
  EXPECT_EQ(be.AttentionForward(q, {beyond}, 0.35f, out, nullptr).code(), absl::StatusCode::kInvalidArgument);
  Tensor dk = Garbage({blocks * bt, kvh, hd}), dv = Garbage({blocks * bt, kvh, hd});
  Tensor lse = Garbage({1, h}), dq = Garbage({1, h, hd});
  AttentionSeq paged{0, 1, kv_len, &sk, &sv, &dk, &dv, 0, table, bt};
  ASSERT_TRUE(be.AttentionForward(q, {paged}, 0.35f, out, &lse).ok());
  EXPECT_EQ(be.AttentionBackward(q, {paged}, 0.35f, out, lse, out, dq).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::testing
