//! The element-wise and row operations of a BERT layer, written so the compiler vectorises
//! them: sums over independent lanes (strict fp32 order would keep a single running sum
//! scalar) and branch-free `exp` / `erf`.

/// Lanes of the partial sums (one 512-bit register of fp32).
const LANES: usize = 16;

/// Σ aᵢ·bᵢ.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for i in 0..LANES {
            acc[i] += x[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `x ← LayerNorm(x + residual)` row by row (`residual` may be empty: none).
pub fn add_layer_norm(x: &mut [f32], residual: &[f32], weight: &[f32], bias: &[f32], eps: f32) {
    let width = weight.len();
    if !residual.is_empty() {
        for (x, r) in x.iter_mut().zip(residual) {
            *x += r;
        }
    }
    for row in x.chunks_exact_mut(width) {
        let mean = sum(row) / width as f32;
        for v in row.iter_mut() {
            *v -= mean;
        }
        let variance = dot(row, row) / width as f32;
        let scale = 1.0 / (variance + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *v = *v * scale * w + b;
        }
    }
}

/// eˣ to about 2 ulp: 2ⁿ · e^r with r = x − n·ln 2 in [−ln2/2, ln2/2] and a degree-6 polynomial.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5·2²³ rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let y = x * LOG2E + ROUND;
    let n = y - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ built from y's bits, which hold n in the low mantissa bits (`n as i32` would not
    // vectorise: Rust's float-to-int cast saturates and maps NaN to 0, lane by lane).
    let exponent = y.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    p * f32::from_bits(exponent << 23)
}

/// erf(x) within 1.5·10⁻⁷ (Abramowitz & Stegun 7.1.26).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// GELU as BERT defines it, x·Φ(x) with the exact normal CDF (not the tanh approximation).
pub fn gelu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// The largest value (over independent lanes, so it vectorises; NaN-free input).
fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for x in chunks {
        for i in 0..LANES {
            acc[i] = if x[i] > acc[i] { x[i] } else { acc[i] };
        }
    }
    acc.iter().fold(tail, |m, &v| if v > m { v } else { m })
}

/// Softmax of one row, in place.
pub fn softmax(x: &mut [f32]) {
    let max = max(x);
    for v in x.iter_mut() {
        *v = exp(*v - max);
    }
    let total = sum(x);
    for v in x.iter_mut() {
        *v /= total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_the_standard_library() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 5e-7,
                "exp({x}) = {got}, want {want}"
            );
            let want = libm_erf(f64::from(x)) as f32;
            assert!(
                (erf(x) - want).abs() < 3e-7,
                "erf({x}) = {}, want {want}",
                erf(x)
            );
        }
        assert_eq!(exp(-200.0), exp(-87.0));
    }

    /// erf by its Taylor series (|x| ≤ 3) or its continued fraction, in f64.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) ≈ e^{-x²}/(x√π)·(1 − 1/(2x²) + 3/(4x⁴)), far below f32 resolution at 3.
            let a = x.abs();
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt())
                * (1.0 - 1.0 / (2.0 * a * a) + 3.0 / (4.0 * a.powi(4)));
            return (1.0 - erfc).copysign(x);
        }
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn layer_norm_centres_and_scales_each_row() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 14.0];
        add_layer_norm(&mut x, &[], &[1.0; 4], &[0.5; 4], 0.0);
        for row in x.chunks(4) {
            let mean: f32 = row.iter().sum::<f32>() / 4.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(
                (mean - 0.5).abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
                "{row:?}"
            );
        }
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut x = vec![1.0, 3.0, -2.0, 0.5];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] > x[3] && x[3] > x[2]);
    }
}
