// half_convert.h's four conversions against independent ones, every input that matters:
//  - fp16 -> float, all 65536 patterns (a NaN to a NaN of its sign), and float -> fp16, all 2^32
//    floats (a NaN to the quiet NaN 0x7e00 of its sign, what the kernels write), against the CPU's
//    F16C instructions (IEEE, round to nearest even);
//  - bf16 -> float, all 65536 patterns, and float -> bf16 for every sign, exponent and upper
//    mantissa with the dropped 16 bits at each rounding case (0, 1, just below, at and just above
//    half, all ones), against rounding by value in double.
// Prints one line per check and exits 0 when all hold, 1 when one fails, 77 when this CPU has no
// F16C (the fp16 checks cannot run; test/half-convert.test.ts reports it as skipped).
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <atomic>
#include <thread>
#include <vector>

#include "fused_dpo.h"
#include "host_device.h"
namespace fdpo {
#include "half_convert.h"
}
using namespace fdpo;

__attribute__((target("f16c"))) static uint16_t hardwareToF16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
__attribute__((target("f16c"))) static float hardwareFromF16(uint16_t h) { return _cvtsh_ss(h); }

static bool sameFloat(float a, float b) { return floatToBits(a) == floatToBits(b); }

// float -> bf16 by value: the two neighbours of |f|, the nearer one, a tie to the even one.
static uint16_t bf16ByValue(float f) {
  const uint32_t bits = floatToBits(f);
  const uint32_t sign = bits & 0x80000000u, x = bits & 0x7fffffffu;
  if (x > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
  if (x == 0x7f800000u) return (uint16_t)(bits >> 16);
  const uint32_t down = x & 0xffff0000u, up = down + 0x10000u;
  const double value = bitsToFloat(x);
  // (up may be infinity's encoding: as a value it is 2^128, where an unbounded exponent puts it.)
  const double below = bitsToFloat(down), above = up == 0x7f800000u ? ldexp(1.0, 128) : (double)bitsToFloat(up);
  const double dDown = value - below, dUp = above - value;
  const uint32_t pick = dDown < dUp ? down : dUp < dDown ? up : ((down >> 16) & 1u) ? up : down;
  return (uint16_t)((sign | pick) >> 16);
}

int main() {
  if (!__builtin_cpu_supports("f16c")) {
    printf("no F16C on this CPU: the fp16 checks need it\n");
    return 77;
  }
  int failures = 0;
  const auto fail = [&](const char* what, uint64_t input, uint64_t got, uint64_t want) {
    if (failures++ < 10) printf("FAIL %s(0x%llx) = 0x%llx, want 0x%llx\n", what, (unsigned long long)input, (unsigned long long)got, (unsigned long long)want);
  };

  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = f16ToFloat((uint16_t)h), want = hardwareFromF16((uint16_t)h);
    // (A NaN's payload is not a value: F16C quiets a signalling one, the kernels need not.)
    const bool nans = got != got && want != want && (floatToBits(got) >> 31) == (floatToBits(want) >> 31);
    if (!nans && !sameFloat(got, want)) fail("f16ToFloat", h, floatToBits(got), floatToBits(want));
    const float b = bf16ToFloat((uint16_t)h);
    if (floatToBits(b) != h << 16) fail("bf16ToFloat", h, floatToBits(b), h << 16);
  }
  printf("f16ToFloat, bf16ToFloat: all 65536 patterns\n");

  // Every float, split over the cores; the first mismatch of each part is kept.
  const unsigned parts = std::thread::hardware_concurrency() ? std::thread::hardware_concurrency() : 1;
  std::atomic<uint64_t> mismatches{0};
  std::vector<uint64_t> first(parts, ~0ull);
  std::vector<std::thread> threads;
  for (unsigned p = 0; p < parts; ++p) {
    threads.emplace_back([&, p] {
      const uint64_t begin = (1ull << 32) * p / parts, end = (1ull << 32) * (p + 1) / parts;
      uint64_t bad = 0;
      for (uint64_t i = begin; i < end; ++i) {
        const float f = bitsToFloat((uint32_t)i);
        const uint16_t got = floatToF16(f);
        const uint16_t want = f != f ? (uint16_t)(((uint32_t)i >> 16 & 0x8000u) | 0x7e00u) : hardwareToF16(f);
        if (got != want) {
          if (first[p] == ~0ull) first[p] = i;
          ++bad;
        }
      }
      mismatches += bad;
    });
  }
  for (std::thread& t : threads) t.join();
  for (uint64_t i : first) {
    if (i == ~0ull) continue;
    const float f = bitsToFloat((uint32_t)i);
    fail("floatToF16", i, floatToF16(f), f != f ? ((i >> 16 & 0x8000u) | 0x7e00u) : hardwareToF16(f));
  }
  printf("floatToF16: all 2^32 floats, %llu mismatches\n", (unsigned long long)mismatches.load());

  const uint32_t lows[] = {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu};
  for (uint32_t high = 0; high < 65536; ++high) {
    for (uint32_t low : lows) {
      const uint32_t bits = high << 16 | low;
      const uint16_t got = floatToBf16(bitsToFloat(bits)), want = bf16ByValue(bitsToFloat(bits));
      if (got != want) fail("floatToBf16", bits, got, want);
    }
  }
  printf("floatToBf16: 65536 upper halves x 6 rounding cases\n");
  printf(failures ? "%d failures\n" : "all hold\n", failures);
  return failures ? 1 : 0;
}
