// libFuzzer target: the JSONL dataset parser (core/data/jsonl_dataset.h) as the upload API runs it.
// Byte 0 picks the backbone: even = the byte tokenizer with the builtin chat template, odd = the HF
// tokenizer of tests/fixtures/tokenizers/qwen2_bytelevel with tests/fixtures/chat/qwen3's chat template;
// the rest is the file. Checked besides
// ASan/UBSan: an accepted dataset's counts agree with its examples (tokens, loss tokens, forms) and every
// example's ids are in the vocabulary with a loss mask of the same length, within the token limit.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/chat/chat_template.h"
#include "core/data/jsonl_dataset.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "core/tokenizer/hf_tokenizer.h"
#include "ops/fuzz/fuzz_util.h"

namespace {

struct Backbone {
  std::unique_ptr<tessera::Tokenizer> tokenizer;
  std::unique_ptr<tessera::chat::ChatTemplate> chat_template;
  tessera::data::DatasetChat chat;
};

Backbone* MakeByte() {
  auto* b = new Backbone();
  b->tokenizer = std::make_unique<tessera::ByteTokenizer>();
  b->chat_template = tessera::chat::BuiltinTinyChatTemplate();
  b->chat.chat_template = b->chat_template.get();
  b->chat.prepend_bos = true;
  return b;
}

Backbone* MakeQwen3() {
  std::string fixtures = tessera::fuzz::SourceDir() + "/tests/fixtures";
  auto* b = new Backbone();
  auto tok = tessera::HfTokenizer::Create(fixtures + "/tokenizers/qwen2_bytelevel");
  auto tmpl = tessera::chat::ChatTemplate::Create(
      tessera::fuzz::ReadFileOrDie(fixtures + "/chat/qwen3/chat_template.jinja"));
  if (!tok.ok() || !tmpl.ok()) std::abort();
  b->tokenizer = *std::move(tok);
  b->chat_template = *std::move(tmpl);
  b->chat.chat_template = b->chat_template.get();
  b->chat.options.eos_token = "<|im_end|>";
  return b;
}

const Backbone& Get(bool qwen) {
  static const Backbone* byte = MakeByte();
  static const Backbone* qwen3 = MakeQwen3();
  return qwen ? *qwen3 : *byte;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Get(false);
  Get(true);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Backbone& b = Get(data[0] & 1);
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  tessera::data::DatasetLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_examples = 4096;
  limits.max_tokens_per_example = 512;
  auto parsed = tessera::data::ParseJsonlDataset(bytes, *b.tokenizer, limits, &b.chat);
  if (!parsed.ok()) {
    if (parsed.status().message().empty()) __builtin_trap();  // errors must say what is wrong
    return 0;
  }
  int64_t tokens = 0, loss = 0;
  for (const auto& ex : parsed->examples) {
    if (ex.tokens.size() != ex.loss_mask.size()) __builtin_trap();
    if (static_cast<int64_t>(ex.tokens.size()) > limits.max_tokens_per_example) __builtin_trap();
    for (size_t i = 0; i < ex.tokens.size(); ++i) {
      if (ex.tokens[i] < 0 || ex.tokens[i] >= b.tokenizer->vocab_size()) __builtin_trap();
      loss += ex.loss_mask[i] != 0;
    }
    tokens += static_cast<int64_t>(ex.tokens.size());
  }
  if (tokens != parsed->num_tokens || loss != parsed->num_loss_tokens) __builtin_trap();
  if (parsed->num_text + parsed->num_prompt_completion + parsed->num_chat !=
      static_cast<int64_t>(parsed->examples.size())) {
    __builtin_trap();
  }
  return 0;
}
