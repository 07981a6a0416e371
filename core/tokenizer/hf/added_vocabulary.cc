#include "core/tokenizer/hf/added_vocabulary.h"

#include <algorithm>

#include "core/tokenizer/hf/regex.h"
#include "core/tokenizer/hf/unicode.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {

// Rust regex's \w: Alphabetic, Mark, Decimal_Number, Connector_Punctuation, Join_Control.
bool IsWordChar(char32_t cp) {
  if (cp < 0x80) return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') || cp == '_';
  static const Regex* re = Regex::Create(R"(^\w$)", "added_tokens", RegexSyntax::kRustRegex).value().release();
  std::string s;
  AppendUtf8(s, cp);
  size_t b, e;
  return re->Find(s, 0, b, e);
}

char32_t LastChar(std::string_view s) {
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t i = start;
  return NextCodePoint(s, i);
}

}  // namespace

void AddedVocabulary::Matcher::Add(std::string pattern, int32_t id) {
  const unsigned char first = static_cast<unsigned char>(pattern[0]);
  by_first_byte[first].push_back(Entry{std::move(pattern), id});
  empty = false;
}

void AddedVocabulary::Matcher::Finish() {
  for (auto& bucket : by_first_byte) {
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const Entry& a, const Entry& b) { return a.pattern.size() > b.pattern.size(); });
  }
}

absl::StatusOr<std::unique_ptr<AddedVocabulary>> AddedVocabulary::Create(const Json& node, const Model& model,
                                                                         const Normalizer* normalizer) {
  auto v = std::unique_ptr<AddedVocabulary>(new AddedVocabulary());
  v->id_end_ = model.id_end();
  if (node.is_null()) return v;
  if (!node.is_array()) return absl::InvalidArgumentError("tokenizer.json: added_tokens must be an array");
  // tokenizers numbers new tokens from the model's vocabulary size (its number of entries).
  int32_t model_size = 0;
  for (int32_t id = 0; id < model.id_end(); ++id) model_size += model.IdToToken(id) != nullptr;
  int32_t next_id = model_size;
  for (size_t k = 0; k < node.size(); ++k) {
    const Json& t = node[k];
    const std::string where = absl::StrCat("added_tokens[", k, "]");
    RETURN_IF_ERROR(CheckKeys(t, {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"}, where));
    AddedToken tok;
    ASSIGN_OR_RETURN(tok.content, GetString(t, "content", where));
    ASSIGN_OR_RETURN(tok.special, GetBool(t, "special", where, false));
    ASSIGN_OR_RETURN(tok.single_word, GetBool(t, "single_word", where, false));
    ASSIGN_OR_RETURN(tok.lstrip, GetBool(t, "lstrip", where, false));
    ASSIGN_OR_RETURN(tok.rstrip, GetBool(t, "rstrip", where, false));
    ASSIGN_OR_RETURN(tok.normalized, GetBool(t, "normalized", where, !tok.special));
    if (tok.content.empty()) continue;
    if (!IsValidUtf8(tok.content)) return absl::InvalidArgumentError(absl::StrCat(where, ".content is not UTF-8"));
    int32_t id;
    if (auto it = v->by_content_.find(tok.content); it != v->by_content_.end()) {
      id = it->second;
    } else if (auto mid = model.TokenToId(tok.content)) {
      id = *mid;
    } else {
      id = next_id++;
    }
    if (tok.normalized && normalizer != nullptr) {
      std::string normed = tok.content;
      normalizer->Normalize(normed);
      if (normed != tok.content) v->normalized_form_[id] = normed;
    }
    v->by_content_[tok.content] = id;
    if (tok.special) v->special_contents_.insert(tok.content);
    v->by_id_[id] = tok;
    v->id_end_ = std::max(v->id_end_, id + 1);
  }
  for (const auto& [id, tok] : v->by_id_) {
    if (tok.normalized) {
      auto nf = v->normalized_form_.find(id);
      const std::string& pattern = nf == v->normalized_form_.end() ? tok.content : nf->second;
      if (!pattern.empty()) v->normalized_.Add(pattern, id);
    } else {
      v->raw_.Add(tok.content, id);
    }
  }
  v->raw_.Finish();
  v->normalized_.Finish();
  return v;
}

void AddedVocabulary::Split(const Piece& piece, const Matcher& m, Pieces& out) const {
  const std::string& s = piece.text;
  const auto emit = [&](size_t b, size_t e, int32_t id) {
    out.push_back(Piece{s.substr(b, e - b), b == 0 ? piece.original_start : piece.original_start + b, id});
  };
  if (m.empty || s.empty()) {
    out.push_back(piece);
    return;
  }
  size_t start_offset = 0;
  size_t i = 0;
  while (i < s.size()) {
    const auto& bucket = m.by_first_byte[static_cast<unsigned char>(s[i])];
    const Matcher::Entry* hit = nullptr;
    for (const auto& e : bucket) {
      if (s.compare(i, e.pattern.size(), e.pattern) == 0) {
        hit = &e;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + hit->pattern.size();
    i = stop;  // non-overlapping: the next search starts after this match, kept or not
    const AddedToken& tok = by_id_.at(hit->id);
    if (tok.single_word) {
      const bool start_space = start == 0 || !IsWordChar(LastChar(std::string_view(s).substr(0, start)));
      size_t k = stop;
      const bool stop_space = stop == s.size() || !IsWordChar(NextCodePoint(s, k));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) {
      size_t b = start;
      while (b > 0) {
        size_t p = b - 1;
        while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
        size_t q = p;
        if (!IsWhitespace(NextCodePoint(s, q))) break;
        b = p;
      }
      start = std::max(b, start_offset);
    }
    if (tok.rstrip) {
      while (stop < s.size()) {
        size_t q = stop;
        if (!IsWhitespace(NextCodePoint(s, q))) break;
        stop = q;
      }
      // The search resumes after the match itself, not after the stripped spaces (as in tokenizers).
    }
    if (start_offset < start) emit(start_offset, start, -1);
    emit(start, stop, hit->id);
    start_offset = stop;
  }
  if (start_offset != s.size()) emit(start_offset, s.size(), -1);
}

Pieces AddedVocabulary::ExtractAndNormalize(std::string_view text, const Normalizer* normalizer) const {
  Pieces raw;
  Split(Piece{std::string(text), 0, -1}, raw_, raw);
  Pieces out;
  out.reserve(raw.size());
  for (Piece& p : raw) {
    if (p.text.empty()) continue;
    if (p.added_id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    if (normalizer != nullptr) normalizer->Normalize(p.text);
    if (p.text.empty()) continue;
    const size_t mark = out.size();
    Split(p, normalized_, out);
    // Empty pieces are dropped, as tokenizers' PreTokenizedString::split does.
    out.erase(std::remove_if(out.begin() + mark, out.end(), [](const Piece& q) { return q.text.empty(); }), out.end());
  }
  return out;
}

std::optional<int32_t> AddedVocabulary::TokenToId(std::string_view content) const {
  auto it = by_content_.find(absl::string_view(content.data(), content.size()));
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

const std::string* AddedVocabulary::DecodeString(int32_t id) const {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return nullptr;
  auto nf = normalized_form_.find(id);
  return nf != normalized_form_.end() ? &nf->second : &it->second.content;
}

const AddedToken* AddedVocabulary::Token(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &it->second;
}

}  // namespace tessera::hf
