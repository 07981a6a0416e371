// SHA-256's compression function over whole 64-byte blocks, in two implementations: portable C++ and the
// x86 SHA extensions (SHA-NI: sha256rnds2/msg1/msg2), chosen at run time from cpuid. sha256.cc calls
// Sha256Blocks; the tests compare the two directly on the same inputs.
//
// Why SHA-NI: every blob read from the registry is verified against its digest, every publish hashes its
// blob, and a server hashes its whole backbone checkpoint at start-up (a 2 GB f32 checkpoint: seconds of
// portable SHA-256). The extensions are on every x86-64 CPU since Intel Ice Lake / Goldmont and AMD Zen.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tessera::sha256_internal {

// state: a, b, ..., h. Updates state with `blocks` 64-byte blocks at p.
void BlocksPortable(uint32_t state[8], const uint8_t* p, size_t blocks);
// The same with SHA-NI; false (state untouched) when the CPU lacks SHA or SSE4.1.
bool BlocksShaNi(uint32_t state[8], const uint8_t* p, size_t blocks);
// The fastest the CPU runs.
void Blocks(uint32_t state[8], const uint8_t* p, size_t blocks);

}  // namespace tessera::sha256_internal
