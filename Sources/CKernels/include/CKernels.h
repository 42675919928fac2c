// Hot float32 loops that need the CPU's FMA instructions (STYLE §4.10: in Swift on baseline x86-64 a fused
// multiply-add is a libm call per lane). Each kernel comes in variants compiled for AVX-512F and for AVX2+FMA;
// the caller picks one at run time from the CPU's flags (`haste_cpu_level`), and keeps its portable Swift loop
// for other CPUs. Every variant computes exactly the same values as that Swift loop: the same IEEE operations
// (fma, sqrt and division are correctly rounded in every instruction set) in the same order per element.
#include <stddef.h>

/// 2: AVX-512F; 1: AVX2 and FMA; 0: neither (the caller's portable loop). From CPUID via the compiler's runtime.
int haste_cpu_level(void);

/// torch AdamW over float32 elements [0, n) (see CPUBackend.adamw for the per-element formula, which this repeats).
/// `level` is haste_cpu_level()'s answer (1 or 2).
void haste_adamw_f32(int level, float *p, const float *g, float *m, float *v, size_t n, float decay, int apply_decay,
                     float w, int small_weight, float b2, float one_minus_b2, float bc2s, float eps, float neg_step);
