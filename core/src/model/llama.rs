//! The Llama forward pass, written once against the [`Backend`] trait.
//!
//! Three structs explain the model, as in llama2.c: [`LlamaConfig`] (sizes), [`Weights`]
//! (buffers over the mapped file) and the run state — [`Workspace`] (every activation
//! of a batch, allocated once) plus the [`KvCache`]. [`Llama::forward`] reads top to
//! bottom: embed → per layer (norm → q/k/v → RoPE → attention over the cache → output
//! projection + residual → norm → SwiGLU + residual) → final norm → logits.
//!
//! After [`Llama::new`] nothing is allocated: a prompt is processed in chunks of at most
//! `max_batch` tokens through the same workspace, and decoding is a chunk of one.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::config::LlamaConfig;
use super::weights::{LayerWeights, Weights};
use crate::backend::{
    llama_block_composed, AttnParams, Backend, BlockKv, BlockParams, BlockScratch, BlockStage, BlockWeights,
    BufferKind, LayerFn, Reservation,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::ops;
use crate::tensor::{Shape, TensorMut, TensorRef};

/// Run-time options of a model instance.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// KV-cache capacity in tokens.
    pub ctx: usize,
    /// Most tokens per forward call (longer prompts are processed in chunks).
    pub max_batch: usize,
    /// Keep logits for every position of a batch (for `harness logits`), not just the last.
    pub all_logits: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            ctx: 2048,
            max_batch: 64,
            all_logits: false,
        }
    }
}

/// Every activation of one batch, allocated once. Shapes for a batch of `n` tokens.
pub struct Workspace<B: Backend> {
    x: B::Buffer,        // (max_batch, dim) residual stream
    xb: B::Buffer,       // (max_batch, dim) normed input of a sub-block
    xb2: B::Buffer,      // (max_batch, dim) sub-block output before the residual add
    q: B::Buffer,        // (max_batch, n_head * head_dim)
    att: B::Buffer,      // (max_batch, n_head * head_dim) attention output
    hb: B::Buffer,       // (max_batch, ffn_dim) gate
    hb2: B::Buffer,      // (max_batch, ffn_dim) up
    hb3: B::Buffer,      // (max_batch, ffn_dim) silu(gate) * up
    logits: B::Buffer,   // (max_batch or 1, vocab)
    argmax: B::Buffer,   // (2,) index of the last row's largest logit, as f32; two slots (decode_greedy alternates)
    inv_freq: B::Buffer, // (head_dim / 2,) RoPE inverse frequencies
}

/// Which op a slice of time went to (for the per-op profile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Embed,
    Norm,
    MatmulQkv,
    Rope,
    Attention,
    MatmulOut,
    MatmulFfn,
    Swiglu,
    Add,
    Output,
}

impl OpKind {
    pub const ALL: [OpKind; 10] = [
        OpKind::Embed,
        OpKind::Norm,
        OpKind::MatmulQkv,
        OpKind::Rope,
        OpKind::Attention,
        OpKind::MatmulOut,
        OpKind::MatmulFfn,
        OpKind::Swiglu,
        OpKind::Add,
        OpKind::Output,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            OpKind::Embed => "embed",
            OpKind::Norm => "rms_norm",
            OpKind::MatmulQkv => "matmul_qkv",
            OpKind::Rope => "rope",
            OpKind::Attention => "attention",
            OpKind::MatmulOut => "matmul_attn_out",
            OpKind::MatmulFfn => "matmul_ffn",
            OpKind::Swiglu => "swiglu",
            OpKind::Add => "add",
            OpKind::Output => "matmul_output",
        }
    }
}

/// Receives timing marks: `begin` before an op group, `end` after it. The model calls it
/// only when a profiler is installed; the profiler decides whether to synchronize.
pub trait Profiler<B: Backend> {
    fn begin(&mut self, backend: &mut B, op: OpKind);
    fn end(&mut self, backend: &mut B, op: OpKind);
}

/// Receives hidden states for the oracle: `stage` is `embed`, `block.{i}`, `final_norm`;
/// `data` is `[n_tok, dim]` row-major f32 on the host.
pub type Tracer<'t> = &'t mut dyn FnMut(&str, &[f32]);

/// The tokens of a forward chunk: ids from the host, or (one token) the index an
/// argmax left in the workspace's argmax slot `slot`.
#[derive(Clone, Copy)]
enum Tokens<'a> {
    Host(&'a [u32]),
    Device { slot: usize },
}

/// A Llama model bound to a backend, with its run state.
pub struct Llama<B: Backend> {
    pub cfg: LlamaConfig,
    pub weights: Weights<B>,
    pub backend: B,
    pub kv: KvCache<B>,
    ws: Workspace<B>,
    opts: RunOptions,
    /// Host copy of the logits of the last forward (`(rows, vocab)`).
    logits_host: Vec<f32>,
    logits_rows: usize,
    profiler: Option<alloc::boxed::Box<dyn Profiler<B>>>,
}

/// Bytes of the run state `Llama::new` allocates: the KV cache (f32 K and V per layer),
/// the workspace and the logits rows (saturating: absurd sizes compare as huge).
pub fn state_bytes(cfg: &LlamaConfig, opts: &RunOptions, logit_rows: usize) -> u64 {
    let kv = (cfg.n_layer as u64)
        .saturating_mul(opts.ctx as u64)
        .saturating_mul((cfg.n_kv_head * cfg.head_dim) as u64)
        .saturating_mul(2 * 4);
    let per_tok = (3 * cfg.dim + 2 * cfg.q_dim() + 3 * cfg.ffn_dim) as u64 * 4;
    let ws = per_tok.saturating_mul(opts.max_batch as u64);
    let logits = (logit_rows as u64).saturating_mul(cfg.vocab as u64 * 4);
    kv.saturating_add(ws).saturating_add(logits)
}

/// Refuses a run state (KV cache + workspace) larger than the memory the system reports
/// available (`MemAvailable` in `/proc/meminfo`, where there is one), naming both: such a
/// request would otherwise be granted by overcommit and end with the process killed once
/// the cache fills (a 46 GB cache for `ctx = 1 000 000` on SmolLM2), or abort.
fn check_state_fits(cfg: &LlamaConfig, opts: &RunOptions, logit_rows: usize) -> Result<()> {
    let need = state_bytes(cfg, opts, logit_rows);
    if let Some(avail) = crate::os::available_bytes() {
        if need > avail {
            return Err(Error::invalid(alloc::format!(
                "the context length (ctx = {}) needs {} MiB for the KV cache and workspace, but only {} MiB of memory is available (MemAvailable in /proc/meminfo); use a shorter context",
                opts.ctx,
                need >> 20,
                avail >> 20
            )));
        }
    }
    Ok(())
}

fn f32_buf<B: Backend>(b: &B, elems: usize) -> Result<B::Buffer> {
    b.alloc(elems * 4, BufferKind::Device)
}

impl<B: Backend> Llama<B> {
    /// Binds weights to a backend and allocates the whole run state.
    pub fn new(cfg: LlamaConfig, weights: Weights<B>, mut backend: B, opts: RunOptions) -> Result<Llama<B>> {
        if opts.ctx == 0 {
            return Err(Error::invalid(
                "RunOptions::ctx (the context length) must be at least 1",
            ));
        }
        if opts.max_batch == 0 {
            return Err(Error::invalid(
                "RunOptions::max_batch (tokens per forward call) must be at least 1",
            ));
        }
        let mb = opts.max_batch;
        let logit_rows = if opts.all_logits { mb } else { 1 };
        if backend.capabilities().unified_memory {
            // Host memory holds the state (a discrete GPU's limit is its own).
            check_state_fits(&cfg, &opts, logit_rows)?;
        }
        let b = &backend;
        let mut inv_freq = f32_buf(b, cfg.head_dim / 2)?;
        let freqs = cfg.rope_inv_freq();
        b.upload(&mut inv_freq, 0, bytemuck::cast_slice(&freqs))?;
        let ws = Workspace {
            x: f32_buf(b, mb * cfg.dim)?,
            xb: f32_buf(b, mb * cfg.dim)?,
            xb2: f32_buf(b, mb * cfg.dim)?,
            q: f32_buf(b, mb * cfg.q_dim())?,
            att: f32_buf(b, mb * cfg.q_dim())?,
            hb: f32_buf(b, mb * cfg.ffn_dim)?,
            hb2: f32_buf(b, mb * cfg.ffn_dim)?,
            hb3: f32_buf(b, mb * cfg.ffn_dim)?,
            logits: f32_buf(b, logit_rows * cfg.vocab)?,
            argmax: f32_buf(b, 2)?,
            inv_freq,
        };
        let kv = KvCache::new(
            b,
            cfg.n_layer,
            opts.ctx,
            cfg.n_kv_head,
            cfg.head_dim,
            BufferKind::Device,
        )?;
        backend.reserve(Reservation {
            max_tokens: mb,
            max_row: cfg.dim.max(cfg.ffn_dim).max(cfg.q_dim()),
            max_ctx: opts.ctx,
            n_head: cfg.n_head,
        })?;
        let logits_host = vec![0.0; logit_rows * cfg.vocab];
        Ok(Llama {
            cfg,
            weights,
            backend,
            kv,
            ws,
            opts,
            logits_host,
            logits_rows: 0,
            profiler: None,
        })
    }

    pub fn options(&self) -> RunOptions {
        self.opts
    }

    /// Installs (or removes) a per-op profiler.
    pub fn set_profiler(&mut self, p: Option<alloc::boxed::Box<dyn Profiler<B>>>) {
        self.profiler = p;
    }

    /// Forgets the context (the KV cache is kept allocated).
    pub fn reset(&mut self) {
        self.kv.clear();
    }

    /// Logits of the last forward call: one row per position when `all_logits`, else the
    /// last position only.
    pub fn logits(&self) -> &[f32] {
        &self.logits_host[..self.logits_rows * self.cfg.vocab]
    }

    /// Runs `ids` (any length; chunked by `max_batch`) after the cached context and leaves
    /// their logits in [`Llama::logits`].
    pub fn forward(&mut self, ids: &[u32]) -> Result<&[f32]> {
        self.forward_traced(ids, None)
    }

    /// [`Llama::forward`] that also reports hidden states to `trace` (oracle use; the
    /// trace path allocates, the plain path does not).
    pub fn forward_traced(&mut self, ids: &[u32], mut trace: Option<Tracer<'_>>) -> Result<&[f32]> {
        self.check_ids(ids)?;
        let mut done = 0;
        let mut rows = 0;
        for chunk in ids.chunks(self.opts.max_batch) {
            self.forward_chunk(Tokens::Host(chunk), &mut trace)?;
            // Collect logits: all rows when asked for, otherwise the last one.
            let v = self.cfg.vocab;
            if self.opts.all_logits {
                let n = chunk.len();
                if rows + n > self.logits_host.len() / v {
                    // Growing the host logits for a long `logits` request is the one
                    // allocation outside decode, and only in all_logits mode.
                    self.logits_host.resize((rows + n) * v, 0.0);
                }
                self.backend.download(
                    &self.ws.logits,
                    0,
                    bytemuck::cast_slice_mut(&mut self.logits_host[rows * v..(rows + n) * v]),
                )?;
                rows += n;
            } else {
                self.backend
                    .download(&self.ws.logits, 0, bytemuck::cast_slice_mut(&mut self.logits_host[..v]))?;
                rows = 1;
            }
            done += chunk.len();
        }
        debug_assert_eq!(done, ids.len());
        self.logits_rows = rows;
        Ok(self.logits())
    }

    /// Greedy decoding's step: runs `ids` like [`Llama::forward`] and returns the index
    /// of the last position's largest logit (NaN never wins, ties: the lowest id — the
    /// greedy sampler's rule), computed by the backend, so 4 bytes come back instead of
    /// the logits row. [`Llama::logits`] is empty after it.
    pub fn forward_argmax(&mut self, ids: &[u32]) -> Result<u32> {
        self.check_ids(ids)?;
        let mut last = 0;
        for chunk in ids.chunks(self.opts.max_batch) {
            self.forward_chunk(Tokens::Host(chunk), &mut None)?;
            last = chunk.len();
        }
        self.argmax_into(last, 0)?;
        let mut idx = [0f32; 1];
        self.backend
            .download(&self.ws.argmax, 0, bytemuck::cast_slice_mut(&mut idx))?;
        Self::argmax_token(idx[0])
    }

    /// Greedy decoding with the token chosen *and fed* on the device: runs up to `steps`
    /// one-token forward passes, the first on `first` (a token not yet in the cache),
    /// each later one on the token the previous pass chose, and hands every chosen
    /// token to `on_token`, which returns `false` to stop (an end-of-sequence token, a
    /// stop string). Returns the passes kept.
    ///
    /// The same tokens as calling [`Llama::forward_argmax`] in a loop, but the next pass
    /// is queued before the host looks at this one's token: the embedding lookup reads
    /// the index the argmax left on the device ([`Backend::get_rows_at`]) and the token
    /// comes back by [`Backend::download_start`], so a GPU never idles for a host round
    /// trip. The price: when `on_token` stops, one pass already ran on the token it
    /// rejected; its cache slot is dropped again (the cache ends as the loop would leave
    /// it). On a backend whose ops finish when called (the CPU) this is just the loop.
    pub fn decode_greedy(
        &mut self,
        first: u32,
        steps: usize,
        mut on_token: impl FnMut(u32) -> Result<bool>,
    ) -> Result<usize> {
        if steps == 0 {
            return Ok(0);
        }
        self.check_ids(&[first])?;
        self.kv.check_room(steps)?;
        let len0 = self.kv.len();
        let result = self.decode_greedy_inner(first, steps, &mut on_token);
        if result.is_err() {
            // A failed pass leaves no half-written cache behind a later call.
            self.kv.truncate(len0);
        }
        result
    }

    fn decode_greedy_inner(
        &mut self,
        first: u32,
        steps: usize,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<usize> {
        // Pass j writes its index into argmax slot j % 2 and reads pass j - 1's slot.
        self.forward_chunk(Tokens::Host(&[first]), &mut None)?;
        self.argmax_into(1, 0)?;
        let mut pending = Some(self.backend.download_start(&self.ws.argmax, 0, 4)?);
        for j in 0..steps {
            // Queue pass j + 1 before waiting for pass j's token.
            let ahead = j + 1 < steps;
            if ahead {
                self.forward_chunk(Tokens::Device { slot: j % 2 }, &mut None)?;
                self.argmax_into(1, (j + 1) % 2)?;
            }
            let next = if ahead {
                Some(self.backend.download_start(&self.ws.argmax, ((j + 1) % 2) * 4, 4)?)
            } else {
                None
            };
            let mut idx = [0f32; 1];
            let p = pending.take().expect("one read per pass");
            self.backend
                .download_finish(&self.ws.argmax, p, bytemuck::cast_slice_mut(&mut idx))?;
            pending = next;
            let verdict = Self::argmax_token(idx[0]).and_then(&mut *on_token);
            if !matches!(verdict, Ok(true)) {
                if let Some(p) = pending.take() {
                    // The pass queued ahead ran on a token that is not kept: wait for it
                    // (the read's slot is the backend's to reuse), drop its cache slot.
                    self.backend
                        .download_finish(&self.ws.argmax, p, bytemuck::cast_slice_mut(&mut idx))?;
                    self.kv.truncate(self.kv.len() - 1);
                }
                return verdict.map(|_| j + 1);
            }
        }
        Ok(steps)
    }

    /// Argmax of the last forward chunk's last row (`rows` rows were run) into argmax
    /// slot `slot`.
    fn argmax_into(&mut self, rows: usize, slot: usize) -> Result<()> {
        // The last position's row: the only one, or the chunk's last with all_logits.
        let v = self.cfg.vocab;
        let row = if self.opts.all_logits { rows - 1 } else { 0 };
        let logits = TensorRef::<B>::new(&self.ws.logits, row * v * 4, DType::F32, Shape::d2(1, v));
        let out = TensorMut::<B>::new(&mut self.ws.argmax, slot * 4, DType::F32, Shape::d1(1));
        ops::argmax(&mut self.backend, logits, out)?;
        self.logits_rows = 0;
        Ok(())
    }

    fn argmax_token(idx: f32) -> Result<u32> {
        if idx < 0.0 {
            return Err(Error::invalid("argmax: no logit above -inf (all -inf or NaN)"));
        }
        Ok(idx as u32)
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::invalid("forward: no tokens"));
        }
        self.kv.check_room(ids.len())?;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab) {
            return Err(Error::range(
                String::from("token id"),
                bad as u64,
                self.cfg.vocab as u64,
            ));
        }
        Ok(())
    }

    fn mark(&mut self, op: OpKind, begin: bool) {
        if let Some(p) = self.profiler.as_mut() {
            if begin {
                p.begin(&mut self.backend, op)
            } else {
                p.end(&mut self.backend, op)
            }
        }
    }

    fn trace(&mut self, trace: &mut Option<Tracer<'_>>, stage: &str, buf_is_xb: bool, n: usize) -> Result<()> {
        if let Some(t) = trace.as_mut() {
            let mut host = vec![0.0f32; n * self.cfg.dim];
            let buf = if buf_is_xb { &self.ws.xb } else { &self.ws.x };
            self.backend.download(buf, 0, bytemuck::cast_slice_mut(&mut host))?;
            t(stage, &host);
        }
        Ok(())
    }

    /// One batch of `n ≤ max_batch` tokens.
    fn forward_chunk(&mut self, ids: Tokens<'_>, trace: &mut Option<Tracer<'_>>) -> Result<()> {
        let c = &self.cfg;
        let n = match ids {
            Tokens::Host(ids) => ids.len(),
            Tokens::Device { .. } => 1,
        };
        let (dim, qd, ff, hd) = (c.dim, c.q_dim(), c.ffn_dim, c.head_dim);
        let (n_head, n_kv_head, eps, style, vocab) = (c.n_head, c.n_kv_head, c.norm_eps, c.rope_style, c.vocab);
        let slot0 = self.kv.len();
        let pos0 = self.kv.next_pos();
        let attn = AttnParams {
            n_head,
            n_kv_head,
            head_dim: hd,
            scale: 1.0 / crate::math::sqrtf(hd as f32),
            n_past: slot0,
        };
        let f32v = |shape: Shape| (DType::F32, shape);
        let (t_dim, t_q, t_ff) = (f32v(Shape::d2(n, dim)), f32v(Shape::d2(n, qd)), f32v(Shape::d2(n, ff)));

        // Helper views over workspace buffers.
        fn r<'a, B: Backend>(buf: &'a B::Buffer, t: (DType, Shape)) -> TensorRef<'a, B> {
            TensorRef::new(buf, 0, t.0, t.1)
        }
        fn m<'a, B: Backend>(buf: &'a mut B::Buffer, t: (DType, Shape)) -> TensorMut<'a, B> {
            TensorMut::new(buf, 0, t.0, t.1)
        }

        // x = embed(ids)                                              (n, dim)
        self.mark(OpKind::Embed, true);
        match ids {
            Tokens::Host(ids) => ops::get_rows(
                &mut self.backend,
                self.weights.tok_embd.view(),
                ids,
                m(&mut self.ws.x, t_dim),
            )?,
            Tokens::Device { slot } => ops::get_rows_at(
                &mut self.backend,
                self.weights.tok_embd.view(),
                TensorRef::new(&self.ws.argmax, slot * 4, DType::F32, Shape::d1(1)),
                m(&mut self.ws.x, t_dim),
            )?,
        }
        self.mark(OpKind::Embed, false);
        self.trace(trace, "embed", false, n)?;

        let bp = BlockParams { eps, attn, pos0, style };
        fn block_weights<B: Backend>(lw: &LayerWeights<B>) -> BlockWeights<'_, B> {
            BlockWeights {
                attn_norm: lw.attn_norm.view(),
                wq: lw.wq.view(),
                wk: lw.wk.view(),
                wv: lw.wv.view(),
                wo: lw.wo.view(),
                ffn_norm: lw.ffn_norm.view(),
                w_gate: lw.w_gate.view(),
                w_up: lw.w_up.view(),
                w_down: lw.w_down.view(),
            }
        }
        // (a macro, not a fn: it borrows the scratch fields only, not all of `ws`)
        macro_rules! scratch {
            ($ws:expr) => {
                BlockScratch {
                    xn: m(&mut $ws.xb, t_dim),
                    tmp: m(&mut $ws.xb2, t_dim),
                    q: m(&mut $ws.q, t_q),
                    att: m(&mut $ws.att, t_q),
                    gate: m(&mut $ws.hb, t_ff),
                    up: m(&mut $ws.hb2, t_ff),
                    act: m(&mut $ws.hb3, t_ff),
                }
            };
        }
        // Without a tracer or profiler (per-layer states, per-op marks), every layer in
        // one op: a GPU backend runs several layers per launch.
        let whole = trace.is_none() && self.profiler.is_none();
        if whole {
            let ws = &mut self.ws;
            let (weights, kv) = (&self.weights, &mut self.kv);
            let mut visit = |l: usize, f: &mut LayerFn<'_, B>| {
                let (k, v) = kv.layer_mut(l);
                f(block_weights(&weights.layers[l]), BlockKv { k, v })
            };
            let freqs = r(&ws.inv_freq, f32v(Shape::d1(hd / 2)));
            let s = scratch!(ws);
            let x = m(&mut ws.x, t_dim);
            ops::llama_blocks(&mut self.backend, x, self.cfg.n_layer, &mut visit, freqs, bp, s)?;
        }
        for l in (0..self.cfg.n_layer).filter(|_| !whole) {
            let ws = &mut self.ws;
            let w = block_weights(&self.weights.layers[l]);
            let (k, v) = self.kv.layer_mut(l);
            let s = scratch!(ws);
            let freqs = r(&ws.inv_freq, f32v(Shape::d1(hd / 2)));
            let x = m(&mut ws.x, t_dim);
            match self.profiler.as_mut() {
                // Per-op marks: the op sequence, bracketed stage by stage.
                Some(prof) => llama_block_composed(
                    &mut self.backend,
                    x,
                    w,
                    BlockKv { k, v },
                    freqs,
                    bp,
                    s,
                    &mut |be, stage, begin| {
                        let op = match stage {
                            BlockStage::Qkv => OpKind::MatmulQkv,
                            BlockStage::Rope => OpKind::Rope,
                            BlockStage::Attention => OpKind::Attention,
                            BlockStage::OutProj => OpKind::MatmulOut,
                            BlockStage::Ffn => OpKind::MatmulFfn,
                        };
                        if begin {
                            prof.begin(be, op)
                        } else {
                            prof.end(be, op)
                        }
                    },
                )?,
                None => ops::llama_block(&mut self.backend, x, w, BlockKv { k, v }, freqs, bp, s)?,
            }
            if trace.is_some() {
                let stage = alloc::format!("block.{l}");
                self.trace(trace, &stage, false, n)?;
            }
        }

        // ---- head ----
        // Only the rows whose logits are wanted: all, or the last one.
        let (first, rows) = if self.opts.all_logits { (0, n) } else { (n - 1, 1) };
        if whole {
            // Norm and output projection as one op (a GPU backend fuses them).
            let ws = &mut self.ws;
            let x_rows = TensorRef::<B>::new(&ws.x, first * dim * 4, DType::F32, Shape::d2(rows, dim));
            ops::rms_norm_matmul(
                &mut self.backend,
                x_rows,
                self.weights.out_norm.view(),
                eps,
                m(&mut ws.xb, f32v(Shape::d2(rows, dim))),
                self.weights.output().view(),
                m(&mut ws.logits, f32v(Shape::d2(rows, vocab))),
            )?;
            self.kv.commit(n);
            return Ok(());
        }
        self.mark(OpKind::Norm, true);
        let ws = &mut self.ws;
        if trace.is_some() {
            // The oracle wants the final norm of every row.
            ops::rms_norm(
                &mut self.backend,
                r(&ws.x, t_dim),
                self.weights.out_norm.view(),
                eps,
                m(&mut ws.xb, t_dim),
            )?;
        } else {
            let x_rows = TensorRef::<B>::new(&ws.x, first * dim * 4, DType::F32, Shape::d2(rows, dim));
            let out = m(&mut ws.xb, f32v(Shape::d2(rows, dim)));
            ops::rms_norm(&mut self.backend, x_rows, self.weights.out_norm.view(), eps, out)?;
        }
        self.mark(OpKind::Norm, false);
        if trace.is_some() {
            self.trace(trace, "final_norm", true, n)?;
        }
        self.mark(OpKind::Output, true);
        let ws = &mut self.ws;
        let xb_rows = TensorRef::<B>::new(
            &ws.xb,
            if trace.is_some() { first * dim * 4 } else { 0 },
            DType::F32,
            Shape::d2(rows, dim),
        );
        ops::matmul(
            &mut self.backend,
            self.weights.output().view(),
            xb_rows,
            m(&mut ws.logits, f32v(Shape::d2(rows, vocab))),
        )?;
        self.mark(OpKind::Output, false);
        self.kv.commit(n);
        Ok(())
    }
}
