// tessera-model: offline checks of a model checkpoint directory and its tokenizer, no server needed.
//
// Subcommands are rows of kCommands (name, one-line summary, help text, function): a new one is one
// function and one row. The JSON Lines commands write exactly one output line per input line, in order;
// a line that cannot be handled gets {"error": "..."} and the exit status is 1 at the end.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/chat/chat_template_loader.h"
#include "core/model/config.h"
#include "core/tokenizer/hf_tokenizer.h"
#include "nlohmann/json.hpp"

namespace tessera::cli {
namespace {

using nlohmann::json;

struct Command {
  const char* name;
  const char* summary;
  const char* help;
  int (*run)(const std::vector<std::string>& args);
};

// Flags of one subcommand: --name VALUE options and --name switches; anything else is positional.
struct Flags {
  std::vector<std::string> positional;
  std::string tokenizer;
  bool add_special_tokens = false;
  bool skip_special_tokens = false;
  bool add_generation_prompt = false;
};

absl::StatusOr<Flags> ParseFlags(const std::vector<std::string>& args, const std::vector<std::string>& allowed) {
  Flags f;
  const auto ok = [&](const std::string& a) { return std::find(allowed.begin(), allowed.end(), a) != allowed.end(); };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      f.positional.push_back(a);
      continue;
    }
    if (!ok(a)) return absl::InvalidArgumentError(absl::StrCat("unknown flag ", a));
    if (a == "--tokenizer") {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError("--tokenizer needs a directory");
      f.tokenizer = args[++i];
    } else if (a == "--add-special-tokens") {
      f.add_special_tokens = true;
    } else if (a == "--skip-special-tokens") {
      f.skip_special_tokens = true;
    } else if (a == "--add-generation-prompt") {
      f.add_generation_prompt = true;
    }
  }
  return f;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Runs `handle` on every stdin line, printing its result or {"error": ...}; 1 if any line failed.
int ForEachLine(const std::function<absl::StatusOr<json>(const json&)>& handle) {
  std::ios::sync_with_stdio(false);
  std::string line;
  bool failed = false;
  while (std::getline(std::cin, line)) {
    json in = json::parse(line, nullptr, /*allow_exceptions=*/false);
    absl::StatusOr<json> out = in.is_discarded() ? absl::InvalidArgumentError("not a JSON object") : handle(in);
    if (out.ok()) {
      std::cout << Dump(*out) << '\n';
    } else {
      failed = true;
      std::cout << Dump(json{{"error", std::string(out.status().message())}}) << '\n';
    }
  }
  std::cout.flush();
  return failed ? 1 : 0;
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> LoadTokenizer(const Flags& f) {
  if (f.tokenizer.empty()) return absl::InvalidArgumentError("--tokenizer DIR is required");
  return HfTokenizer::Create(f.tokenizer);
}

int Fail(const std::string& message) {
  std::cerr << "tessera-model: " << message << '\n';
  return 2;
}

int RunTokenize(const std::vector<std::string>& args) {
  auto f = ParseFlags(args, {"--tokenizer", "--add-special-tokens"});
  if (!f.ok()) return Fail(std::string(f.status().message()));
  auto tok = LoadTokenizer(*f);
  if (!tok.ok()) return Fail(std::string(tok.status().message()));
  return ForEachLine([&](const json& in) -> absl::StatusOr<json> {
    if (!in.is_object() || !in.contains("text") || !in["text"].is_string()) {
      return absl::InvalidArgumentError("expected {\"text\": \"...\"}");
    }
    auto ids = (*tok)->EncodeText(in["text"].get_ref<const std::string&>(), f->add_special_tokens);
    if (!ids.ok()) return ids.status();
    return json{{"ids", *ids}};
  });
}

int RunDetokenize(const std::vector<std::string>& args) {
  auto f = ParseFlags(args, {"--tokenizer", "--skip-special-tokens"});
  if (!f.ok()) return Fail(std::string(f.status().message()));
  auto tok = LoadTokenizer(*f);
  if (!tok.ok()) return Fail(std::string(tok.status().message()));
  return ForEachLine([&](const json& in) -> absl::StatusOr<json> {
    if (!in.is_object() || !in.contains("ids") || !in["ids"].is_array()) {
      return absl::InvalidArgumentError("expected {\"ids\": [...]}");
    }
    std::vector<int32_t> ids;
    for (const json& v : in["ids"]) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
        return absl::InvalidArgumentError(absl::StrCat("ids must be non-negative integers, got ", v.dump()));
      }
      ids.push_back(v.get<int32_t>());
    }
    return json{{"text", (*tok)->Decode(ids, f->skip_special_tokens)}};
  });
}

int RunInspect(const std::vector<std::string>& args) {
  auto f = ParseFlags(args, {});
  if (!f.ok()) return Fail(std::string(f.status().message()));
  if (f->positional.size() != 1) return Fail("inspect takes one checkpoint directory");
  const std::string& dir = f->positional[0];
  int rc = 0;
  auto config = ModelConfig::FromFile(dir);
  if (config.ok()) {
    const ModelConfig& c = *config;
    std::cout << "family: " << ModelFamilyName(c.family) << '\n'
              << "parameters: " << c.NumParameters() << '\n'
              << "layers: " << c.num_layers << '\n'
              << "hidden_size: " << c.hidden_size << '\n'
              << "heads: " << c.num_heads << " (kv " << c.num_kv_heads << ", head_dim " << c.head_dim << ")\n"
              << "experts: " << c.num_experts << " per layer, top-" << c.top_k << ", width " << c.expert_dim << '\n'
              << "vocab_size: " << c.vocab_size << '\n'
              << "max_position_embeddings: " << c.max_position_embeddings << '\n'
              << "tie_word_embeddings: " << (c.tie_word_embeddings ? "true" : "false") << '\n';
  } else {
    std::cout << "config: not supported yet: " << config.status().message() << '\n';
    rc = 1;
  }
  auto tok = HfTokenizer::Create(dir);
  if (!tok.ok() && tok.status().code() == absl::StatusCode::kNotFound) {
    std::cout << "tokenizer: none (no tokenizer.json)\n";
  } else if (tok.ok()) {
    const HfTokenizer& t = **tok;
    std::cout << "tokenizer: " << t.kind() << ", " << t.vocab_size() << " ids, bos " << t.bos_id() << ", eos "
              << t.eos_id() << ", pad " << t.pad_id() << '\n';
  } else {
    std::cout << "tokenizer: not loaded: " << tok.status().message() << '\n';
    rc = 1;
  }
  return rc;
}

// chat-render: {"messages": [...], "tools"?: [...], "documents"?: [...]} -> {"text": ...}, as transformers'
// apply_chat_template(tokenize=False) renders with DIR's chat template and special tokens.
int RunChatRender(const std::vector<std::string>& args) {
  auto f = ParseFlags(args, {"--tokenizer", "--add-generation-prompt"});
  if (!f.ok()) return Fail(std::string(f.status().message()));
  if (f->tokenizer.empty()) return Fail("--tokenizer DIR is required");
  auto loaded = chat::LoadChatTemplate(f->tokenizer);
  if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
  if (!loaded->has_value()) {
    return Fail(f->tokenizer + " has no chat template (chat_template.jinja or tokenizer_config.json chat_template)");
  }
  const chat::CheckpointChatTemplate& ct = **loaded;
  // A line loop of its own: ordered_json keeps the key order of tools and arguments, which tojson
  // reproduces (ForEachLine's json would sort the keys).
  using ojson = nlohmann::ordered_json;
  const auto dump = [](const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); };
  std::ios::sync_with_stdio(false);
  std::string line;
  bool failed = false;
  while (std::getline(std::cin, line)) {
    ojson in = ojson::parse(line, nullptr, /*allow_exceptions=*/false);
    chat::ChatRenderOptions opts = ct.defaults;
    opts.add_generation_prompt = f->add_generation_prompt;
    absl::StatusOr<std::string> text = absl::InvalidArgumentError("expected {\"messages\": [...]}");
    if (in.is_object() && in.contains("messages")) {
      absl::Status fields = absl::OkStatus();
      for (auto it = in.begin(); it != in.end(); ++it) {
        if (it.key() == "tools") {
          opts.tools = *it;
        } else if (it.key() == "documents") {
          opts.documents = *it;
        } else if (it.key() != "messages") {
          fields = absl::InvalidArgumentError("unknown field \"" + it.key() + "\" (expected messages, tools, documents)");
        }
      }
      text = fields.ok() ? ct.ForTools(!opts.tools.is_null()).Render(in["messages"], opts) : fields;
    }
    if (text.ok()) {
      std::cout << dump(ojson{{"text", *text}}) << '\n';
    } else {
      failed = true;
      std::cout << dump(ojson{{"error", std::string(text.status().message())}}) << '\n';
    }
  }
  std::cout.flush();
  return failed ? 1 : 0;
}

constexpr Command kCommands[] = {
    {"inspect", "summary of a checkpoint directory (config, parameters, tokenizer)",
     "Usage: tessera-model inspect DIR\n\n"
     "Prints the model family, parameter count and shape from DIR/config.json and the tokenizer kind and\n"
     "special ids from DIR/tokenizer.json + tokenizer_config.json (\"none\" without tokenizer.json). A config\n"
     "or tokenizer Tessera does not support yet is named with the reason; the exit status is then 1.\n",
     RunInspect},
    {"tokenize", "JSON Lines {\"text\": ...} -> {\"ids\": [...]}",
     "Usage: tessera-model tokenize --tokenizer DIR [--add-special-tokens] < in.jsonl > out.jsonl\n\n"
     "Encodes each {\"text\": ...} line as Hugging Face `tokenizers` does (tokenizer.json in DIR); with\n"
     "--add-special-tokens the post-processor's special tokens (e.g. BOS) are added. One output line per\n"
     "input line; a bad line (not JSON, no text, invalid UTF-8) gets {\"error\": ...} and the exit status\n"
     "is 1 at the end.\n",
     RunTokenize},
    {"detokenize", "JSON Lines {\"ids\": [...]} -> {\"text\": ...}",
     "Usage: tessera-model detokenize --tokenizer DIR [--skip-special-tokens] < in.jsonl > out.jsonl\n\n"
     "Decodes each {\"ids\": [...]} line as `tokenizers`' decode does: special tokens are kept unless\n"
     "--skip-special-tokens is given; unknown ids are dropped. One output line per input line; a bad line\n"
     "gets {\"error\": ...} and the exit status is 1 at the end.\n",
     RunDetokenize},
    {"chat-render", "JSON Lines {\"messages\": [...]} -> {\"text\": ...}",
     "Usage: tessera-model chat-render --tokenizer DIR [--add-generation-prompt] < in.jsonl > out.jsonl\n\n"
     "Renders each {\"messages\": [...]} line (optionally with \"tools\" and \"documents\") with DIR's chat\n"
     "template (chat_template.jinja, else tokenizer_config.json's chat_template) and special tokens, exactly\n"
     "as transformers' apply_chat_template(tokenize=False) does. A template using a construct Tessera does\n"
     "not support is refused at start (exit 2, naming it). One output line per input line; a bad line or a\n"
     "template error (e.g. its raise_exception) gets {\"error\": ...} and the exit status is 1 at the end.\n",
     RunChatRender},
};

void PrintUsage(std::FILE* to) {
  std::fprintf(to,
               "tessera-model: offline model and tokenizer tool (no server needed).\n\n"
               "Usage: tessera-model COMMAND [ARGS...]   (tessera-model COMMAND --help for details)\n\n"
               "Commands:\n");
  for (const Command& c : kCommands) std::fprintf(to, "  %-12s %s\n", c.name, c.summary);
}

}  // namespace
}  // namespace tessera::cli

int main(int argc, char** argv) {
  using tessera::cli::kCommands;
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    tessera::cli::PrintUsage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    std::vector<std::string> args(argv + 2, argv + argc);
    for (const std::string& a : args) {
      if (a == "--help" || a == "-h") {
        std::fputs(c.help, stdout);
        return 0;
      }
    }
    return c.run(args);
  }
  std::fprintf(stderr, "tessera-model: unknown command \"%s\"\n\n", argv[1]);
  tessera::cli::PrintUsage(stderr);
  return 2;
}
