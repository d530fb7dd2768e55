//! The KV cache: preallocated per layer, written in place by the K/V projections.
//!
//! Layout, per layer: `k` and `v` are each one backend buffer of
//! `(capacity, n_kv_head, head_dim)` elements of the cache dtype (f32, or f16 where the
//! backend reads it: `--kv-type f16`) — one *slot* per cached token. Keys are stored
//! already rotated (RoPE applied at the token's absolute position), so attention reads
//! slots without knowing positions.
//!
//! Designed for what comes later:
//! * **Eviction policies** (sink + window, heavy hitters, context shift) act on slots:
//!   `positions[s]` records the absolute position of the token in slot `s`, so a policy
//!   can compact slots and (for context shift) re-rotate keys by the position delta. The
//!   cache only tracks `len` and `next_pos`; the policy decides which slots go.
//! * **A GPU-resident cache**: the buffers are `B::Buffer`s of whatever backend owns
//!   them; with `BufferKind::Shared` both a CPU and a GPU backend can read one cache,
//!   which is what CPU⇄GPU hybrid switching needs.

use alloc::vec::Vec;

use crate::backend::{Backend, BufferKind};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{Shape, TensorMut, TensorRef};

/// One layer's keys and values.
pub struct LayerKv<B: Backend> {
    pub k: B::Buffer,
    pub v: B::Buffer,
}

/// The whole cache.
pub struct KvCache<B: Backend> {
    layers: Vec<LayerKv<B>>,
    capacity: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// Element type of `k` and `v`.
    dtype: DType,
    /// Slots in use (`0..len`).
    len: usize,
    /// Absolute position of the token in each used slot.
    positions: Vec<u32>,
}

impl<B: Backend> KvCache<B> {
    /// Allocates `n_layer` layers of `capacity` slots.
    pub fn new(
        backend: &B,
        n_layer: usize,
        capacity: usize,
        n_kv_head: usize,
        head_dim: usize,
        dtype: DType,
        kind: BufferKind,
    ) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F16) {
            return Err(Error::invalid(alloc::format!(
                "KV cache: dtype {} is not a cache type (f32, f16)",
                dtype.name()
            )));
        }
        let bytes = capacity
            .checked_mul(n_kv_head * head_dim * dtype.block_bytes())
            .ok_or_else(|| Error::invalid("KV cache size overflows"))?;
        let mut layers = Vec::with_capacity(n_layer);
        for _ in 0..n_layer {
            layers.push(LayerKv {
                k: backend.alloc(bytes, kind)?,
                v: backend.alloc(bytes, kind)?,
            });
        }
        Ok(KvCache {
            layers,
            capacity,
            n_kv_head,
            head_dim,
            dtype,
            len: 0,
            positions: Vec::with_capacity(capacity),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes held by the cache (K and V, all layers).
    pub fn bytes(&self) -> usize {
        2 * self.layers.len() * self.capacity * self.row_bytes()
    }
    /// Bytes one cached token takes (K and V, all layers).
    pub fn bytes_per_token(&self) -> usize {
        2 * self.layers.len() * self.row_bytes()
    }
    /// Element type of the keys and values.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Absolute positions of the used slots.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }
    /// Absolute position the next token gets.
    pub fn next_pos(&self) -> usize {
        self.positions.last().map_or(0, |&p| p as usize + 1)
    }
    fn row_bytes(&self) -> usize {
        self.n_kv_head * self.head_dim * self.dtype.block_bytes()
    }
    fn shape(&self) -> Shape {
        Shape::d3(self.capacity, self.n_kv_head, self.head_dim)
    }

    /// Whole-cache views of layer `l` (for attention).
    pub fn views(&self, l: usize) -> (TensorRef<'_, B>, TensorRef<'_, B>) {
        let layer = &self.layers[l];
        (
            TensorRef::new(&layer.k, 0, self.dtype, self.shape()),
            TensorRef::new(&layer.v, 0, self.dtype, self.shape()),
        )
    }

    /// Writable whole-cache views of layer `l` (what a fused block op takes).
    pub fn layer_mut(&mut self, l: usize) -> (TensorMut<'_, B>, TensorMut<'_, B>) {
        let shape = self.shape();
        let layer = &mut self.layers[l];
        (
            TensorMut::new(&mut layer.k, 0, self.dtype, shape),
            TensorMut::new(&mut layer.v, 0, self.dtype, shape),
        )
    }

    /// Writable views of `n` slots starting at slot `start` in layer `l`, shaped
    /// `[n, n_kv_head * head_dim]` (what the K/V projections write).
    pub fn slots_mut(&mut self, l: usize, start: usize, n: usize) -> (TensorMut<'_, B>, TensorMut<'_, B>) {
        let off = start * self.row_bytes();
        let shape = Shape::d2(n, self.n_kv_head * self.head_dim);
        let layer = &mut self.layers[l];
        (
            TensorMut::new(&mut layer.k, off, self.dtype, shape),
            TensorMut::new(&mut layer.v, off, self.dtype, shape),
        )
    }

    /// Checks that `n` more tokens fit.
    pub fn check_room(&self, n: usize) -> Result<()> {
        if self.len + n > self.capacity {
            return Err(Error::range(
                alloc::string::String::from("tokens in context (cached + new)"),
                (self.len + n) as u64,
                self.capacity as u64,
            ));
        }
        Ok(())
    }

    /// Marks `n` slots after `len` as filled, at consecutive positions.
    pub fn commit(&mut self, n: usize) {
        let p0 = self.next_pos();
        for i in 0..n {
            self.positions.push((p0 + i) as u32);
        }
        self.len += n;
    }

    /// Forgets the slots from `len` on (a pass run ahead and not kept); nothing when
    /// `len` is not below the current length.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            self.positions.truncate(len);
        }
    }

    /// Takes over another cache's bookkeeping — its used slots' positions — after their
    /// keys and values were copied into this cache's buffers (the hybrid driver's
    /// hand-over, `model::hybrid`). Allocates nothing (`positions` holds `capacity`).
    pub fn set_slots(&mut self, positions: &[u32]) -> Result<()> {
        if positions.len() > self.capacity {
            return Err(Error::range(
                alloc::string::String::from("slots handed over to the KV cache"),
                positions.len() as u64,
                self.capacity as u64,
            ));
        }
        self.positions.clear();
        self.positions.extend_from_slice(positions);
        self.len = positions.len();
        Ok(())
    }

    /// Forgets everything (the buffers stay allocated).
    pub fn clear(&mut self) {
        self.len = 0;
        self.positions.clear();
    }
}
