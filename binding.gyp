{
  "targets": [
    {
      "target_name": "fused_dpo",
      "sources": [
        "csrc/binding/addon.cpp",
        "csrc/binding/gradient_buffer.cpp",
        "csrc/core/cpu_backend.cpp",
        "csrc/core/cpu_kto.cpp",
        "csrc/core/kto_checks.cpp",
        "csrc/core/cpu_policy.cpp",
        "csrc/core/cpu_ceilings.cpp",
        "csrc/core/cpu_simd_dispatch.cpp",
        "csrc/core/checks.cpp",
        "csrc/core/loss_kinds.cpp",
        "csrc/core/cuda_unavailable.cpp",
        "csrc/core/reduce.cpp",
        "csrc/core/thread_pool.cpp",
        "csrc/core/unfused_passes.cpp",
        "csrc/core/row_kernels_baseline.cpp",
        "csrc/core/row_kernels_baseline_mul_add.cpp",
        "csrc/core/row_kernels_avx2.cpp",
        "csrc/core/row_kernels_avx512.cpp",
        "csrc/core/row_kernels_neon.cpp"
      ],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except_all"],
      "cflags_cc!": ["-fno-exceptions", "-O2", "-O3"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-Wno-maybe-uninitialized", "-Wno-psabi", "-ffp-contract=off"],
      "cflags!": ["-O2"],
      "cflags": ["-O3"],
      "defines": ["NAPI_VERSION=<!(node -p \"require('./package.json').binary.napi_versions[0]\")", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "ldflags": ["-Wl,-z,nodelete"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "OTHER_CPLUSPLUSFLAGS": ["-std=c++17", "-O3"]
      }
    }
  ]
}
