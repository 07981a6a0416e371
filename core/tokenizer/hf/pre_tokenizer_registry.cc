// The pre-tokenizer types tokenizer.json may name, each built by the factory in its own file.
#include "core/tokenizer/hf/pre_tokenizer.h"

namespace tessera::hf {

using PreTokenizerFactory = absl::StatusOr<std::unique_ptr<PreTokenizer>>(const Json&, const std::string&);
PreTokenizerFactory MakeByteLevelPreTokenizer, MakeSplitPreTokenizer, MakeDigitsPreTokenizer,
    MakePunctuationPreTokenizer, MakeWhitespacePreTokenizer, MakeWhitespaceSplitPreTokenizer, MakeMetaspacePreTokenizer,
    MakeSequencePreTokenizer;

absl::StatusOr<std::unique_ptr<PreTokenizer>> CreatePreTokenizer(const Json& node, const std::string& where) {
  static const FactoryEntry<PreTokenizer> kTable[] = {
      {"ByteLevel", MakeByteLevelPreTokenizer},   {"Split", MakeSplitPreTokenizer},
      {"Digits", MakeDigitsPreTokenizer},         {"Punctuation", MakePunctuationPreTokenizer},
      {"Whitespace", MakeWhitespacePreTokenizer}, {"WhitespaceSplit", MakeWhitespaceSplitPreTokenizer},
      {"Metaspace", MakeMetaspacePreTokenizer},   {"Sequence", MakeSequencePreTokenizer},
  };
  return CreateFromTable(kTable, "pre_tokenizer", node, where);
}

}  // namespace tessera::hf
