// The synthetic multi-domain corpus that pretrains `builtin:tiny`.
//
// Every document is a short line of text from one domain, generated from a seeded Rng, so the same
// seed always yields the same bytes (no locale, no clock, no std distributions). Domains:
//   arithmetic  "17+25=42", "83-19=64", "7*8=56"
//   dates       "date us(2023-04-05)=04/05/2023" between ISO, US, EU, long and short formats
//   records     "rec{name=alice,age=34,city=lima}.age=34"
//   words       "upper(hello)=HELLO", "reverse(...)", "sort(...)", "copy(...)", "shift(...)" (a -> b),
//               "mirror(...)" (a <-> z); 60% of inputs are five random letters
//   prose       templated English sentences
//   code        small Python/C-like snippets
// The word transformations teach the backbone the "op(input)=output" pattern with copying from the
// input; tenant tasks (tasks.h) reuse the pattern with operations the corpus never contains.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/data/rng.h"

namespace tessera::data {

enum class Domain { kArithmetic, kDates, kRecords, kWords, kProse, kCode };
inline constexpr Domain kAllDomains[] = {Domain::kArithmetic, Domain::kDates, Domain::kRecords,
                                         Domain::kWords,      Domain::kProse, Domain::kCode};
const char* DomainName(Domain d);

// One document of `domain`.
std::string GenerateDocument(Domain domain, Rng& rng);

// Shared pieces the tenant tasks reuse (so the tasks speak the corpus' "language").
std::string RandomLetters(Rng& rng, int length);  // lowercase a-z
struct Date { int year, month, day; };
Date RandomDate(Rng& rng);                          // 1990-01-01 .. 2039-12-28
std::string FormatIsoDate(const Date& d);           // 2023-04-05

// The general pretraining mixture: `num_docs` documents drawn with fixed domain weights
// (words 40%, arithmetic 12%, dates 12%, records 12%, prose 12%, code 12%).
std::vector<std::string> GenerateGeneralCorpus(uint64_t seed, int64_t num_docs);

}  // namespace tessera::data
