set(TESSERA_CUDA_BACKEND_SOURCES
  cuda/cuda_backend.cc
)
