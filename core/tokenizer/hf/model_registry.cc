// The model types tokenizer.json may name, each built by the factory in its own file.
#include "core/tokenizer/hf/model.h"

namespace tessera::hf {

absl::StatusOr<std::unique_ptr<Model>> MakeBpeModel(const Json& node, const std::string& where);

absl::StatusOr<std::unique_ptr<Model>> CreateModel(const Json& node, const std::string& where) {
  static const FactoryEntry<Model> kTable[] = {
      {"BPE", MakeBpeModel},
  };
  return CreateFromTable(kTable, "model", node, where);
}

}  // namespace tessera::hf
