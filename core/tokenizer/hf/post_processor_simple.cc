// The fixed post-processors:
//   ByteLevel: only trims offsets, ids unchanged;
//   RobertaProcessing / BertProcessing: cls, the ids, sep;
//   Sequence: its children in order.
#include "core/tokenizer/hf/post_processor.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {

class NoOpProcessing final : public PostProcessor {
 public:
  void Process(std::vector<int32_t>&) const override {}
};

class WrapProcessing final : public PostProcessor {
 public:
  WrapProcessing(int32_t cls, int32_t sep) : cls_(cls), sep_(sep) {}
  void Process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), cls_);
    ids.push_back(sep_);
  }

 private:
  int32_t cls_, sep_;
};

class SequenceProcessing final : public PostProcessor {
 public:
  explicit SequenceProcessing(std::vector<std::unique_ptr<PostProcessor>> c) : children_(std::move(c)) {}
  void Process(std::vector<int32_t>& ids) const override {
    for (const auto& c : children_) c->Process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> children_;
};

absl::StatusOr<int32_t> TokenPairId(const Json& node, const char* key, const std::string& where) {
  auto it = node.find(key);
  if (it == node.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be [token, id]"));
  }
  return (*it)[1].get<int32_t>();
}

absl::StatusOr<std::unique_ptr<PostProcessor>> MakeWrap(const Json& node, const std::string& where) {
  ASSIGN_OR_RETURN(int32_t cls, TokenPairId(node, "cls", where));
  ASSIGN_OR_RETURN(int32_t sep, TokenPairId(node, "sep", where));
  return std::make_unique<WrapProcessing>(cls, sep);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> MakeByteLevelProcessing(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "add_prefix_space", "trim_offsets", "use_regex"}, where));
  return std::make_unique<NoOpProcessing>();
}

absl::StatusOr<std::unique_ptr<PostProcessor>> MakeRobertaProcessing(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "cls", "sep", "trim_offsets", "add_prefix_space"}, where));
  return MakeWrap(node, where);
}

absl::StatusOr<std::unique_ptr<PostProcessor>> MakeBertProcessing(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "cls", "sep"}, where));
  return MakeWrap(node, where);
}

absl::StatusOr<std::unique_ptr<PostProcessor>> MakeSequenceProcessing(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "processors"}, where));
  auto it = node.find("processors");
  if (it == node.end() || !it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".processors must be an array"));
  }
  std::vector<std::unique_ptr<PostProcessor>> children;
  for (size_t i = 0; i < it->size(); ++i) {
    ASSIGN_OR_RETURN(auto child, CreatePostProcessor((*it)[i], absl::StrCat(where, ".processors[", i, "]")));
    children.push_back(std::move(child));
  }
  return std::make_unique<SequenceProcessing>(std::move(children));
}

}  // namespace tessera::hf
