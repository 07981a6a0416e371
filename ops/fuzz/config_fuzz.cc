// libFuzzer target: ModelConfig::FromJson (core/model/config.h), the config.json parser of every
// supported family. Contract checked: any text is a Status or a config that passes Validate() and whose
// ToJson() parses back to an equal serialization (a round trip that loses or invents a field is a bug).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "core/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<tessera::ModelConfig> config = tessera::ModelConfig::FromJson(text);
  if (!config.ok()) return 0;
  if (!config->Validate().ok()) __builtin_trap();
  std::string json = config->ToJson();
  absl::StatusOr<tessera::ModelConfig> again = tessera::ModelConfig::FromJson(json);
  if (!again.ok()) {
    std::fprintf(stderr, "ToJson() does not parse back: %s\n%s", again.status().ToString().c_str(), json.c_str());
    __builtin_trap();
  }
  if (std::string json2 = again->ToJson(); json2 != json) {
    std::fprintf(stderr, "round trip changed the config:\n--- first ToJson()\n%s--- after FromJson(ToJson())\n%s",
                 json.c_str(), json2.c_str());
    __builtin_trap();
  }
  for (int64_t l = 0; l < config->num_layers && l < 64; ++l) {
    (void)config->AttentionWindow(l);
    (void)config->IsDenseLayer(l);
  }
  return 0;
}
