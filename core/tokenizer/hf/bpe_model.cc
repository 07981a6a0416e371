// BPE model: a word is split into chars (each looked up in the vocabulary, with continuing_subword_prefix
// on non-first chars and end_of_word_suffix on the last), unknown chars become `<0xHH>` byte tokens
// (byte_fallback) or unk_token (fused into one when fuse_unk); then the pair of adjacent symbols with the
// lowest merge rank is merged, leftmost first, until no pair has a merge. With ignore_merges a word that
// is itself in the vocabulary is that one token. Results are cached per word (words under 256 bytes) in
// a sharded cache that concurrent readers share. Dropout must be null or 0 (encoding stays deterministic).
#include <array>
#include <mutex>
#include <queue>
#include <shared_mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "core/tokenizer/hf/model.h"
#include "core/tokenizer/hf/unicode.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {

constexpr size_t kCacheMaxWordBytes = 256;
constexpr size_t kCacheShards = 64;
constexpr size_t kCacheEntriesPerShard = 2048;

class WordCache {
 public:
  bool Get(std::string_view word, std::vector<int32_t>& out) const {
    const Shard& s = shards_[Index(word)];
    std::shared_lock lock(s.mu);
    auto it = s.map.find(absl::string_view(word.data(), word.size()));
    if (it == s.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void Put(std::string_view word, const int32_t* ids, size_t n) const {
    Shard& s = shards_[Index(word)];
    std::unique_lock lock(s.mu);
    if (s.map.size() >= kCacheEntriesPerShard) return;  // full: keep what is there (as tokenizers does)
    s.map.try_emplace(std::string(word), ids, ids + n);
  }

 private:
  struct Shard {
    // std::shared_mutex rather than absl::Mutex: ThreadSanitizer sees pthread locks (Debian's Abseil is
    // not instrumented, so its Mutex hand-offs would look like races).
    mutable std::shared_mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> map;
  };
  static size_t Index(std::string_view word) { return std::hash<std::string_view>()(word) % kCacheShards; }
  mutable std::array<Shard, kCacheShards> shards_;
};

class BpeModel final : public Model {
 public:
  void Tokenize(std::string_view word, std::vector<int32_t>& out) const override {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (auto it = vocab_.find(absl::string_view(word.data(), word.size())); it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    const bool cacheable = word.size() < kCacheMaxWordBytes;
    if (cacheable && cache_.Get(word, out)) return;
    const size_t mark = out.size();
    MergeWord(word, out);
    if (cacheable) cache_.Put(word, out.data() + mark, out.size() - mark);
  }

  std::optional<int32_t> TokenToId(std::string_view token) const override {
    auto it = vocab_.find(absl::string_view(token.data(), token.size()));
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  const std::string* IdToToken(int32_t id) const override {
    if (id < 0 || id >= static_cast<int32_t>(vocab_r_.size()) || !has_id_[id]) return nullptr;
    return &vocab_r_[id];
  }
  int32_t id_end() const override { return static_cast<int32_t>(vocab_r_.size()); }
  std::string kind() const override { return byte_fallback_ ? "BPE (byte-fallback)" : "BPE"; }

  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(const Json& node, const std::string& where);

 private:
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool removed;
  };
  struct Merge {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const std::pair<int32_t, int32_t>* FindMerge(int32_t a, int32_t b) const {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  void MergeWord(std::string_view w, std::vector<int32_t>& out) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> vocab_r_;
  std::vector<bool> has_id_;
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) -> (rank, new id)
  std::array<int32_t, 256> byte_ids_;                                  // <0xHH> ids, -1 if absent
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  WordCache cache_;
};

void BpeModel::MergeWord(std::string_view w, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  const auto add = [&](int32_t id) {
    const int32_t n = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, n - 1, n + 1, false});
  };
  std::optional<int32_t> pending_unk;  // unk waiting to be added (fuse_unk extends it)
  std::string key;
  size_t i = 0;
  while (i < w.size()) {
    const size_t start = i;
    i += Utf8Length(static_cast<unsigned char>(w[i]));
    std::string_view s = w.substr(start, i - start);
    const bool decorated =
        (start != 0 && !continuing_subword_prefix_.empty()) || (i == w.size() && !end_of_word_suffix_.empty());
    if (decorated) {
      key.clear();
      if (start != 0) key += continuing_subword_prefix_;
      key.append(s);
      if (i == w.size()) key += end_of_word_suffix_;
      s = key;
    }
    if (auto it = vocab_.find(absl::string_view(s.data(), s.size())); it != vocab_.end()) {
      if (pending_unk) {
        add(*pending_unk);
        pending_unk.reset();
      }
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : s) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        for (char c : s) add(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) add(*pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk) add(*pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::priority_queue<Merge, std::vector<Merge>, std::greater<Merge>> queue;
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const auto* m = FindMerge(symbols[k].id, symbols[k + 1].id)) {
      queue.push(Merge{m->first, static_cast<int32_t>(k), m->second});
    }
  }
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.removed || cur.next < 0) continue;
    const int32_t next_pos = cur.next;
    const Symbol right = symbols[next_pos];
    const auto* m = FindMerge(cur.id, right.id);
    if (m == nullptr || m->second != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    cur.next = right.next;
    symbols[next_pos].removed = true;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const auto* pm = FindMerge(symbols[cur.prev].id, cur.id)) queue.push(Merge{pm->first, cur.prev, pm->second});
    }
    if (cur.next >= 0) {
      if (const auto* nm = FindMerge(cur.id, symbols[cur.next].id)) queue.push(Merge{nm->first, top.pos, nm->second});
    }
  }
  for (const Symbol& s : symbols) {
    if (!s.removed) out.push_back(s.id);
  }
}

absl::StatusOr<std::optional<std::string>> OptionalString(const Json& node, const char* key, const std::string& where) {
  auto it = node.find(key);
  if (it == node.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be a string or null"));
  return std::optional<std::string>(it->get<std::string>());
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node,
                            {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
                             "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges"},
                            where));
  auto m = std::make_unique<BpeModel>();
  if (auto it = node.find("dropout"); it != node.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0) {
      return absl::UnimplementedError(
          absl::StrCat(where, ".dropout: BPE dropout (", it->dump(), ") is not supported; it must be null"));
    }
  }
  ASSIGN_OR_RETURN(m->fuse_unk_, GetBool(node, "fuse_unk", where, false));
  ASSIGN_OR_RETURN(m->byte_fallback_, GetBool(node, "byte_fallback", where, false));
  ASSIGN_OR_RETURN(m->ignore_merges_, GetBool(node, "ignore_merges", where, false));
  ASSIGN_OR_RETURN(auto prefix, OptionalString(node, "continuing_subword_prefix", where));
  ASSIGN_OR_RETURN(auto suffix, OptionalString(node, "end_of_word_suffix", where));
  ASSIGN_OR_RETURN(auto unk, OptionalString(node, "unk_token", where));
  m->continuing_subword_prefix_ = prefix.value_or("");
  m->end_of_word_suffix_ = suffix.value_or("");

  auto vocab = node.find("vocab");
  if (vocab == node.end() || !vocab->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".vocab must be an object of token -> id"));
  }
  int64_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".vocab[\"", it.key(), "\"] must be a non-negative id"));
    }
    max_id = std::max<int64_t>(max_id, it->get<int64_t>());
    m->vocab_[it.key()] = static_cast<int32_t>(it->get<int64_t>());
  }
  m->vocab_r_.assign(static_cast<size_t>(max_id + 1), std::string());
  m->has_id_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : m->vocab_) {
    m->vocab_r_[id] = token;
    m->has_id_[id] = true;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = m->vocab_.find(absl::StrFormat("<0x%02X>", b));
    m->byte_ids_[b] = it == m->vocab_.end() ? -1 : it->second;
  }
  if (unk) {
    auto it = m->vocab_.find(*unk);
    if (it == m->vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".unk_token \"", *unk, "\" is not in the vocabulary"));
    }
    m->unk_id_ = it->second;
  }

  auto merges = node.find("merges");
  if (merges == node.end() || !merges->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".merges must be an array"));
  }
  const size_t prefix_len = m->continuing_subword_prefix_.size();
  int32_t rank = 0;
  for (size_t k = 0; k < merges->size(); ++k) {
    const Json& e = (*merges)[k];
    std::string a, b;
    if (e.is_string()) {
      const std::string line = e.get<std::string>();
      if (line.rfind("#version", 0) == 0) continue;  // header line of merges.txt files
      const size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".merges[", k, "] \"", line, "\" is not \"a b\""));
      }
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ".merges[", k, "] must be \"a b\" or [\"a\", \"b\"]"));
    }
    auto ia = m->vocab_.find(a), ib = m->vocab_.find(b);
    if (ia == m->vocab_.end() || ib == m->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".merges[", k, "]: \"", ia == m->vocab_.end() ? a : b, "\" is not in the vocabulary"));
    }
    if (b.size() < prefix_len) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".merges[", k, "]: \"", b, "\" is shorter than the prefix"));
    }
    const std::string merged = a + b.substr(prefix_len);
    auto in = m->vocab_.find(merged);
    if (in == m->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".merges[", k, "]: the merged token \"", merged, "\" is not in the vocabulary"));
    }
    m->merges_[PairKey(ia->second, ib->second)] = {rank++, in->second};
  }
  return m;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> MakeBpeModel(const Json& node, const std::string& where) {
  ASSIGN_OR_RETURN(auto m, BpeModel::Create(node, where));
  return std::unique_ptr<Model>(std::move(m));
}

}  // namespace tessera::hf
