#include "runtime/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "runtime/error.h"
#include "runtime/kernels_internal.h"

namespace galleon {
namespace {

using kern::BlockQ4_0;
using kern::BlockQ4_1;
using kern::BlockQ4_K;
using kern::BlockQ5_0;
using kern::BlockQ5_1;
using kern::BlockQ5_K;
using kern::BlockQ6_K;
using kern::BlockQ8_0;
using kern::BlockQ2_K;
using kern::BlockQ3_K;
using kern::BlockIQ4_NL;
using kern::BlockIQ4_XS;

float h2f(uint16_t h) { return fp16_to_f32(h); }

// ---- dequantization: ggml's formulas, operation for operation ----

void deq_q4_0(const BlockQ4_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = float((b[i].qs[j] & 0x0F) - 8) * d;
      y[j + 16] = float((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void deq_q4_1(const BlockQ4_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = float(b[i].qs[j] & 0x0F) * d + m;
      y[j + 16] = float(b[i].qs[j] >> 4) * d + m;
    }
  }
}

void deq_q5_0(const BlockQ5_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = h2f(b[i].d);
    const uint32_t qh = kern::load_u32(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int h0 = int(((qh >> j) << 4) & 0x10), h1 = int((qh >> (j + 12)) & 0x10);
      y[j] = float(((b[i].qs[j] & 0x0F) | h0) - 16) * d;
      y[j + 16] = float(((b[i].qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

void deq_q5_1(const BlockQ5_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    const uint32_t qh = kern::load_u32(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int h0 = int(((qh >> j) << 4) & 0x10), h1 = int((qh >> (j + 12)) & 0x10);
      y[j] = float((b[i].qs[j] & 0x0F) | h0) * d + m;
      y[j + 16] = float((b[i].qs[j] >> 4) | h1) * d + m;
    }
  }
}

void deq_q8_0(const BlockQ8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < 32; ++j) y[j] = float(b[i].qs[j]) * d;
  }
}

void deq_q4_k(const BlockQ4_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0; j < 8; j += 2, q += 32) {
      int sc, m;
      kern::scale_min_k4(j, b[i].scales, &sc, &m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      kern::scale_min_k4(j + 1, b[i].scales, &sc, &m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    }
  }
}

void deq_q5_k(const BlockQ5_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    const uint8_t* ql = b[i].qs;
    const uint8_t* qh = b[i].qh;
    unsigned u1 = 1, u2 = 2;
    for (int j = 0; j < 8; j += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
      int sc, m;
      kern::scale_min_k4(j, b[i].scales, &sc, &m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      kern::scale_min_k4(j + 1, b[i].scales, &sc, &m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * float((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
  }
}

void deq_q6_k(const BlockQ6_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = h2f(b[i].d);
    const uint8_t* ql = b[i].ql;
    const uint8_t* qh = b[i].qh;
    const int8_t* sc = b[i].scales;
    for (int h = 0; h < 2; ++h, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * float(sc[is + 0]) * float(q1);
        y[l + 32] = d * float(sc[is + 2]) * float(q2);
        y[l + 64] = d * float(sc[is + 4]) * float(q3);
        y[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
    }
  }
}

// Q2_K / Q3_K: element e = 128n + 32j + 16h + l (n < 2, j < 4, h < 2, l < 16) is in sub-block
// e / 16; its 2 low bits are bits 2j..2j+1 of qs[32n + 16h + l].
void deq_q2_k(const BlockQ2_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int e = 0; e < 256; ++e) {
      const int sc = b[i].scales[e / 16];
      const int q = (b[i].qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
      const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
      y[256 * i + e] = dl * float(q) - ml;
    }
  }
}

// Q3_K: as Q2_K, minus 4 where bit 4n + j of hmask[16h + l] is clear.
void deq_q3_k(const BlockQ3_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = h2f(b[i].d);
    for (int e = 0; e < 256; ++e) {
      const int n = e / 128, j = (e / 32) % 4, l = e % 32;
      const int lo = (b[i].qs[32 * n + l] >> (2 * j)) & 3;
      const int q = lo - (((b[i].hmask[l] >> (4 * n + j)) & 1) ? 0 : 4);
      const float dl = d * float(kern::q3_k_scale(e / 16, b[i].scales) - 32);
      y[256 * i + e] = dl * float(q);
    }
  }
}

void deq_iq4_nl(const BlockIQ4_NL* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * float(kern::kIq4Values[b[i].qs[j] & 0xF]);
      y[j + 16] = d * float(kern::kIq4Values[b[i].qs[j] >> 4]);
    }
  }
}

// IQ4_XS: sub-block j (32 elements) as an IQ4_NL block of scale d * (its scale - 32).
void deq_iq4_xs(const BlockIQ4_XS* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < 8; ++j, y += 32) {
      const float dl = d * float(kern::iq4_xs_scale(j, b[i].scales_h, b[i].scales_l) - 32);
      const uint8_t* q = b[i].qs + 16 * j;
      for (int l = 0; l < 16; ++l) {
        y[l] = dl * float(kern::kIq4Values[q[l] & 0xF]);
        y[l + 16] = dl * float(kern::kIq4Values[q[l] >> 4]);
      }
    }
  }
}

// ---- reference quantization ----

int round_clamp(float v, int lo, int hi) {
  if (!(v == v)) return lo < 0 ? 0 : lo;
  float r = std::nearbyint(v);  // default rounding mode: nearest even
  if (r < float(lo)) return lo;
  if (r > float(hi)) return hi;
  return int(r);
}

// Value of largest magnitude (sign kept) and the min/max of x[0..n).
float max_abs_signed(const float* x, int n) {
  float best = 0.0f, amax = 0.0f;
  for (int j = 0; j < n; ++j)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), best = x[j];
  return best;
}
void min_max(const float* x, int n, float* mn, float* mx) {
  *mn = x[0], *mx = x[0];
  for (int j = 1; j < n; ++j) {
    if (x[j] < *mn) *mn = x[j];
    if (x[j] > *mx) *mx = x[j];
  }
}
float inv(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

void q_q8_0(const float* x, BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    const float d = std::fabs(max_abs_signed(x, 32)) / 127.0f;
    b[i].d = f32_to_fp16(d);
    const float id = inv(d);
    for (int j = 0; j < 32; ++j) b[i].qs[j] = int8_t(round_clamp(x[j] * id, -127, 127));
  }
}

// Symmetric 4/5-bit: d = max / -half, q = round(x/d) + half in [0, 2*half-1].
void q_sym(const float* x, int half, float* d_out, uint8_t* q) {
  const float d = max_abs_signed(x, 32) / float(-half);
  *d_out = d;
  const float id = inv(fp16_to_f32(f32_to_fp16(d)));
  for (int j = 0; j < 32; ++j) q[j] = uint8_t(round_clamp(x[j] * id, -half, half - 1) + half);
}
// Asymmetric: x = q*d + m, q in [0, levels].
void q_asym(const float* x, int levels, float* d_out, float* m_out, uint8_t* q) {
  float mn, mx;
  min_max(x, 32, &mn, &mx);
  const float d = (mx - mn) / float(levels);
  *d_out = d, *m_out = mn;
  const float dq = fp16_to_f32(f32_to_fp16(d)), mq = fp16_to_f32(f32_to_fp16(mn));
  const float id = inv(dq);
  for (int j = 0; j < 32; ++j) q[j] = uint8_t(round_clamp((x[j] - mq) * id, 0, levels));
}

void pack_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}
void pack_high_bits(const uint8_t* q, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= uint32_t((q[j] >> 4) & 1) << j;
  std::memcpy(qh, &h, 4);
}

void q_q4_0(const float* x, BlockQ4_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float d;
    uint8_t q[32];
    q_sym(x, 8, &d, q);
    b[i].d = f32_to_fp16(d);
    pack_nibbles(q, b[i].qs);
  }
}
void q_q5_0(const float* x, BlockQ5_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float d;
    uint8_t q[32];
    q_sym(x, 16, &d, q);
    b[i].d = f32_to_fp16(d);
    pack_nibbles(q, b[i].qs);
    pack_high_bits(q, b[i].qh);
  }
}
void q_q4_1(const float* x, BlockQ4_1* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float d, m;
    uint8_t q[32];
    q_asym(x, 15, &d, &m, q);
    b[i].d = f32_to_fp16(d), b[i].m = f32_to_fp16(m);
    pack_nibbles(q, b[i].qs);
  }
}
void q_q5_1(const float* x, BlockQ5_1* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float d, m;
    uint8_t q[32];
    q_asym(x, 31, &d, &m, q);
    b[i].d = f32_to_fp16(d), b[i].m = f32_to_fp16(m);
    pack_nibbles(q, b[i].qs);
    pack_high_bits(q, b[i].qh);
  }
}

// K-quant super-block of 256 with 8 sub-blocks of 32: x ~ d*sc_j*q - dmin*m_j, q in [0, levels].
// Produces packed scales (get_scale_min_k4 layout) and q[256].
void q_kmin(const float* x, int levels, uint16_t* d_out, uint16_t* dmin_out, uint8_t* scales,
            uint8_t* q) {
  float scale[8], mins[8], max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    float mn, mx;
    min_max(x + 32 * j, 32, &mn, &mx);
    if (mn > 0.0f) mn = 0.0f;
    scale[j] = (mx - mn) / float(levels);
    mins[j] = -mn;
    if (scale[j] > max_scale) max_scale = scale[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  *d_out = f32_to_fp16(max_scale / 63.0f);
  *dmin_out = f32_to_fp16(max_min / 63.0f);
  const float d = fp16_to_f32(*d_out), dmin = fp16_to_f32(*dmin_out);
  int sc[8], mq[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = round_clamp(scale[j] * inv(d), 0, 63);
    mq[j] = round_clamp(mins[j] * inv(dmin), 0, 63);
    const float ds = d * float(sc[j]), dm = dmin * float(mq[j]);
    for (int l = 0; l < 32; ++l)
      q[32 * j + l] = uint8_t(round_clamp((x[32 * j + l] + dm) * inv(ds), 0, levels));
  }
  for (int k = 0; k < 4; ++k) {
    scales[k] = uint8_t(sc[k] | ((sc[k + 4] >> 4) << 6));
    scales[k + 4] = uint8_t(mq[k] | ((mq[k + 4] >> 4) << 6));
    scales[k + 8] = uint8_t((sc[k + 4] & 15) | ((mq[k + 4] & 15) << 4));
  }
}

void q_q4_k(const float* x, BlockQ4_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    uint8_t q[256];
    q_kmin(x, 15, &b[i].d, &b[i].dmin, b[i].scales, q);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        b[i].qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void q_q5_k(const float* x, BlockQ5_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    uint8_t q[256];
    q_kmin(x, 31, &b[i].d, &b[i].dmin, b[i].scales, q);
    std::memset(b[i].qh, 0, 32);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        b[i].qs[32 * c + l] = uint8_t((lo & 15) | ((hi & 15) << 4));
        b[i].qh[l] = uint8_t(b[i].qh[l] | ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
  }
}

void q_q6_k(const float* x, BlockQ6_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    float scale[16], max_abs = 0.0f;
    for (int j = 0; j < 16; ++j) {
      scale[j] = max_abs_signed(x + 16 * j, 16) / -32.0f;
      if (std::fabs(scale[j]) > max_abs) max_abs = std::fabs(scale[j]);
    }
    b[i].d = f32_to_fp16(max_abs / 127.0f);
    const float d = fp16_to_f32(b[i].d);
    uint8_t q[256];
    for (int j = 0; j < 16; ++j) {
      const int sc = round_clamp(scale[j] * inv(d), -128, 127);
      b[i].scales[j] = int8_t(sc);
      const float id = inv(d * float(sc));
      for (int l = 0; l < 16; ++l)
        q[16 * j + l] = uint8_t(round_clamp(x[16 * j + l] * id, -32, 31) + 32);
    }
    std::memset(b[i].qh, 0, 64);
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, k = (e % 128) / 32, l = e % 32;
      uint8_t& ql = b[i].ql[64 * h + 32 * (k & 1) + l];
      ql = uint8_t(k < 2 ? ((ql & 0xF0) | (q[e] & 15)) : ((ql & 0x0F) | ((q[e] & 15) << 4)));
      b[i].qh[32 * h + l] = uint8_t(b[i].qh[32 * h + l] | ((q[e] >> 4) << (2 * k)));
    }
  }
}

// Q2_K: sub-blocks of 16, x ~ d*sc_j*q - dmin*m_j with 4-bit sc_j, m_j and q in [0, 3].
void q_q2_k(const float* x, BlockQ2_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    float scale[16], mins[16], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 16; ++j) {
      float mn, mx;
      min_max(x + 16 * j, 16, &mn, &mx);
      if (mn > 0.0f) mn = 0.0f;
      scale[j] = (mx - mn) / 3.0f, mins[j] = -mn;
      max_scale = std::max(max_scale, scale[j]), max_min = std::max(max_min, mins[j]);
    }
    b[i].d = f32_to_fp16(max_scale / 15.0f);
    b[i].dmin = f32_to_fp16(max_min / 15.0f);
    const float d = fp16_to_f32(b[i].d), dmin = fp16_to_f32(b[i].dmin);
    std::memset(b[i].qs, 0, 64);
    for (int j = 0; j < 16; ++j) {
      const int sc = round_clamp(scale[j] * inv(d), 0, 15);
      const int m = round_clamp(mins[j] * inv(dmin), 0, 15);
      b[i].scales[j] = uint8_t(sc | (m << 4));
      const float ds = d * float(sc), dm = dmin * float(m);
      for (int k = 0; k < 16; ++k) {
        const int e = 16 * j + k;
        const int q = round_clamp((x[e] + dm) * inv(ds), 0, 3);
        b[i].qs[32 * (e / 128) + e % 32] |= uint8_t(q << (2 * ((e / 32) % 4)));
      }
    }
  }
}

// Q3_K: sub-blocks of 16, x ~ d*(sc_j)*q with sc_j in [-32, 31] and q in [-4, 3].
void q_q3_k(const float* x, BlockQ3_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    float scale[16], max_abs = 0.0f;
    for (int j = 0; j < 16; ++j) {
      scale[j] = max_abs_signed(x + 16 * j, 16) / -4.0f;
      max_abs = std::max(max_abs, std::fabs(scale[j]));
    }
    b[i].d = f32_to_fp16(max_abs / 32.0f);
    const float d = fp16_to_f32(b[i].d);
    std::memset(b[i].scales, 0, 12);
    std::memset(b[i].qs, 0, 64);
    std::memset(b[i].hmask, 0, 32);
    for (int j = 0; j < 16; ++j) {
      const int sc = round_clamp(scale[j] * inv(d), -32, 31), u = sc + 32;
      b[i].scales[j % 8] |= uint8_t((u & 15) << (4 * (j / 8)));
      b[i].scales[8 + j % 4] |= uint8_t((u >> 4) << (2 * (j / 4)));
      const float id = inv(d * float(sc));
      for (int k = 0; k < 16; ++k) {
        const int e = 16 * j + k, n = e / 128, c = (e / 32) % 4, l = e % 32;
        const int q = round_clamp(x[e] * id, -4, 3) + 4;
        b[i].qs[32 * n + l] |= uint8_t((q & 3) << (2 * c));
        b[i].hmask[l] |= uint8_t((q >> 2) << (4 * n + c));
      }
    }
  }
}

// The index of the IQ4 value nearest v (the lower on a tie).
uint8_t iq4_index(float v) {
  int best = 0;
  for (int k = 1; k < 16; ++k)
    if (std::fabs(v - float(kern::kIq4Values[k])) < std::fabs(v - float(kern::kIq4Values[best])))
      best = k;
  return uint8_t(best);
}
// 32 elements as IQ4 indices of scale d (nibbles as Q4_0's).
void q_iq4_32(const float* x, float d, uint8_t* qs) {
  const float id = inv(d);
  for (int l = 0; l < 16; ++l)
    qs[l] = uint8_t(iq4_index(x[l] * id) | (iq4_index(x[l + 16] * id) << 4));
}

void q_iq4_nl(const float* x, BlockIQ4_NL* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    b[i].d = f32_to_fp16(max_abs_signed(x, 32) / -127.0f);
    q_iq4_32(x, fp16_to_f32(b[i].d), b[i].qs);
  }
}

// IQ4_XS: sub-block scales d * (s_j - 32), s_j 6 bits.
void q_iq4_xs(const float* x, BlockIQ4_XS* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 256) {
    float scale[8], max_abs = 0.0f;
    for (int j = 0; j < 8; ++j) {
      scale[j] = max_abs_signed(x + 32 * j, 32) / -127.0f;
      max_abs = std::max(max_abs, std::fabs(scale[j]));
    }
    b[i].d = f32_to_fp16(max_abs / 32.0f);
    const float d = fp16_to_f32(b[i].d);
    b[i].scales_h = 0;
    std::memset(b[i].scales_l, 0, 4);
    for (int j = 0; j < 8; ++j) {
      const int sc = round_clamp(scale[j] * inv(d), -32, 31), u = sc + 32;
      b[i].scales_l[j / 2] |= uint8_t((u & 15) << (4 * (j % 2)));
      b[i].scales_h = uint16_t(b[i].scales_h | ((u >> 4) << (2 * j)));
      q_iq4_32(x + 32 * j, d * float(sc), b[i].qs + 16 * j);
    }
  }
}

int64_t blocks_of(GgmlType t, int64_t n) {
  const TypeTraits* tr = type_traits(t);
  if (!tr || !tr->runnable)
    fail(ErrorKind::Unsupported, std::string("no conversion for tensor type ") + type_name(t));
  if (n < 0 || n % tr->block_elems != 0)
    fail(ErrorKind::Invalid, "row of " + std::to_string(n) + " elements is not a whole number of " +
                                 tr->name + " blocks");
  return n / tr->block_elems;
}

}  // namespace

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  const int64_t nb = blocks_of(t, n);
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(kern::load_u16(static_cast<const uint16_t*>(src) + i));
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(kern::load_u16(static_cast<const uint16_t*>(src) + i));
      return;
    case GgmlType::Q4_0: return deq_q4_0(static_cast<const BlockQ4_0*>(src), dst, nb);
    case GgmlType::Q4_1: return deq_q4_1(static_cast<const BlockQ4_1*>(src), dst, nb);
    case GgmlType::Q5_0: return deq_q5_0(static_cast<const BlockQ5_0*>(src), dst, nb);
    case GgmlType::Q5_1: return deq_q5_1(static_cast<const BlockQ5_1*>(src), dst, nb);
    case GgmlType::Q8_0: return deq_q8_0(static_cast<const BlockQ8_0*>(src), dst, nb);
    case GgmlType::Q4_K: return deq_q4_k(static_cast<const BlockQ4_K*>(src), dst, nb);
    case GgmlType::Q5_K: return deq_q5_k(static_cast<const BlockQ5_K*>(src), dst, nb);
    case GgmlType::Q6_K: return deq_q6_k(static_cast<const BlockQ6_K*>(src), dst, nb);
    case GgmlType::Q2_K: return deq_q2_k(static_cast<const BlockQ2_K*>(src), dst, nb);
    case GgmlType::Q3_K: return deq_q3_k(static_cast<const BlockQ3_K*>(src), dst, nb);
    case GgmlType::IQ4_NL: return deq_iq4_nl(static_cast<const BlockIQ4_NL*>(src), dst, nb);
    case GgmlType::IQ4_XS: return deq_iq4_xs(static_cast<const BlockIQ4_XS*>(src), dst, nb);
    default: break;
  }
  fail(ErrorKind::Unsupported, std::string("no dequantization for ") + type_name(t));
}

void quantize_row(GgmlType t, const float* src, void* dst, int64_t n) {
  const int64_t nb = blocks_of(t, n);
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_fp16(src[i]);
        std::memcpy(static_cast<uint16_t*>(dst) + i, &h, 2);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(src[i]);
        std::memcpy(static_cast<uint16_t*>(dst) + i, &h, 2);
      }
      return;
    case GgmlType::Q4_0: return q_q4_0(src, static_cast<BlockQ4_0*>(dst), nb);
    case GgmlType::Q4_1: return q_q4_1(src, static_cast<BlockQ4_1*>(dst), nb);
    case GgmlType::Q5_0: return q_q5_0(src, static_cast<BlockQ5_0*>(dst), nb);
    case GgmlType::Q5_1: return q_q5_1(src, static_cast<BlockQ5_1*>(dst), nb);
    case GgmlType::Q8_0: return q_q8_0(src, static_cast<BlockQ8_0*>(dst), nb);
    case GgmlType::Q4_K: return q_q4_k(src, static_cast<BlockQ4_K*>(dst), nb);
    case GgmlType::Q5_K: return q_q5_k(src, static_cast<BlockQ5_K*>(dst), nb);
    case GgmlType::Q6_K: return q_q6_k(src, static_cast<BlockQ6_K*>(dst), nb);
    case GgmlType::Q2_K: return q_q2_k(src, static_cast<BlockQ2_K*>(dst), nb);
    case GgmlType::Q3_K: return q_q3_k(src, static_cast<BlockQ3_K*>(dst), nb);
    case GgmlType::IQ4_NL: return q_iq4_nl(src, static_cast<BlockIQ4_NL*>(dst), nb);
    case GgmlType::IQ4_XS: return q_iq4_xs(src, static_cast<BlockIQ4_XS*>(dst), nb);
    default: break;
  }
  fail(ErrorKind::Unsupported, std::string("no quantization for ") + type_name(t));
}

}  // namespace galleon
