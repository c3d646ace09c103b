// The CUDA kernels' arithmetic, emulated on the CPU: runtime/cuda/canon_device.h compiled with
// g++, a warp modelled as 32 lanes and __shfl_down_sync's tree, compared bit for bit with the
// scalar reference (kern::ref_dot, the scalar quantize_act, canon::expf/silu/reduce_lanes).
// Runs in every build; the GPU itself is checked by cuda_test (GALLEON_CUDA builds).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/canon_math.h"
#include "runtime/cuda/attention.h"
#include "runtime/cuda/canon_device.h"
#include "runtime/ggml_type.h"
#include "runtime/cuda/forward.h"
#include "runtime/cuda/mma_tile.h"
#include "runtime/cuda/plain_tile.h"
#include "runtime/cuda/steps.h"
#include "runtime/engine.h"
#include "runtime/gguf.h"
#include "runtime/synth.h"
#include "runtime/kernels.h"
#include "tests/kernel_data.h"
#include "tests/synth_cases.h"
#include "tests/test_support.h"

namespace galleon {
namespace {

using namespace testing::kernel_data;

uint32_t bits(float f) { return cdev::to_bits(f); }


// __shfl_down_sync(full, v, s): lane i reads lane i + s, or itself when i + s >= 32.
float emulate_warp_tree(const float (&lane)[32]) {
  float v[32];
  std::memcpy(v, lane, sizeof v);
  for (int s = 16; s >= 1; s >>= 1) {
    float next[32];
    for (int i = 0; i < 32; ++i) next[i] = v[i] + (i + s < 32 ? v[i + s] : v[i]);
    std::memcpy(v, next, sizeof v);
  }
  return v[0];
}

// A warp computing one dot product (the matmul kernel's inner step).
template <class LaneFn>
float emulate_warp_dot(LaneFn lane_fn) {
  float lane[32];
  for (int l = 0; l < 32; ++l) lane[l] = lane_fn(l);
  return cdev::canonical_nan(emulate_warp_tree(lane));
}

// The matmul kernel's warp: nt <= 4 tokens of one weight row (act rows arb bytes apart).
std::vector<float> emulate_dots(GgmlType t, int64_t n, const void* w, const void* act, size_t arb,
                                int nt) {
  float lanes[32][4];
  const bool ok = cdev::with_type(t, [&]<GgmlType T>() {
    for (int l = 0; l < 32; ++l) cdev::lane_dots<T>(n, w, act, arb, nt, l, lanes[l]);
  });
  EXPECT_TRUE(ok);
  std::vector<float> out;
  for (int k = 0; k < nt; ++k) {
    float v[32];
    for (int l = 0; l < 32; ++l) v[l] = lanes[l][k];
    out.push_back(cdev::canonical_nan(emulate_warp_tree(v)));
  }
  return out;
}

void emulate_quantize(GgmlType t, const float* x, void* dst, int64_t n) {
  switch (kern::act_format(t)) {
    case kern::ActFormat::F32: std::memcpy(dst, x, size_t(n) * 4); return;
    case kern::ActFormat::A8:
      for (int64_t b = 0; b < n / 32; ++b)
        cdev::quantize_a8_block(x + 32 * b, static_cast<kern::A8Block*>(dst) + b);
      return;
    case kern::ActFormat::A8K:
      for (int64_t b = 0; b < n / 256; ++b)
        cdev::quantize_a8k_block(x + 256 * b, static_cast<kern::A8KBlock*>(dst) + b);
      return;
  }
}

TEST(CudaEmu, HalfAndBf16ConversionsAreExact) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    ASSERT_EQ(bits(cdev::half_to_float(h)), bits(fp16_to_f32(uint16_t(h)))) << h;
    ASSERT_EQ(bits(cdev::bf16_to_float(h)), bits(bf16_to_f32(uint16_t(h)))) << h;
  }
}

TEST(CudaEmu, ExpAndSiluMatchCanon) {
  // The polynomial constants as the reference writes them.
  EXPECT_EQ(bits(0x1.a01a02p-13f), bits(1.0f / 5040.0f));
  EXPECT_EQ(bits(0x1.6c16c2p-10f), bits(1.0f / 720.0f));
  EXPECT_EQ(bits(0x1.111112p-7f), bits(1.0f / 120.0f));
  EXPECT_EQ(bits(0x1.555556p-5f), bits(1.0f / 24.0f));
  EXPECT_EQ(bits(0x1.555556p-3f), bits(1.0f / 6.0f));
  std::mt19937 rng(7);
  std::vector<float> xs;
  for (uint32_t s : kSpecial) xs.push_back(cdev::from_bits(s)), xs.push_back(-cdev::from_bits(s));
  for (float x : {88.72283935546875f, 88.7228317f, -103.972084045410156f, -103.97207f, -87.3f,
                  -126.5f, -149.9f, 0.5f, -0.5f, 1e-30f})
    xs.push_back(x);
  for (int i = 0; i < 200000; ++i) xs.push_back(std::uniform_real_distribution<float>(-110, 95)(rng));
  for (int i = 0; i < 100000; ++i) xs.push_back(cdev::from_bits(uint32_t(rng())));
  for (float x : xs) {
    ASSERT_EQ(bits(cdev::expf(x)), bits(canon::expf(x))) << x;
    ASSERT_EQ(bits(cdev::silu(x)), bits(canon::silu(x))) << x;
  }
}

TEST(CudaEmu, ActivationQuantizationMatchesScalar) {
  const kern::Ops& ref = kern::ops(kern::Isa::Scalar);
  std::mt19937 rng(11);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_K})
    for (int rep = 0; rep < 300; ++rep) {
      const int64_t n = 256 * (1 + int64_t(rng() % 5));
      const std::vector<float> x = make_activations(rng, n, rep % 2 == 1);
      const size_t bytes = kern::act_row_bytes(t, n);
      std::vector<uint8_t> a(bytes), b(bytes, 0xAB);
      ref.quantize_act(t, x.data(), a.data(), n);
      emulate_quantize(t, x.data(), b.data(), n);
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), bytes)) << type_name(t) << " rep " << rep;
    }
}

// Every type, block counts that are and are not multiples of 32, special values.
TEST(CudaEmu, WarpDotMatchesRefDotForEveryType) {
  const kern::Ops& ref = kern::ops(kern::Isa::Scalar);
  std::mt19937 rng(3);
  for (GgmlType t : kTypes) {
    const int64_t be = type_traits(t)->block_elems;
    const int64_t counts[] = {1, 5, 31, 32, 33, 64, 70, 97};
    int nan_results = 0, compared = 0;
    for (int rep = 0; rep < 24; ++rep) {
      const int64_t nblocks = counts[size_t(rep) % std::size(counts)] * (be == 1 ? 9 : 1);
      const int64_t n = nblocks * (be == 1 ? 1 : be);
      const int64_t rows = 4;
      const std::vector<uint8_t> w = make_weights(rng, t, n, rows);
      const int nt = 1 + rep % 4;  // tokens per warp
      const size_t arb = kern::act_row_bytes(t, n);
      std::vector<uint8_t> act(arb * size_t(nt));
      for (int k = 0; k < nt; ++k) {
        const std::vector<float> x = make_activations(rng, n, (rep + k) % 3 == 2);
        ref.quantize_act(t, x.data(), act.data() + size_t(k) * arb, n);
      }
      const size_t rb = w.size() / size_t(rows);
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* wr = w.data() + size_t(r) * rb;
        const std::vector<float> got = emulate_dots(t, n, wr, act.data(), arb, nt);
        for (int k = 0; k < nt; ++k) {
          const float want = kern::ref_dot(t, n, wr, act.data() + size_t(k) * arb);
          ASSERT_EQ(bits(got[size_t(k)]), bits(want))
              << type_name(t) << " n=" << n << " row " << r << " token " << k << " rep " << rep;
          nan_results += want != want;
          ++compared;
        }
      }
    }
    EXPECT_LT(nan_results, compared) << type_name(t) << ": every result was NaN";
  }
}

// The prefill kernel's tile (cdev::lane_dots_tile): several rows and tokens per warp, partial
// tiles included, each (row, token) equal to the reference dot product.
TEST(CudaEmu, WarpTileMatchesRefDotForEveryType) {
  constexpr int R = 3, K = 8;
  const kern::Ops& ref = kern::ops(kern::Isa::Scalar);
  std::mt19937 rng(13);
  for (GgmlType t : kTypes) {
    const int64_t be = type_traits(t)->block_elems;
    for (int rep = 0; rep < 6; ++rep) {
      const int64_t nblocks = (rep % 2 == 0 ? 37 : 64) * (be == 1 ? 5 : 1);
      const int64_t n = nblocks * (be == 1 ? 1 : be);
      const int nr = 1 + rep % R, nt = 1 + (rep * 3) % K;
      const std::vector<uint8_t> w = make_weights(rng, t, n, R);
      const size_t rb = w.size() / size_t(R), arb = kern::act_row_bytes(t, n);
      std::vector<uint8_t> act(arb * size_t(K));
      for (int k = 0; k < nt; ++k)
        ref.quantize_act(t, make_activations(rng, n, k == 2).data(), act.data() + size_t(k) * arb, n);
      float lanes[32][R][K];
      ASSERT_TRUE(cdev::with_type(t, [&]<GgmlType T>() {
        for (int l = 0; l < 32; ++l)
          cdev::lane_dots_tile<T, R, K>(n, w.data(), rb, nr, act.data(), arb, nt, l, lanes[l]);
      }));
      for (int r = 0; r < nr; ++r)
        for (int k = 0; k < nt; ++k) {
          float v[32];
          for (int l = 0; l < 32; ++l) v[l] = lanes[l][r][k];
          const float want =
              kern::ref_dot(t, n, w.data() + size_t(r) * rb, act.data() + size_t(k) * arb);
          ASSERT_EQ(bits(cdev::canonical_nan(emulate_warp_tree(v))), bits(want))
              << type_name(t) << " n=" << n << " row " << r << " token " << k;
        }
    }
  }
}

// session.cu's staged activations (variant t4) for one lane: begin(i, next) copies block i of
// the tile's tokens (the last token past the end) to a buffer that at() then reads, and checks
// that i is the block announced as next by the begin() before (block 0 first).
template <class Block>
class CopiedActs {
 public:
  static constexpr bool kStagesWeights = false;
  CopiedActs(const cdev::GemmArgs& p, int64_t t0, int64_t tokens) : p_(p), t0_(t0), copy_(size_t(tokens)) {}
  void begin(int64_t i, int64_t next) {
    EXPECT_EQ(i, expected_) << "a block other than the one fetched";
    for (size_t k = 0; k < copy_.size(); ++k) {
      const int64_t t = std::min<int64_t>(t0_ + int64_t(k), p_.ntok - 1);
      std::memcpy(&copy_[k], p_.act + size_t(t) * p_.arb + size_t(i) * sizeof(Block), sizeof(Block));
    }
    current_ = i;
    expected_ = next;
  }
  const Block& at(int64_t k, int64_t i) const {
    EXPECT_EQ(i, current_);
    return copy_[size_t(k)];
  }

 private:
  cdev::GemmArgs p_;
  int64_t t0_, current_ = -1, expected_ = 0;
  std::vector<Block> copy_;
};

// Result e of token group j of the warp tile at (r0, t0), lane `lane`, to y[t * n_out + r]
// (counted in *writes), unless its row or token is past the end (session.cu's store_mma_result).
void store_mma_result(const cdev::mma::Args& p, int64_t r0, int64_t t0, int lane, int j, int e,
                      float v, float* y, std::vector<int>* writes) {
  const int64_t r = r0 + cdev::mma::result_row(lane, e);
  const int64_t t = t0 + cdev::mma::result_token(lane, j, e);
  if (r >= p.n_out || t >= p.ntok) return;
  y[t * p.n_out + r] = cdev::canonical_nan(v);
  if (writes) ++(*writes)[size_t(t * p.n_out + r)];
}

// matmul_mma_kernel emulated: every warp tile (cdev::mma::Tile<T, NT>) of the rows and tokens,
// each lane's results to y[t * n_out + r] (and counted in *writes when given), the counter's
// partial sums in registers or (Shared) in a warp's shared-memory store, the activations read
// from their rows or (Staged) from a copy of each block (as matmul_mma_staged_kernel, with
// level 0 of the counter in registers). Packed (Staged, 32-element types): the weights from
// their packed copy (cdev::mma::pack_lane, made here) of pack_rows rows (p.n_out's and more: a
// group's first matrix), as variant u4. False when the type has no tensor-core path.
template <int NT = 2, bool Shared = false, bool Staged = false, bool Packed = false>
bool emulate_mma_matmul(GgmlType type, cdev::mma::Args p, float* y,
                        std::vector<int>* writes = nullptr, int64_t pack_rows = 0) {
  std::vector<float> store(cdev::mma::SharedPending<NT>::kFloats, 0.0f);
  bool has_path = false;
  cdev::with_type(type, [&]<GgmlType T>() {
    if constexpr (cdev::mma::kHasPath<T>) {
      has_path = true;
      constexpr bool kPack = Packed && cdev::mma::kPacks<T>;
      std::vector<uint32_t> packed;
      if constexpr (kPack) {
        cdev::GemmArgs raw = p;
        raw.n_out = pack_rows > 0 ? pack_rows : p.n_out;
        const size_t nq = cdev::mma::pack_quant_words<T>(raw.n_out, p.n);
        packed.assign(nq + cdev::mma::pack_scale_words<T>(raw.n_out, p.n), 0xDEADBEEFu);
        for (int64_t gr = 0; gr < cdev::mma::pack_groups(raw.n_out); ++gr)
          for (int64_t i = 0; i < p.n / 32; ++i)
            for (int lane = 0; lane < 32; ++lane)
              cdev::mma::pack_lane<T>(raw, gr, i, lane, packed.data(), packed.data() + nq);
        p.pq = packed.data();
        p.ps = packed.data() + nq;
        EXPECT_EQ(std::count(packed.begin(), packed.end(), 0xDEADBEEFu), 0) << "words not packed";
      }
      for (int64_t r0 = 0; r0 < p.n_out; r0 += cdev::mma::kRows)
        for (int64_t t0 = 0; t0 < p.ntok; t0 += 8 * NT)
          for (int lane = 0; lane < 32; ++lane) {
            float out[NT][4];
            if constexpr (Staged) {
              using Acts = CopiedActs<cdev::mma::ActBlock<T>>;
              const cdev::mma::Tile<T, NT, Acts, false, kPack> tile(p, r0, lane,
                                                                    Acts(p, t0, 8 * NT));
              cdev::mma::SharedPending<NT, 1> pending{store.data(), lane, {}};
              tile.run(out, pending);
            } else if constexpr (Shared) {
              const cdev::mma::Tile<T, NT> tile(p, r0, t0, lane);
              cdev::mma::SharedPending<NT> pending{store.data(), lane, {}};
              tile.run(out, pending);
            } else {
              const cdev::mma::Tile<T, NT> tile(p, r0, t0, lane);
              tile.run(out);
            }
            for (int j = 0; j < NT; ++j)
              for (int e = 0; e < 4; ++e)
                store_mma_result(p, r0, t0, lane, j, e, out[j][e], y, writes);
          }
    }
  });
  return has_path;
}

// matmul_mma_split_kernel emulated: for each tile, warp w's subtree (Tile::run_leaves over the
// leaves w * 32 / S ..) for every lane, then each result's S subtrees joined
// (cdev::mma::join_subtrees) and written to y[t * n_out + r] (counted in *writes).
template <int NT, int S, bool Pairs = false>
bool emulate_mma_split(GgmlType type, const cdev::mma::Args& p, float* y,
                       std::vector<int>* writes = nullptr) {
  constexpr int kLevels = cdev::mma::kSplitLevels<S>;
  using Pending = cdev::mma::SharedPending<NT, 0, kLevels>;
  std::vector<float> store(Pending::kFloats, 0.0f);
  bool has_path = false;
  cdev::with_type(type, [&]<GgmlType T>() {
    if constexpr (cdev::mma::kHasPath<T>) {
      has_path = true;
      for (int64_t r0 = 0; r0 < p.n_out; r0 += cdev::mma::kRows)
        for (int64_t t0 = 0; t0 < p.ntok; t0 += 8 * NT) {
          std::vector<float> parts(static_cast<size_t>(S * 32 * NT * 4));  // [warp][lane][j][e]
          for (int w = 0; w < S; ++w)
            for (int lane = 0; lane < 32; ++lane) {
              float out[NT][4];
              const cdev::mma::Tile<T, NT, cdev::mma::GlobalActs<cdev::mma::ActBlock<T>>, Pairs>
                  tile(p, r0, t0, lane);
              Pending pending{store.data(), lane, {}};
              tile.template run_leaves<kLevels>(w << kLevels, out, pending);
              for (int c = 0; c < NT * 4; ++c)
                parts[(size_t(w) * 32 + size_t(lane)) * NT * 4 + size_t(c)] = out[c / 4][c % 4];
            }
          for (int lane = 0; lane < 32; ++lane)
            for (int j = 0; j < NT; ++j)
              for (int e = 0; e < 4; ++e) {
                float x[S];
                for (int w = 0; w < S; ++w)
                  x[w] = parts[(size_t(w) * 32 + size_t(lane)) * NT * 4 + size_t(j * 4 + e)];
                store_mma_result(p, r0, t0, lane, j, e, cdev::mma::join_subtrees<S>(x), y, writes);
              }
        }
    }
  });
  return has_path;
}

// matmul_plain_kernel on the CPU: for each block, round by round, every thread's staging
// (cdev::plain::Stager: fetch, then store, in the kernel's order) and every lane's accumulate;
// then each warp's paired tree in lock step (a lane's sends are made before any lane's v[k]
// changes, as a shuffle does). Counts each output written in *writes.
bool emulate_plain_matmul(GgmlType type, const cdev::GemmArgs& p, float* y,
                          std::vector<int>* writes = nullptr) {
  namespace pl = cdev::plain;
  bool has_path = false;
  cdev::with_type(type, [&]<GgmlType T>() {
    if constexpr (pl::kHasPath<T>) {
      has_path = true;
      struct Thread {
        typename pl::Stager<T>::Pieces q;
      };
      struct Warp {
        float v[32][pl::kOut];
      };
      auto stage = std::make_unique<pl::Stage>();
      std::vector<Thread> th(pl::kThreads);
      std::vector<Warp> v(pl::kWarps);
      const int64_t rounds = (p.n + pl::kChunk - 1) / pl::kChunk;
      for (int64_t r0 = 0; r0 < p.n_out; r0 += pl::kRows)
        for (int64_t t0 = 0; t0 < p.ntok; t0 += pl::kTokens) {
          auto stager = [&](int tid) { return pl::Stager<T>(p, r0, t0, tid); };
          for (int tid = 0; tid < pl::kThreads; ++tid)
            stager(tid).fetch(0, th[size_t(tid)].q);
          for (Warp& w : v) std::fill(&w.v[0][0], &w.v[0][0] + 32 * pl::kOut, 0.0f);
          for (int64_t c = 0; c < rounds; ++c) {
            for (int tid = 0; tid < pl::kThreads; ++tid)
              stager(tid).store(th[size_t(tid)].q, *stage);
            for (int tid = 0; tid < pl::kThreads; ++tid)
              if (c + 1 < rounds) stager(tid).fetch(c + 1, th[size_t(tid)].q);
            for (int warp = 0; warp < pl::kWarps; ++warp)
              for (int lane = 0; lane < 32; ++lane)
                pl::accumulate(*stage, warp, lane, v[size_t(warp)].v[lane]);
          }
          for (int warp = 0; warp < pl::kWarps; ++warp) {
            auto& L = v[size_t(warp)].v;
            for (int s = 16, count = pl::kOut; s >= 1; s >>= 1, count >>= 1)
              for (int k = 0; k < count / 2; ++k) {
                float sent[32];
                for (int l = 0; l < 32; ++l)
                  sent[l] = pl::pair_send(L[l][2 * k], L[l][2 * k + 1], l, s);
                for (int l = 0; l < 32; ++l)
                  L[l][k] = pl::pair_sum(L[l][2 * k], L[l][2 * k + 1], l, s, sent[l ^ s]);
              }
            for (int lane = 0; lane < 32; ++lane)
              for (int k = 0; k < pl::kOut / 32; ++k) {
                const int o = pl::tree_output(lane, k);
                const int64_t r = r0 + pl::warp_row(warp) + o / pl::kWarpTokens;
                const int64_t t = t0 + pl::warp_token(warp) + o % pl::kWarpTokens;
                if (r >= p.n_out || t >= p.ntok) continue;
                y[t * p.n_out + r] = cdev::canonical_nan(L[lane][k]);
                if (writes) ++(*writes)[size_t(t * p.n_out + r)];
              }
          }
        }
    }
  });
  return has_path;
}

// Each (row, token) of an emulated matmul (y: token-major, rows per token) written exactly once
// (seen) and bit-equal to the scalar reference of its weight row and activation row.
void expect_matmul_is_ref(GgmlType t, const cdev::GemmArgs& p, const std::vector<float>& got,
                          const std::vector<int>& seen) {
  for (int64_t k = 0; k < p.ntok; ++k)
    for (int64_t r = 0; r < p.n_out; ++r) {
      ASSERT_EQ(seen[size_t(k * p.n_out + r)], 1) << "row " << r << " token " << k;
      const float want = kern::ref_dot(t, p.n, p.w + size_t(r) * p.wrb, p.act + size_t(k) * p.arb);
      ASSERT_EQ(bits(got[size_t(k * p.n_out + r)]), bits(want))
          << type_name(t) << " n=" << p.n << " row " << r << " token " << k;
    }
}

// The plain types' prompt tile (cdev::plain): partial blocks of rows and tokens, row lengths
// below, at and above a round (128) and not multiples of 4 or 32, special values; each
// (row, token) written once and equal to the reference.
TEST(CudaEmu, PlainTileMatchesRefDot) {
  std::mt19937 rng(23);
  int types = 0;
  for (GgmlType t : kTypes) {
    bool has_path = false;
    cdev::with_type(t, [&]<GgmlType T>() { has_path = cdev::plain::kHasPath<T>; });
    if (!has_path) continue;
    ++types;
    for (int64_t n : {1, 5, 32, 128, 172, 300, 1024}) {
      const int64_t rows = n % 2 == 0 ? 37 : 32, ntok = n == 300 ? 17 : n % 2 == 0 ? 3 : 16;
      const std::vector<uint8_t> w = make_weights(rng, t, n, rows);
      const size_t rb = w.size() / size_t(rows), arb = size_t(n) * sizeof(float);
      std::vector<float> act;
      for (int64_t k = 0; k < ntok; ++k) {
        const std::vector<float> x = make_activations(rng, n, k % 5 == 2);
        act.insert(act.end(), x.begin(), x.end());
      }
      const auto* a = reinterpret_cast<const uint8_t*>(act.data());
      const cdev::GemmArgs args{w.data(), rb, n, rows, a, arb, ntok};
      std::vector<float> got(size_t(rows * ntok), -1.0f);
      std::vector<int> seen(got.size(), 0);
      ASSERT_TRUE(emulate_plain_matmul(t, args, got.data(), &seen));
      expect_matmul_is_ref(t, args, got, seen);
    }
  }
  EXPECT_EQ(types, 3);
}

// The paired tree's outputs: each of the 64 once, over the lanes' two slots.
TEST(CudaEmu, PairedTreeOutputsEachOnce) {
  std::vector<int> seen(cdev::plain::kOut, 0);
  for (int lane = 0; lane < 32; ++lane)
    for (int k = 0; k < cdev::plain::kOut / 32; ++k) ++seen[size_t(cdev::plain::tree_output(lane, k))];
  for (int o = 0; o < cdev::plain::kOut; ++o) EXPECT_EQ(seen[size_t(o)], 1) << o;
}

// The tensor-core prompt tile (cdev::mma::Tile, mma emulated as the PTX ISA lays out its
// fragments): 16 rows x 16 tokens per warp, partial tiles of rows and tokens, block counts
// below, at and above 32 and not multiples of it; each (row, token) equal to the reference.
TEST(CudaEmu, TensorCoreTileMatchesRefDot) {
  const kern::Ops& ref = kern::ops(kern::Isa::Scalar);
  std::mt19937 rng(17);
  int types = 0;
  for (GgmlType t : kTypes) {
    bool has_path = false;
    cdev::with_type(t, [&]<GgmlType T>() { has_path = cdev::mma::kHasPath<T>; });
    if (!has_path) continue;
    ++types;
    const int64_t be = type_traits(t)->block_elems;
    // 130 blocks: lanes with 5 blocks (p4 adds two pairs, then one alone).
    const int64_t counts[] = {1, 5, 33, 70, 130};
    for (int rep = 0; rep < 5; ++rep) {
      const int64_t n = counts[rep] * be;
      if (be == 256 && rep >= 3) continue;  // 33 blocks of 256 already cover the lanes
      const int64_t rows = rep % 2 == 0 ? 19 : 16, ntok = rep % 2 == 0 ? 21 : 3;
      const std::vector<uint8_t> w = make_weights(rng, t, n, rows);
      const size_t rb = w.size() / size_t(rows), arb = kern::act_row_bytes(t, n);
      std::vector<uint8_t> act(arb * size_t(ntok));
      for (int64_t k = 0; k < ntok; ++k)
        ref.quantize_act(t, make_activations(rng, n, k % 5 == 2).data(), act.data() + size_t(k) * arb, n);
      const cdev::mma::Args args_all{w.data(), rb, n, rows, act.data(), arb, ntok};
      // The kernel's variants (session.cu, GALLEON_CUDA_MMA): r2, s2, s4, t4, k4, k8, p4 and u4
      // (packed weights: the tile's rows, then its first 16 rows of a packed copy of all 19);
      // and the dot products split across 2 and 16 warps.
      for (int variant = 0; variant < 11; ++variant) {
        cdev::mma::Args args = args_all;
        if (variant == 10) args.n_out = 16;
        std::vector<float> got(size_t(args.n_out * ntok), -1.0f);
        std::vector<int> seen(got.size(), 0);
        float* y = got.data();
        const bool ran = variant == 0   ? emulate_mma_matmul<2, false>(t, args, y, &seen)
                         : variant == 1 ? emulate_mma_matmul<2, true>(t, args, y, &seen)
                         : variant == 2 ? emulate_mma_matmul<4, true>(t, args, y, &seen)
                         : variant == 3 ? emulate_mma_matmul<4, true, true>(t, args, y, &seen)
                         : variant == 4 ? emulate_mma_split<4, 4>(t, args, y, &seen)
                         : variant == 5 ? emulate_mma_split<4, 8>(t, args, y, &seen)
                         : variant == 6 ? emulate_mma_split<2, 2>(t, args, y, &seen)
                         : variant == 7 ? emulate_mma_split<1, 16>(t, args, y, &seen)
                         : variant == 8 ? emulate_mma_split<4, 4, true>(t, args, y, &seen)
                                        : emulate_mma_matmul<4, true, true, true>(
                                              t, args, y, &seen, args_all.n_out);
        ASSERT_TRUE(ran);
        SCOPED_TRACE("variant " + std::to_string(variant));
        expect_matmul_is_ref(t, args, got, seen);
      }
    }
  }
  EXPECT_EQ(types, 12);  // every quantized type
}

// next_block walks the blocks in the tiles' order (leaf p = 0..31, lane bitrev5(p), its blocks
// l, l + 32, ...), each block once, from block 0, and ends with -1: a staged tile fetches
// exactly the blocks it uses.
TEST(CudaEmu, TensorCoreNextBlockIsTheLeafOrder) {
  for (int64_t count : {1, 2, 5, 31, 32, 33, 64, 70, 176}) {
    std::vector<int64_t> want;
    for (int p = 0; p < 32; ++p)
      for (int64_t i = cdev::mma::bitrev5(p); i < count; i += 32) want.push_back(i);
    std::vector<int64_t> got;
    int p = 0;
    for (int64_t i = 0; i != -1;) {
      while (p < 32 && (i - cdev::mma::bitrev5(p)) % 32 != 0) ++p;  // the leaf of i
      ASSERT_LT(p, 32) << "count " << count << ": block " << i << " has no leaf";
      ASSERT_LT(i, count) << "count " << count;
      got.push_back(i);
      i = cdev::mma::next_block(p, i, count);
    }
    EXPECT_EQ(got, want) << "count " << count;
  }
}

// The counter's leaf order: bit-reversed, each index once.
TEST(CudaEmu, TensorCoreLeafOrderIsBitReversed) {
  int seen = 0;
  for (int p = 0; p < 32; ++p) {
    const int l = cdev::mma::bitrev5(p);
    EXPECT_EQ(cdev::mma::bitrev5(l), p);
    seen |= 1 << l;
  }
  EXPECT_EQ(uint32_t(seen), 0xffffffffu);
  EXPECT_EQ(cdev::mma::bitrev5(1), 16);
  EXPECT_EQ(cdev::mma::bitrev5(2), 8);
}

TEST(CudaEmu, F32DotAndSumOfSquares) {
  const kern::Ops& ref = kern::ops(kern::Isa::Scalar);
  std::mt19937 rng(5);
  for (int64_t n : {1, 7, 31, 32, 33, 64, 100, 1000, 4097}) {
    for (int rep = 0; rep < 4; ++rep) {
      const std::vector<float> a = make_activations(rng, n, rep == 3);
      const std::vector<float> b = make_activations(rng, n, false);
      const float dot =
          emulate_warp_dot([&](int l) { return cdev::lane_dot_f32(a.data(), b.data(), n, l); });
      EXPECT_EQ(bits(dot), bits(ref.dot_f32(a.data(), b.data(), n))) << n;
      const float sq =
          emulate_warp_dot([&](int l) { return cdev::lane_dot_f32(a.data(), a.data(), n, l); });
      EXPECT_EQ(bits(sq), bits(ref.sum_sq(a.data(), n))) << n;
    }
  }
}

// One (token, head) of the attention the way runtime/session.cpp computes it (scale, gemma's
// soft cap and window as `rule` gives them).
std::vector<float> cpu_attention(const float* q, const float* kc, const float* vc, int64_t n_kv,
                                 int64_t hd, int64_t kv_dim, cdev::attn::ScoreRule rule) {
  const kern::Ops& ops = kern::ops(kern::Isa::Scalar);
  std::vector<float> scores(static_cast<size_t>(n_kv)), acc(static_cast<size_t>(32 * hd), 0.0f),
      out(static_cast<size_t>(hd));
  float mx = -INFINITY;
  for (int64_t j = 0; j < n_kv; ++j) {
    float& s = scores[size_t(j)];
    s = ops.dot_f32(q, kc + j * kv_dim, hd) * rule.kq_scale;
    if (rule.cap > 0.0f) s = canon::softcap(s, rule.cap);
    if (rule.window > 0 && j + rule.window < n_kv) s = -INFINITY;
    mx = std::max(mx, s);
  }
  float sum_lanes[32] = {0};
  for (int64_t j = 0; j < n_kv; ++j) {
    const float e = canon::expf(scores[size_t(j)] - mx);
    sum_lanes[j % 32] = sum_lanes[j % 32] + e;
    for (int64_t d = 0; d < hd; ++d)
      acc[size_t((j % 32) * hd + d)] = acc[size_t((j % 32) * hd + d)] + e * vc[j * kv_dim + d];
  }
  const float sum = canon::reduce_lanes(sum_lanes);
  for (int64_t d = 0; d < hd; ++d) {
    float l[32];
    for (int i = 0; i < 32; ++i) l[i] = acc[size_t(i * hd + d)];
    out[size_t(d)] = canon::reduce_lanes(l) / sum;
  }
  return out;
}

// A row of hd elements in the K-tile kernel's quad layout (as its q rows are staged).
std::vector<float> quad_row(const float* x, int64_t hd) {
  std::vector<float> row(size_t(cdev::attn::quad_row_floats(hd)),
                         std::numeric_limits<float>::quiet_NaN());
  for (int first = 0; first < 3; ++first) cdev::attn::stage_q_row(first, 3, x, hd, row.data());
  return row;
}
// One score of the K-tile attention kernel (the rows kernel's for head dims up to kMaxHd) from
// its q row and K row in the quad layout: 4 threads' parts, then two shuffle steps.
// Past 64 head dims the kernel reads q a block at a time (score_quad_row).
template <int64_t kMaxHd = cdev::attn::kQuadMaxHd>
float emulate_quad_score(const float* q_row, const float* k_row, int64_t hd) {
  float part[4];
  for (int u = 0; u < 4; ++u) {
    float qv[cdev::attn::kQuadValuesOf<kMaxHd>], kv[cdev::attn::kQuadValuesOf<kMaxHd>];
    cdev::attn::quad_values(q_row, hd, u, qv);
    cdev::attn::quad_values(k_row, hd, u, kv);
    part[u] = kMaxHd > cdev::attn::kQuadMaxHd ? cdev::attn::score_quad_row(q_row, kv, hd, u)
                                               : cdev::attn::score_quad_part(qv, kv, hd, u);
  }
  return cdev::attn::score_quad(part);
}

// The attention kernels' threads per block.
constexpr int kEmuAttnThreads = cdev::attn::kThreads;

// Scores of G heads at n_kv positions (with a zero and an infinity) and n_kv V rows of kv_dim
// floats, and the kernels' two layouts of the scores: global scratch (n_kv + 3 floats per head)
// and lane-major shared memory (NaN where no score is).
template <int G>
struct ScoreCase {
  int64_t n_kv;
  std::vector<float> e, v, linear, lane_major;
  ScoreCase(std::mt19937& rng, int64_t n_kv_, int64_t kv_dim)
      : n_kv(n_kv_), e(size_t(G * n_kv)), v(size_t(n_kv * kv_dim)), linear(size_t(G * (n_kv + 3))),
        lane_major(size_t(cdev::attn::ScoreLayout::lane_major_floats(n_kv, G)),
                   std::numeric_limits<float>::quiet_NaN()) {
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (float& x : e) x = u(rng);
    for (float& x : v) x = u(rng) * 1e3f;
    e[size_t(n_kv / 2)] = 0.0f;
    if (n_kv > 40) e[40] = std::numeric_limits<float>::infinity();
  }
  const float* score(int g) const { return e.data() + g * n_kv; }
  // Both layouts, holding the scores.
  std::array<cdev::attn::ScoreLayout, 2> layouts() {
    const std::array<cdev::attn::ScoreLayout, 2> all = {
        cdev::attn::ScoreLayout::linear(linear.data(), n_kv + 3),
        cdev::attn::ScoreLayout::lane_major(lane_major.data(), n_kv, G)};
    for (const auto& layout : all)
      for (int g = 0; g < G; ++g)
        for (int64_t j = 0; j < n_kv; ++j) layout.at(g, j) = score(g)[j];
    return all;
  }
};

// The K-tile kernel's lane cell of G heads (kVLoads V elements loaded at a time, then the rest)
// adds what lane_weighted_sum adds, in its order: position counts below, at and past the
// batches of kVLoads rows of 32, for every lane; scores with zeros, negatives and infinities.
template <int G>
void expect_weighted_lane_cells_are_lane_sums(std::mt19937& rng) {
  const int64_t kv_dim = 24, hd = 16;
  for (int64_t n_kv : {1, 5, 31, 32, 33, 96, 97, 127, 128, 129, 160, 300, 1000}) {
    ScoreCase<G> c(rng, n_kv, kv_dim);
    const std::vector<float>& v = c.v;
    auto scores = [&](int g) { return c.score(g); };
    for (const auto& layout : c.layouts()) {
      for (int l = 0; l < 32; ++l)
        for (int64_t d = 0; d < hd; d += 5) {
          float acc[G];
          for (int g = 0; g < G; ++g) acc[g] = 0.0f;
          cdev::attn::weighted_lane_cell<G>(l, v.data() + d, kv_dim, n_kv, layout, acc);
          for (int g = 0; g < G; ++g)
            ASSERT_EQ(bits(acc[g]), bits(cdev::lane_weighted_sum(scores(g), v.data() + d, kv_dim,
                                                                 n_kv, l)))
                << "G " << G << " n_kv " << n_kv << " lane " << l << " d " << d << " head " << g
                << " step " << layout.step;
        }
    }
  }
}

// The lane-major layout gives every position of every head its own float inside
// lane_major_floats, lanes 4 mod 8 floats apart (16-byte aligned, banks apart), and step 4's
// batches of kVLoads positions start 16-byte aligned (its vector loads need it).
template <int G>
void expect_lane_major_place_each() {
  for (int64_t n_kv : {1, 31, 32, 33, 127, 128, 129, 512, 1023, 1024, 1025}) {
    const int64_t lane = cdev::attn::ScoreLayout::lane_floats(n_kv, G);
    ASSERT_EQ(lane % 8, 4) << "G " << G << " n_kv " << n_kv;
    ASSERT_EQ(cdev::attn::kVLoads<G> * G % 4, 0) << "G " << G;
    std::vector<int> seen(size_t(cdev::attn::ScoreLayout::lane_major_floats(n_kv, G)), 0);
    const auto layout = cdev::attn::ScoreLayout::lane_major(nullptr, n_kv, G);
    for (int g = 0; g < G; ++g)
      for (int64_t j = 0; j < n_kv; ++j) {
        const auto at = size_t(g * layout.head + (j & 31) * layout.lane + (j >> 5) * layout.step);
        ASSERT_LT(at, seen.size()) << "n_kv " << n_kv << " head " << g << " position " << j;
        ASSERT_EQ(seen[at]++, 0) << "n_kv " << n_kv << " head " << g << " position " << j;
        if (g == 0 && (j >> 5) % cdev::attn::kVLoads<G> == 0) {
          ASSERT_EQ(at % 4, 0u) << "G " << G;
        }
      }
  }
}
TEST(CudaEmu, LaneMajorScoresHaveAPlaceEach) {
  expect_lane_major_place_each<1>();
  expect_lane_major_place_each<2>();
  expect_lane_major_place_each<3>();
  expect_lane_major_place_each<4>();
  expect_lane_major_place_each<8>();
}
TEST(CudaEmu, WeightedLaneCellIsTheLaneSum) {
  std::mt19937 rng(23);
  expect_weighted_lane_cells_are_lane_sums<1>(rng);
  expect_weighted_lane_cells_are_lane_sums<3>(rng);
  expect_weighted_lane_cells_are_lane_sums<8>(rng);
}

// session.cu's column_tree over the 32 lanes of a warp, each lane's items a row: the shuffle
// of a step gives each lane what its partner (lane ^ s) sent.
template <int N>
void emulate_column_tree(std::vector<std::array<float, N>>& lanes) {
  int n = N;
  for (int s = 16; s >= 1; s >>= 1) {
    const int half = n / 2;
    for (int k = 0; k < std::max(half, 1); ++k) {
      float sent[32];
      for (int l = 0; l < 32; ++l)
        sent[l] = cdev::attn::butterfly_sent(l, s, half, lanes[size_t(l)].data(), k);
      for (int l = 0; l < 32; ++l)
        cdev::attn::butterfly_add(l, s, half, lanes[size_t(l)].data(), k, sent[l ^ s]);
    }
    n = std::max(half, 1);
  }
}
// The canonical tree of 32 lanes (tree_cell's L[i] = L[i] + L[i + s]): L[0].
float lane_tree(std::array<float, 32> l) {
  for (int s = 16; s >= 1; s >>= 1)
    for (int i = 0; i < s; ++i) l[size_t(i)] = l[size_t(i)] + l[size_t(i + s)];
  return l[0];
}
// The column warps' steps 4 and 5 (attention.h, "Step 4 by column warps"; session.cu's
// column_warps_output): V staged a tile at a time by every thread's share, each warp's lanes
// of its 8 columns of G heads in both score layouts, then the butterfly; every lane cell is
// lane_weighted_sum's, every column's total and the e lanes' the canonical tree's, and each
// total is held by the lanes butterfly_first and butterfly_writer name.
template <int G>
void expect_column_warps_are_lane_trees(std::mt19937& rng) {
  namespace attn = cdev::attn;
  constexpr int kW = attn::kColWidth, kItems = attn::column_items(G);
  static_assert(kItems >= G * kW && (kItems & (kItems - 1)) == 0);
  for (int64_t hd : {8, 12, 20, 30, 32, 64})
    for (int64_t n_kv : {1, 31, 33, 64, 65, 100, 129, 300}) {
      const int64_t kv_dim = 2 * hd + 4 + hd % 4;  // hd % 4 != 0: odd kv_dim too
      ScoreCase<G> c(rng, n_kv, kv_dim);
      const std::vector<float>& v = c.v;
      auto score = [&](int g) { return c.score(g); };
      for (const auto& layout : c.layouts()) {
        const std::string what = "G " + std::to_string(G) + " hd " + std::to_string(hd) +
                                 " n_kv " + std::to_string(n_kv) + " step " +
                                 std::to_string(layout.step);
        const int64_t stride = attn::v_tile_stride(hd);
        ASSERT_LE(attn::kVTileRows * stride, attn::tile_k_floats(hd)) << what;
        std::vector<float> tile(size_t(attn::kVTileRows * stride));
        // acc[warp][lane][c][g], as column_warps_output's registers.
        std::vector<std::array<std::array<float, G>, kW>> acc(static_cast<size_t>(kEmuAttnThreads));
        for (int64_t j0 = 0; j0 < n_kv; j0 += attn::kVTileRows) {
          const int64_t rows = std::min(attn::kVTileRows, n_kv - j0);
          std::fill(tile.begin(), tile.end(), std::numeric_limits<float>::quiet_NaN());
          for (int tid = 0; tid < kEmuAttnThreads; ++tid)
            attn::VTileStager(tid, v.data(), kv_dim, int(hd), stride)
                .stage(j0, int(rows), tile.data());
          for (int tid = 0; tid < kEmuAttnThreads; ++tid) {
            const int lane = tid & 31, col0 = (tid >> 5) * kW;
            if (col0 >= hd) continue;
            float a[kW][G];
            for (int c = 0; c < kW; ++c)
              for (int g = 0; g < G; ++g) a[c][g] = acc[size_t(tid)][size_t(c)][size_t(g)];
            const float* es = layout.base + lane * layout.lane;
            if (layout.step == 32)
              attn::column_tile_cells<G, 32>(lane, tile.data(), stride, col0, rows,
                                             es + (j0 >> 5) * 32, layout.head, a);
            else
              attn::column_tile_cells<G, G>(lane, tile.data(), stride, col0, rows,
                                            es + (j0 >> 5) * G, 1, a);
            for (int c = 0; c < kW; ++c)
              for (int g = 0; g < G; ++g) acc[size_t(tid)][size_t(c)][size_t(g)] = a[c][g];
          }
        }
        std::array<float, 32> e_lanes;
        for (int g = 0; g < G; ++g) {
          for (int l = 0; l < 32; ++l) {
            e_lanes[size_t(l)] = attn::lane_score_sum(l, n_kv, layout, g);
            ASSERT_EQ(bits(e_lanes[size_t(l)]), bits(cdev::lane_sum(score(g), n_kv, l)))
                << what << " head " << g << " lane " << l;
          }
          std::vector<std::array<float, 1>> one(32);
          for (int l = 0; l < 32; ++l) one[size_t(l)][0] = e_lanes[size_t(l)];
          emulate_column_tree<1>(one);
          for (int l = 0; l < 32; ++l)
            ASSERT_EQ(bits(one[size_t(l)][0]), bits(lane_tree(e_lanes))) << what << " lane " << l;
        }
        for (int w = 0; w * kW < hd; ++w) {
          std::vector<std::array<float, kItems>> items(32);
          for (int l = 0; l < 32; ++l)
            for (int x = 0; x < kItems; ++x)
              items[size_t(l)][size_t(x)] =
                  x < G * kW ? acc[size_t(32 * w + l)][size_t(x % kW)][size_t(x / kW)] : 0.0f;
          // Every cell of a real column is the lane sum.
          for (int x = 0; x < G * kW; ++x) {
            const int g = x / kW;
            const int64_t d = w * kW + x % kW;
            if (d >= hd) continue;
            std::array<float, 32> col;
            for (int l = 0; l < 32; ++l) {
              col[size_t(l)] = items[size_t(l)][size_t(x)];
              ASSERT_EQ(bits(col[size_t(l)]),
                        bits(cdev::lane_weighted_sum(score(g), v.data() + d, kv_dim, n_kv, l)))
                  << what << " lane " << l << " d " << d << " head " << g;
            }
          }
          std::vector<std::array<float, kItems>> before = items;
          emulate_column_tree<kItems>(items);
          std::vector<int> held(size_t(kItems), 0);
          for (int l = 0; l < 32; ++l) {
            if (!attn::butterfly_writer(l, kItems)) continue;
            const int first = attn::butterfly_first(l, kItems);
            for (int i = 0; i < attn::butterfly_count(kItems); ++i) {
              const int x = first + i;
              ASSERT_LT(x, kItems) << what;
              ++held[size_t(x)];
              std::array<float, 32> col;
              for (int k = 0; k < 32; ++k) col[size_t(k)] = before[size_t(k)][size_t(x)];
              ASSERT_EQ(bits(items[size_t(l)][size_t(i)]), bits(lane_tree(col)))
                  << what << " warp " << w << " lane " << l << " item " << x;
            }
          }
          for (int x = 0; x < kItems; ++x) ASSERT_EQ(held[size_t(x)], 1) << what << " item " << x;
        }
      }
    }
}
TEST(CudaEmu, ColumnWarpsAreTheLaneTrees) {
  std::mt19937 rng(29);
  expect_column_warps_are_lane_trees<1>(rng);
  expect_column_warps_are_lane_trees<2>(rng);
  expect_column_warps_are_lane_trees<3>(rng);
  expect_column_warps_are_lane_trees<8>(rng);
}

// Step 4 of the rows kernel (attention.h, "several tokens per block"): a row group's sums
// through the binary counter are the canonical trees of lane_weighted_sum's lanes, for row groups
// whose rows end at the same or different positions (the tokens of one row group, rows of no
// token) and position counts below, at and past the batches of 4 rows of 32.
template <int R, int64_t kMaxHd = cdev::attn::kQuadMaxHd>
void expect_row_groups_are_lane_trees(std::mt19937& rng) {
  namespace attn = cdev::attn;
  constexpr int C = attn::kRowCols<R, kMaxHd>, kG = attn::kRowGroup;
  const int64_t kv_dim = 12;
  for (int64_t n_kv : {1, 3, 31, 32, 33, 100, 127, 128, 129, 131, 300}) {
    ScoreCase<R> c(rng, n_kv, kv_dim);
    const attn::ScoreLayout layout = c.layouts()[1];  // lane-major, R rows
    auto clip = [&](int64_t n) { return std::clamp<int64_t>(n, 0, n_kv); };
    const std::vector<std::array<int64_t, kG>> patterns = {
        {n_kv, n_kv, n_kv, n_kv},
        {clip(n_kv - 3), clip(n_kv - 2), clip(n_kv - 1), n_kv},      // a token per row
        {clip(n_kv - 1), clip(n_kv - 1), n_kv, n_kv},                // two per row
        {n_kv, clip(n_kv - 1), 0, 0},                                // rows of no token
        {0, 0, 0, clip(n_kv - 2)}};
    for (const auto& n : patterns)
      for (int r0 : {0, R - kG})
        for (int c0 : {0, C, int(kv_dim) - C}) {
          const std::string what = "R " + std::to_string(R) + " C " + std::to_string(C) +
                                   " n_kv " + std::to_string(n_kv) + " n " +
                                   std::to_string(n[0]) + "," + std::to_string(n[1]) + "," +
                                   std::to_string(n[2]) + "," + std::to_string(n[3]) +
                                   " r0 " + std::to_string(r0) + " c0 " + std::to_string(c0);
          attn::RowGroupWork<R, C> work{layout.base + r0, layout.lane, c.v.data() + c0, kv_dim,
                                        {n[0], n[1], n[2], n[3]},
                                        *std::min_element(n.begin(), n.end()),
                                        *std::max_element(n.begin(), n.end())};
          float o[kG][C];
          work.sums(o);
          for (int k = 0; k < kG; ++k)
            for (int x = 0; x < C; ++x) {
              std::array<float, 32> lanes;
              for (int l = 0; l < 32; ++l)
                lanes[size_t(l)] = cdev::lane_weighted_sum(c.score(r0 + k), c.v.data() + c0 + x,
                                                           kv_dim, n[size_t(k)], l);
              ASSERT_EQ(bits(o[k][x]), bits(lane_tree(lanes))) << what << " row " << k << " col " << x;
            }
        }
  }
}

TEST(CudaEmu, RowGroupsAreTheLaneTrees) {
  std::mt19937 rng(31);
  // The rows kernel's blocks: G heads of 32 / G or 16 / G tokens, rounded up to row groups.
  static_assert(cdev::attn::block_rows(3, 10) == 32 && cdev::attn::block_rows(3, 5) == 16);
  static_assert(cdev::attn::block_rows(6, 2) == 12 && cdev::attn::block_rows(7, 4) == 28);
  static_assert(cdev::attn::block_rows(7, 2) == 16 && cdev::attn::block_rows(8, 4) == 32);
  static_assert(cdev::attn::kRowCols<12> == 1 && cdev::attn::kRowCols<28> == 2);
  expect_row_groups_are_lane_trees<12>(rng);
  expect_row_groups_are_lane_trees<16>(rng);
  expect_row_groups_are_lane_trees<28>(rng);
  expect_row_groups_are_lane_trees<32>(rng);
  // head dims past 64: at most 16 rows, 2 columns per thread
  static_assert(cdev::attn::kRowCols<16, 128> == 2 && cdev::attn::kRowCols<8, 128> == 1);
  expect_row_groups_are_lane_trees<12, cdev::attn::kRowsMaxHd>(rng);
  expect_row_groups_are_lane_trees<16, cdev::attn::kRowsMaxHd>(rng);
}

// CellWalk visits cells first, first + step, ... in order, and the threads 0 .. step - 1
// together visit every cell of the table once.
TEST(CudaEmu, CellWalkVisitsEveryCellOnce) {
  for (int width : {1, 2, 3, 31, 32, 33, 64, 65, 97, 129, 300})
    for (int step : {1, 4, 31, 32, 255, 256})
      for (int rows : {0, 1, 5, 32, 64}) {
        std::vector<int> seen(size_t(width) * size_t(rows), 0);
        for (int first = 0; first < step; ++first) {
          int c = first;
          cdev::attn::for_cells(first, step, width, rows, [&](int r, int d) {
            ASSERT_EQ(r, c / width) << "width " << width << " step " << step << " first " << first;
            ASSERT_EQ(d, c % width) << "width " << width << " step " << step << " first " << first;
            ++seen[size_t(c)];
            c += step;
          });
          EXPECT_GE(c, width * rows) << "stopped early: width " << width << " step " << step;
        }
        for (size_t c = 0; c < seen.size(); ++c)
          ASSERT_EQ(seen[c], 1) << "cell " << c << " width " << width << " step " << step;
      }
}

// The CUDA attention kernel's steps for one block (runtime/cuda/attention.h). Within a step
// the cells are independent, so running them in sequence is what the threads compute.
// tiles: the K-tile kernel's scores (GALLEON_CUDA_ATTN_TILES=1), taken where hd allows it.
std::vector<float> emulate_attention_kernel(const float* q, const float* kc, const float* vc,
                                            int64_t n_kv, int64_t hd, int64_t kv_dim,
                                            cdev::attn::ScoreRule rule, bool tiles = false) {
  std::vector<float> e(static_cast<size_t>(n_kv)),
      lanes(static_cast<size_t>(cdev::attn::lane_floats(hd))), out(static_cast<size_t>(hd));
  if (tiles && hd <= cdev::attn::kQuadMaxHd) {
    // The K rows go through the kernel's tile, staged by every thread's share; NaN marks what
    // no thread wrote.
    const int64_t rows_per_tile = cdev::attn::kQuadTileRows;
    const int64_t stride = cdev::attn::quad_tile_stride(hd);
    const std::vector<float> q_row = quad_row(q, hd);
    std::vector<float> tile(size_t(rows_per_tile * stride));
    for (int64_t j0 = 0; j0 < n_kv; j0 += rows_per_tile) {
      const int rows = int(std::min(rows_per_tile, n_kv - j0));
      std::fill(tile.begin(), tile.end(), std::numeric_limits<float>::quiet_NaN());
      for (int tid = 0; tid < kEmuAttnThreads; ++tid)
        cdev::attn::stage_k_rows(tid, kc + j0 * kv_dim, kv_dim, int(hd), rows, stride,
                                 tile.data());
      for (int r = 0; r < rows; ++r)
        e[size_t(j0 + r)] =
            rule(emulate_quad_score(q_row.data(), tile.data() + r * stride, hd), j0 + r, n_kv);
    }
  } else {
    for (int64_t j = 0; j < n_kv; ++j)
      e[size_t(j)] = rule(emulate_warp_dot([&](int l) {
                            return cdev::lane_dot_f32(q, kc + j * kv_dim, hd, l);
                          }),
                          j, n_kv);
  }
  // The kernel's warps' maxima, then theirs; the same value as in j order, up to the sign of
  // a zero maximum, which no e_j depends on.
  const float mx = cdev::attn::max_score_parts(e.data(), n_kv, kEmuAttnThreads / 32);
  EXPECT_EQ(mx == 0.0f ? 0.0f : mx, cdev::attn::max_score(e.data(), n_kv)) << "n_kv " << n_kv;
  for (auto& x : e) x = cdev::expf(x - mx);
  // Every thread's cells (a step's cells are independent; the steps are separated by barriers).
  // NaN marks a lane no thread wrote.
  const int width = int(hd) + 1;
  std::fill(lanes.begin(), lanes.end(), std::numeric_limits<float>::quiet_NaN());
  for (int tid = 0; tid < kEmuAttnThreads; ++tid)
    cdev::attn::for_cells(tid, kEmuAttnThreads, width, 32, [&](int l, int d) {
      cdev::attn::lane_cell(l, d, hd, e.data(), vc, kv_dim, n_kv, lanes.data());
    });
  for (int s = 16; s >= 1; s >>= 1)
    for (int tid = 0; tid < kEmuAttnThreads; ++tid)
      cdev::attn::for_cells(tid, kEmuAttnThreads, width, s, [&](int i, int d) {
        cdev::attn::tree_cell(s, i, d, hd, lanes.data());
      });
  for (int64_t d = 0; d < hd; ++d) out[size_t(d)] = cdev::attn::output(lanes.data(), hd, d);
  return out;
}

// stage_k_rows and quad_values for head dims up to kMaxHd: thread u's values of a staged K row
// (quads, or cells where hd or kv_dim is no multiple of 4) and of a q row are elements u + 4m.
template <int64_t kMaxHd>
void expect_quad_staging(std::initializer_list<int64_t> hds) {
  for (int64_t hd : hds)
    for (int64_t kv_dim : {hd, hd + 2, 3 * hd}) {
      const int rows = 5;
      std::vector<float> k(size_t(rows * kv_dim));
      for (size_t i = 0; i < k.size(); ++i) k[i] = float(i) + 0.5f;
      const int64_t stride = cdev::attn::quad_tile_stride(hd);
      std::vector<float> tile(size_t(rows * stride), std::numeric_limits<float>::quiet_NaN());
      for (int tid = 0; tid < cdev::attn::kThreads; ++tid)
        cdev::attn::stage_k_rows<kMaxHd>(tid, k.data(), kv_dim, int(hd), rows, stride,
                                         tile.data());
      const std::vector<float> q = quad_row(k.data() + kv_dim, hd);  // row 1 as a q row
      for (int r = 0; r < rows; ++r)
        for (int u = 0; u < 4; ++u) {
          float kv[cdev::attn::kQuadValuesOf<kMaxHd>], qv[cdev::attn::kQuadValuesOf<kMaxHd>];
          cdev::attn::quad_values(tile.data() + r * stride, hd, u, kv);
          cdev::attn::quad_values(q.data(), hd, u, qv);
          for (int i = u; i < hd; i += 4) {
            const int at = 8 * (i / 32) + (i % 32) / 4;
            ASSERT_EQ(kv[at], k[size_t(r * kv_dim + i)])
                << "hd " << hd << " kv_dim " << kv_dim << " row " << r << " element " << i;
            ASSERT_EQ(qv[at], k[size_t(kv_dim + i)]) << "hd " << hd << " element " << i;
          }
        }
    }
}

// The quad layout puts each element of a 32-element block at its own place, and thread u's
// values are the elements u + 4m (+ 32b) of q rows and staged K rows (both ways of staging).
TEST(CudaEmu, QuadLayoutGivesEachThreadItsLanes) {
  for (int b = 0; b < 4; ++b) {
    std::vector<int> seen(32, 0);
    for (int i = 32 * b; i < 32 * b + 32; ++i) {
      const int pos = cdev::attn::quad_pos(i);
      ASSERT_GE(pos, 32 * b);
      ASSERT_LT(pos, 32 * b + 32);
      ++seen[size_t(pos - 32 * b)];
    }
    for (int c : seen) ASSERT_EQ(c, 1);
  }
  expect_quad_staging<cdev::attn::kQuadMaxHd>({4, 8, 30, 32, 36, 64});
  expect_quad_staging<cdev::attn::kRowsMaxHd>({4, 36, 68, 80, 96, 100, 128});
}

// The K-tile scores (4 threads per score, the tree's last steps across them) = the warp dot.
template <int64_t kMaxHd>
void expect_quad_scores(std::mt19937& rng, std::initializer_list<int64_t> hds) {
  for (int64_t hd : hds)
    for (int rep = 0; rep < 200; ++rep) {
      const std::vector<float> q = make_activations(rng, hd, rep % 7 == 3);
      const std::vector<float> k = make_activations(rng, hd, rep % 5 == 1);
      const float want = emulate_warp_dot([&](int l) { return cdev::lane_dot_f32(q.data(), k.data(), hd, l); });
      const float got = emulate_quad_score<kMaxHd>(quad_row(q.data(), hd).data(),
                                                   quad_row(k.data(), hd).data(), hd);
      ASSERT_EQ(bits(cdev::canonical_nan(got)), bits(want))
          << "hd " << hd << " (at most " << kMaxHd << ") rep " << rep;
    }
}
TEST(CudaEmu, QuadScoreIsTheWarpDot) {
  std::mt19937 rng(23);
  expect_quad_scores<cdev::attn::kQuadMaxHd>(rng, {1, 4, 8, 31, 32, 33, 48, 64});
  // the rows kernel's head dims past 64
  expect_quad_scores<cdev::attn::kRowsMaxHd>(rng, {8, 64, 65, 80, 96, 100, 127, 128});
}

// Plain scores, and gemma's: soft-capped, and a window of 20 positions.
TEST(CudaEmu, AttentionKernelMatchesSession) {
  std::mt19937 rng(9);
  for (int64_t hd : {8, 31, 48, 64, 128})
    for (int64_t n_kv : {1, 2, 31, 32, 33, 65, 300}) {
      const int64_t n_head_kv = 2, kv_dim = n_head_kv * hd, head_off = hd;  // kv head 1
      const float kq_scale = 1.0f / std::sqrt(float(hd));
      const bool specials = n_kv == 65;
      const std::vector<float> q = make_activations(rng, hd, false);
      const std::vector<float> k = make_activations(rng, n_kv * kv_dim, specials);
      const std::vector<float> v = make_activations(rng, n_kv * kv_dim, specials);
      for (const cdev::attn::ScoreRule rule :
           {cdev::attn::ScoreRule{kq_scale}, cdev::attn::ScoreRule{kq_scale, 0.7f, 20}}) {
        const std::vector<float> want =
            cpu_attention(q.data(), k.data() + head_off, v.data() + head_off, n_kv, hd, kv_dim, rule);
        for (bool tiles : {false, true}) {
          const std::vector<float> got = emulate_attention_kernel(
              q.data(), k.data() + head_off, v.data() + head_off, n_kv, hd, kv_dim, rule, tiles);
          for (int64_t d = 0; d < hd; ++d) {
            const float w = want[size_t(d)], g = got[size_t(d)];
            if (w != w) {  // NaN payloads are only canonical for dot products (section 2)
              EXPECT_NE(g, g) << "hd " << hd << " n_kv " << n_kv << " d " << d;
              continue;
            }
            ASSERT_EQ(bits(g), bits(w)) << "hd " << hd << " n_kv " << n_kv << " d " << d
                                        << (tiles ? " (K tiles)" : "") << " cap " << rule.cap;
          }
        }
      }
    }
}

// ------------------------------------------------------------ the whole forward pass

// forward()'s executor on the CPU (runtime/cuda/forward.h): each step runs the CUDA kernels'
// step functions in plain loops, the warp steps through the warp emulation above.
class EmuExec {
 public:
  const void* quantize(GgmlType t, const float* x, int64_t n, int64_t ntok, int slot) {
    std::vector<uint8_t>& a = act_[slot];
    a.resize(kern::act_row_bytes(t, n) * size_t(ntok));
    if (kern::act_format(t) == kern::ActFormat::A8)
      for (int64_t i = 0; i < n / 32 * ntok; ++i)
        cdev::step::quantize<32>(x, n, i, reinterpret_cast<kern::A8Block*>(a.data()));
    else
      for (int64_t i = 0; i < n / 256 * ntok; ++i)
        cdev::step::quantize<256>(x, n, i, reinterpret_cast<kern::A8KBlock*>(a.data()));
    return a.data();
  }
  // new_paths: the prompt paths on by default (GALLEON_CUDA_GEMM, GALLEON_CUDA_ATTN_TILES), else
  // both off.
  explicit EmuExec(bool new_paths) : new_paths_(new_paths) {}
  // The matmul kernel: one warp per row and group of kMatmulTokens tokens; with tensor cores,
  // the quantized types' prompts as matmul_mma_kernel: 16 rows and 16 tokens per warp.
  void matmul(const cuda::DevWeight& w, const void* act, size_t arb, int64_t ntok, float* y) {
    if (new_paths_ && ntok > 1 && matmul_tiles(w, act, arb, ntok, y)) return;
    constexpr int kTok = cdev::step::kMatmulTokens;
    static_assert(kTok <= 4);  // emulate_dots' lanes
    const uint8_t* a = static_cast<const uint8_t*>(act);
    for (int64_t r = 0; r < w.n_out; ++r)
      for (int64_t t0 = 0; t0 < ntok; t0 += kTok) {
        const int nt = int(std::min<int64_t>(kTok, ntok - t0));
        const std::vector<float> v =
            emulate_dots(w.type, w.n_in, w.data + size_t(r) * w.row_bytes, a + size_t(t0) * arb, arb, nt);
        for (int k = 0; k < nt; ++k) y[(t0 + k) * w.n_out + r] = v[size_t(k)];
      }
  }
  bool matmul_tiles(const cuda::DevWeight& w, const void* act, size_t arb, int64_t ntok, float* y) {
    const cdev::GemmArgs p{w.data, w.row_bytes, w.n_in, w.n_out, static_cast<const uint8_t*>(act), arb, ntok};
    return emulate_mma_matmul<4, true>(w.type, p, y) || emulate_plain_matmul(w.type, p, y);
  }
  void rms_norm(const float* x, const float* w, int64_t n, float eps, int64_t ntok, float* y) {
    for (int64_t t = 0; t < ntok; ++t) {
      const float* xr = x + t * n;
      const float ss = emulate_warp_dot([&](int l) { return cdev::lane_dot_f32(xr, xr, n, l); });
      const float scale = cdev::step::rms_scale(ss, n, eps);
      for (int64_t i = 0; i < n; ++i) y[t * n + i] = cdev::step::rms_apply(xr[i], scale, w[i]);
    }
  }
  void add(float* x, const float* b, int64_t dim, int64_t total, bool broadcast) {
    for (int64_t i = 0; i < total; ++i) cdev::step::add(x, b, dim, i, broadcast);
  }
  void rope(float* x, int64_t n_heads, int64_t hd, int64_t n_rot, bool neox, int64_t ntok,
            int64_t n_past, const float* cos_t, const float* sin_t) {
    for (int64_t k = 0; k < ntok * n_heads * (n_rot / 2); ++k)
      cdev::step::rope(x, k, n_heads, hd, n_rot, neox, n_past, cos_t, sin_t);
  }
  void store_kv(float* cache, const float* src, int64_t n_past, int64_t kv_dim, int64_t ntok) {
    std::memcpy(cache + n_past * kv_dim, src, size_t(ntok * kv_dim) * sizeof(float));
  }
  void attention(const float* q, const float* kc, const float* vc, int64_t n_head, int64_t group,
                 int64_t hd, int64_t kv_dim, int64_t ntok, int64_t n_past, int64_t,
                 cdev::attn::ScoreRule rule, float*, float* out) {
    for (int64_t t = 0; t < ntok; ++t)
      for (int64_t h = 0; h < n_head; ++h) {
        const int64_t off = (h / group) * hd;
        const std::vector<float> o = emulate_attention_kernel(
            q + (t * n_head + h) * hd, kc + off, vc + off, n_past + t + 1, hd, kv_dim, rule,
            new_paths_ && ntok > 1);  // K tiles for prompts only, as session.cu
        std::memcpy(out + (t * n_head + h) * hd, o.data(), o.size() * sizeof(float));
      }
  }
  void silu_mul(float* g, const float* u, int64_t total) {
    for (int64_t i = 0; i < total; ++i) cdev::step::silu_mul(g, u, i);
  }
  void gelu_mul(float* g, const float* u, int64_t total) {
    for (int64_t i = 0; i < total; ++i) cdev::step::gelu_mul(g, u, i);
  }
  void softcap(float* x, float cap, int64_t total) {
    for (int64_t i = 0; i < total; ++i) cdev::step::softcap(x, cap, i);
  }
  void scale(float* x, float s, int64_t total) {
    for (int64_t i = 0; i < total; ++i) cdev::step::scale(x, s, i);
  }

 private:
  bool new_paths_;
  std::vector<uint8_t> act_[3];
};

// The CUDA session's eval, emulated: all logits rows of toks, `batch` tokens per call.
// last_only: each call's last row only (Rows::Last), as CudaSession computes it.
std::vector<float> emulate_cuda_session(const Model& m, const std::vector<int32_t>& toks,
                                        size_t batch, bool new_paths, bool last_only = false) {
  const HParams& hp = m.hparams();
  auto view = [](const Weight& w) {
    return cuda::DevWeight{w.type, w.n_in, w.n_out, w.row_bytes, w.data};
  };
  const std::vector<cuda::DevLayer> layers =
      cuda::make_layers(m, view, [](const std::vector<float>& v) { return v.data(); });
  const cuda::DevWeight output = view(m.output());
  const int64_t n_ctx = hp.n_ctx_train, kv_dim = hp.n_head_kv * hp.head_dim;
  std::vector<float> k_cache(size_t(hp.n_layer * n_ctx * kv_dim)), v_cache(k_cache.size());
  std::vector<float> cos_t, sin_t, cos_swa, sin_swa, x, rows;
  const int64_t n_pos = int64_t(toks.size());
  rope_table_rows(m, n_ctx, false, 0, n_pos, cos_t, sin_t);
  if (hp.rope_base_swa > 0) rope_table_rows(m, n_ctx, true, 0, n_pos, cos_swa, sin_swa);
  EmuExec exec(new_paths);
  int64_t n_past = 0;
  for (size_t i = 0; i < toks.size(); i += batch) {
    const std::vector<int32_t> b(toks.begin() + long(i), toks.begin() + long(std::min(toks.size(), i + batch)));
    const size_t T = b.size();
    embed_tokens(m, b, x);
    auto buf = [&](int64_t per_token) { return std::vector<float>(T * size_t(per_token)); };
    std::vector<float> xn = buf(hp.n_embd), tmp = buf(hp.n_embd), q = buf(hp.n_head * hp.head_dim),
                       att = buf(hp.n_head * hp.head_dim), k = buf(kv_dim), v = buf(kv_dim),
                       gate = buf(hp.n_ff), up = buf(hp.n_ff), logits = buf(hp.n_vocab);
    const cuda::Buffers bufs{x.data(),    xn.data(),     q.data(),       k.data(),
                             v.data(),    att.data(),    tmp.data(),     gate.data(),
                             up.data(),   logits.data(), nullptr,        k_cache.data(),
                             v_cache.data(), cos_t.data(), sin_t.data(),
                             cos_swa.data(), sin_swa.data()};
    cuda::forward(exec, hp, layers, output, m.output_norm().data(), bufs, int64_t(T), n_past, n_ctx,
                  last_only ? int64_t(T) - 1 : 0);
    if (last_only) logits.resize(size_t(hp.n_vocab));
    rows.insert(rows.end(), logits.begin(), logits.end());
    n_past += int64_t(T);
  }
  return rows;
}

void expect_emulation_equals_session(const Model& m, const std::vector<int32_t>& toks,
                                     const std::string& what) {
  ComputeOptions cpu;
  cpu.n_threads = 1;
  auto ev = make_evaluator(m, cpu, 0);
  std::vector<float> want, logits;
  ev->eval(toks, logits);
  want = logits;
  // A prompt's last row alone (the output matmul of one token), as `galleon run` asks for it.
  {
    const std::vector<float> got = emulate_cuda_session(m, toks, toks.size(), false, true);
    ASSERT_EQ(got.size(), size_t(m.hparams().n_vocab));
    EXPECT_EQ(0, std::memcmp(got.data(), want.data() + want.size() - got.size(), got.size() * 4))
        << what << ": the last row alone differs";
  }
  // tc: the prompt paths on by default (tensor cores for prompts, K tiles in attention).
  for (bool tc : {false, true})
    for (size_t batch : {toks.size(), size_t(1), size_t(7)}) {
      const std::vector<float> got = emulate_cuda_session(m, toks, batch, tc);
      ASSERT_EQ(got.size(), want.size());
      size_t first = 0;
      while (first < want.size() && bits(got[first]) == bits(want[first])) ++first;
      EXPECT_EQ(first, want.size())
          << what << (tc ? " (tensor cores, K tiles)" : "") << " batch " << batch << ": first differing logit "
          << first << " (row " << first / size_t(m.hparams().n_vocab) << ")";
    }
}

class CudaEmuForward : public ::testing::TestWithParam<testing::SynthCase> {};

TEST_P(CudaEmuForward, MatchesSession) {
  testing::TempDir dir;
  const SynthSpec spec = testing::synth_case_spec(GetParam());
  LoadedModel m = testing::write_and_load(spec, dir);
  const std::vector<int32_t> toks = testing::synth_tokens(40, spec.n_vocab);
  expect_emulation_equals_session(*m.model, toks, type_name(spec.type));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, CudaEmuForward, testing::all_synth_cases(),
                         testing::synth_case_name);

// Query heads per KV head of 1, 3, 4, 6 and 8 and head dims 32, 64 and 96 (cuda_test's
// Cuda.AttentionGroupShapesMatchCpu runs the same shapes on a GPU).
TEST(CudaEmu, AttentionGroupShapesMatchSession) {
  struct Shape {
    int64_t n_embd, n_head, n_head_kv;
  };
  for (const Shape sh : {Shape{128, 2, 2}, Shape{192, 3, 1}, Shape{256, 8, 2}, Shape{384, 6, 1},
                         Shape{256, 8, 1}, Shape{192, 2, 1}}) {
    testing::TempDir dir;
    SynthSpec spec;
    spec.type = spec.embd_type = GgmlType::Q4_0;
    spec.n_embd = sh.n_embd;
    spec.n_head = sh.n_head;
    spec.n_head_kv = sh.n_head_kv;
    LoadedModel m = testing::write_and_load(spec, dir);
    expect_emulation_equals_session(*m.model, testing::synth_tokens(40, spec.n_vocab),
                                    "heads " + std::to_string(sh.n_head) + "/" +
                                        std::to_string(sh.n_head_kv));
  }
}

TEST(CudaEmu, Stories260KForwardMatchesSession) {
  const std::string model = testing::shared_path("models/stories260K/stories260K.gguf");
  GALLEON_REQUIRE_SHARED(model);
  LoadedModel m = load_model(model);
  std::vector<int32_t> toks = m.tokenizer->encode("Once upon a time, there was a little girl", true, false);
  for (int i = 0; i < 40; ++i) toks.push_back(int32_t((i * 97 + 5) % m.model->hparams().n_vocab));
  expect_emulation_equals_session(*m.model, toks, "stories260K");
}

// The comparisons above can fail: a sequential sum (another reduction order) differs.
TEST(CudaEmu, ReductionOrderIsObservable) {
  std::mt19937 rng(13);
  int differ = 0;
  for (int rep = 0; rep < 50; ++rep) {
    const std::vector<float> a = make_activations(rng, 1000, false);
    float seq = 0.0f;
    for (float x : a) seq = seq + x * x;
    const float tree =
        emulate_warp_dot([&](int l) { return cdev::lane_dot_f32(a.data(), a.data(), 1000, l); });
    differ += bits(seq) != bits(tree);
  }
  EXPECT_GT(differ, 0);
}

}  // namespace
}  // namespace galleon
