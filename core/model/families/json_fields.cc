// config.json field helpers for the family parsers (see family.h).
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera::families {

absl::Status Missing(std::string_view field) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: missing required field '", std::string(field), "'"));
}
absl::Status BadType(std::string_view field, std::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: field '", std::string(field), "' must be ", std::string(want)));
}
absl::Status Unsupported(std::string_view field, std::string_view why) {
  return absl::UnimplementedError(absl::StrCat("config.json: unsupported field '", std::string(field), "': ", std::string(why)));
}

bool Present(const Json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

absl::StatusOr<int64_t> GetInt(const Json& j, const char* key) {
  if (!Present(j, key)) return Missing(key);
  const Json& v = j[key];
  if (!v.is_number_integer()) return BadType(key, "an integer");
  return v.get<int64_t>();
}
absl::StatusOr<int64_t> GetIntOr(const Json& j, const char* key, int64_t def) {
  if (!Present(j, key)) return def;
  return GetInt(j, key);
}
absl::StatusOr<double> GetNumberOr(const Json& j, const char* key, double def) {
  if (!Present(j, key)) return def;
  if (!j[key].is_number()) return BadType(key, "a number");
  return j[key].get<double>();
}
absl::StatusOr<float> GetFloatOr(const Json& j, const char* key, float def) {
  ASSIGN_OR_RETURN(double v, GetNumberOr(j, key, def));
  if (!(std::fabs(v) <= static_cast<double>(std::numeric_limits<float>::max()))) {
    return BadType(key, "a number a float can hold (|x| <= 3.4e38)");
  }
  return static_cast<float>(v);
}
absl::StatusOr<bool> GetBoolOr(const Json& j, const char* key, bool def) {
  if (!Present(j, key)) return def;
  if (!j[key].is_boolean()) return BadType(key, "a boolean");
  return j[key].get<bool>();
}
absl::Status RefuseTrue(const Json& j, const char* key, std::string_view what) {
  ASSIGN_OR_RETURN(bool on, GetBoolOr(j, key, false));
  if (on) return Unsupported(key, what);
  return absl::OkStatus();
}
absl::Status RefuseSet(const Json& j, const char* key, std::string_view what) {
  if (Present(j, key)) return Unsupported(key, absl::StrCat(std::string(what), " (set it to null)"));
  return absl::OkStatus();
}

}  // namespace tessera::families
