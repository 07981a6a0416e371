#include "core/tokenizer/hf_tokenizer.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/tokenizer/hf/added_vocabulary.h"
#include "core/tokenizer/hf/decoder.h"
#include "core/tokenizer/hf/model.h"
#include "core/tokenizer/hf/normalizer.h"
#include "core/tokenizer/hf/post_processor.h"
#include "core/tokenizer/hf/pre_tokenizer.h"
#include "core/tokenizer/hf/unicode.h"
#include "core/util/status_macros.h"

namespace tessera {

namespace {

using hf::Json;

absl::StatusOr<Json> ParseJson(std::string_view text, const std::string& what) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON"));
  return j;
}

absl::StatusOr<std::optional<std::string>> ReadFileIfExists(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::optional<std::string>();
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return std::optional<std::string>(ss.str());
}

// Whether a pre-tokenizer tree contains a node of `type`.
bool HasNodeType(const Json& node, const char* type) {
  if (node.is_object()) {
    if (node.value("type", "") == type) return true;
    for (const auto& [k, v] : node.items()) {
      if (HasNodeType(v, type)) return true;
    }
  } else if (node.is_array()) {
    for (const auto& v : node) {
      if (HasNodeType(v, type)) return true;
    }
  }
  return false;
}

}  // namespace

HfTokenizer::HfTokenizer() = default;
HfTokenizer::~HfTokenizer() = default;

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Create(const std::string& dir) {
  const std::string tok_path = dir + "/tokenizer.json";
  ASSIGN_OR_RETURN(auto tok_text, ReadFileIfExists(tok_path));
  if (!tok_text) return absl::NotFoundError(absl::StrCat(tok_path, " not found (a tokenizer directory needs it)"));
  ASSIGN_OR_RETURN(auto config_text, ReadFileIfExists(dir + "/tokenizer_config.json"));
  auto t = FromJson(*tok_text, config_text.value_or(""));
  if (!t.ok()) return absl::Status(t.status().code(), absl::StrCat(dir, ": ", t.status().message()));
  ASSIGN_OR_RETURN(auto gen_text, ReadFileIfExists(dir + "/generation_config.json"));
  if (gen_text) {
    ASSIGN_OR_RETURN(Json gen, ParseJson(*gen_text, dir + "/generation_config.json"));
    auto add = [&](const Json& v) {
      if (!v.is_number_integer()) return false;
      const int32_t id = v.get<int32_t>();
      for (int32_t e : (*t)->eos_ids_) {
        if (e == id) return true;
      }
      (*t)->eos_ids_.push_back(id);
      return true;
    };
    if (gen.is_object() && gen.contains("eos_token_id") && !gen["eos_token_id"].is_null()) {
      const Json& e = gen["eos_token_id"];
      bool ok = e.is_array() ? true : add(e);
      if (e.is_array()) {
        for (const Json& v : e) ok = ok && add(v);
      }
      if (!ok) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir, "/generation_config.json: eos_token_id must be an id or a list of ids"));
      }
    }
  }
  return t;
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::FromJson(std::string_view tokenizer_json,
                                                                   std::string_view tokenizer_config_json) {
  ASSIGN_OR_RETURN(Json j, ParseJson(tokenizer_json, "tokenizer.json"));
  if (!j.is_object()) return absl::InvalidArgumentError("tokenizer.json: expected an object");
  auto t = std::unique_ptr<HfTokenizer>(new HfTokenizer());
  if (j.contains("version") && j["version"] != "1.0") {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: version ", j["version"].dump(), " is not supported"));
  }
  if (j.contains("truncation") && !j["truncation"].is_null()) {
    return absl::UnimplementedError("tokenizer.json: truncation is not supported (it must be null)");
  }
  if (j.contains("padding") && !j["padding"].is_null()) {
    // Padding changes a single encoding only with a fixed length.
    const Json& p = j["padding"];
    if (!p.is_object() || p.value("strategy", Json("BatchLongest")) != Json("BatchLongest")) {
      return absl::UnimplementedError("tokenizer.json: padding to a fixed length is not supported");
    }
  }
  if (!j.contains("model")) return absl::InvalidArgumentError("tokenizer.json: no model");
  ASSIGN_OR_RETURN(t->model_, hf::CreateModel(j["model"], "model"));
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    ASSIGN_OR_RETURN(t->normalizer_, hf::CreateNormalizer(j["normalizer"], "normalizer"));
  }
  if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
    ASSIGN_OR_RETURN(t->pre_tokenizer_, hf::CreatePreTokenizer(j["pre_tokenizer"], "pre_tokenizer"));
  }
  if (j.contains("post_processor") && !j["post_processor"].is_null()) {
    ASSIGN_OR_RETURN(t->post_processor_, hf::CreatePostProcessor(j["post_processor"], "post_processor"));
  }
  if (j.contains("decoder") && !j["decoder"].is_null()) {
    ASSIGN_OR_RETURN(t->decoder_, hf::CreateDecoder(j["decoder"], "decoder"));
  }
  ASSIGN_OR_RETURN(t->added_,
                   hf::AddedVocabulary::Create(j.value("added_tokens", Json()), *t->model_, t->normalizer_.get()));
  t->vocab_size_ = std::max(t->model_->id_end(), t->added_->id_end());
  const bool byte_level = j.contains("pre_tokenizer") && HasNodeType(j["pre_tokenizer"], "ByteLevel");
  t->kind_ = t->model_->kind();
  if (byte_level) t->kind_ = t->kind_ == "BPE" ? "BPE (byte-level)" : t->kind_ + " (byte-level)";

  if (!tokenizer_config_json.empty()) {
    ASSIGN_OR_RETURN(Json config, ParseJson(tokenizer_config_json, "tokenizer_config.json"));
    if (!config.is_object()) return absl::InvalidArgumentError("tokenizer_config.json: expected an object");
    const auto special = [&](const char* key, int32_t& id) -> absl::Status {
      auto it = config.find(key);
      if (it == config.end() || it->is_null()) return absl::OkStatus();
      std::string content;
      if (it->is_string()) {
        content = it->get<std::string>();
      } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
        content = (*it)["content"].get<std::string>();
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer_config.json: ", key, " must be a string or {\"content\": ...}"));
      }
      auto found = t->TokenToId(content);
      if (!found) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer_config.json: ", key, " \"", content, "\" is not in the vocabulary"));
      }
      id = *found;
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(special("bos_token", t->bos_id_));
    RETURN_IF_ERROR(special("eos_token", t->eos_id_));
    RETURN_IF_ERROR(special("pad_token", t->pad_id_));
  }
  if (t->eos_id_ >= 0) t->eos_ids_.push_back(t->eos_id_);
  return t;
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::EncodeText(std::string_view text, bool add_special_tokens) const {
  if (!hf::IsValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  hf::Pieces pieces = added_->ExtractAndNormalize(text, normalizer_.get());
  if (pre_tokenizer_ != nullptr) pre_tokenizer_->PreTokenize(pieces);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (const hf::Piece& p : pieces) {
    if (p.added_id >= 0) {
      ids.push_back(p.added_id);
    } else {
      model_->Tokenize(p.text, ids);
    }
  }
  if (add_special_tokens && post_processor_ != nullptr) post_processor_->Process(ids);
  return ids;
}

std::vector<int32_t> HfTokenizer::Encode(std::string_view text) const {
  auto ids = EncodeText(text, false);
  if (ids.ok()) return *std::move(ids);
  return *EncodeText(hf::Utf8Lossy(text), false);
}

const std::string* HfTokenizer::TokenString(int32_t id) const {
  if (const std::string* s = added_->DecodeString(id)) return s;
  return model_->IdToToken(id);
}

std::string HfTokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* s = TokenString(id);
    if (s == nullptr) continue;
    if (skip_special_tokens && added_->IsSpecialContent(*s)) continue;
    tokens.push_back(*s);
  }
  if (decoder_ == nullptr) {
    std::string out;
    for (size_t k = 0; k < tokens.size(); ++k) {
      if (k > 0) out.push_back(' ');
      out += tokens[k];
    }
    return out;
  }
  decoder_->DecodeChain(tokens);
  std::string out;
  for (const std::string& s : tokens) out += s;
  return out;
}

std::string HfTokenizer::Decode(absl::Span<const int32_t> ids) const { return Decode(ids, true); }

std::string HfTokenizer::DecodeToken(int32_t id) const {
  if (IsSpecialId(id)) return std::string();
  const std::string* s = TokenString(id);
  if (s == nullptr) return std::string();
  std::string token = *s;
  if (decoder_ != nullptr) decoder_->StreamToken(token);
  return token;
}

std::optional<int32_t> HfTokenizer::TokenToId(std::string_view token) const {
  if (auto id = added_->TokenToId(token)) return id;
  return model_->TokenToId(token);
}

std::optional<std::string> HfTokenizer::IdToToken(int32_t id) const {
  if (const hf::AddedToken* t = added_->Token(id)) return t->content;
  if (const std::string* s = model_->IdToToken(id)) return *s;
  return std::nullopt;
}

bool HfTokenizer::IsSpecialId(int32_t id) const {
  const hf::AddedToken* t = added_->Token(id);
  return t != nullptr && t->special;
}

}  // namespace tessera
