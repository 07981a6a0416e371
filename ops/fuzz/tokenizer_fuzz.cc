// libFuzzer target: the Hugging Face tokenizer (core/tokenizer/hf_tokenizer.h): loading tokenizer.json,
// then encoding and decoding with what was loaded.
// Input forms:
//   "<tokenizer.json>\0<text>"  : FromJson on the first part (a Status or a tokenizer), then the text
//                                 through that tokenizer;
//   anything else               : byte 0 picks one of the committed fixture tokenizers
//                                 (tests/fixtures/tokenizers/), the rest is the text.
// On a tokenizer, the text goes through Encode, EncodeText with and without special tokens, Decode
// (both forms) of the result and DecodeToken of each id; the text's bytes read as int32 ids (negative,
// out of range, special) go through Decode, IdToToken and IsSpecialId. Checked: no crash, leak or UB,
// ids of Encode inside [0, vocab_size()).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/tokenizer/hf_tokenizer.h"
#include "ops/fuzz/fuzz_util.h"

namespace {

void Exercise(const tessera::Tokenizer& tok, std::string_view text) {
  std::vector<int32_t> ids = tok.Encode(text);
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
    (void)tok.DecodeToken(id);
  }
  (void)tok.Decode(ids);
  (void)tok.Decode(ids, /*skip_special_tokens=*/false);
  for (bool special : {false, true}) {
    auto with = tok.EncodeText(text, special);
    if (with.ok()) (void)tok.Decode(*with, false);
  }
  std::vector<int32_t> raw(text.size() / 4);
  if (!raw.empty()) std::memcpy(raw.data(), text.data(), raw.size() * 4);
  (void)tok.Decode(raw);
  (void)tok.Decode(raw, false);
  for (int32_t id : raw) {
    (void)tok.IdToToken(id);
    (void)tok.IsSpecialId(id);
    (void)tok.DecodeToken(id);
  }
  (void)tok.TokenToId(text);
}

const std::vector<std::unique_ptr<tessera::HfTokenizer>>& Fixtures() {
  static const auto* fixtures = [] {
    auto* v = new std::vector<std::unique_ptr<tessera::HfTokenizer>>();
    for (const char* name : {"gpt2_bytelevel", "llama2_sentencepiece", "mistral_metaspace", "nfkc_lowercase_wordlike",
                             "split_behaviours", "qwen2_bytelevel", "unseen2_deepseek_style", "llama3_bytelevel"}) {
      auto t = tessera::HfTokenizer::Create(tessera::fuzz::SourceDir() + "/tests/fixtures/tokenizers/" + name);
      if (!t.ok()) {
        std::fprintf(stderr, "fuzz: fixture tokenizer %s: %s\n", name, std::string(t.status().message()).c_str());
        std::abort();
      }
      v->push_back(*std::move(t));
    }
    return v;
  }();
  return *fixtures;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Fixtures();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t nul = in.find('\0');
  if (nul != std::string_view::npos) {
    auto tok = tessera::HfTokenizer::FromJson(in.substr(0, nul), "");
    if (tok.ok()) Exercise(**tok, in.substr(nul + 1));
    return 0;
  }
  if (in.empty()) return 0;
  const auto& fixtures = Fixtures();
  Exercise(*fixtures[static_cast<uint8_t>(in[0]) % fixtures.size()], in.substr(1));
  return 0;
}
