// FDPO_HD marks the functions both backends compile: __host__ __device__ under nvcc, plain inline
// for the C++ compiler.
#ifndef FUSED_DPO_HOST_DEVICE_H
#define FUSED_DPO_HOST_DEVICE_H

#if defined(__CUDACC__)
#define FDPO_HD __host__ __device__ inline
#else
#define FDPO_HD inline
#endif

#endif
