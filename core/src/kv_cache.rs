//! The KV cache: preallocated per layer, written in place by the K/V projections.
//!
//! Layout, per layer: `k` and `v` are each one backend buffer of
//! `(capacity, n_kv_head, head_dim)` elements of the cache dtype (f32, or f16 / Q8_0
//! blocks where the backend reads them: `--kv-type f16|q8_0`) — one *slot* per cached
//! token. Keys are stored already rotated (RoPE applied at the token's position), so
//! attention reads slots without knowing positions.
//!
//! `positions[s]` is the RoPE position of the token in slot `s` and `next_pos` the one
//! the next token gets. Without eviction they are the tokens' places in the text. With an
//! eviction policy ([`crate::kv_evict`], set by [`KvCache::set_policy`]),
//! [`KvCache::prepare`] makes room before each forward chunk, on the backend that holds
//! the cache (a GPU's cache never comes back to the host):
//! * **contiguous drops** (window, sinks, shift): slots `start..start + count` go, the
//!   slots after them move down (`ops::move_rows`, K and V of every layer) and their
//!   keys turn by `-count` positions (`ops::rope_shift`), so positions stay `0..len`
//!   (in-cache positions, StreamingLLM's rule);
//! * **score-based** (h2o, tova): the attention op adds each slot's attention mass into
//!   `mass` (`[capacity]` f32 on the backend, `ops::attention_mass`); the host reads it
//!   back, picks the lowest-mass evictable slot, and the last slot moves into its hole
//!   (one row per buffer; original positions, nothing re-rotated; the mass moves along).
//!
//! Each eviction frees at least the policy's block ([`EvictConfig::block_slots`],
//! `--kv-evict-block`; default `capacity / 16`) where that much is evictable, so a
//! decode step through a full cache pays for compaction and re-rotation once per block
//! instead of once per token.
//!
//! Slot order only matters within a forward chunk (the causal mask): new tokens always
//! go to the end, so moving old slots around is invisible to attention.
//!
//! With `BufferKind::Shared` both a CPU and a GPU backend can read one cache, which is
//! what CPU⇄GPU hybrid switching needs.

use alloc::vec::Vec;

use crate::backend::{Backend, BufferKind, RopeStyle};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kv_evict::{EvictConfig, KvPolicy};
use crate::ops;
use crate::tensor::{Shape, TensorMut, TensorRef};

/// Largest head a Q8_0 cache serves (the CPU's scores kernels quantize one query head
/// into a stack array of this many values).
pub const Q8_MAX_HEAD_DIM: usize = 256;

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
    /// RoPE position of the token in each used slot.
    positions: Vec<u32>,
    /// RoPE position of the next token.
    next_pos: usize,
    /// What to do when the cache is full.
    evict: EvictConfig,
    /// Per-slot attention mass, `[capacity]` f32 on the backend (score-based policies).
    mass: Option<B::Buffer>,
    /// Host copy of `mass` (read back to choose a slot) and zeros to clear it with;
    /// `capacity` each, allocated with the policy.
    host_mass: Vec<f32>,
    zeros: Vec<f32>,
    /// Tokens evicted so far.
    evicted: u64,
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
        if !matches!(dtype, DType::F32 | DType::F16 | DType::Q8_0) {
            return Err(Error::invalid(alloc::format!(
                "KV cache: dtype {} is not a cache type (f32, f16, q8_0)",
                dtype.name()
            )));
        }
        // A quantized cache stores each head as whole blocks (head_dim 64 = two Q8_0
        // blocks of 34 bytes), so a head never shares a block with the next one.
        if dtype.is_quantized() && (!head_dim.is_multiple_of(dtype.block_size()) || head_dim > Q8_MAX_HEAD_DIM) {
            return Err(Error::invalid(alloc::format!(
                "KV cache: a {} cache needs head_dim a multiple of {} up to {Q8_MAX_HEAD_DIM} (head_dim {head_dim}; --kv-type f16 or f32)",
                dtype.name(),
                dtype.block_size()
            )));
        }
        let bytes = dtype
            .row_bytes(n_kv_head * head_dim)
            .and_then(|rb| capacity.checked_mul(rb))
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
            next_pos: 0,
            evict: EvictConfig::default(),
            mass: None,
            host_mass: Vec::new(),
            zeros: Vec::new(),
            evicted: 0,
        })
    }

    /// Chooses the eviction policy (allocating the mass buffer for the score-based ones).
    pub fn set_policy(&mut self, backend: &B, cfg: EvictConfig) -> Result<()> {
        cfg.check(self.capacity)?;
        if cfg.policy.needs_mass() && self.mass.is_none() {
            let mut m = backend.alloc(self.capacity * 4, BufferKind::Device)?;
            self.zeros = alloc::vec![0.0; self.capacity];
            backend.upload(&mut m, 0, bytemuck::cast_slice(&self.zeros))?;
            self.mass = Some(m);
            self.host_mass = alloc::vec![0.0; self.capacity];
        }
        self.evict = cfg;
        Ok(())
    }
    /// The eviction policy.
    pub fn policy(&self) -> EvictConfig {
        self.evict
    }
    /// Tokens evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
    /// Most tokens one forward chunk may add: the free slots without a policy, else what
    /// the policy can make room for.
    pub fn max_insert(&self) -> usize {
        match self.evict.policy {
            KvPolicy::None => self.capacity - self.len,
            _ => self.evict.max_insert(self.capacity),
        }
    }
    /// Whether the attention op should output per-slot mass (a score-based policy).
    pub fn wants_mass(&self) -> bool {
        self.evict.policy.needs_mass() && self.mass.is_some()
    }

    /// Makes room for `n` new tokens under the policy (nothing when they fit), and clears
    /// the mass the coming chunk accumulates into (TOVA: all of it, the latest step's
    /// attention only; H2O: the new slots'). `inv_freq` and `style` are the model's RoPE
    /// (keys that move to other positions turn by the delta). Allocates nothing.
    pub fn prepare(&mut self, b: &mut B, n: usize, inv_freq: TensorRef<'_, B>, style: RopeStyle) -> Result<()> {
        if self.len + n > self.capacity {
            match self.evict.policy {
                KvPolicy::None => self.check_room(n)?,
                _ if n > self.max_insert() => {
                    return Err(Error::range(
                        alloc::format!(
                            "tokens in one forward chunk under --kv-policy {} (lower --batch)",
                            self.evict.policy.name()
                        ),
                        n as u64,
                        self.max_insert() as u64,
                    ))
                }
                p if p.needs_mass() => self.evict_lowest(b, n)?,
                _ => {
                    if let Some((start, count)) = self.evict.contiguous_drop(self.len, n, self.capacity) {
                        self.drop_range(b, start, count, inv_freq, style)?;
                    }
                }
            }
        }
        if let Some(m) = self.mass.as_mut() {
            let (from, to) = match self.evict.policy {
                KvPolicy::Tova => (0, self.len + n),
                _ => (self.len, self.len + n),
            };
            b.upload(m, from * 4, bytemuck::cast_slice(&self.zeros[from..to]))?;
        }
        Ok(())
    }

    /// Drops slots `start..start + count`: the slots after them move down and their keys
    /// turn by `-count` positions (their positions drop by `count`).
    pub fn drop_range(
        &mut self,
        b: &mut B,
        start: usize,
        count: usize,
        inv_freq: TensorRef<'_, B>,
        style: RopeStyle,
    ) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        if start.checked_add(count).is_none_or(|e| e > self.len) {
            return Err(Error::range(
                alloc::format!("KV cache: last slot dropped + 1 (of {})", self.len),
                start.saturating_add(count) as u64,
                self.len as u64,
            ));
        }
        let moved = self.len - start - count;
        let delta = i32::try_from(count).map_err(|_| Error::invalid("KV cache: drop too large"))?;
        let (rows, row_len) = (self.capacity, self.n_kv_head * self.head_dim);
        let heads = Shape::d3(moved, self.n_kv_head, self.head_dim);
        for l in 0..self.layers.len() {
            let (mut k, v) = self.layer_mut(l);
            let (k2, v2) = (
                k.reborrow().reshape(Shape::d2(rows, row_len)),
                v.reshape(Shape::d2(rows, row_len)),
            );
            ops::move_rows(b, k2, start + count, start, moved)?;
            ops::move_rows(b, v2, start + count, start, moved)?;
            let k_moved = k.rows_mut(start, moved, row_len).reshape(heads);
            ops::rope_shift(b, k_moved, inv_freq, -delta, style)?;
        }
        self.positions.copy_within(start + count..self.len, start);
        for p in &mut self.positions[start..start + moved] {
            *p -= count as u32;
        }
        self.positions.truncate(start + moved);
        self.len -= count;
        self.next_pos -= count;
        self.evicted += count as u64;
        Ok(())
    }

    /// Makes room for `n` new tokens by evicting the slots of lowest attention mass (H2O:
    /// never one of the `capacity / 2` most recent tokens) — what is needed, raised to the
    /// policy's block — each hole filled by the last slot. The mass is read back once.
    fn evict_lowest(&mut self, b: &mut B, n: usize) -> Result<()> {
        let Some(m) = self.mass.as_ref() else {
            return Err(Error::invalid("KV cache: a score-based policy without its mass buffer"));
        };
        let recent_from = self.next_pos.saturating_sub(self.evict.recent(self.capacity)) as u32;
        let evictable = self.positions.iter().filter(|&&p| p < recent_from).count();
        let Some(count) = self.evict.evict_count(self.len, n, self.capacity, evictable) else {
            return Ok(());
        };
        b.download(m, 0, bytemuck::cast_slice_mut(&mut self.host_mass[..self.len]))?;
        let (rows, row_len) = (self.capacity, self.n_kv_head * self.head_dim);
        for _ in 0..count {
            let victim = (0..self.len)
                .filter(|&s| self.positions[s] < recent_from)
                .min_by(|&a, &c| self.host_mass[a].total_cmp(&self.host_mass[c]))
                .ok_or_else(|| Error::invalid("KV cache: no evictable slot left"))?;
            let last = self.len - 1;
            if victim != last {
                for l in 0..self.layers.len() {
                    let (k, v) = self.layer_mut(l);
                    ops::move_rows(b, k.reshape(Shape::d2(rows, row_len)), last, victim, 1)?;
                    ops::move_rows(b, v.reshape(Shape::d2(rows, row_len)), last, victim, 1)?;
                }
                let m = self
                    .mass
                    .as_mut()
                    .ok_or_else(|| Error::invalid("KV cache: mass buffer"))?;
                ops::move_rows(b, TensorMut::new(m, 0, DType::F32, Shape::d2(rows, 1)), last, victim, 1)?;
                self.host_mass[victim] = self.host_mass[last];
                self.positions[victim] = self.positions[last];
            }
            self.positions.truncate(last);
            self.len = last;
            self.evicted += 1;
        }
        Ok(())
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
    /// RoPE positions of the used slots.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }
    /// RoPE position the next token gets.
    pub fn next_pos(&self) -> usize {
        self.next_pos
    }
    fn row_bytes(&self) -> usize {
        // Whole blocks: checked by `new`.
        self.dtype.row_bytes(self.n_kv_head * self.head_dim).unwrap_or(0)
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

    /// [`KvCache::layer_mut`] and the per-slot mass view (`[capacity]` f32) when the
    /// policy ranks slots by attention.
    #[allow(clippy::type_complexity)]
    pub fn layer_mass_mut(&mut self, l: usize) -> (TensorMut<'_, B>, TensorMut<'_, B>, Option<TensorMut<'_, B>>) {
        let shape = self.shape();
        let cap = self.capacity;
        let layer = &mut self.layers[l];
        let mass = match (self.evict.policy.needs_mass(), self.mass.as_mut()) {
            (true, Some(m)) => Some(TensorMut::new(m, 0, DType::F32, Shape::d1(cap))),
            _ => None,
        };
        (
            TensorMut::new(&mut layer.k, 0, self.dtype, shape),
            TensorMut::new(&mut layer.v, 0, self.dtype, shape),
            mass,
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

    /// Checks that `n` more tokens fit without evicting.
    pub fn check_room(&self, n: usize) -> Result<()> {
        if self.len + n > self.capacity {
            return Err(Error::range(
                alloc::string::String::from(
                    "tokens in context (cached + new) with --kv-policy none (raise --ctx, or let a policy evict: --kv-policy sinks|window|shift|h2o|tova)",
                ),
                (self.len + n) as u64,
                self.capacity as u64,
            ));
        }
        Ok(())
    }

    /// Marks `n` slots after `len` as filled, at consecutive positions.
    pub fn commit(&mut self, n: usize) {
        let p0 = self.next_pos;
        for i in 0..n {
            self.positions.push((p0 + i) as u32);
        }
        self.len += n;
        self.next_pos += n;
    }

    /// Forgets the slots from `len` on (a pass run ahead and not kept); nothing when
    /// `len` is not below the current length.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.next_pos -= self.len - len;
            self.len = len;
            self.positions.truncate(len);
        }
    }

    /// Takes over another cache's bookkeeping — its used slots' positions and the
    /// position the next token gets — after their keys and values were copied into this
    /// cache's buffers (the hybrid driver's hand-over, `model::hybrid`). Allocates nothing
    /// (`positions` holds `capacity`).
    pub fn set_slots(&mut self, positions: &[u32], next_pos: usize) -> Result<()> {
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
        self.next_pos = next_pos;
        Ok(())
    }

    /// Layer `l`'s K and V buffers themselves (the hybrid hands shared ones between host
    /// and device: `Backend::host_access`).
    pub fn layer_buffers_mut(&mut self, l: usize) -> (&mut B::Buffer, &mut B::Buffer) {
        let layer = &mut self.layers[l];
        (&mut layer.k, &mut layer.v)
    }
    /// Puts `k` and `v` in place of layer `l`'s buffers and returns the old ones; an
    /// error (nothing replaced) when a length differs. The contents come along as they
    /// are: the caller swaps in memory that holds what the cache's slots say.
    pub fn replace_layer(
        &mut self,
        backend: &B,
        l: usize,
        k: B::Buffer,
        v: B::Buffer,
    ) -> Result<(B::Buffer, B::Buffer)> {
        let layer = self
            .layers
            .get_mut(l)
            .ok_or_else(|| Error::invalid(alloc::format!("KV cache: no layer {l}")))?;
        let want = backend.buffer_len(&layer.k);
        for (what, b) in [("k", &k), ("v", &v)] {
            let got = backend.buffer_len(b);
            if got != want {
                return Err(Error::invalid(alloc::format!(
                    "KV cache: layer {l}'s new {what} buffer has {got} bytes, expected {want}"
                )));
            }
        }
        Ok((core::mem::replace(&mut layer.k, k), core::mem::replace(&mut layer.v, v)))
    }
    /// The per-slot attention mass (`[capacity]` f32) of a score-based policy, if
    /// allocated (the hybrid's hand-over carries it with the slots).
    pub fn mass_buffer(&self) -> Option<&B::Buffer> {
        self.mass.as_ref()
    }
    /// [`KvCache::mass_buffer`], writable.
    pub fn mass_buffer_mut(&mut self) -> Option<&mut B::Buffer> {
        self.mass.as_mut()
    }

    /// Forgets everything (the buffers stay allocated).
    pub fn clear(&mut self) {
        self.len = 0;
        self.next_pos = 0;
        self.positions.clear();
    }
}
