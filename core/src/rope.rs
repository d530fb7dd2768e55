//! RoPE frequencies, including Llama 3's `llama3` frequency scaling.
//!
//! `inv_freq[i] = theta^(-2i/d)` for pair `i` of a head of size `d`, computed in f32 as
//! Hugging Face's `_compute_default_rope_parameters` does. The `llama3` scaling
//! (`_compute_llama3_parameters` in transformers' `modeling_rope_utils.py`) then keeps
//! high frequencies, divides low ones by `factor`, and blends the band between.
//! GGUF files from llama.cpp store the same scaling as a `rope_freqs.weight` tensor of
//! per-pair divisors; [`apply_freq_divisors`] applies those.

use alloc::vec::Vec;

use crate::math;

/// `rope_scaling` of type `llama3`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

/// Unscaled inverse frequencies for a head of `head_dim` (even) elements.
pub fn base_inv_freq(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all f32.
            let e = (2 * i) as f32 / head_dim as f32;
            1.0 / math::powf(theta, e)
        })
        .collect()
}

/// Applies `llama3` scaling in place (f32, mirroring transformers).
// `!(a < b)` mirrors transformers' `~(wavelen < high_freq_wavelen)` literally.
#[allow(clippy::nonminimal_bool, clippy::neg_cmp_op_on_partial_ord)]
pub fn apply_llama3(inv_freq: &mut [f32], s: &Llama3Scaling) {
    let old = s.original_max_position_embeddings as f32;
    let low_wavelen = old / s.low_freq_factor;
    let high_wavelen = old / s.high_freq_factor;
    for f in inv_freq.iter_mut() {
        let wavelen = 2.0 * core::f32::consts::PI / *f;
        let scaled = if wavelen > low_wavelen { *f / s.factor } else { *f };
        let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        let smoothed = (1.0 - smooth) * scaled / s.factor + smooth * scaled;
        let is_medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        *f = if is_medium { smoothed } else { scaled };
    }
}

/// The per-pair divisors llama.cpp's converter (`convert_hf_to_gguf.py`) writes as
/// `rope_freqs.weight` for the same scaling: 1 for high frequencies, `factor` for low
/// ones, `1 / ((1 - smooth)/factor + smooth)` between. Applying them with
/// [`apply_freq_divisors`] gives the scaled frequencies to f32 rounding.
pub fn llama3_divisors(theta: f32, head_dim: usize, s: &Llama3Scaling) -> Vec<f32> {
    let old = s.original_max_position_embeddings as f32;
    let (low_wavelen, high_wavelen) = (old / s.low_freq_factor, old / s.high_freq_factor);
    base_inv_freq(theta, head_dim)
        .iter()
        .map(|&f| {
            let wavelen = 2.0 * core::f32::consts::PI / f;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                s.factor
            } else {
                let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                1.0 / ((1.0 - smooth) / s.factor + smooth)
            }
        })
        .collect()
}

/// `inv_freq[i] /= divisors[i]` (llama.cpp's `freq_factors`).
pub fn apply_freq_divisors(inv_freq: &mut [f32], divisors: &[f32]) {
    for (f, d) in inv_freq.iter_mut().zip(divisors) {
        *f /= d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisors_reproduce_the_scaled_frequencies() {
        let s = Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        };
        let mut scaled = base_inv_freq(10000.0, 64);
        apply_llama3(&mut scaled, &s);
        let mut via = base_inv_freq(10000.0, 64);
        apply_freq_divisors(&mut via, &llama3_divisors(10000.0, 64, &s));
        for (a, b) in scaled.iter().zip(&via) {
            assert!((a - b).abs() <= 2.0 * f32::EPSILON * a.abs(), "{a} vs {b}");
            // two f32 roundings apart
        }
    }
}
