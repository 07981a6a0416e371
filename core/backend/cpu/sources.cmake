# CPU backend sources (included from core/backend/CMakeLists.txt; paths relative to core/backend).
# The CPU's features, the kernel choice and the OpenBLAS loader (what GetRuntimeStatus reports, so the
# services link them without the kernels) are a library of their own: tessera_cpu_kernel_set.
set(TESSERA_CPU_KERNEL_SET_SOURCES cpu/cpu_blas.cc cpu/cpu_features.cc)
set(TESSERA_CPU_BACKEND_SOURCES
  cpu/cpu_backend.cc
  cpu/host_buffer_pool.cc
  cpu/cpu_bf16_gemm.cc
  cpu/cpu_check.cc
  cpu/cpu_elementwise.cc
  cpu/cpu_swiglu_rows.cc
  cpu/cpu_matmul.cc
  cpu/cpu_small_gemm.cc
  cpu/cpu_rows.cc
  cpu/cpu_norm_rope.cc
  cpu/cpu_attention.cc
  cpu/cpu_attention_rows.cc
  cpu/cpu_router.cc
  cpu/cpu_vocab.cc
  cpu/cpu_optim.cc
  cpu/cpu_narrow_storage.cc
)
# -fopenmp-simd: honour `#pragma omp simd` (vectorized float reductions) without the OpenMP runtime.
set_source_files_properties(${TESSERA_CPU_BACKEND_SOURCES} PROPERTIES COMPILE_OPTIONS "-fopenmp-simd")
