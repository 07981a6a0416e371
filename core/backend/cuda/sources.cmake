# The CUDA backend: host code (validation, memory, cuBLAS) in .cc files, kernels in one .cu per op family.
set(TESSERA_CUDA_BACKEND_SOURCES
  cuda/cuda_backend.cc
  cuda/cuda_ops.cc
  cuda/cuda_matmul.cc
  cuda/cuda_grouped_problems.cc
  cuda/cuda_moe_routing.cc
  cuda/cuda_staged_copy.cc
  cuda/cuda_elementwise.cu
  cuda/cuda_rows.cu
  cuda/cuda_norm_vocab.cu
  cuda/cuda_attention.cu
  cuda/cuda_attention_tiled.cu
  cuda/cuda_grouped_gemm.cu
  cuda/cuda_moe_routing.cu
)
