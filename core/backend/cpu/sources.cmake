set(TESSERA_CPU_BACKEND_SOURCES
  cpu/cpu_backend.cc
)
