#include "runtime/canon_math.h"

#include "runtime/canon_expf.h"

#include <cmath>
#include <cstring>

namespace galleon::canon {
namespace {

// Round to nearest, ties to even, for |x| < 2^51 (the default IEEE rounding of the addition).
double round_even(double x) {
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  return (x + magic) - magic;
}
double pow2(int n) {  // 2^n for n in [-1022, 1023]
  uint64_t bits = uint64_t(n + 1023) << 52;
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

}  // namespace

float expf(float x) { return expf_branchless(x); }

float silu(float x) { return x / (1.0f + expf(-x)); }

float tanh(float x) { return tanhf_branchless(x); }

float gelu(float x) { return gelu_branchless(x); }

float softcap(float x, float cap) { return cap * tanh(x / cap); }

double exp(double x) {
  if (x != x) return x;
  if (x > 709.0) return INFINITY;
  if (x < -745.0) return 0.0;
  const double n = round_even(x * 1.4426950408889634);
  double r = x - n * 6.93147180369123816490e-01;  // ln2 hi (exact products for |n| < 2^20)
  r = r - n * 1.90821492927058770002e-10;         // ln2 lo
  double p = 1.0 / 6227020800.0;                  // 1/13!
  const double inv_fact[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                             1.0 / 362880.0,    1.0 / 40320.0,    1.0 / 5040.0,
                             1.0 / 720.0,       1.0 / 120.0,      1.0 / 24.0,
                             1.0 / 6.0,         0.5,              1.0,
                             1.0};
  for (double c : inv_fact) p = p * r + c;
  const int ni = int(n);
  const int n1 = ni / 2;
  const int n2 = ni - n1;
  return (p * pow2(n1)) * pow2(n2);
}

double log(double x) {
  if (!(x > 0)) return x == 0 ? -INFINITY : NAN;
  if (x == INFINITY) return x;
  // x = m * 2^e with m in [sqrt(1/2), sqrt(2)). frexp is exact.
  int e = 0;
  double m = std::frexp(x, &e);  // m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m = m * 2.0;
    e -= 1;
  }
  // log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716.
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double p = 1.0 / 27.0;
  for (int k = 25; k >= 1; k -= 2) p = p * s2 + 1.0 / double(k);
  const double log_m = 2.0 * s * p;
  return double(e) * 6.93147180369123816490e-01 + (double(e) * 1.90821492927058770002e-10 + log_m);
}

double pow(double base, double e) { return exp(e * log(base)); }

void sincos(double x, double* s, double* c) {
  if (!(x - x == 0)) {  // inf or nan
    *s = *c = NAN;
    return;
  }
  // Reduce by pi/2 in three parts (Cody-Waite); exact enough for |x| < 2^20 * pi/2.
  const double k = round_even(x * 0.63661977236758134308);
  double r = x - k * 1.57079632673412561417e+00;
  r = r - k * 6.07710050650619224932e-11;
  r = r - k * 2.02226624879595063154e-21;
  const double r2 = r * r;
  // Taylor series, |r| <= pi/4, Horner form in r^2.
  // sin r = r + r^3 (-1/3! + r^2/5! - r^4/7! + ... + r^14/17!)
  const double sin_coef[] = {-1.0 / 1307674368000.0, 1.0 / 6227020800.0, -1.0 / 39916800.0,
                             1.0 / 362880.0,         -1.0 / 5040.0,     1.0 / 120.0,
                             -1.0 / 6.0};
  double ps = 1.0 / 355687428096000.0;  // 1/17!
  for (double cf : sin_coef) ps = ps * r2 + cf;
  const double sin_r = r + r * r2 * ps;
  // cos r = 1 + r^2 (-1/2! + r^2/4! - ... - r^16/18!)
  const double cos_coef[] = {1.0 / 20922789888000.0, -1.0 / 87178291200.0, 1.0 / 479001600.0,
                             -1.0 / 3628800.0,       1.0 / 40320.0,        -1.0 / 720.0,
                             1.0 / 24.0,             -0.5};
  double pc = -1.0 / 6402373705728000.0;  // -1/18!
  for (double cf : cos_coef) pc = pc * r2 + cf;
  const double cos_r = 1.0 + r2 * pc;
  const int64_t q = int64_t(k) & 3;
  switch (q) {
    case 0: *s = sin_r; *c = cos_r; break;
    case 1: *s = cos_r; *c = -sin_r; break;
    case 2: *s = -sin_r; *c = -cos_r; break;
    default: *s = -cos_r; *c = sin_r; break;
  }
}

}  // namespace galleon::canon
