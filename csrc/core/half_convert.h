// Scalar conversions between fp32 and the 16-bit formats (bf16, IEEE fp16), round to nearest
// even, NaN kept quiet. A fragment: row_kernels_{avx512,avx2,baseline}.cpp include it inside an
// anonymous namespace (so each SIMD level has its own copy) after <string.h>, <stdint.h> and
// "host_device.h"; the CUDA kernels include it too.

FDPO_HD float bitsToFloat(uint32_t bits) {
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

FDPO_HD uint32_t floatToBits(float f) {
  uint32_t bits;
  memcpy(&bits, &f, 4);
  return bits;
}

FDPO_HD float bf16ToFloat(uint16_t h) { return bitsToFloat((uint32_t)h << 16); }

FDPO_HD uint16_t floatToBf16(float f) {
  const uint32_t bits = floatToBits(f);
  if (f != f) return (uint16_t)((bits >> 16) | 0x40);
  return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

FDPO_HD float f16ToFloat(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    const float magnitude = (float)mantissa * 5.9604644775390625e-8f;  // mantissa * 2^-24, exact
    return bitsToFloat(floatToBits(magnitude) | sign);
  }
  if (exponent == 31) return bitsToFloat(sign | 0x7f800000u | (mantissa << 13));
  return bitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

FDPO_HD uint16_t floatToF16(float f) {
  uint32_t x = floatToBits(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return (uint16_t)(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to >= 65520: infinity
  if (x < 0x38800000u) {
    // Below 2^-14: a subnormal (or zero). Round |f| * 2^24 to the nearest even integer; 1024
    // lands on the smallest normal's encoding, as it should.
    const float scaled = bitsToFloat(x) * 16777216.0f;
    const float rounded = (scaled + 12582912.0f) - 12582912.0f;
    return (uint16_t)(sign | (uint16_t)rounded);
  }
  x += 0xfffu + ((x >> 13) & 1u);
  return (uint16_t)(sign | ((x >> 13) - (112u << 10)));
}

template <int DT>
FDPO_HD float loadElement(const void* p, int64_t i) {
  if (DT == FDPO_FLOAT32) return ((const float*)p)[i];
  if (DT == FDPO_BFLOAT16) return bf16ToFloat(((const uint16_t*)p)[i]);
  return f16ToFloat(((const uint16_t*)p)[i]);
}

template <int DT>
FDPO_HD void storeElement(void* p, int64_t i, float v) {
  if (DT == FDPO_FLOAT32) {
    ((float*)p)[i] = v;
  } else if (DT == FDPO_BFLOAT16) {
    ((uint16_t*)p)[i] = floatToBf16(v);
  } else {
    ((uint16_t*)p)[i] = floatToF16(v);
  }
}
