// The normalizer types tokenizer.json may name, each built by the factory in its own file.
#include "core/tokenizer/hf/normalizer.h"

namespace tessera::hf {

using NormalizerFactory = absl::StatusOr<std::unique_ptr<Normalizer>>(const Json&, const std::string&);
NormalizerFactory MakeNfcNormalizer, MakeNfdNormalizer, MakeNfkcNormalizer, MakeNfkdNormalizer, MakeLowercaseNormalizer,
    MakeStripNormalizer, MakePrependNormalizer, MakeReplaceNormalizer, MakeSequenceNormalizer;

absl::StatusOr<std::unique_ptr<Normalizer>> CreateNormalizer(const Json& node, const std::string& where) {
  static const FactoryEntry<Normalizer> kTable[] = {
      {"NFC", MakeNfcNormalizer},
      {"NFD", MakeNfdNormalizer},
      {"NFKC", MakeNfkcNormalizer},
      {"NFKD", MakeNfkdNormalizer},
      {"Lowercase", MakeLowercaseNormalizer},
      {"Strip", MakeStripNormalizer},
      {"Prepend", MakePrependNormalizer},
      {"Replace", MakeReplaceNormalizer},
      {"Sequence", MakeSequenceNormalizer},
  };
  return CreateFromTable(kTable, "normalizer", node, where);
}

}  // namespace tessera::hf
