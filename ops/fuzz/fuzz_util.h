// Helpers the libFuzzer targets share: where the source tree's fixtures are (TESSERA_SOURCE_DIR, else
// the tree the target was configured from) and reading a file whole.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace tessera::fuzz {

inline std::string SourceDir() {
  const char* env = std::getenv("TESSERA_SOURCE_DIR");
  return env != nullptr && *env != '\0' ? env : TESSERA_SOURCE_DIR_DEFAULT;
}

inline std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz: cannot read %s\n", path.c_str());
    std::abort();
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace tessera::fuzz
