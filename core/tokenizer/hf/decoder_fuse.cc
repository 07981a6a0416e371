// Fuse decoder: all tokens joined into one.
#include "core/tokenizer/hf/decoder.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {
class FuseDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
  void StreamToken(std::string&) const override {}
};
}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeFuseDecoder(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type"}, where));
  return std::make_unique<FuseDecoder>();
}

}  // namespace tessera::hf
