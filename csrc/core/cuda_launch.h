// Kernel launches and the one PTX instruction the kernels use, in one place: nvcc gets the real
// thing; test/cuda-emulation/ provides the same two names for its CPU emulation of the kernels.
#ifndef FUSED_DPO_CUDA_LAUNCH_H
#define FUSED_DPO_CUDA_LAUNCH_H

#include <cuda_runtime.h>

namespace fdpo {

#if !defined(FDPO_CUDA_EMULATION)
// kernel<<<grid, block, 0, stream>>>(args...), then the launch's error.
template <class... Params, class... Args>
cudaError_t launchKernel(void (*kernel)(Params...), unsigned grid, unsigned block, cudaStream_t stream, Args... args) {
  kernel<<<grid, block, 0, stream>>>(args...);
  return cudaGetLastError();
}

// 2^x on the special function unit: ~2^-22 relative error for |x| <= 1/2 (deviceExp's use).
__device__ __forceinline__ float hardwareExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
#endif

}  // namespace fdpo

#endif
