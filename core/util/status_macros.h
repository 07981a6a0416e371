// The one place that defines Status propagation macros (Debian's Abseil 20220623 ships none).
//
//   RETURN_IF_ERROR(expr);              // expr yields absl::Status; returns it from the caller if !ok
//   ASSIGN_OR_RETURN(lhs, expr);        // expr yields absl::StatusOr<T>; lhs = *value or return status
//
// `lhs` may declare a variable (`ASSIGN_OR_RETURN(auto t, Make())`) or name an existing one.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TESSERA_STATUS_CONCAT_INNER(a, b) a##b
#define TESSERA_STATUS_CONCAT(a, b) TESSERA_STATUS_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                               \
  do {                                                      \
    ::absl::Status tessera_status_ = (expr);                \
    if (!tessera_status_.ok()) return tessera_status_;      \
  } while (0)

#define TESSERA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  TESSERA_ASSIGN_OR_RETURN_IMPL(TESSERA_STATUS_CONCAT(tessera_statusor_, __LINE__), lhs, expr)
