// The post-processor types tokenizer.json may name, each built by the factory in its own file.
#include "core/tokenizer/hf/post_processor.h"

namespace tessera::hf {

using PostProcessorFactory = absl::StatusOr<std::unique_ptr<PostProcessor>>(const Json&, const std::string&);
PostProcessorFactory MakeTemplateProcessing, MakeByteLevelProcessing, MakeRobertaProcessing, MakeBertProcessing,
    MakeSequenceProcessing;

absl::StatusOr<std::unique_ptr<PostProcessor>> CreatePostProcessor(const Json& node, const std::string& where) {
  static const FactoryEntry<PostProcessor> kTable[] = {
      {"TemplateProcessing", MakeTemplateProcessing}, {"ByteLevel", MakeByteLevelProcessing},
      {"RobertaProcessing", MakeRobertaProcessing},   {"BertProcessing", MakeBertProcessing},
      {"Sequence", MakeSequenceProcessing},
  };
  return CreateFromTable(kTable, "post_processor", node, where);
}

}  // namespace tessera::hf
