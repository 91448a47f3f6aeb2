/* The C library's float maths, computed the same way on every machine (see features/portable_math.py).
 *
 * Each float function evaluates its double counterpart on the exactly converted arguments and rounds once
 * to float. The double result is within an ulp of the exact value, 29 bits finer than a float, so the
 * rounding gives the correctly rounded float except in the vanishingly rare case of a result within 2^-29 ulp
 * of a midpoint. That is what glibc 2.41 returns for these functions and not what glibc 2.36 does.
 *
 * Built by setup.sh with -fno-builtin, so the compiler cannot turn (float)exp((double)x) back into expf(x).
 */
#include <math.h>

int selfmm_portable_math(void) { return 1; } /* the version; features/portable_math.py looks for it */

#define UNARY(name, double_name) \
  float name(float x) { return (float)double_name((double)x); }
#define BINARY(name, double_name) \
  float name(float x, float y) { return (float)double_name((double)x, (double)y); }

UNARY(expf, exp)
UNARY(exp2f, exp2)
UNARY(expm1f, expm1)
UNARY(logf, log)
UNARY(log2f, log2)
UNARY(log10f, log10)
UNARY(log1pf, log1p)
UNARY(sinf, sin)
UNARY(cosf, cos)
UNARY(tanf, tan)
UNARY(asinf, asin)
UNARY(acosf, acos)
UNARY(atanf, atan)
UNARY(sinhf, sinh)
UNARY(coshf, cosh)
UNARY(tanhf, tanh)
UNARY(asinhf, asinh)
UNARY(acoshf, acosh)
UNARY(atanhf, atanh)
UNARY(cbrtf, cbrt)
UNARY(erff, erf)
UNARY(erfcf, erfc)
UNARY(tgammaf, tgamma)
BINARY(powf, pow)
BINARY(atan2f, atan2)
BINARY(hypotf, hypot)

void sincosf(float x, float *sin_x, float *cos_x) {
  *sin_x = (float)sin((double)x);
  *cos_x = (float)cos((double)x);
}
