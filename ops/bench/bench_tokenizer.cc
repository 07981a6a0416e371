// bench_tokenizer: single-thread encode throughput of HfTokenizer against Rust `tokenizers`.
//
// Generates a large multilingual text (Latin with accents, Cyrillic, Greek, CJK, Arabic, emoji, code,
// digits, whitespace runs; deterministic), cut into documents of ~2 KB, and encodes the documents one by
// one on one thread with the tokenizer of --tokenizer DIR (default: the llama3_bytelevel fixture); best
// of --reps passes, the first pass (which fills the word cache) included in none but the warm-up. With
// --python PATH (or $TESSERA_PYTHON) naming a python that has `tokenizers`, ops/bench/tokenizer_peer.py
// runs in the same invocation on the same documents and tokenizer.json, and the ids are compared (any
// difference fails the run). Last line (machine-readable):
//   tessera_tokens_per_s=<x> peer_tokens_per_s=<x|nan> ratio=<x|nan> ids_match=<1|0|nan> tokens=<n>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/tokenizer/hf_tokenizer.h"
#include "ops/bench/bench_check.h"

namespace {

std::vector<std::string> MakeDocs(size_t total_bytes, uint32_t seed) {
  const std::vector<std::string> words = {"the",
                                          "quick",
                                          "brown",
                                          "fox",
                                          "jumps",
                                          "over",
                                          "lazy",
                                          "dog",
                                          "café",
                                          "naïve",
                                          "résumé",
                                          "straße",
                                          "über",
                                          "Zürich",
                                          "however",
                                          "information",
                                          "tokenization",
                                          "I'm",
                                          "you're",
                                          "DON'T",
                                          "привет",
                                          "мир",
                                          "Москва",
                                          "хорошо",
                                          "καλημέρα",
                                          "κόσμε",
                                          "λόγος",
                                          "你好",
                                          "世界",
                                          "東京",
                                          "日本語",
                                          "こんにちは",
                                          "한국어",
                                          "مرحبا",
                                          "العربية",
                                          "😀",
                                          "👍🏽",
                                          "👨‍👩‍👧‍👦",
                                          "🤖",
                                          "def",
                                          "f(x):",
                                          "return",
                                          "x**2;",
                                          "std::vector<int>",
                                          "{",
                                          "}",
                                          "==",
                                          "->",
                                          "1",
                                          "42",
                                          "2024",
                                          "3.14159",
                                          "1,000,000",
                                          "0xFF",
                                          "(a,",
                                          "b)",
                                          "\"quoted\"",
                                          "end.",
                                          "Hello,",
                                          "world!"};
  const std::vector<std::string> spaces = {" ", " ", " ", " ", " ", "  ", "\n", "\n\n", "\t", "    "};
  std::mt19937 rng(seed);
  std::vector<std::string> docs;
  size_t total = 0;
  while (total < total_bytes) {
    std::string d;
    const size_t target = 1024 + rng() % 2048;
    while (d.size() < target) {
      d += words[rng() % words.size()];
      d += spaces[rng() % spaces.size()];
    }
    total += d.size();
    docs.push_back(std::move(d));
  }
  return docs;
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/tokenizers/llama3_bytelevel";
  std::string python = std::getenv("TESSERA_PYTHON") != nullptr ? std::getenv("TESSERA_PYTHON") : "";
  size_t mb = 8;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--python" && i + 1 < argc) {
      python = argv[++i];
    } else if (a == "--mb" && i + 1 < argc) {
      mb = std::strtoul(argv[++i], nullptr, 10);
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_tokenizer [--tokenizer DIR] [--python PATH] [--mb N] [--reps N]\n");
      return 2;
    }
  }
  auto tok = tessera::bench::Must(tessera::HfTokenizer::Create(dir), "load tokenizer");
  const std::vector<std::string> docs = MakeDocs(mb << 20, 20261206);
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  std::printf("bench_tokenizer: %s (%s), %zu docs, %.1f MB, single thread\n", dir.c_str(), tok->kind().c_str(),
              docs.size(), bytes / 1048576.0);

  std::vector<int32_t> ids;
  double best = 1e30;
  for (int r = 0; r <= reps; ++r) {  // pass 0 warms up (fills the word cache, as the peer's first pass does)
    std::vector<int32_t> all;
    all.reserve(bytes / 2);
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& d : docs) {
      auto one = tessera::bench::Must(tok->EncodeText(d, false), "encode");
      all.insert(all.end(), one.begin(), one.end());
    }
    const double s = Seconds(t0, std::chrono::steady_clock::now());
    if (r > 0) best = std::min(best, s);
    ids.swap(all);
  }
  const double tessera_tps = ids.size() / best;
  std::printf("tessera tokens=%zu seconds=%.4f tokens_per_s=%.1f MB_per_s=%.2f\n", ids.size(), best, tessera_tps,
              bytes / 1048576.0 / best);

  double peer_tps = NAN;
  double match = NAN;
  if (!python.empty()) {
    const std::string tmp = std::string(std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/tmp") +
                            "/bench_tokenizer_" + std::to_string(getpid());
    {
      std::ofstream out(tmp + ".txt", std::ios::binary);
      for (size_t k = 0; k < docs.size(); ++k) {
        if (k > 0) out.put('\0');
        out << docs[k];
      }
    }
    const std::string cmd = "TOKENIZERS_PARALLELISM=false '" + python + "' '" + TESSERA_SOURCE_DIR +
                            "/ops/bench/tokenizer_peer.py' --tokenizer '" + dir + "' --text '" + tmp +
                            ".txt' --ids-out '" + tmp + ".ids' --reps " + std::to_string(reps);
    FILE* p = popen(cmd.c_str(), "r");
    std::string all_out;
    char buf[4096];
    while (p != nullptr && std::fgets(buf, sizeof(buf), p) != nullptr) all_out += buf;
    const int rc = p != nullptr ? pclose(p) : -1;
    std::fputs(all_out.c_str(), stdout);
    const size_t at = all_out.find("tokens_per_s=");
    if (rc != 0 || at == std::string::npos) {
      std::fprintf(stderr, "bench_tokenizer: the peer failed (exit %d)\n", rc);
      return 1;
    }
    peer_tps = std::strtod(all_out.c_str() + at + 13, nullptr);
    std::ifstream in(tmp + ".ids", std::ios::binary);
    in.seekg(0, std::ios::end);
    const size_t n = static_cast<size_t>(in.tellg()) / 4;
    in.seekg(0);
    std::vector<int32_t> peer_ids(n, 0);  // little-endian int32, as this machine stores them
    in.read(reinterpret_cast<char*>(peer_ids.data()), static_cast<std::streamsize>(n * 4));
    match = peer_ids == ids ? 1 : 0;
    if (match == 0) {
      size_t k = 0;
      while (k < std::min(ids.size(), peer_ids.size()) && ids[k] == peer_ids[k]) ++k;
      std::fprintf(stderr, "bench_tokenizer: ids differ from tokenizers at position %zu (%zu vs %zu ids)\n", k,
                   ids.size(), peer_ids.size());
    }
    std::remove((tmp + ".txt").c_str());
    std::remove((tmp + ".ids").c_str());
  }
  std::printf("tessera_tokens_per_s=%.1f peer_tokens_per_s=%.1f ratio=%.3f ids_match=%g tokens=%zu\n", tessera_tps,
              peer_tps, tessera_tps / peer_tps, match, ids.size());
  return match == 0 ? 1 : 0;
}
