// The family table (family.h): every supported model_type, one descriptor each.
#include "absl/strings/str_cat.h"
#include "core/model/families/family.h"

namespace tessera::families {
namespace {

const FamilyDescriptor* const kTable[] = {&kMixtralFamily, &kQwen3MoeFamily, &kOlmoeFamily, &kQwen2MoeFamily,
                                          &kGraniteMoeFamily, &kDots1Family, &kDeepseekV3Family,
                                          &kDeepseekV2Family};

}  // namespace

const FamilyDescriptor& Family(ModelFamily family) {
  for (const FamilyDescriptor* d : kTable) {
    if (d->family == family) return *d;
  }
  return kQwen3MoeFamily;  // unreachable: every enumerator has a descriptor (family_test checks it)
}

const FamilyDescriptor* FindFamily(std::string_view model_type) {
  for (const FamilyDescriptor* d : kTable) {
    if (model_type == d->model_type) return d;
  }
  return nullptr;
}

std::string SupportedModelTypes() {
  std::string out;
  for (const FamilyDescriptor* d : kTable) absl::StrAppend(&out, out.empty() ? "" : ", ", d->model_type);
  return out;
}

}  // namespace tessera::families
