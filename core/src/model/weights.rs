//! Model weights as backend buffers, plus the loaders that fill them.
//!
//! A [`Weight`] is one 2-D matrix `[rows, cols]` (PyTorch order: `cols` is the row length
//! that is contiguous in memory, ggml's `ne[0]`) or a 1-D norm vector, in whatever dtype
//! the file or the load-time conversion chose. Weights from a GGUF file are
//! [`Backend::import_host`]ed straight from the memory-mapped file: on the CPU they are
//! the file's pages, never copied.

use alloc::vec::Vec;

use crate::backend::{Backend, BlockWeights};
use crate::dtype::DType;
use crate::tensor::{Shape, TensorRef};

/// One weight tensor in backend memory.
pub struct Weight<B: Backend> {
    pub buf: B::Buffer,
    pub dtype: DType,
    pub shape: Shape,
}

impl<B: Backend> Weight<B> {
    pub fn view(&self) -> TensorRef<'_, B> {
        TensorRef::new(&self.buf, 0, self.dtype, self.shape)
    }
}

/// The weights of one transformer block.
pub struct LayerWeights<B: Backend> {
    pub attn_norm: Weight<B>, // (dim,)
    pub wq: Weight<B>,        // (n_head * head_dim, dim)
    pub wk: Weight<B>,        // (n_kv_head * head_dim, dim)
    pub wv: Weight<B>,        // (n_kv_head * head_dim, dim)
    pub wo: Weight<B>,        // (dim, n_head * head_dim)
    pub ffn_norm: Weight<B>,  // (dim,)
    pub w_gate: Weight<B>,    // (ffn_dim, dim)
    pub w_up: Weight<B>,      // (ffn_dim, dim)
    pub w_down: Weight<B>,    // (dim, ffn_dim)
}

impl<B: Backend> LayerWeights<B> {
    /// Views of every weight of the block, as the block ops take them.
    pub fn views(&self) -> BlockWeights<'_, B> {
        BlockWeights {
            attn_norm: self.attn_norm.view(),
            wq: self.wq.view(),
            wk: self.wk.view(),
            wv: self.wv.view(),
            wo: self.wo.view(),
            ffn_norm: self.ffn_norm.view(),
            w_gate: self.w_gate.view(),
            w_up: self.w_up.view(),
            w_down: self.w_down.view(),
        }
    }
}

/// All weights of a Llama model.
pub struct Weights<B: Backend> {
    pub tok_embd: Weight<B>, // (vocab, dim)
    pub layers: Vec<LayerWeights<B>>,
    pub out_norm: Weight<B>,       // (dim,)
    pub output: Option<Weight<B>>, // (vocab, dim); None when tied to tok_embd
}

impl<B: Backend> Weights<B> {
    /// The output projection (the embedding matrix when tied).
    pub fn output(&self) -> &Weight<B> {
        self.output.as_ref().unwrap_or(&self.tok_embd)
    }

    /// Every weight, with a name (for reporting and tests).
    pub fn for_each(&self, mut f: impl FnMut(&str, usize, &Weight<B>)) {
        f("tok_embd", usize::MAX, &self.tok_embd);
        for (i, l) in self.layers.iter().enumerate() {
            for (n, w) in [
                ("attn_norm", &l.attn_norm),
                ("wq", &l.wq),
                ("wk", &l.wk),
                ("wv", &l.wv),
                ("wo", &l.wo),
                ("ffn_norm", &l.ffn_norm),
                ("w_gate", &l.w_gate),
                ("w_up", &l.w_up),
                ("w_down", &l.w_down),
            ] {
                f(n, i, w);
            }
        }
        f("out_norm", usize::MAX, &self.out_norm);
        if let Some(o) = &self.output {
            f("output", usize::MAX, o);
        }
    }
}

/// Permutes the rows of a Q or K projection from Hugging Face's half-split RoPE order to
/// the adjacent-pair order llama.cpp's converter writes (and back with `inverse`).
/// Within each head of `head_dim` rows, adjacent-order row `2i + j` is half-split row
/// `j * head_dim/2 + i`. `rows` is row-major `[n_heads * head_dim, cols]`.
pub fn permute_qk_rows<T: Copy>(src: &[T], n_heads: usize, cols: usize, inverse: bool) -> Vec<T> {
    let head_dim = src.len() / cols / n_heads;
    let half = head_dim / 2;
    let mut out = Vec::with_capacity(src.len());
    for h in 0..n_heads {
        for r in 0..head_dim {
            let (i, j) = (r / 2, r % 2);
            let adj_to_half = j * half + i; // row of the half-split layout
            let src_row = if inverse {
                // adjacent → half-split: half-split row r comes from adjacent row 2*(r%half) + r/half
                2 * (r % half) + r / half
            } else {
                adj_to_half
            };
            let base = (h * head_dim + src_row) * cols;
            out.extend_from_slice(&src[base..base + cols]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_round_trips_and_matches_llama_cpp_formula() {
        // 2 heads of head_dim 4, 1 column: half-split rows [a0 a1 b0 b1] → adjacent [a0 b0 a1 b1].
        let src: Vec<u32> = (0..8).collect();
        let p = permute_qk_rows(&src, 2, 1, false);
        assert_eq!(p, [0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(permute_qk_rows(&p, 2, 1, true), src);
    }
}
