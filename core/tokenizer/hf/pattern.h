// The {"String": ...} / {"Regex": ...} pattern objects of Split, Replace (normalizer and decoder), and
// replacing every match of one.
#pragma once

#include <memory>
#include <string>

#include "core/tokenizer/hf/node.h"
#include "core/tokenizer/hf/regex.h"

namespace tessera::hf {

absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const Json& node, const std::string& where);
// Every non-overlapping match of `re` in `text` replaced by `content`.
std::string ReplaceAll(std::string_view text, const Regex& re, std::string_view content);

}  // namespace tessera::hf
