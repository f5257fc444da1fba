//! Dense layers `y = x·Wᵀ + b` for the native encoder. Weights are packed once at load for the
//! fastest kernel the CPU has ([`Kernel`]): bfloat16 pairs for AVX-512 BF16 dot products (two
//! multiply-adds per lane per instruction, accumulated in fp32 over the whole row), fp32 panels
//! for AVX-512F or AVX2+FMA, or plain rows on any other CPU.

#[cfg(target_arch = "x86_64")]
use super::kernels::{self, Operands, PANEL};

/// Output columns per packed panel (the kernels' register width in fp32 lanes).
#[cfg(not(target_arch = "x86_64"))]
const PANEL: usize = 16;

/// The matrix kernel the weights are packed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// bfloat16 weights and inputs, fp32 sums (AVX-512 BF16).
    Bf16,
    /// fp32 with 512-bit registers (AVX-512F).
    F32x16,
    /// fp32 with 256-bit registers (AVX2 + FMA).
    F32x8,
    /// fp32 with plain loops (any CPU).
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs: bf16 when `bf16` is asked for and supported, else fp32.
    pub fn detect(bf16: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if bf16 && has!("avx512f") && has!("avx512bf16") {
                return Kernel::Bf16;
            }
            if has!("avx512f") {
                return Kernel::F32x16;
            }
            if has!("avx2") && has!("fma") {
                return Kernel::F32x8;
            }
        }
        let _ = bf16;
        Kernel::Portable
    }
}

/// True where the CPU multiplies bfloat16 natively (AVX-512 BF16).
pub fn bf16_supported() -> bool {
    Kernel::detect(true) == Kernel::Bf16
}

/// True where the CPU has an fp32 vector kernel here (AVX-512F or AVX2+FMA).
pub fn f32_vectorised() -> bool {
    Kernel::detect(false) != Kernel::Portable
}

/// A dense layer of `outputs × inputs` weights and `outputs` biases.
pub struct Linear {
    inputs: usize,
    outputs: usize,
    kernel: Kernel,
    weights: Weights,
    bias: Vec<f32>,
}

enum Weights {
    /// Row-major `outputs × inputs` (the portable loops).
    Rows(Vec<f32>),
    /// Panels of [`PANEL`] output columns, in each the column's weights for every input.
    F32Panels(Vec<f32>),
    /// Panels of [`PANEL`] output columns; in each, for every pair of inputs, one `u32` per
    /// column holding the two bfloat16 weights (lower half: the even input).
    Bf16Panels(Vec<u32>),
}

impl Linear {
    /// `weights` row-major `outputs × inputs`; `bias` of `outputs` values or empty (none);
    /// `kernel` from [`Kernel::detect`].
    pub fn new(weights: &[f32], bias: &[f32], outputs: usize, kernel: Kernel) -> Self {
        let inputs = weights.len().checked_div(outputs).unwrap_or(0);
        let bias = if bias.is_empty() {
            vec![0.0; outputs]
        } else {
            bias.to_vec()
        };
        let weights = match kernel {
            Kernel::Bf16 => Weights::Bf16Panels(pack(outputs, inputs.div_ceil(2), |n, k| {
                bf16_pair(
                    weight(weights, outputs, inputs, n, 2 * k),
                    weight(weights, outputs, inputs, n, 2 * k + 1),
                )
            })),
            Kernel::F32x16 | Kernel::F32x8 => Weights::F32Panels(pack(outputs, inputs, |n, k| {
                weight(weights, outputs, inputs, n, k)
            })),
            Kernel::Portable => Weights::Rows(weights.to_vec()),
        };
        Self {
            inputs,
            outputs,
            kernel,
            weights,
            bias,
        }
    }

    /// `rows` inputs of `inputs` values each (row-major) → `rows × outputs`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.forward_panels(x, rows, 0..self.outputs.div_ceil(PANEL))
    }

    /// [`Self::forward`] with the output columns split between `threads` threads (for a batch
    /// too small to split by input). Worth it only for large products: each call starts threads.
    pub fn forward_parallel(&self, x: &[f32], rows: usize, threads: usize) -> Vec<f32> {
        let panels = self.outputs.div_ceil(PANEL);
        if threads <= 1 || panels < 2 {
            return self.forward(x, rows);
        }
        let per_thread = panels.div_ceil(threads);
        let ranges: Vec<_> = (0..panels)
            .step_by(per_thread)
            .map(|start| start..(start + per_thread).min(panels))
            .collect();
        let parts: Vec<Vec<f32>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranges[1..]
                .iter()
                .map(|range| scope.spawn(|| self.forward_panels(x, rows, range.clone())))
                .collect();
            let first = self.forward_panels(x, rows, ranges[0].clone());
            let rest = handles.into_iter().map(|h| {
                // A panic in a helper thread surfaces here, where the batch's caller catches it.
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            std::iter::once(first).chain(rest).collect()
        });
        let mut out = vec![0.0f32; rows * self.outputs];
        for (range, part) in ranges.iter().zip(&parts) {
            let first = range.start * PANEL;
            let width = part.len() / rows.max(1);
            for (row, values) in part.chunks_exact(width.max(1)).enumerate() {
                out[row * self.outputs + first..][..width].copy_from_slice(values);
            }
        }
        out
    }

    /// The output columns of `panels` (panels of [`PANEL`] columns) → `rows × columns`.
    fn forward_panels(&self, x: &[f32], rows: usize, panels: std::ops::Range<usize>) -> Vec<f32> {
        debug_assert_eq!(x.len(), rows * self.inputs);
        let first = (panels.start * PANEL).min(self.outputs);
        let end = (panels.end * PANEL).min(self.outputs);
        let outputs = end - first;
        let mut out = vec![0.0f32; rows * outputs];
        if rows == 0 || outputs == 0 {
            return out;
        }
        let bias = &self.bias[first..end];
        match &self.weights {
            Weights::Rows(w) => portable(
                x,
                &w[first * self.inputs..end * self.inputs],
                &mut out,
                self.inputs,
                bias,
            ),
            #[cfg(target_arch = "x86_64")]
            Weights::F32Panels(w) => {
                let depth = self.inputs;
                let ops = Operands {
                    a: x,
                    w: &w[panels.start * depth * PANEL..panels.end * depth * PANEL],
                    bias,
                    out: &mut out,
                    rows,
                    outputs,
                    depth,
                };
                // SAFETY: panels are packed only for a kernel `Kernel::detect` found on this
                // CPU, and the operands have the sizes they declare.
                unsafe {
                    if self.kernel == Kernel::F32x16 {
                        kernels::matmul_f32_512(ops)
                    } else {
                        kernels::matmul_f32_256(ops)
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Weights::Bf16Panels(w) => {
                let depth = self.inputs.div_ceil(2);
                let a = to_bf16_pairs(x, rows, self.inputs, depth);
                let ops = Operands {
                    a: &a,
                    w: &w[panels.start * depth * PANEL..panels.end * depth * PANEL],
                    bias,
                    out: &mut out,
                    rows,
                    outputs,
                    depth,
                };
                // SAFETY: as above; bf16 panels exist only where the CPU has AVX-512 BF16.
                unsafe { kernels::matmul_bf16(ops) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Weights::F32Panels(_) | Weights::Bf16Panels(_) => {
                unreachable!("panels are packed only on x86_64")
            }
        }
        out
    }
}

/// Weight `(n, k)` of a row-major `outputs × inputs` matrix, zero outside it (panel padding).
fn weight(w: &[f32], outputs: usize, inputs: usize, n: usize, k: usize) -> f32 {
    if n < outputs && k < inputs {
        w[n * inputs + k]
    } else {
        0.0
    }
}

/// Lays `value(n, k)` out in panels of [`PANEL`] columns × `depth`.
fn pack<T>(outputs: usize, depth: usize, value: impl Fn(usize, usize) -> T) -> Vec<T> {
    let panels = outputs.div_ceil(PANEL);
    let mut out = Vec::with_capacity(panels * depth * PANEL);
    for panel in 0..panels {
        for k in 0..depth {
            out.extend((0..PANEL).map(|col| value(panel * PANEL + col, k)));
        }
    }
    out
}

/// `out = x·wᵀ + bias` with plain loops (dot products over independent lanes vectorise).
fn portable(x: &[f32], w: &[f32], out: &mut [f32], inputs: usize, bias: &[f32]) {
    for (x, out) in x.chunks_exact(inputs).zip(out.chunks_exact_mut(bias.len())) {
        for ((y, w), b) in out.iter_mut().zip(w.chunks_exact(inputs)).zip(bias) {
            *y = super::ops::dot(x, w) + b;
        }
    }
}

/// fp32 → bfloat16 bits, rounding to nearest even (as the hardware conversion does).
fn bf16_bits(x: f32) -> u32 {
    if x.is_nan() {
        return 0x7FC0;
    }
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
    // 32 values at a time in one instruction where the CPU has it (the same rounding).
    #[cfg(target_arch = "x86_64")]
    let vectorised = bf16_supported();
    for row in x.chunks_exact(inputs).take(rows) {
        #[cfg(target_arch = "x86_64")]
        let row = if vectorised {
            let whole = row.len() / 32 * 32;
            let start = out.len();
            out.resize(start + whole / 2, 0);
            // SAFETY: the CPU has AVX-512 BF16, and `out` has room for `whole / 2` pairs.
            unsafe { kernels::bf16_pairs(&row[..whole], &mut out[start..]) };
            &row[whole..]
        } else {
            row
        };
        let mut chunks = row.chunks_exact(2);
        out.extend(chunks.by_ref().map(|p| bf16_pair(p[0], p[1])));
        if let [last] = chunks.remainder() {
            out.push(bf16_pair(*last, 0.0));
        }
    }
    out
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

    /// Every kernel this CPU can run.
    fn kernels_here() -> Vec<Kernel> {
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                kernels.push(Kernel::F32x8);
            }
            if has!("avx512f") {
                kernels.push(Kernel::F32x16);
            }
        }
        if Kernel::detect(true) == Kernel::Bf16 {
            kernels.push(Kernel::Bf16);
        }
        kernels
    }

    #[test]
    fn every_kernel_matches_a_plain_product_on_ragged_shapes() {
        // Odd inputs, outputs that do not fill a panel, rows that do not fill a tile.
        for (rows, inputs, outputs) in [
            (1, 1, 1),
            (3, 7, 5),
            (9, 33, 17),
            (17, 64, 48),
            (8, 384, 40),
            (13, 96, 64),
        ] {
            let x = values(rows * inputs, 1);
            let w = values(outputs * inputs, 2);
            let b = values(outputs, 3);
            let expected = naive(&x, &w, &b, rows, outputs);
            for kernel in kernels_here() {
                let got = Linear::new(&w, &b, outputs, kernel).forward(&x, rows);
                // bfloat16 keeps 8 bits of mantissa: about 0.4% of each product.
                let tolerance = if kernel == Kernel::Bf16 {
                    0.02 * (inputs as f32).sqrt()
                } else {
                    1e-4
                };
                for (g, e) in got.iter().zip(&expected) {
                    assert!(
                        (g - e).abs() < tolerance,
                        "{rows}x{inputs}x{outputs} {kernel:?}: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn splitting_columns_between_threads_changes_nothing() {
        for (rows, inputs, outputs) in [(5, 24, 100), (130, 16, 33), (3, 8, 48)] {
            let x = values(rows * inputs, 4);
            let w = values(outputs * inputs, 5);
            let b = values(outputs, 6);
            for kernel in kernels_here() {
                let layer = Linear::new(&w, &b, outputs, kernel);
                let whole = layer.forward(&x, rows);
                for threads in [2, 3, 8] {
                    assert_eq!(
                        layer.forward_parallel(&x, rows, threads),
                        whole,
                        "{kernel:?} {threads}"
                    );
                }
            }
        }
    }

    #[test]
    fn vectorised_bf16_conversion_matches_the_scalar_one() {
        let x = values(3 * 75, 9);
        let scalar: Vec<u32> = x
            .chunks_exact(75)
            .flat_map(|row| {
                let mut pairs: Vec<u32> =
                    row.chunks_exact(2).map(|p| bf16_pair(p[0], p[1])).collect();
                pairs.push(bf16_pair(row[74], 0.0));
                pairs
            })
            .collect();
        assert_eq!(to_bf16_pairs(&x, 3, 75, 38), scalar);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 lies halfway between two bfloat16 values: ties go to the even one (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
    }
}
