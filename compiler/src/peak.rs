//! The machine's single-core f32 FMA peak, measured (the yardstick of GEMM efficiency).
//!
//! A loop of independent fused multiply-adds on the widest vectors the CPU has, with enough
//! accumulators (12) to cover the FMA latency on every pipe, timed on the calling thread; the
//! best of several repetitions is the peak. Measured rather than computed from a data sheet
//! because clocks (turbo, shared-host throttling) differ from the nominal ones.

use std::time::Instant;

/// A measured peak.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Peak {
    /// f32 GFLOP/s of one core (an FMA counts as two operations).
    pub gflops: f64,
    /// The instruction set measured: `avx512f`, `avx2+fma` or `scalar`.
    pub isa: &'static str,
}

/// Measures the single-core f32 FMA peak (about a quarter of a second).
pub fn fma_peak_f32() -> Peak {
    const ITERS: u64 = 2_000_000;
    let best = |f: &dyn Fn() -> f64, flops_per_iter: f64| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let sink = f();
                std::hint::black_box(sink);
                ITERS as f64 * flops_per_iter / t.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max)
    };
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            let g = best(&|| unsafe { x86::avx512(ITERS) }, 12.0 * 16.0 * 2.0);
            return Peak {
                gflops: g,
                isa: "avx512f",
            };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            let g = best(&|| unsafe { x86::avx2(ITERS) }, 12.0 * 8.0 * 2.0);
            return Peak {
                gflops: g,
                isa: "avx2+fma",
            };
        }
    }
    let g = best(&|| scalar(ITERS), 8.0 * 2.0);
    Peak {
        gflops: g,
        isa: "scalar",
    }
}

fn scalar(iters: u64) -> f64 {
    let mut acc = [1.0f32; 8];
    for _ in 0..iters {
        for a in &mut acc {
            *a = a.mul_add(1.000_000_1, 1e-7);
        }
    }
    acc.iter().map(|&x| x as f64).sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Generates a kernel running `iters` rounds of 12 independent vector FMAs (enough to cover
    /// the FMA latency on both pipes, few enough to stay in registers).
    macro_rules! fma_loop {
        ($name:ident, $feat:literal, $vec:ty, $set1:ident, $fma:ident, $store:ident, $lanes:expr) => {
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(iters: u64) -> f64 {
                let (b, c) = ($set1(1.000_000_1), $set1(1e-7));
                let mut acc: [$vec; 12] = [$set1(1.0); 12];
                for _ in 0..iters {
                    for a in &mut acc {
                        *a = $fma(*a, b, c);
                    }
                }
                let mut out = [0f32; $lanes];
                let mut sum = 0.0;
                for a in acc {
                    // SAFETY: `out` holds exactly one vector of lanes.
                    unsafe { $store(out.as_mut_ptr(), a) };
                    sum += out[0] as f64;
                }
                sum
            }
        };
    }
    fma_loop!(
        avx512,
        "avx512f",
        __m512,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps,
        16
    );
    fma_loop!(
        avx2,
        "avx2,fma",
        __m256,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps,
        8
    );
}
