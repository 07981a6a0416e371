// Finds a checkpoint's chat template and special tokens (rules in chat_template_loader.h).
#include "core/chat/chat_template_loader.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace tessera::chat {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", p.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<nlohmann::ordered_json> ReadJson(const fs::path& p) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(p));
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(p.string(), ": invalid JSON: ", e.what()));
  }
}

absl::StatusOr<std::shared_ptr<const ChatTemplate>> Compile(std::string source, const std::string& where) {
  absl::StatusOr<std::unique_ptr<ChatTemplate>> t = ChatTemplate::Create(std::move(source));
  if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", t.status().message()));
  return std::shared_ptr<const ChatTemplate>(std::move(*t));
}

// A special token value: "str", {"content": "str", ...} or null.
absl::StatusOr<std::optional<std::string>> TokenString(const nlohmann::ordered_json& v, const std::string& where) {
  if (v.is_null()) return std::optional<std::string>();
  if (v.is_string()) return std::optional<std::string>(v.get<std::string>());
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return std::optional<std::string>(v["content"].get<std::string>());
  }
  return absl::InvalidArgumentError(absl::StrCat(where, ": a special token must be a string or {\"content\": ...}"));
}

}  // namespace

absl::StatusOr<std::optional<CheckpointChatTemplate>> LoadChatTemplate(const std::string& checkpoint_dir) {
  fs::path dir(checkpoint_dir);
  fs::path config_path = dir / "tokenizer_config.json";
  fs::path jinja_path = dir / "chat_template.jinja";
  fs::path map_path = dir / "special_tokens_map.json";
  std::error_code ec;
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  if (fs::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(config, ReadJson(config_path));
    if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": not a JSON object"));
  }
  CheckpointChatTemplate out;
  if (fs::exists(jinja_path, ec)) {
    ASSIGN_OR_RETURN(std::string src, ReadFile(jinja_path));
    ASSIGN_OR_RETURN(out.chat_template, Compile(std::move(src), jinja_path.string()));
    out.source_file = jinja_path.string();
  } else if (config.contains("chat_template") && !config["chat_template"].is_null()) {
    const auto& ct = config["chat_template"];
    std::string where = config_path.string() + " chat_template";
    if (ct.is_string()) {
      ASSIGN_OR_RETURN(out.chat_template, Compile(ct.get<std::string>(), where));
    } else if (ct.is_array()) {
      for (size_t k = 0; k < ct.size(); ++k) {
        const auto& e = ct[k];
        if (!e.is_object() || !e.contains("name") || !e["name"].is_string() || !e.contains("template") ||
            !e["template"].is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(where, "[", k, "]: expected {\"name\": str, \"template\": str}"));
        }
        std::string name = e["name"].get<std::string>();
        if (name != "default" && name != "tool_use") continue;
        ASSIGN_OR_RETURN(auto t, Compile(e["template"].get<std::string>(), absl::StrCat(where, " '", name, "'")));
        (name == "default" ? out.chat_template : out.tool_use) = std::move(t);
      }
      if (!out.chat_template) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": several templates but none named \"default\""));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": must be a string or a list of {name, template}"));
    }
    out.source_file = config_path.string();
  } else {
    return std::optional<CheckpointChatTemplate>();
  }

  // transformers 5 reads the legacy special_tokens_map.json only when tokenizer_config.json has no
  // "added_tokens_decoder", and then its entries override the config's.
  nlohmann::ordered_json map = nlohmann::ordered_json::object();
  if (!config.contains("added_tokens_decoder") && fs::exists(map_path, ec)) {
    ASSIGN_OR_RETURN(map, ReadJson(map_path));
    if (!map.is_object()) map = nlohmann::ordered_json::object();
  }
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    std::optional<std::string> value;
    if (map.contains(key)) {
      ASSIGN_OR_RETURN(value, TokenString(map[key], absl::StrCat(map_path.string(), " ", key)));
    } else if (config.contains(key)) {
      ASSIGN_OR_RETURN(value, TokenString(config[key], absl::StrCat(config_path.string(), " ", key)));
    }
    if (!value) continue;
    if (std::string(key) == "bos_token") {
      out.defaults.bos_token = *value;
    } else if (std::string(key) == "eos_token") {
      out.defaults.eos_token = *value;
    } else {
      out.defaults.extra[key] = *value;
    }
  }
  return std::optional<CheckpointChatTemplate>(std::move(out));
}

}  // namespace tessera::chat
