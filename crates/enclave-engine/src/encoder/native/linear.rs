//! Dense layers `y = x·Wᵀ + b` for the native encoder. Weights are packed once at load: as
//! bfloat16 pairs for the CPU's AVX-512 BF16 dot products (two multiply-adds per lane per
//! instruction, accumulated in fp32 over the whole row), or kept in fp32 for the `gemm` crate's
//! kernels on any other CPU.

/// Output columns per packed panel: one 512-bit register of fp32 lanes.
const PANEL: usize = 16;

/// A dense layer of `outputs × inputs` weights and `outputs` biases.
pub struct Linear {
    inputs: usize,
    outputs: usize,
    weights: Weights,
    bias: Vec<f32>,
}

enum Weights {
    /// Row-major `outputs × inputs`.
    F32(Vec<f32>),
    /// Panels of [`PANEL`] output columns; in each, for every pair of inputs, one `u32` per
    /// column holding the two bfloat16 weights (lower half: the even input).
    Bf16(Vec<u32>),
}

impl Linear {
    /// `weights` row-major `outputs × inputs`; `bias` of `outputs` values or empty (none).
    /// `bf16` packs the weights for AVX-512 BF16 (the caller checks the CPU has it).
    pub fn new(weights: &[f32], bias: &[f32], outputs: usize, bf16: bool) -> Self {
        let inputs = weights.len().checked_div(outputs).unwrap_or(0);
        let bias = if bias.is_empty() {
            vec![0.0; outputs]
        } else {
            bias.to_vec()
        };
        let weights = if bf16 {
            Weights::Bf16(pack_bf16(weights, outputs, inputs))
        } else {
            Weights::F32(weights.to_vec())
        };
        Self {
            inputs,
            outputs,
            weights,
            bias,
        }
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `rows` inputs of `self.inputs()` values each (row-major) → `rows × self.outputs()`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), rows * self.inputs);
        let mut out = vec![0.0f32; rows * self.outputs];
        if rows == 0 || self.outputs == 0 {
            return out;
        }
        match &self.weights {
            Weights::F32(w) => {
                // SAFETY: every pointer covers its matrix under the strides given: x is
                // rows × inputs, w is outputs × inputs (read as its transpose), out is
                // rows × outputs; the buffers do not overlap.
                unsafe {
                    gemm::gemm(
                        rows,
                        self.outputs,
                        self.inputs,
                        out.as_mut_ptr(),
                        1,
                        self.outputs as isize,
                        false,
                        x.as_ptr(),
                        1,
                        self.inputs as isize,
                        w.as_ptr(),
                        self.inputs as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for row in out.chunks_exact_mut(self.outputs) {
                    for (y, b) in row.iter_mut().zip(&self.bias) {
                        *y += b;
                    }
                }
            }
            Weights::Bf16(panels) => {
                let pairs = self.inputs.div_ceil(2);
                let a = to_bf16_pairs(x, rows, self.inputs, pairs);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Bf16 weights are only packed where the CPU has AVX-512 BF16
                // (`bf16_supported`), and the buffers have the sizes the kernel reads.
                unsafe {
                    bf16::matmul(&a, panels, &self.bias, &mut out, rows, self.outputs, pairs);
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = (a, panels);
                    unreachable!("bf16 weights are packed only on x86_64");
                }
            }
        }
        out
    }
}

/// True where the CPU multiplies bfloat16 natively (AVX-512 BF16).
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// fp32 → bfloat16 bits, rounding to nearest even (as the hardware conversion does).
fn bf16_bits(x: f32) -> u32 {
    let bits = x.to_bits();
    bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16
}

/// Two bfloat16 values in one lane: `lo` in the lower half.
fn bf16_pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) | (bf16_bits(hi) << 16)
}

/// `rows × inputs` fp32 → `rows × pairs` bfloat16 pairs (an odd last input pairs with zero).
fn to_bf16_pairs(x: &[f32], rows: usize, inputs: usize, pairs: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(rows * pairs);
    for row in x.chunks_exact(inputs).take(rows) {
        let mut chunks = row.chunks_exact(2);
        out.extend(chunks.by_ref().map(|p| bf16_pair(p[0], p[1])));
        if let [last] = chunks.remainder() {
            out.push(bf16_pair(*last, 0.0));
        }
    }
    out
}

/// Packs row-major `outputs × inputs` weights into panels (see [`Weights::Bf16`]); columns past
/// `outputs` in the last panel are zero.
fn pack_bf16(w: &[f32], outputs: usize, inputs: usize) -> Vec<u32> {
    let pairs = inputs.div_ceil(2);
    let panels = outputs.div_ceil(PANEL);
    let weight = |n: usize, k: usize| {
        if n < outputs && k < inputs {
            w[n * inputs + k]
        } else {
            0.0
        }
    };
    let mut out = Vec::with_capacity(panels * pairs * PANEL);
    for panel in 0..panels {
        for pair in 0..pairs {
            for col in 0..PANEL {
                let n = panel * PANEL + col;
                out.push(bf16_pair(weight(n, 2 * pair), weight(n, 2 * pair + 1)));
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod bf16 {
    use std::arch::x86_64::*;

    use super::PANEL;

    /// Rows of the output computed together (8 rows × 2 panels = 16 accumulator registers).
    const ROWS: usize = 8;

    /// `out = a·wᵀ + bias`: `a` is `rows × pairs` bfloat16 pairs, `w` packed panels.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn matmul(
        a: &[u32],
        w: &[u32],
        bias: &[f32],
        out: &mut [f32],
        rows: usize,
        outputs: usize,
        pairs: usize,
    ) {
        let panels = outputs.div_ceil(PANEL);
        let mut panel = 0;
        while panel < panels {
            let width = if panel + 1 < panels { 2 } else { 1 };
            let mut row = 0;
            while row < rows {
                let count = (rows - row).min(ROWS);
                let tile = Tile {
                    a: &a[row * pairs..],
                    w: &w[panel * pairs * PANEL..],
                    pairs,
                    row,
                    column: panel * PANEL,
                };
                match (count, width) {
                    (ROWS, 2) => kernel::<ROWS, 2>(&tile, bias, out, outputs),
                    (_, 2) => kernel_rows::<2>(count, &tile, bias, out, outputs),
                    _ => kernel_rows::<1>(count, &tile, bias, out, outputs),
                }
                row += count;
            }
            panel += width;
        }
    }

    /// 32 bfloat16 values, as the BF16 instructions type them.
    #[inline(always)]
    fn as_bf16(v: __m512i) -> __m512bh {
        // SAFETY: both are 512-bit vectors; any bit pattern is a valid value of either.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }

    /// Where one block of the output starts.
    struct Tile<'a> {
        a: &'a [u32],
        w: &'a [u32],
        pairs: usize,
        row: usize,
        column: usize,
    }

    /// The last rows (fewer than [`ROWS`]), one row count per instantiation.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel_rows<const P: usize>(
        count: usize,
        tile: &Tile,
        bias: &[f32],
        out: &mut [f32],
        outputs: usize,
    ) {
        match count {
            1 => kernel::<1, P>(tile, bias, out, outputs),
            2 => kernel::<2, P>(tile, bias, out, outputs),
            3 => kernel::<3, P>(tile, bias, out, outputs),
            4 => kernel::<4, P>(tile, bias, out, outputs),
            5 => kernel::<5, P>(tile, bias, out, outputs),
            6 => kernel::<6, P>(tile, bias, out, outputs),
            7 => kernel::<7, P>(tile, bias, out, outputs),
            _ => kernel::<8, P>(tile, bias, out, outputs),
        }
    }

    /// `R` rows × `P` panels of the output, accumulated over every input pair in registers.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn kernel<const R: usize, const P: usize>(
        tile: &Tile,
        bias: &[f32],
        out: &mut [f32],
        outputs: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        let a = tile.a.as_ptr();
        let w = tile.w.as_ptr();
        for k in 0..tile.pairs {
            let mut b = [_mm512_setzero_si512(); P];
            for (p, b) in b.iter_mut().enumerate() {
                *b = _mm512_loadu_si512(w.add((p * tile.pairs + k) * PANEL).cast());
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(*a.add(r * tile.pairs + k) as i32);
                for (acc, b) in acc.iter_mut().zip(&b) {
                    *acc = _mm512_dpbf16_ps(*acc, as_bf16(x), as_bf16(*b));
                }
            }
        }
        for (p, column) in (0..P).map(|p| (p, tile.column + p * PANEL)) {
            let valid = outputs.saturating_sub(column).min(PANEL);
            let mask: __mmask16 = if valid == PANEL {
                0xFFFF
            } else {
                (1u16 << valid) - 1
            };
            let b = _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(column));
            for (r, acc) in acc.iter().enumerate() {
                let dst = out.as_mut_ptr().add((tile.row + r) * outputs + column);
                _mm512_mask_storeu_ps(dst, mask, _mm512_add_ps(acc[p], b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], b: &[f32], rows: usize, outputs: usize) -> Vec<f32> {
        let inputs = w.len() / outputs;
        let mut out = vec![0.0; rows * outputs];
        for r in 0..rows {
            for n in 0..outputs {
                let dot: f64 = (0..inputs)
                    .map(|k| f64::from(x[r * inputs + k]) * f64::from(w[n * inputs + k]))
                    .sum();
                out[r * outputs + n] = dot as f32 + b[n];
            }
        }
        out
    }

    fn values(count: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn both_weight_layouts_match_a_plain_product_on_ragged_shapes() {
        // Odd inputs, outputs that do not fill a panel, rows that do not fill a tile.
        for (rows, inputs, outputs) in [
            (1, 1, 1),
            (3, 7, 5),
            (9, 33, 17),
            (17, 64, 48),
            (8, 384, 40),
        ] {
            let x = values(rows * inputs, 1);
            let w = values(outputs * inputs, 2);
            let b = values(outputs, 3);
            let expected = naive(&x, &w, &b, rows, outputs);
            let mut layouts = vec![false];
            if bf16_supported() {
                layouts.push(true);
            }
            for bf16 in layouts {
                let got = Linear::new(&w, &b, outputs, bf16).forward(&x, rows);
                // bfloat16 keeps 8 bits of mantissa: about 0.4% of each product.
                let tolerance = if bf16 {
                    0.02 * (inputs as f32).sqrt()
                } else {
                    1e-4
                };
                for (g, e) in got.iter().zip(&expected) {
                    assert!(
                        (g - e).abs() < tolerance,
                        "{rows}x{inputs}x{outputs} bf16={bf16}: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 lies halfway between two bfloat16 values: ties go to the even one (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
    }
}
