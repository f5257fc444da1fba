//! x86-64 matrix kernels for [`super::linear`]: `out = a·wᵀ + bias` with the weights packed in
//! panels of [`PANEL`] output columns. Each kernel keeps a tile of the output in registers for
//! the whole reduction (512-bit: up to 8 rows × 3 panels, 24 of the 32 registers, 4–5% faster
//! than 8 × 2 measured; AVX2: 6 rows × 1 panel), so every weight load feeds several rows and
//! every input broadcast feeds several panels. Three instruction sets: AVX-512 BF16 (pairs of
//! bfloat16 per fp32 lane), AVX-512F and AVX2+FMA (fp32).

use std::arch::x86_64::*;

/// Output columns per packed panel: one 512-bit register of fp32 lanes (two 256-bit ones).
pub const PANEL: usize = 16;

/// The operands of one matrix product. `a` holds `rows × depth` values (fp32, or bfloat16
/// pairs for the BF16 kernel, whose `depth` counts pairs); `w` the packed panels, each
/// `depth × PANEL`.
pub struct Operands<'a, T> {
    pub a: &'a [T],
    pub w: &'a [T],
    pub bias: &'a [f32],
    pub out: &'a mut [f32],
    pub rows: usize,
    pub outputs: usize,
    pub depth: usize,
}

/// Where one output tile starts.
#[derive(Clone, Copy)]
struct Tile {
    row: usize,
    panel: usize,
}

/// Rows whose inputs stay in cache while every panel of weights passes over them.
const ROW_BLOCK: usize = 48;

/// Visits the output in tiles of at most `max_rows` rows × `max_panels` panels (fewer at the
/// edges), calling `f(tile, rows, panels)`: blocks of [`ROW_BLOCK`] rows, and within a block
/// every panel, so each input row is read from cache rather than memory.
fn for_each_tile(
    rows: usize,
    outputs: usize,
    max_rows: usize,
    max_panels: usize,
    mut f: impl FnMut(Tile, usize, usize),
) {
    let panels = outputs.div_ceil(PANEL);
    for block in (0..rows).step_by(ROW_BLOCK) {
        let block_end = (block + ROW_BLOCK).min(rows);
        let mut panel = 0;
        while panel < panels {
            let width = (panels - panel).min(max_panels);
            let mut row = block;
            while row < block_end {
                let count = (block_end - row).min(max_rows);
                f(Tile { row, panel }, count, width);
                row += count;
            }
            panel += width;
        }
    }
}

/// Calls `$kernel::<R, P>(args)` for a runtime row count `1..=8` and panel count `1..=3`.
macro_rules! dispatch {
    ($kernel:ident, $rows:expr, $panels:expr, $($arg:expr),*) => {
        match ($rows, $panels) {
            (1, 1) => $kernel::<1, 1>($($arg),*),
            (2, 1) => $kernel::<2, 1>($($arg),*),
            (3, 1) => $kernel::<3, 1>($($arg),*),
            (4, 1) => $kernel::<4, 1>($($arg),*),
            (5, 1) => $kernel::<5, 1>($($arg),*),
            (6, 1) => $kernel::<6, 1>($($arg),*),
            (7, 1) => $kernel::<7, 1>($($arg),*),
            (_, 1) => $kernel::<8, 1>($($arg),*),
            (1, 2) => $kernel::<1, 2>($($arg),*),
            (2, 2) => $kernel::<2, 2>($($arg),*),
            (3, 2) => $kernel::<3, 2>($($arg),*),
            (4, 2) => $kernel::<4, 2>($($arg),*),
            (5, 2) => $kernel::<5, 2>($($arg),*),
            (6, 2) => $kernel::<6, 2>($($arg),*),
            (7, 2) => $kernel::<7, 2>($($arg),*),
            (_, 2) => $kernel::<8, 2>($($arg),*),
            (1, _) => $kernel::<1, 3>($($arg),*),
            (2, _) => $kernel::<2, 3>($($arg),*),
            (3, _) => $kernel::<3, 3>($($arg),*),
            (4, _) => $kernel::<4, 3>($($arg),*),
            (5, _) => $kernel::<5, 3>($($arg),*),
            (6, _) => $kernel::<6, 3>($($arg),*),
            (7, _) => $kernel::<7, 3>($($arg),*),
            (_, _) => $kernel::<8, 3>($($arg),*),
        }
    };
}

/// The mask of the valid lanes of the panel starting at output column `column`.
fn lanes(outputs: usize, column: usize) -> u16 {
    let valid = outputs.saturating_sub(column).min(PANEL);
    if valid == PANEL {
        u16::MAX
    } else {
        (1u16 << valid) - 1
    }
}

/// Adds the bias to 512-bit accumulators and stores the valid lanes.
#[target_feature(enable = "avx512f")]
unsafe fn store_512<const R: usize, const P: usize>(
    acc: &[[__m512; P]; R],
    tile: Tile,
    ops: &mut Operands<impl Copy>,
) {
    for (p, column) in (0..P).map(|p| (p, (tile.panel + p) * PANEL)) {
        let mask = lanes(ops.outputs, column);
        let bias = _mm512_maskz_loadu_ps(mask, ops.bias.as_ptr().add(column));
        for (r, acc) in acc.iter().enumerate() {
            let dst = ops
                .out
                .as_mut_ptr()
                .add((tile.row + r) * ops.outputs + column);
            _mm512_mask_storeu_ps(dst, mask, _mm512_add_ps(acc[p], bias));
        }
    }
}

/// bfloat16 weights and inputs, fp32 accumulation (AVX-512 BF16).
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 BF16, and the operands the sizes they declare.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn matmul_bf16(mut ops: Operands<u32>) {
    for_each_tile(ops.rows, ops.outputs, 8, 3, |tile, rows, panels| {
        dispatch!(kernel_bf16, rows, panels, tile, &mut ops)
    });
}

#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn kernel_bf16<const R: usize, const P: usize>(tile: Tile, ops: &mut Operands<u32>) {
    kernel_512::<Bf16Step, R, P>(tile, ops)
}

/// What differs between the 512-bit kernels: how a weight vector is loaded, an input value
/// broadcast, and the two multiplied into fp32 sums. Always inlined into a kernel compiled with
/// the instruction set it needs.
trait Step512 {
    type Elem: Copy;
    type Vector: Copy;
    unsafe fn load(ptr: *const Self::Elem) -> Self::Vector;
    unsafe fn broadcast(value: Self::Elem) -> Self::Vector;
    unsafe fn madd(acc: __m512, a: Self::Vector, b: Self::Vector) -> __m512;
}

/// 16 lanes of two bfloat16 each (AVX-512 BF16).
struct Bf16Step;

impl Step512 for Bf16Step {
    type Elem = u32;
    type Vector = __m512bh;
    #[inline(always)]
    unsafe fn load(ptr: *const u32) -> __m512bh {
        as_bf16(_mm512_loadu_si512(ptr.cast()))
    }
    #[inline(always)]
    unsafe fn broadcast(value: u32) -> __m512bh {
        as_bf16(_mm512_set1_epi32(value as i32))
    }
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: __m512bh, b: __m512bh) -> __m512 {
        _mm512_dpbf16_ps(acc, a, b)
    }
}

/// 16 fp32 lanes (AVX-512F).
struct F32Step;

impl Step512 for F32Step {
    type Elem = f32;
    type Vector = __m512;
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> __m512 {
        _mm512_loadu_ps(ptr)
    }
    #[inline(always)]
    unsafe fn broadcast(value: f32) -> __m512 {
        _mm512_set1_ps(value)
    }
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: __m512, b: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, acc)
    }
}

/// `R` rows × `P` panels of the output, summed over the whole depth in registers.
#[inline(always)]
unsafe fn kernel_512<S: Step512, const R: usize, const P: usize>(
    tile: Tile,
    ops: &mut Operands<S::Elem>,
) {
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    let a = ops.a.as_ptr().add(tile.row * ops.depth);
    let w = ops.w.as_ptr().add(tile.panel * ops.depth * PANEL);
    for k in 0..ops.depth {
        let b: [S::Vector; P] =
            std::array::from_fn(|p| S::load(w.add((p * ops.depth + k) * PANEL)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = S::broadcast(*a.add(r * ops.depth + k));
            for (acc, b) in acc.iter_mut().zip(&b) {
                *acc = S::madd(*acc, x, *b);
            }
        }
    }
    store_512(&acc, tile, ops);
}

/// fp32 values → bfloat16 pairs (`out[i]` holds `x[2i]` low, `x[2i+1]` high), 32 values per
/// instruction, rounding to nearest even; `x.len()` a multiple of 32, `out` half as long.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn bf16_pairs(x: &[f32], out: &mut [u32]) {
    for (x, out) in x.chunks_exact(32).zip(out.chunks_exact_mut(16)) {
        let low = _mm512_loadu_ps(x.as_ptr());
        let high = _mm512_loadu_ps(x.as_ptr().add(16));
        // The second operand fills the lower half: x[0..16] first, as memory order wants.
        let packed = _mm512_cvtne2ps_pbh(high, low);
        _mm512_storeu_si512(
            out.as_mut_ptr().cast(),
            std::mem::transmute::<__m512bh, __m512i>(packed),
        );
    }
}

/// 32 bfloat16 values, as the BF16 instructions type them.
#[inline(always)]
fn as_bf16(v: __m512i) -> __m512bh {
    // SAFETY: both are 512-bit vectors; any bit pattern is a valid value of either.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// fp32 (AVX-512F).
///
/// # Safety
/// The CPU must have AVX-512F, and the operands the sizes they declare.
#[target_feature(enable = "avx512f")]
pub unsafe fn matmul_f32_512(mut ops: Operands<f32>) {
    for_each_tile(ops.rows, ops.outputs, 8, 3, |tile, rows, panels| {
        dispatch!(kernel_f32_512, rows, panels, tile, &mut ops)
    });
}

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn kernel_f32_512<const R: usize, const P: usize>(tile: Tile, ops: &mut Operands<f32>) {
    kernel_512::<F32Step, R, P>(tile, ops)
}

/// fp32 (AVX2 + FMA): a panel is two 256-bit halves; tiles of 6 rows × 1 panel fill 12 of the
/// 16 registers with accumulators.
///
/// # Safety
/// The CPU must have AVX2 and FMA, and the operands the sizes they declare.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn matmul_f32_256(mut ops: Operands<f32>) {
    for_each_tile(ops.rows, ops.outputs, 6, 1, |tile, rows, _| match rows {
        1 => kernel_f32_256::<1>(tile, &mut ops),
        2 => kernel_f32_256::<2>(tile, &mut ops),
        3 => kernel_f32_256::<3>(tile, &mut ops),
        4 => kernel_f32_256::<4>(tile, &mut ops),
        5 => kernel_f32_256::<5>(tile, &mut ops),
        _ => kernel_f32_256::<6>(tile, &mut ops),
    });
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn kernel_f32_256<const R: usize>(tile: Tile, ops: &mut Operands<f32>) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let a = ops.a.as_ptr().add(tile.row * ops.depth);
    let w = ops.w.as_ptr().add(tile.panel * ops.depth * PANEL);
    for k in 0..ops.depth {
        let b = [
            _mm256_loadu_ps(w.add(k * PANEL)),
            _mm256_loadu_ps(w.add(k * PANEL + 8)),
        ];
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_set1_ps(*a.add(r * ops.depth + k));
            acc[0] = _mm256_fmadd_ps(x, b[0], acc[0]);
            acc[1] = _mm256_fmadd_ps(x, b[1], acc[1]);
        }
    }
    let column = tile.panel * PANEL;
    let valid = ops.outputs.saturating_sub(column).min(PANEL);
    let mut lanes = [0.0f32; PANEL];
    for (r, acc) in acc.iter().enumerate() {
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
        let dst = &mut ops.out[(tile.row + r) * ops.outputs + column..][..valid];
        for ((d, v), b) in dst.iter_mut().zip(&lanes).zip(&ops.bias[column..]) {
            *d = v + b;
        }
    }
}
