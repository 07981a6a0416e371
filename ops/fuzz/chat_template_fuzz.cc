// libFuzzer target: the chat-template renderer (core/chat/chat_template.h: the Jinja2 lexer, parser and
// evaluator) on arbitrary templates and conversations.
// Input: "<template source>\0<messages JSON>\0<extra variables JSON>"; missing parts take a fixed
// two-turn conversation and no extra variables. Create, then Render with and without the generation
// prompt (ordered and plain JSON) and RenderForTraining, whose segments must concatenate to Render's text.
// The clock is fixed so strftime_now is deterministic.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/chat/chat_template.h"

namespace {

using OJson = nlohmann::ordered_json;

const OJson& DefaultMessages() {
  static const OJson* m = new OJson(OJson::parse(
      R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi \u00e9"},)"
      R"({"role":"assistant","content":"Hello"},{"role":"user","content":"2+2?"}])"));
  return *m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string_view parts[3];
  for (int i = 0; i < 3; ++i) {
    size_t nul = i < 2 ? in.find('\0') : std::string_view::npos;
    parts[i] = in.substr(0, nul);
    if (nul == std::string_view::npos) {
      in = {};
      break;
    }
    in.remove_prefix(nul + 1);
  }
  auto tmpl = tessera::chat::ChatTemplate::Create(std::string(parts[0]));
  if (!tmpl.ok()) return 0;
  OJson messages = DefaultMessages();
  if (!parts[1].empty()) {
    messages = OJson::parse(parts[1], nullptr, /*allow_exceptions=*/false);
    if (messages.is_discarded()) return 0;
  }
  tessera::chat::ChatRenderOptions opts;
  opts.bos_token = "<s>";
  opts.eos_token = "</s>";
  opts.now = [] {
    std::tm t{};
    t.tm_year = 126;
    t.tm_mon = 11;
    t.tm_mday = 6;
    return t;
  };
  if (!parts[2].empty()) {
    OJson extra = OJson::parse(parts[2], nullptr, /*allow_exceptions=*/false);
    if (extra.is_object()) opts.extra = extra;
  }
  for (bool gen : {false, true}) {
    opts.add_generation_prompt = gen;
    auto text = (*tmpl)->Render(messages, opts);
    if (text.ok() && gen) {
      auto plain = (*tmpl)->Render(nlohmann::json(messages), opts);
      (void)plain;
    }
  }
  opts.add_generation_prompt = false;
  auto segments = (*tmpl)->RenderForTraining(messages, opts);
  if (segments.ok()) {
    std::string joined;
    for (const auto& s : *segments) joined += s.text;
    auto whole = (*tmpl)->Render(messages, opts);
    if (!whole.ok() || *whole != joined) __builtin_trap();
  }
  return 0;
}
