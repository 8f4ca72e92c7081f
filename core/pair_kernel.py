"""The CPU kernel of the two-modality node (Eq. 4, 7, 8): one pass over memory forward, one backward.

Each channel's ``M`` neurons are read from memory and stay in the cache while the kernel makes
its passes over them (per channel: the five moments; then, up to 512 neurons at a time, E and the
output), so that a forward reads x1 and x2 and writes the output and sigmoid(E*), and a backward
reads the output's gradient, x1, x2 and sigmoid(E*) and writes the inputs' gradients (and ζ's where
ζ varies along the neurons): nothing else of full size. Element-wise work runs in the input's dtype
and vectorises (a branch-free ``exp``, below); every sum is accumulated in float64. Channels are split across
torch's intra-op threads (``at::parallel_for``, so ``torch.set_num_threads`` applies), a weight's
rows always on one thread: the numbers do not depend on the thread count. That needs OpenMP, linked
to the runtime torch has loaded (:func:`kernel`); without it (macOS, Windows) one thread.

Beside ``pair_forward`` / ``pair_backward`` (weights (L, 2) in any layout), the module holds what
:class:`~simam2.core.SimAM2` calls in eager mode: ``zeta_attention``, the node with weights (ζ, 1 − ζ)
from ζ (B, C) as one autograd node in C++ (``ZetaPairNode``; its backward runs no Python except for
a second derivative, which calls the op-by-op reference), and ``zeta_statistics``, ζ's batch
statistics for Eq. 6 and the growth of ``var_max`` and ``weight_sums`` in one float64 pass over ζ.

Built on first use with :func:`torch.utils.cpp_extension.load_inline` (a C++ compiler and ninja
are needed; the build is cached on disk). Where it cannot be built, :func:`kernel` returns None and
:mod:`~simam2.core.fused` takes its PyTorch path, which computes the same numbers op by op.
"""

import hashlib
import os
import warnings
from pathlib import Path

import torch

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr double EPS = 1e-12;  // core/energy.py: EPS
// per-channel numbers saved for the backward: z_j = (y_j − p_j) A_j + B_j for j = x1, x2, U (6),
// q_j (3), whether the EPS floor lets the gradient through (3), and the pilots p_j (3)
constexpr int NSTAT = 15;
// neurons per block of the forward's element-wise passes (a stack buffer of E, below)
constexpr int64_t EBLOCK = 512;

// exp without a branch or a library call, so that the loops around it vectorise (Cephes expf:
// |relative error| < 2 ulp on float32's range; a NaN propagates through the polynomial)
inline float exp_v(float x) {
  x = x > 88.3762626647949f ? 88.3762626647949f : x;
  x = x < -87.3365447505531f ? -87.3365447505531f : x;
  // the nearest integer by the magic-number rounding (std::floor would be a library call)
  float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  x = x - fx * 0.693359375f;
  x = x + fx * 2.12194440e-4f;
  float z = x * x;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;
  float p;
  std::memcpy(&p, &bits, sizeof p);
  return y * p;
}
inline double exp_v(double x) { return std::exp(x); }

// the binary exponent of s > 0 (finite, normal), clamped to ±lim; 0 for anything else. Read from
// the bits: ilogb and ldexp are library calls, and they cost more than a channel of 49 neurons.
inline int exponent(double s, int lim) {
  uint64_t bits;
  std::memcpy(&bits, &s, sizeof bits);
  const int e = (int)((bits >> 52) & 0x7ff) - 1023;
  if (!(s > 0) || e == 1024 || e == -1023) return 0;  // zero, negative, NaN, inf, subnormal
  return e > lim ? lim : (e < -lim ? -lim : e);
}
// 2^e for |e| <= 1022
inline double pow2(int e) {
  const uint64_t bits = (uint64_t)(e + 1023) << 52;
  double p;
  std::memcpy(&p, &bits, sizeof p);
  return p;
}

// The five moments of one channel, Σd1, Σd2, Σd1², Σd2², Σd1·d2, of d_j = x_j / s0 − p_j, in one
// pass, accumulated in float64; p_j (the pilot) is the channel's first neuron, so that the variance
// is not a difference of large numbers; 1/s0 scales by a power of two (exact). Where a, b vary
// along the channel, U's two moments too. (n. the name of the slot: 0 x1, 1 x2, 2 U)
struct Moments {
  double p[3], s[3], ss[3], s12;
};

template <typename T, bool PerNeuron>
inline Moments moments(const T* __restrict__ x1, const T* __restrict__ x2, const T* __restrict__ a,
                       const T* __restrict__ b, int64_t M, double s0) {
  Moments r;
  r.p[0] = x1[0] * s0; r.p[1] = x2[0] * s0;
  // U's pilot: its first neuron as the element-wise pass computes it where a, b vary along the channel,
  // else a p1 + b p2, from which that pass takes U's deviations (a (x1 − p1) + b (x2 − p2), exact)
  r.p[2] = PerNeuron ? (double)(a[0] * x1[0] + b[0] * x2[0]) * s0 : (double)a[0] * r.p[0] + (double)b[0] * r.p[1];
  const double p1 = r.p[0], p2 = r.p[1], pu = r.p[2];
  double s1 = 0, s2 = 0, q1 = 0, q2 = 0, c12 = 0, su = 0, qu = 0;
#pragma omp simd reduction(+ : s1, s2, q1, q2, c12, su, qu)
  for (int64_t m = 0; m < M; ++m) {
    const double d1 = x1[m] * s0 - p1, d2 = x2[m] * s0 - p2;
    s1 += d1; s2 += d2; q1 += d1 * d1; q2 += d2 * d2; c12 += d1 * d2;
    if (PerNeuron) {
      const double du = ((double)a[m] * x1[m] + (double)b[m] * x2[m]) * s0 - pu;
      su += du; qu += du * du;
    }
  }
  r.s[0] = s1; r.s[1] = s2; r.s[2] = su; r.ss[0] = q1; r.ss[1] = q2; r.ss[2] = qu; r.s12 = c12;
  return r;
}

// Statistics of one channel for the slots x1, x2 and U = a x1 + b x2 (Eq. 4), from the moments:
// mean μ_j = p_j + Σd_j / M, v_j = (Σd_j² − (Σd_j)² / M) / (M − 1) (+ λ on U), floored at EPS
// (SPEC §1). Where a, b are constant over the channel, U's from those of x1 and x2:
// var(U) = a² v1 + b² v2 + 2ab c12, with no pass over U. The inputs are scaled (1/s0 ≠ 1) only
// where a square overflows float64, which float32 inputs cannot make. The element-wise passes work
// on z_j = (y_j − μ_j) / s_j with s_j a power of two near the standard deviation (z_j is of order
// one in the input's dtype), and q_j = s_j² / (4 max(v_j, EPS)), so that imp_j = z_j² q_j + 0.5
// is SPEC §1's importance exactly.
template <typename T, bool PerNeuron>
inline void statistics(const T* __restrict__ x1, const T* __restrict__ x2, const T* __restrict__ a,
                       const T* __restrict__ b, int64_t M, double lam, double* st) {
  double s0 = 1.0;
  Moments r = moments<T, PerNeuron>(x1, x2, a, b, M, s0);
  const double ss = r.ss[0] + r.ss[1] + r.ss[2];
  // float64 inputs beyond about 1e150, whose squares overflow, or below 1e-150, whose squares vanish
  if (!std::isfinite(ss + r.s12) || (sizeof(T) == 8 && ss < 1e-250)) {
    double amax = 0;
    for (int64_t m = 0; m < M; ++m) amax = std::fmax(amax, std::fmax(std::fabs((double)x1[m]), std::fabs((double)x2[m])));
    s0 = pow2(-exponent(amax, 500));  // |e| ≤ 500: s0² and λ s0² stay finite
    r = moments<T, PerNeuron>(x1, x2, a, b, M, s0);
  }
  const double rm = 1.0 / M, rm1 = 1.0 / (M - 1);
  double var[3], mu[3];
  for (int j = 0; j < 3; ++j) {
    mu[j] = r.p[j] + r.s[j] * rm;
    var[j] = (r.ss[j] - r.s[j] * r.s[j] * rm) * rm1;
  }
  if (!PerNeuron) {  // U − μU = a (x1 − μ1) + b (x2 − μ2)
    const double wa = a[0], wb = b[0];
    const double c12 = (r.s12 - r.s[0] * r.s[1] * rm) * rm1;
    mu[2] = wa * mu[0] + wb * mu[1];
    var[2] = wa * wa * var[0] + wb * wb * var[1] + 2 * wa * wb * c12;
  }
  const double floor_ = EPS * s0 * s0;
  var[2] += lam * s0 * s0;
  for (int j = 0; j < 3; ++j) {
    var[j] = var[j] > 0 ? var[j] : 0;  // rounding can leave a tiny negative
    const double v = var[j] > floor_ ? var[j] : floor_;
    const double inv = pow2(-(exponent(v, 1000) >> 1));  // 1/s_j, s_j² within 4 of v
    // z_j = (y_j − p_j) A_j + B_j: y_j − p_j is exact where y_j is near p_j, so that a channel far from
    // zero keeps its digits (y_j − μ_j in the input's dtype would round μ_j at the scale of y_j)
    st[2 * j] = s0 * inv;                         // A_j
    st[2 * j + 1] = (r.p[j] - mu[j]) * inv;       // B_j
    st[12 + j] = r.p[j] / s0;                     // p_j, a value of the input's dtype
    st[6 + j] = 1.0 / (4.0 * v * inv * inv);  // q_j, of order one
    st[9 + j] = var[j] >= floor_ ? 1.0 : 0.0;  // the floor passes no gradient where it holds
  }
}

// One channel's constants as the element-wise loops read them (from its statistics), and one
// neuron's terms: U (Eq. 4) and z_j = (y_j − p_j) A_j + B_j for x1, x2 and U, the same in the
// forward and in both loops of the backward
template <typename T, bool PerNeuron>
struct Channel {
  T a1, b1, a2, b2, au, bu, q1, q2, qu;
  T pi1, pi2, piu;  // the pilots
  explicit Channel(const double* st)
      : a1(st[0]), b1(st[1]), a2(st[2]), b2(st[3]), au(st[4]), bu(st[5]), q1(st[6]), q2(st[7]), qu(st[8]),
        pi1(st[12]), pi2(st[13]), piu(st[14]) {}
  struct Terms {
    T u, d1, d2, z1, z2, zu;
  };
  inline Terms at(T y1, T y2, T wa, T wb) const {
    Terms t;
    t.u = wa * y1 + wb * y2;  // Eq. 4
    t.d1 = y1 - pi1;
    t.d2 = y2 - pi2;
    t.z1 = t.d1 * a1 + b1;
    t.z2 = t.d2 * a2 + b2;
    t.zu = (PerNeuron ? t.u - piu : wa * t.d1 + wb * t.d2) * au + bu;
    return t;
  }
};

// a, b: one weight per R rows of x (row n takes weight n / R, at strides sa, sb), or, PerNeuron, one
// per neuron (contiguous, R = 1)
template <typename T, bool PerNeuron, bool SaveSigma>
void forward_kernel(const T* x1, const T* x2, const T* a, int64_t sa, const T* b, int64_t sb, int64_t R,
                    T* out, T* sigma, double* stats, int64_t n0, int64_t n1, int64_t M, double k, double lam) {
  alignas(64) T ev[EBLOCK];  // E of up to EBLOCK neurons, in L1 between the two loops below
  for (int64_t n = n0; n < n1; ++n) {
    const T* __restrict__ X1 = x1 + n * M;
    const T* __restrict__ X2 = x2 + n * M;
    const int64_t wn = R == 1 ? n : n / R;  // an integer division costs as much as a short channel
    const T* __restrict__ A = a + (PerNeuron ? n * M : wn * sa);
    const T* __restrict__ B = b + (PerNeuron ? n * M : wn * sb);
    T* __restrict__ o = out + n * M;
    T* __restrict__ sg = sigma + (SaveSigma ? n * M : 0);
    double* st = stats + n * NSTAT;
    statistics<T, PerNeuron>(X1, X2, A, B, M, lam, st);
    const Channel<T, PerNeuron> ch(st);
    const T q1 = ch.q1, q2 = ch.q2, qu = ch.qu, kk = (T)k;
    // Eq. 7 where the weights are constant over the channel: E = K0 + cu zu² − c1 z1² − c2 z2²
    const double wa0 = A[0], wb0 = B[0];
    const T wa1 = A[0], wb1 = B[0];  // hoisted: a load in the loop would keep it from vectorising
    const T c1 = PerNeuron ? q1 : (T)(wa0 * wa0 * st[6]), c2 = PerNeuron ? q2 : (T)(wb0 * wb0 * st[7]);
    const T cu = (T)(k * st[8]), k0 = (T)(0.5 * (k - wa0 * wa0 - wb0 * wb0));
    // E (Eq. 7), then sigmoid(E) U (Eq. 8), in blocks of EBLOCK neurons, each in two loops: fused
    // into one, the loop took twice as long on an AVX2 machine (the exponential's constants beside
    // the channel's dozen spill out of the sixteen vector registers); the numbers are the same
    for (int64_t m0 = 0; m0 < M; m0 += EBLOCK) {
      const int64_t m1 = M - m0 < EBLOCK ? M : m0 + EBLOCK;
#pragma omp simd
      for (int64_t m = m0; m < m1; ++m) {
        const T y1 = X1[m], y2 = X2[m];
        const T wa = PerNeuron ? A[m] : wa1, wb = PerNeuron ? B[m] : wb1;
        const auto [u, d1, d2, z1, z2, zu] = ch.at(y1, y2, wa, wb);
        // Eq. 7: E = (2 − r) imp_U − a² imp_1 − b² imp_2
        ev[m - m0] = PerNeuron
            ? kk * (zu * zu * qu + T(0.5)) - wa * wa * (z1 * z1 * q1 + T(0.5)) - wb * wb * (z2 * z2 * q2 + T(0.5))
            : k0 + cu * zu * zu - c1 * z1 * z1 - c2 * z2 * z2;
        o[m] = u;
      }
#pragma omp simd
      for (int64_t m = m0; m < m1; ++m) {
        const T sm = T(1) / (T(1) + exp_v(-ev[m - m0]));
        o[m] = sm * o[m];
        if (SaveSigma) sg[m] = sm;
      }
    }
  }
}

// Backward of L = Σ G ⊙ sigmoid(E) ⊙ U. With σ = sigmoid(E) and h = G U σ (1 − σ) (= ∂E), slot j's
// importance takes H_j = f_j h, f = (−a², −b², k); its gradient with respect to y_j is
//   A_j [2 q_j (H_j z_j − mean(H_j z_j)) − β_j z_j],  β_j = 8 q_j² / (M − 1) Σ H_j z_j²
// (β_j = 0 where the floor holds; A_j = dz_j/dy_j). ∂U = G σ + U's; ∂x1 = a ∂U + x1's (x2 alike);
// ∂a = Σ (∂U x1 − 2 a imp_1 h) (b alike), added into ga[n / R] (zeroed first)
// where a is one weight per R rows, written per neuron where it is per neuron. G is either
// contiguous or one value per channel.
template <typename T, bool PerNeuron, bool GRow>
void backward_kernel(const T* g, int64_t gsn, const T* x1, const T* x2, const T* a, int64_t sa, const T* b,
                     int64_t sb, int64_t R, const T* sigma, const double* stats, T* gx1, T* gx2, T* ga, T* gb,
                     int64_t n0, int64_t n1, int64_t M, double k) {
  const double rm = 1.0 / M, c8 = 8.0 / (M - 1);  // divisions once, not per channel
  for (int64_t n = n0; n < n1; ++n) {
    const T* __restrict__ X1 = x1 + n * M;
    const T* __restrict__ X2 = x2 + n * M;
    const int64_t wn = R == 1 ? n : n / R;  // an integer division costs as much as a short channel
    const T* __restrict__ A = a + (PerNeuron ? n * M : wn * sa);
    const T* __restrict__ B = b + (PerNeuron ? n * M : wn * sb);
    const T* __restrict__ G = g + n * gsn;
    const T* __restrict__ S = sigma + n * M;
    T* __restrict__ o1 = gx1 + n * M;
    T* __restrict__ o2 = gx2 + n * M;
    const double* st = stats + n * NSTAT;
    const Channel<T, PerNeuron> ch(st);
    const T q1 = ch.q1, q2 = ch.q2, kk = (T)k;
    const T pi1 = ch.pi1, pi2 = ch.pi2;
    const double wa0 = A[0], wb0 = B[0];
    const T wa1 = A[0], wb1 = B[0];  // hoisted: a load in the loop would keep it from vectorising
    // Σ H_j z_j and Σ H_j z_j², with the per-channel factor f_j taken out where it is one
    double s1 = 0, s2 = 0, su = 0, t1 = 0, t2 = 0, tu = 0;
#pragma omp simd reduction(+ : s1, s2, su, t1, t2, tu)
    for (int64_t m = 0; m < M; ++m) {
      const T y1 = X1[m], y2 = X2[m];
      const T wa = PerNeuron ? A[m] : wa1, wb = PerNeuron ? B[m] : wb1;
      const auto [u, d1, d2, z1, z2, zu] = ch.at(y1, y2, wa, wb);
      const T sm = S[m];
      const T h = (GRow ? G[0] : G[m]) * u * sm * (T(1) - sm);
      const T h1 = PerNeuron ? -wa * wa * h : h, h2 = PerNeuron ? -wb * wb * h : h;
      s1 += h1 * z1; s2 += h2 * z2; su += h * zu;
      t1 += h1 * z1 * z1; t2 += h2 * z2 * z2; tu += h * zu * zu;
    }
    const double f1 = PerNeuron ? 1.0 : -wa0 * wa0, f2 = PerNeuron ? 1.0 : -wb0 * wb0;
    s1 *= f1; t1 *= f1; s2 *= f2; t2 *= f2; su *= k; tu *= k;
    // gradient of slot j: P_j H_j z_j + Q_j + R_j z_j
    const T p1 = (T)(2 * st[6] * st[0]), p2 = (T)(2 * st[7] * st[2]), pu = (T)(2 * st[8] * st[4]);
    const T r1 = (T)(-2 * st[6] * st[0] * s1 * rm), r2 = (T)(-2 * st[7] * st[2] * s2 * rm),
            ru = (T)(-2 * st[8] * st[4] * su * rm);
    const T v1 = (T)(-st[0] * c8 * st[6] * st[6] * t1 * st[9]), v2 = (T)(-st[2] * c8 * st[7] * st[7] * t2 * st[10]),
            vu = (T)(-st[4] * c8 * st[8] * st[8] * tu * st[11]);
    // ∂a = Σ ∂U x1 − 2a Σ imp_1 h, summed as Σ ∂U (x1 − p1) + p1 Σ ∂U: x1's digits below its offset kept
    double ua = 0, ub = 0, sdu = 0, si1 = 0, si2 = 0;
#pragma omp simd reduction(+ : ua, ub, sdu, si1, si2)
    for (int64_t m = 0; m < M; ++m) {
      const T y1 = X1[m], y2 = X2[m];
      const T wa = PerNeuron ? A[m] : wa1, wb = PerNeuron ? B[m] : wb1;
      const auto [u, d1, d2, z1, z2, zu] = ch.at(y1, y2, wa, wb);
      const T sm = S[m], gm = GRow ? G[0] : G[m];
      const T h = gm * u * sm * (T(1) - sm);
      const T du = gm * sm + pu * kk * h * zu + ru + vu * zu;
      o1[m] = wa * du - p1 * wa * wa * h * z1 + r1 + v1 * z1;
      o2[m] = wb * du - p2 * wb * wb * h * z2 + r2 + v2 * z2;
      const T i1 = (z1 * z1 * q1 + T(0.5)) * h, i2 = (z2 * z2 * q2 + T(0.5)) * h;
      if (PerNeuron) {
        ga[n * M + m] = du * y1 - 2 * wa * i1;
        gb[n * M + m] = du * y2 - 2 * wb * i2;
      } else {
        ua += du * d1; ub += du * d2; sdu += du; si1 += i1; si2 += i2;
      }
    }
    if (!PerNeuron) {
      ga[wn] += (T)(ua + (double)pi1 * sdu - 2 * wa0 * si1);
      gb[wn] += (T)(ub + (double)pi2 * sdu - 2 * wb0 * si2);
    }
  }
}

}  // namespace

// The rows split across torch's intra-op threads (at::parallel_for: torch.set_num_threads
// applies), in chunks of whole weight groups (R rows share a weight, whose gradient the backward
// adds up row by row: one thread per group keeps that sum's order, so the numbers do not depend on
// the thread count), of about at::internal::GRAIN_SIZE neurons at the least
static int64_t grain(int64_t neurons_per_item) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, neurons_per_item));
}

template <typename T, bool PerNeuron, bool SaveSigma>
void forward_rows(const T* x1, const T* x2, const T* a, int64_t sa, const T* b, int64_t sb, int64_t R,
                  T* out, T* sigma, double* stats, int64_t N, int64_t M, double k, double lam) {
  at::parallel_for(0, N, grain(M), [&](int64_t n0, int64_t n1) {
    forward_kernel<T, PerNeuron, SaveSigma>(x1, x2, a, sa, b, sb, R, out, sigma, stats, n0, n1, M, k, lam);
  });
}

template <typename T, bool PerNeuron, bool GRow>
void backward_rows(const T* g, int64_t gsn, const T* x1, const T* x2, const T* a, int64_t sa, const T* b,
                   int64_t sb, int64_t R, const T* sigma, const double* stats, T* gx1, T* gx2, T* ga, T* gb,
                   int64_t N, int64_t M, double k) {
  at::parallel_for(0, N / R, grain(M * R), [&](int64_t g0, int64_t g1) {
    backward_kernel<T, PerNeuron, GRow>(g, gsn, x1, x2, a, sa, b, sb, R, sigma, stats, gx1, gx2, ga, gb,
                                        g0 * R, g1 * R, M, k);
  });
}

// The instantiations, chosen at run time: per neuron or per R rows; σ saved or not (forward); the
// gradient as rows or as one value per row (backward)
template <typename T>
static auto forward_for(bool per_neuron, bool save_sigma) {
  return per_neuron ? (save_sigma ? forward_rows<T, true, true> : forward_rows<T, true, false>)
                    : (save_sigma ? forward_rows<T, false, true> : forward_rows<T, false, false>);
}
template <typename T>
static auto backward_for(bool per_neuron, bool row) {
  return per_neuron ? (row ? backward_rows<T, true, true> : backward_rows<T, true, false>)
                    : (row ? backward_rows<T, false, true> : backward_rows<T, false, false>);
}

// The weights' two columns as the kernel reads them, from w (L, 2): L = N / R (one weight per R
// rows) or N·M (one per neuron, read as contiguous rows)
static void columns(const torch::Tensor& w, bool per_neuron, torch::Tensor& a, torch::Tensor& b) {
  a = w.select(1, 0);
  b = w.select(1, 1);
  if (per_neuron && a.stride(0) != 1) a = a.contiguous();
  if (per_neuron && b.stride(0) != 1) b = b.contiguous();
}

// x1, x2: (N, M) contiguous; w: (L, 2), the weights of x1 and x2 (ζ and 1 − ζ) in any strides, one
// per R rows (L = N / R) or, per_neuron, one per neuron (L = N·M, R = 1); one dtype (float32 or
// float64). Returns the output, σ = sigmoid(E) (empty unless save_sigma: the backward's one saved
// tensor of full size, which spares it the exponential) and the per-channel statistics.
// The kernels read raw pointers: what pair_forward and pair_backward are given is checked, not
// trusted (they are public operators)
static void check_rows(const torch::Tensor& x1, const torch::Tensor& x2, const torch::Tensor& w, int64_t R,
                       bool per_neuron, const char* where) {
  TORCH_CHECK(x1.dim() == 2 && x1.sizes() == x2.sizes() && x1.size(1) >= 2 && x1.is_contiguous() &&
              x2.is_contiguous(), where, ": x1, x2 must be (N, M) of one shape, contiguous, M >= 2");
  TORCH_CHECK(x1.device().is_cpu() && x2.device().is_cpu() && w.device().is_cpu(), where, ": CPU tensors");
  TORCH_CHECK(x1.scalar_type() == x2.scalar_type() && x1.scalar_type() == w.scalar_type() &&
              (x1.scalar_type() == torch::kFloat32 || x1.scalar_type() == torch::kFloat64),
              where, ": one dtype, float32 or float64");
  const int64_t N = x1.size(0), M = x1.size(1);
  TORCH_CHECK(R >= 1 && N % R == 0 && (!per_neuron || R == 1) && w.dim() == 2 && w.size(1) == 2 &&
              w.size(0) == (per_neuron ? N * M : N / R), where,
              ": w must be (N / R, 2) with R dividing N, or (N·M, 2) per neuron with R = 1");
}

std::vector<torch::Tensor> pair_forward(torch::Tensor x1, torch::Tensor x2, torch::Tensor w, int64_t R,
                                        bool per_neuron, double k, double lam, bool save_sigma) {
  check_rows(x1, x2, w, R, per_neuron, "pair_forward");
  const int64_t N = x1.size(0), M = x1.size(1);
  torch::Tensor a, b;
  columns(w, per_neuron, a, b);
  auto out = torch::empty_like(x1);
  auto sigma = save_sigma ? torch::empty_like(x1) : torch::empty({0}, x1.options());
  auto stats = torch::empty({N, NSTAT}, x1.options().dtype(torch::kFloat64));
  AT_DISPATCH_FLOATING_TYPES(x1.scalar_type(), "pair_forward", [&] {
    forward_for<scalar_t>(per_neuron, save_sigma)(
      x1.data_ptr<scalar_t>(), x2.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), a.stride(0),
      b.data_ptr<scalar_t>(), b.stride(0), R, out.data_ptr<scalar_t>(), sigma.data_ptr<scalar_t>(),
      stats.data_ptr<double>(), N, M, k, lam);
  });
  return {out, sigma, stats};
}

// g: (N, M), contiguous rows or one value per row (stride 0 along M: the gradient of a sum);
// returns ∂x1, ∂x2 (N, M) and ∂w (L, 2), laid out as (2, L): each column contiguous, as SimAM2's
// weights are (core/fused.py: pair_weights).
std::vector<torch::Tensor> pair_backward(torch::Tensor g, torch::Tensor x1, torch::Tensor x2,
                                         torch::Tensor w, int64_t R, bool per_neuron, torch::Tensor sigma,
                                         torch::Tensor stats, double k) {
  check_rows(x1, x2, w, R, per_neuron, "pair_backward");
  const int64_t N = x1.size(0), M = x1.size(1);
  TORCH_CHECK(g.sizes() == x1.sizes() && g.scalar_type() == x1.scalar_type() && g.device().is_cpu(),
              "pair_backward: g must be x1's shape and dtype");
  const bool row = g.stride(1) == 0;
  TORCH_CHECK(row || g.stride(1) == 1, "pair_backward: g must have rows that are contiguous or constant");
  TORCH_CHECK(sigma.sizes() == x1.sizes() && sigma.is_contiguous() && sigma.scalar_type() == x1.scalar_type() &&
              stats.dim() == 2 && stats.size(0) == N && stats.size(1) == NSTAT && stats.is_contiguous() &&
              stats.scalar_type() == torch::kFloat64 && sigma.device().is_cpu() && stats.device().is_cpu(),
              "pair_backward: sigma and stats must be pair_forward's (save_sigma) for these inputs");
  torch::Tensor a, b;
  columns(w, per_neuron, a, b);
  auto gx1 = torch::empty_like(x1), gx2 = torch::empty_like(x1);
  const int64_t L = a.size(0);
  auto gw = per_neuron ? torch::empty({2, L}, w.options()) : torch::zeros({2, L}, w.options());
  AT_DISPATCH_FLOATING_TYPES(x1.scalar_type(), "pair_backward", [&] {
    scalar_t* pw = gw.data_ptr<scalar_t>();
    backward_for<scalar_t>(per_neuron, row)(
      g.data_ptr<scalar_t>(), g.stride(0), x1.data_ptr<scalar_t>(), x2.data_ptr<scalar_t>(),
      a.data_ptr<scalar_t>(), a.stride(0), b.data_ptr<scalar_t>(), b.stride(0), R,
      sigma.data_ptr<scalar_t>(), stats.data_ptr<double>(), gx1.data_ptr<scalar_t>(),
      gx2.data_ptr<scalar_t>(), pw, pw + L, N, M, k);
  });
  return {gx1, gx2, gw.t()};
}

// -- the node SimAM2 calls with ζ (B, C): weights (ζ, 1 − ζ), one autograd node in C++ ----------------
// Its forward and backward run without Python: on small inputs a Python autograd.Function, its
// checks and views, and the ops that build (ζ, 1 − ζ) and take their gradient cost several times
// the kernel itself.

// called, with the GIL, where a backward must itself be differentiable (create_graph): the
// op-by-op reference's vector-Jacobian product (core/fused.py: _zeta_reference_vjp). Kept for the
// process's life, as the module that set it is.
static PyObject* reference_vjp = nullptr;

void set_reference_vjp(py::object f) {
  Py_XINCREF(f.ptr());
  Py_XDECREF(reference_vjp);
  reference_vjp = f.ptr();
}

// 1 − ζ, as the kernel reads the second weight (ζ, contiguous, is the first)
template <typename T>
static std::vector<T> one_minus(const T* zeta, int64_t L) {
  std::vector<T> b(L);
  for (int64_t i = 0; i < L; ++i) b[i] = (T)1 - zeta[i];
  return b;
}

// x1 (B, C, *S) as the kernel reads it with ζ (B, C): N rows of M neurons (the neuron dims d0, …,
// last), L weights, one per neuron (d0 == 1, 2-D inputs) or one per R rows
struct ZetaLayout {
  int64_t N = 1, M, L, R;
  bool per_neuron;
  ZetaLayout(const torch::Tensor& x1, const torch::Tensor& zeta, int64_t d0) {
    for (int64_t d = 0; d < d0; ++d) N *= x1.size(d);
    M = x1.numel() / N;
    L = zeta.numel();
    per_neuron = d0 < 2;
    R = per_neuron ? 1 : N / L;
  }
};

// The node's forward: (out, σ, statistics) of x1, x2 (B, C, *S) contiguous, the neuron dims d0, …,
// last, and ζ (B, C) contiguous; d0 >= 2 (one weight per channel, R rows each), or d0 == 1 for
// 2-D inputs (one weight per neuron); σ is written only where save_sigma (for a backward). Raw
// pointers and no views: on small inputs each ATen call around the kernel costs a fair part of it.
static std::vector<torch::Tensor> zeta_forward(const torch::Tensor& x1, const torch::Tensor& x2,
                                               const torch::Tensor& zeta, int64_t d0, double k, double lam,
                                               bool save_sigma) {
  const ZetaLayout z(x1, zeta, d0);
  auto out = torch::empty(x1.sizes(), x1.options());
  auto sigma = save_sigma ? torch::empty(x1.sizes(), x1.options()) : torch::empty({0}, x1.options());
  auto stats = torch::empty({z.N, NSTAT}, x1.options().dtype(torch::kFloat64));
  AT_DISPATCH_FLOATING_TYPES(x1.scalar_type(), "zeta_forward", [&] {
    const scalar_t* a = zeta.data_ptr<scalar_t>();
    const auto b = one_minus(a, z.L);
    forward_for<scalar_t>(z.per_neuron, save_sigma)(
      x1.data_ptr<scalar_t>(), x2.data_ptr<scalar_t>(), a, 1, b.data(), 1, z.R, out.data_ptr<scalar_t>(),
      sigma.data_ptr<scalar_t>(), stats.data_ptr<double>(), z.N, z.M, k, lam);
  });
  return {out, sigma, stats};
}

struct ZetaPairNode : public torch::autograd::Function<ZetaPairNode> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x1, torch::Tensor x2,
                               torch::Tensor zeta, int64_t d0, double k, double lam) {
    auto res = zeta_forward(x1, x2, zeta, d0, k, lam, true);  // checked in zeta_attention
    ctx->save_for_backward({x1, x2, zeta, res[1], res[2]});
    ctx->saved_data["d0"] = d0;
    ctx->saved_data["k"] = k;
    ctx->saved_data["lam"] = lam;
    return res[0];
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor none;
    if (!grads[0].defined()) return {none, none, none, none, none, none};
    auto s = ctx->get_saved_variables();
    const auto &x1 = s[0], &x2 = s[1], &zeta = s[2];
    const int64_t d0 = ctx->saved_data["d0"].toInt();
    const double k = ctx->saved_data["k"].toDouble();
    if (torch::GradMode::is_enabled()) {  // create_graph: a second derivative may follow
      TORCH_CHECK(reference_vjp != nullptr, "SimAM²: no reference for a differentiable backward");
      py::gil_scoped_acquire gil;
      auto f = py::reinterpret_borrow<py::object>(reference_vjp);
      auto got = f(x1, x2, zeta, k, ctx->saved_data["lam"].toDouble(), d0, grads[0]).cast<py::tuple>();
      return {got[0].cast<torch::Tensor>(), got[1].cast<torch::Tensor>(), got[2].cast<torch::Tensor>(),
              none, none, none};
    }
    const ZetaLayout z(x1, zeta, d0);
    // the gradient of a sum is one expanded value (every stride 0): read as one value per row
    auto g = grads[0];
    bool zero = true;
    for (auto st : g.strides()) zero = zero && st == 0;
    if (!zero) g = g.contiguous();
    auto gx1 = torch::empty(x1.sizes(), x1.options()), gx2 = torch::empty(x1.sizes(), x1.options());
    auto gzeta = torch::empty(zeta.sizes(), zeta.options());
    AT_DISPATCH_FLOATING_TYPES(x1.scalar_type(), "zeta_backward", [&] {
      const scalar_t* a = zeta.data_ptr<scalar_t>();
      const auto b = one_minus(a, z.L);
      std::vector<scalar_t> gw(2 * z.L, (scalar_t)0);  // ∂a, ∂b (accumulated over R rows)
      backward_for<scalar_t>(z.per_neuron, zero)(
        g.data_ptr<scalar_t>(), zero ? 0 : z.M, x1.data_ptr<scalar_t>(), x2.data_ptr<scalar_t>(), a, 1, b.data(), 1,
        z.R, s[3].data_ptr<scalar_t>(), s[4].data_ptr<double>(), gx1.data_ptr<scalar_t>(),
        gx2.data_ptr<scalar_t>(), gw.data(), gw.data() + z.L, z.N, z.M, k);
      scalar_t* gz = gzeta.data_ptr<scalar_t>();
      for (int64_t i = 0; i < z.L; ++i) gz[i] = gw[i] - gw[z.L + i];  // ∂ζ = ∂a − ∂b
    });
    return {gx1, gx2, gzeta, none, none, none};
  }
};

// sigmoid(E*) ⊙ U (Eq. 4, 7, 8) with weights (ζ, 1 − ζ), k = 2 − r: one autograd node
torch::Tensor zeta_attention(torch::Tensor x1, torch::Tensor x2, torch::Tensor zeta, int64_t d0, double k,
                             double lam) {
  // the kernel reads raw pointers: shapes, dtypes and devices are checked here, not trusted
  TORCH_CHECK(x1.device().is_cpu() && x2.device().is_cpu() && zeta.device().is_cpu(), "zeta_attention: CPU tensors");
  TORCH_CHECK(x1.sizes() == x2.sizes() && x1.dim() >= 2 && zeta.dim() == 2 && zeta.size(0) == x1.size(0) &&
              zeta.size(1) == x1.size(1), "zeta_attention: x1, x2 (B, C, ...) of one shape and zeta (B, C)");
  TORCH_CHECK(x1.scalar_type() == x2.scalar_type() && x1.scalar_type() == zeta.scalar_type(),
              "zeta_attention: one dtype");
  TORCH_CHECK((d0 >= 2 && d0 < x1.dim()) || (d0 == 1 && x1.dim() == 2), "zeta_attention: neuron dims d0.. last");
  if (!torch::GradMode::is_enabled() || !(x1.requires_grad() || x2.requires_grad() || zeta.requires_grad()))
    return zeta_forward(x1.contiguous(), x2.contiguous(), zeta.contiguous(), d0, k, lam, false)[0];  // no σ kept
  return ZetaPairNode::apply(x1.contiguous(), x2.contiguous(), zeta.contiguous(), d0, k, lam);
}

// whether every value of t (float32 or float64) is finite: x · 0 is NaN exactly where x is NaN or
// ±inf, and a sum of zeros cannot overflow; eight lanes, so that the loop vectorises
static bool all_finite(const torch::Tensor& t) {
  auto c = t.contiguous();
  const int64_t n = c.numel();
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "all_finite", [&] {
    const scalar_t* p = c.data_ptr<scalar_t>();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; ++j) acc[j] += (double)(p[i + j] * (scalar_t)0);
    for (; i < n; ++i) acc[0] += (double)(p[i] * (scalar_t)0);
  });
  double s = 0;
  for (int j = 0; j < 8; ++j) s += acc[j];
  return s == 0;
}

// ζ's batch statistics for Eq. 6, in one pass over ζ (B, C), in float64 (SPEC §3): returns
// (Σ_c var_b[c], Σ_c var_max[c]) with var_b the population variance over the batch. In training,
// where they are finite, var_max ← max(var_max, var_b) and weight_sums ← (Σ ζ, Σ (1 − ζ)); where
// they are not (a NaN or inf in ζ, or, when gate_input is given, in the gate's input), both are
// left as they were and Σ var_b is NaN. ζ: float32 or float64; var_max, weight_sums: float32 or
// float64, contiguous; gate_input: None, or the gate's input in float32 or float64.
std::vector<double> zeta_statistics(torch::Tensor zeta, torch::Tensor var_max, torch::Tensor weight_sums,
                                    bool training, c10::optional<torch::Tensor> gate_input) {
  TORCH_CHECK(zeta.dim() == 2 && zeta.device().is_cpu(), "zeta_statistics: ζ (B, C) on the CPU");
  const int64_t B = zeta.size(0), C = zeta.size(1);
  // written through raw pointers: contiguous buffers of C and 2 elements, checked, not trusted
  TORCH_CHECK(var_max.is_contiguous() && var_max.numel() == C && var_max.device().is_cpu() &&
              weight_sums.is_contiguous() && weight_sums.numel() == 2 && weight_sums.device().is_cpu(),
              "zeta_statistics: var_max (C,) and weight_sums (2,), contiguous, on the CPU");
  auto z = zeta.contiguous();
  std::vector<double> mean(C, 0.0), var(C, 0.0);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "zeta_statistics", [&] {
    const scalar_t* p = z.data_ptr<scalar_t>();
    double* __restrict__ mu = mean.data();
    double* __restrict__ v = var.data();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) mu[c] += p[b * C + c];
    for (int64_t c = 0; c < C; ++c) mu[c] /= (double)B;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) {
        const double d = p[b * C + c] - mu[c];
        v[c] += d * d;
      }
  });
  double total = 0.0, sum = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    var[c] /= (double)B;
    total += var[c];
    sum += mean[c] * (double)B;
  }
  if (gate_input.has_value() && !all_finite(*gate_input)) total = std::numeric_limits<double>::quiet_NaN();
  const bool grow = training && std::isfinite(total);
  double vmax = 0.0;
  AT_DISPATCH_FLOATING_TYPES(var_max.scalar_type(), "zeta_statistics_max", [&] {
    scalar_t* m = var_max.data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) {
      if (grow) {
        const scalar_t v = (scalar_t)var[c];
        m[c] = v > m[c] ? v : m[c];
      }
      vmax += m[c];
    }
  });
  if (grow) {
    AT_DISPATCH_FLOATING_TYPES(weight_sums.scalar_type(), "zeta_statistics_sums", [&] {
      scalar_t* w = weight_sums.data_ptr<scalar_t>();
      w[0] = (scalar_t)sum;
      w[1] = (scalar_t)((double)B * (double)C - sum);
    });
    // written in place, as torch.maximum(..., out=) and copy_ would: autograd sees the new version
    torch::autograd::impl::bump_version(var_max);
    torch::autograd::impl::bump_version(weight_sums);
  }
  return {total, vmax};
}

"""

#: per-channel float64 numbers the forward keeps for the backward (the C++ source's NSTAT)
NSTAT = 15
#: The kernel is opt-in, SIMAM2_CPU_KERNEL=1: it is built with a C++ compiler and ninja on first use
#: (a minute or two), a wait the first forward of every fresh environment would otherwise pay.
#: Without it the PyTorch path runs, which computes the same numbers.
_DISABLED = os.environ.get("SIMAM2_CPU_KERNEL", "") in ("", "0")
_state: dict = {}


def _openmp_runtime() -> Path | None:
    """The OpenMP runtime torch has loaded into this process (its libgomp, or libiomp5 / libomp),
    read from /proc/self/maps; None where there is none to find (not Linux, or torch without
    OpenMP). The kernel links exactly that file: -fopenmp at link time would name the system's
    libgomp, a second runtime beside a renamed copy (older wheels ship libgomp-<hash>.so.1), which
    ignores torch.set_num_threads."""
    if not torch.backends.openmp.is_available():
        return None
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in maps:
        fields = line.split(maxsplit=5)  # address, perms, offset, dev, inode, path
        path = Path(fields[5]) if len(fields) == 6 and fields[5].startswith("/") else None
        if path is not None and path.name.startswith(("libgomp", "libiomp5", "libomp")) and path.exists():
            return path
    return None


def _flags(runtime: Path | None) -> tuple[str, list[str], list[str]]:
    """The build's name, compiler flags and linker flags: the vector ISA torch itself dispatches to
    on this CPU, and, given torch's OpenMP ``runtime``, OpenMP linked to it (at::parallel_for is
    inlined into the kernel: without -fopenmp the kernel runs on one thread)."""
    # no -ffast-math: NaN and inf must behave as in PyTorch; these two only let the loops vectorise
    flags = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"]
    name, ldflags = "", []
    if runtime is not None:
        name, flags = "omp_", flags + ["-fopenmp"]
        ldflags = [f"-L{runtime.parent}", f"-l:{runtime.name}", f"-Wl,-rpath,{runtime.parent}"]
    cap = torch.backends.cpu.get_cpu_capability()
    if cap == "AVX512":
        return name + "avx512", flags + ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512vl",
                                         "-mavx512bw", "-mprefer-vector-width=512"], ldflags
    if cap == "AVX2":
        return name + "avx2", flags + ["-mavx2", "-mfma"], ldflags
    return name + "base", flags, ldflags


def _last_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"


def kernel():
    """The compiled module (``pair_forward``, ``pair_backward``), built once; None where it cannot be.

    Built with OpenMP where torch has an OpenMP runtime loaded (Linux; :func:`_openmp_runtime`), so
    that its rows are split across torch's intra-op threads; elsewhere, or where that build fails
    (a compiler without OpenMP), without it, on one thread, with one warning line where it failed."""
    if _DISABLED:
        return None
    if "module" not in _state:
        _state["module"] = None
        failed: list[Exception] = []
        try:
            from torch.utils.cpp_extension import load_inline  # imports setuptools, which may be absent

            runtime = _openmp_runtime()
            for rt in ((runtime, None) if runtime is not None else (None,)):
                isa, flags, ldflags = _flags(rt)
                # the source's and the flags' hash in the name: two versions (another checkout,
                # bench_core's --baseline) or two toolchains each keep their own build
                tag = hashlib.sha1("\n".join([SOURCE, *flags, *ldflags]).encode()).hexdigest()[:10]
                try:
                    _state["module"] = load_inline(f"simam2_pair_kernel_{isa}_{tag}", cpp_sources=SOURCE,
                                                   functions=["pair_forward", "pair_backward", "zeta_attention",
                                                              "zeta_statistics", "set_reference_vjp"],
                                                   extra_cflags=flags, extra_ldflags=ldflags, verbose=False)
                    break
                except Exception as e:  # no compiler, no ninja, no headers, no OpenMP
                    failed.append(e)
        except Exception as e:
            failed.append(e)
        if _state["module"] is None:  # the PyTorch path computes the same numbers
            warnings.warn(f"SimAM²: the CPU kernel could not be built ({_last_line(failed[-1])}); using the "
                          f"PyTorch path", RuntimeWarning, stacklevel=2)
        elif failed:
            warnings.warn(f"SimAM²: the CPU kernel was built without OpenMP ({_last_line(failed[0])}); it runs "
                          f"on one thread", RuntimeWarning, stacklevel=2)
    return _state["module"]


def _built() -> bool:
    return kernel() is not None


def _off() -> bool:
    return False


#: Whether the kernel is built: a constant to ``torch.compile``, which may branch on it. Marking it
#: so imports TorchDynamo (over a second), a cost only the opt-in pays.
available = _off if _DISABLED else torch.compiler.assume_constant_result(_built)


# -- the kernel as operators that torch.compile keeps whole (on the CPU, where the kernel runs) ------
# (named for their schema, the weights taken as one (L, 2) tensor: an operator of another schema,
# as an older checkout's, can live in the same process)


@torch.library.custom_op("simam2::pair_attention_by_weights", mutates_args=(), device_types="cpu")
def pair_attention(x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor, rows: int, per_neuron: bool,
                   r: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sigmoid(E*) ⊙ U, sigmoid(E*), statistics)`` of (N, M) inputs (Eq. 4, 7, 8) with weights
    ``w`` (L, 2), one per ``rows`` rows or one per neuron, and ``r`` a 0-dim tensor: the kernel's
    forward, differentiable (its backward below)."""
    out, sigma, stats = kernel().pair_forward(x1, x2, w, rows, per_neuron, 2.0 - float(r), lam, True)
    return out, sigma, stats


@pair_attention.register_fake
def _(x1, x2, w, rows, per_neuron, r, lam):
    return torch.empty_like(x1), torch.empty_like(x1), x1.new_empty((x1.shape[0], NSTAT), dtype=torch.float64)


@torch.library.custom_op("simam2::pair_attention_by_weights_backward", mutates_args=(), device_types="cpu")
def pair_attention_backward(g: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor, rows: int,
                            per_neuron: bool, sigma: torch.Tensor, stats: torch.Tensor,
                            r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's backward: ``(∂x1, ∂x2, ∂w)`` from the output's gradient ``g``."""
    if g.dim() != 2 or g.stride(1) not in (0, 1):
        g = g.contiguous()
    g1, g2, gw = kernel().pair_backward(g, x1, x2, w, rows, per_neuron, sigma, stats, 2.0 - float(r))
    return g1, g2, gw


@pair_attention_backward.register_fake
def _(g, x1, x2, w, rows, per_neuron, sigma, stats, r):
    return torch.empty_like(x1), torch.empty_like(x1), x1.new_empty((2, w.shape[0])).t()


def _setup(ctx, inputs, output):
    x1, x2, w, rows, per_neuron, r, _ = inputs
    _, sigma, stats = output
    ctx.rows, ctx.per_neuron = rows, per_neuron
    ctx.save_for_backward(x1, x2, w, r, sigma, stats)
    # σ and the statistics are outputs only so that the backward can read them: not differentiable
    # (a gradient through them is an error, not a silent zero), and no zero gradients are filled
    # for them (one of full size) per backward
    ctx.mark_non_differentiable(sigma, stats)
    ctx.set_materialize_grads(False)


def _backward(ctx, g_out, g_sigma, g_stats):
    if g_out is None:
        return None, None, None, None, None, None, None
    x1, x2, w, r, sigma, stats = ctx.saved_tensors
    g1, g2, gw = pair_attention_backward(g_out, x1, x2, w, ctx.rows, ctx.per_neuron, sigma, stats, r)
    return g1, g2, gw, None, None, None, None


pair_attention.register_autograd(_backward, setup_context=_setup)
