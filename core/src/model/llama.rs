//! The Llama forward pass, written once against the [`Backend`] trait.
//!
//! Three structs explain the model, as in llama2.c: [`LlamaConfig`] (sizes), [`Weights`]
//! (buffers over the mapped file) and the run state — [`Workspace`] (every activation
//! of a batch, allocated once) plus the [`KvCache`]. The pass reads top to bottom in two
//! functions: `Llama::forward_chunk` (embed → every layer → final norm → logits) and
//! [`llama_block`], the one definition of a layer (norm → q/k/v → RoPE → attention over
//! the cache → output projection + residual → norm → SwiGLU + residual), every buffer
//! with its shape.
//!
//! Fusion is the backend's business, never a second copy of the math: the fused ops
//! (`rms_norm_matmul3`, `rope_qk`, `matmul_add`, `rms_norm_matmul_swiglu`) and the
//! whole-block ops (`llama_block`, `llama_blocks`, the head's `rms_norm_matmul`) are
//! trait methods whose defaults compose the plain ops — the block's default is
//! [`llama_block`] itself — and the OpenCL backend overrides them with single kernels.
//! Which entry points a chunk goes through is decided in one place, the `Plan`: fused
//! (nobody watching: whole-model ops, so a GPU can run several layers per launch),
//! traced (the oracle's hidden states after every layer) or profiled (marks around
//! each stage of [`llama_block`]).
//!
//! After [`Llama::new`] nothing is allocated: a prompt is processed in chunks of at most
//! `max_batch` tokens through the same workspace, and decoding is a chunk of one.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::config::LlamaConfig;
use super::weights::Weights;
use crate::backend::{
    AttnParams, Backend, BlockKv, BlockParams, BlockScratch, BlockWeights, BufferKind, LayerFn, Reservation,
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
    /// KV-cache dtype, one of the backend's `Capabilities::kv_dtypes`; `None`: the
    /// backend's first choice (f16 on the CPU — half the memory of f32, faster at long
    /// contexts, keys and values rounded to f16 once as they are stored, as llama.cpp's
    /// default cache; f32 on OpenCL).
    pub kv_type: Option<DType>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            ctx: 2048,
            max_batch: 64,
            all_logits: false,
            kv_type: None,
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

impl<B: Backend> Workspace<B> {
    /// The views a chunk of `n` tokens runs its layers on: the residual stream `x`
    /// `(n, dim)`, the block's scratch and the RoPE frequencies `(head_dim / 2,)`.
    fn block_views(&mut self, c: &LlamaConfig, n: usize) -> (TensorMut<'_, B>, BlockScratch<'_, B>, TensorRef<'_, B>) {
        fn rows<B: Backend>(buf: &mut B::Buffer, n: usize, cols: usize) -> TensorMut<'_, B> {
            TensorMut::new(buf, 0, DType::F32, Shape::d2(n, cols))
        }
        let s = BlockScratch {
            xn: rows(&mut self.xb, n, c.dim),
            tmp: rows(&mut self.xb2, n, c.dim),
            q: rows(&mut self.q, n, c.q_dim()),
            att: rows(&mut self.att, n, c.q_dim()),
            gate: rows(&mut self.hb, n, c.ffn_dim),
            up: rows(&mut self.hb2, n, c.ffn_dim),
            act: rows(&mut self.hb3, n, c.ffn_dim),
        };
        let inv_freq = TensorRef::new(&self.inv_freq, 0, DType::F32, Shape::d1(c.head_dim / 2));
        (rows(&mut self.x, n, c.dim), s, inv_freq)
    }
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
    /// `Send` so that a model can be built (and warmed) on one thread and run on another
    /// (the hybrid's background build, `model::hybrid`).
    profiler: Option<alloc::boxed::Box<dyn Profiler<B> + Send>>,
}

/// Bytes of the run state `Llama::new` allocates: the KV cache (K and V per layer; f32
/// when `kv_type` is not yet chosen),
/// the workspace and the logits rows (saturating: absurd sizes compare as huge).
pub fn state_bytes(cfg: &LlamaConfig, opts: &RunOptions, logit_rows: usize) -> u64 {
    let kv_dt = opts.kv_type.unwrap_or(DType::F32);
    // Bytes of one slot's row (whole blocks for Q8_0; a row that is not is refused later
    // by `KvCache::new`, so its size here is taken as f32's).
    let row = kv_dt
        .row_bytes(cfg.n_kv_head * cfg.head_dim)
        .unwrap_or(cfg.n_kv_head * cfg.head_dim * 4);
    let kv = (cfg.n_layer as u64)
        .saturating_mul(opts.ctx as u64)
        .saturating_mul(2 * row as u64);
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
        let kv_types = backend.capabilities().kv_dtypes;
        let kv_type = opts.kv_type.or(kv_types.first().copied()).unwrap_or(DType::F32);
        if !kv_types.contains(&kv_type) {
            let names: Vec<&str> = kv_types.iter().map(|d| d.name()).collect();
            return Err(Error::invalid(alloc::format!(
                "KV-cache type {} is not supported by the {} backend (--kv-type: {})",
                kv_type.name(),
                backend.name(),
                names.join(", ")
            )));
        }
        let opts = RunOptions {
            kv_type: Some(kv_type),
            ..opts
        };
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
            kv_type,
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
    pub fn set_profiler(&mut self, p: Option<alloc::boxed::Box<dyn Profiler<B> + Send>>) {
        self.profiler = p;
    }

    /// Chooses what a full KV cache gives up (`--kv-policy`; see [`crate::kv_evict`]):
    /// with a policy other than `none`, forward calls evict before each chunk that does
    /// not fit instead of failing.
    pub fn set_kv_policy(&mut self, cfg: crate::kv_evict::EvictConfig) -> Result<()> {
        self.kv.set_policy(&self.backend, cfg)
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
        let evicting = self.kv.policy().policy != crate::kv_evict::KvPolicy::None;
        if !evicting {
            self.kv.check_room(steps)?;
        }
        let len0 = self.kv.len();
        let result = self.decode_greedy_inner(first, steps, &mut on_token);
        if result.is_err() && !evicting {
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
        if self.kv.policy().policy == crate::kv_evict::KvPolicy::None {
            self.kv.check_room(ids.len())?;
        } else {
            // Each chunk must fit once the policy has evicted what it may.
            let chunk = ids.len().min(self.opts.max_batch);
            if chunk > self.kv.max_insert() {
                return Err(Error::range(
                    alloc::format!(
                        "tokens in one forward chunk under --kv-policy {} (lower --batch)",
                        self.kv.policy().policy.name()
                    ),
                    chunk as u64,
                    self.kv.max_insert() as u64,
                ));
            }
        }
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
            mark(&mut **p, &mut self.backend, op, begin);
        }
    }

    /// Hands the hidden state `(n, dim)` of `x` (or of `xb`, after the final norm) to
    /// the tracer, if there is one.
    fn trace(&mut self, trace: &mut Option<Tracer<'_>>, stage: &str, buf_is_xb: bool, n: usize) -> Result<()> {
        if let Some(t) = trace.as_mut() {
            let mut host = vec![0.0f32; n * self.cfg.dim];
            let buf = if buf_is_xb { &self.ws.xb } else { &self.ws.x };
            self.backend.download(buf, 0, bytemuck::cast_slice_mut(&mut host))?;
            t(stage, &host);
        }
        Ok(())
    }

    /// One batch of `n ≤ max_batch` tokens: embed → every layer's [`llama_block`] →
    /// final norm → logits. The [`Plan`] (chosen here, once) says which entry points the
    /// layers and the head go through; the math is the same in every plan.
    fn forward_chunk(&mut self, ids: Tokens<'_>, trace: &mut Option<Tracer<'_>>) -> Result<()> {
        let scored = self.kv.wants_mass();
        let plan = Plan::choose(trace.is_some(), self.profiler.is_some(), scored);
        let n = match ids {
            Tokens::Host(ids) => ids.len(),
            Tokens::Device { .. } => 1,
        };
        // Room for the chunk: the eviction policy (if any) evicts on the backend.
        let inv_freq = TensorRef::new(&self.ws.inv_freq, 0, DType::F32, Shape::d1(self.cfg.head_dim / 2));
        self.kv.prepare(&mut self.backend, n, inv_freq, self.cfg.rope_style)?;
        let c = &self.cfg;
        let (dim, vocab, n_layer, eps) = (c.dim, c.vocab, c.n_layer, c.norm_eps);
        let bp = BlockParams {
            eps,
            attn: AttnParams {
                n_head: c.n_head,
                n_kv_head: c.n_kv_head,
                head_dim: c.head_dim,
                scale: 1.0 / crate::math::sqrtf(c.head_dim as f32),
                // This chunk's tokens go to cache slots n_past.. and attend to 0..=their own.
                n_past: self.kv.len(),
            },
            pos0: self.kv.next_pos(),
            style: c.rope_style,
        };

        // x = tok_embd[ids]                                               (n, dim)
        self.mark(OpKind::Embed, true);
        let x = TensorMut::new(&mut self.ws.x, 0, DType::F32, Shape::d2(n, dim));
        let table = self.weights.tok_embd.view(); // (vocab, dim)
        match ids {
            Tokens::Host(ids) => ops::get_rows(&mut self.backend, table, ids, x)?,
            Tokens::Device { slot } => {
                let idx = TensorRef::new(&self.ws.argmax, slot * 4, DType::F32, Shape::d1(1));
                ops::get_rows_at(&mut self.backend, table, idx, x)?
            }
        }
        self.mark(OpKind::Embed, false);
        self.trace(trace, "embed", false, n)?;

        // x = llama_block(x) for every layer, with the layer's KV cache  (n, dim)
        match plan {
            Plan::Fused => {
                // Every layer in one op: a backend may run several per launch.
                let (x, s, inv_freq) = self.ws.block_views(&self.cfg, n);
                let (weights, kv) = (&self.weights, &mut self.kv);
                let mut layer = |l: usize, f: &mut LayerFn<'_, B>| {
                    let (k, v) = kv.layer_mut(l);
                    f(weights.layers[l].views(), BlockKv { k, v })
                };
                ops::llama_blocks(&mut self.backend, x, n_layer, &mut layer, inv_freq, bp, s)?;
            }
            Plan::Traced | Plan::Profiled | Plan::Scored => {
                for l in 0..n_layer {
                    let (x, s, inv_freq) = self.ws.block_views(&self.cfg, n);
                    let (k, v, mass) = self.kv.layer_mass_mut(l);
                    let (w, kv) = (self.weights.layers[l].views(), BlockKv { k, v });
                    match (plan, self.profiler.as_mut()) {
                        // The composition itself, with a profiling mark around each stage.
                        (Plan::Profiled, Some(prof)) => {
                            let mut marks = |b: &mut B, op, begin| mark(&mut **prof, b, op, begin);
                            llama_block(&mut self.backend, x, w, kv, inv_freq, bp, s, &mut marks, mass)?
                        }
                        // The composition, its attention adding the per-slot mass.
                        (Plan::Scored, _) => {
                            llama_block(&mut self.backend, x, w, kv, inv_freq, bp, s, &mut |_, _, _| {}, mass)?
                        }
                        // One layer as one op (a backend may still fuse a layer).
                        _ => ops::llama_block(&mut self.backend, x, w, kv, inv_freq, bp, s)?,
                    }
                    if trace.is_some() {
                        self.trace(trace, &alloc::format!("block.{l}"), false, n)?;
                    }
                }
            }
        }

        // logits = output · (rms_norm(x) · out_norm)                     (rows, vocab)
        // Only the rows whose logits are wanted: all of them, or the last one.
        let (first, rows) = if self.opts.all_logits { (0, n) } else { (n - 1, 1) };
        if plan == Plan::Fused {
            // Norm and projection as one op (a backend may fuse them).
            let ws = &mut self.ws;
            let x = TensorRef::new(&ws.x, first * dim * 4, DType::F32, Shape::d2(rows, dim));
            let xn = TensorMut::new(&mut ws.xb, 0, DType::F32, Shape::d2(rows, dim));
            let logits = TensorMut::new(&mut ws.logits, 0, DType::F32, Shape::d2(rows, vocab));
            let (w, norm) = (self.weights.output().view(), self.weights.out_norm.view());
            ops::rms_norm_matmul(&mut self.backend, x, norm, eps, xn, w, logits)?;
        } else {
            // A tracer is shown the final norm of every row; otherwise only the wanted
            // rows are normed.
            let (norm_first, norm_rows) = if trace.is_some() { (0, n) } else { (first, rows) };
            self.mark(OpKind::Norm, true);
            let ws = &mut self.ws;
            let x = TensorRef::new(&ws.x, norm_first * dim * 4, DType::F32, Shape::d2(norm_rows, dim));
            let xn = TensorMut::new(&mut ws.xb, 0, DType::F32, Shape::d2(norm_rows, dim));
            ops::rms_norm(&mut self.backend, x, self.weights.out_norm.view(), eps, xn)?;
            self.mark(OpKind::Norm, false);
            self.trace(trace, "final_norm", true, n)?;
            self.mark(OpKind::Output, true);
            let ws = &mut self.ws;
            let xn = TensorRef::new(&ws.xb, (first - norm_first) * dim * 4, DType::F32, Shape::d2(rows, dim));
            let logits = TensorMut::new(&mut ws.logits, 0, DType::F32, Shape::d2(rows, vocab));
            ops::matmul(&mut self.backend, self.weights.output().view(), xn, logits)?;
            self.mark(OpKind::Output, false);
        }
        self.kv.commit(n);
        Ok(())
    }
}

/// A profiler's mark: `begin` or end of `op`.
fn mark<B: Backend>(p: &mut dyn Profiler<B>, backend: &mut B, op: OpKind, begin: bool) {
    if begin {
        p.begin(backend, op)
    } else {
        p.end(backend, op)
    }
}

/// How a forward chunk runs its layers and its head: the one place where fused,
/// profiled and traced execution part ways. The math is [`llama_block`] in all three;
/// what differs is which entry point a backend gets to override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Nobody looks inside the chunk: every layer in one [`ops::llama_blocks`] and the
    /// head in one [`ops::rms_norm_matmul`], so a backend may fuse across layers (the
    /// OpenCL block kernel runs several layers per launch, `llama_head_f32` the head).
    /// Their defaults run [`llama_block`] per layer, and norm then matmul.
    Fused,
    /// A tracer wants the hidden state after every layer and the final norm of every
    /// row: layer by layer through [`ops::llama_block`] (a backend may still fuse one
    /// layer), the head as norm, then matmul.
    Traced,
    /// A profiler wants time per stage: layer by layer through [`llama_block`] itself,
    /// with a mark around each stage, the head as norm, then matmul (each marked). A
    /// tracer, if there is one too, still sees every stage.
    Profiled,
    /// A score-based eviction policy wants each slot's attention mass: layer by layer
    /// through [`llama_block`] itself, its attention as [`ops::attention_mass`]. (Also
    /// profiled: marks as in `Profiled`; also traced: the tracer sees every stage.)
    Scored,
}

impl Plan {
    fn choose(traced: bool, profiled: bool, scored: bool) -> Plan {
        match (traced, profiled, scored) {
            (_, true, _) => Plan::Profiled,
            (_, false, true) => Plan::Scored,
            (true, false, false) => Plan::Traced,
            (false, false, false) => Plan::Fused,
        }
    }
}

/// What a profiled [`llama_block`] calls around each stage: `marks(backend, op, begin)`.
pub type BlockMarks<'m, B> = dyn FnMut(&mut B, OpKind, bool) + 'm;

/// One pre-norm Llama block on the residual stream `x` `(n, dim)`, updated in place —
/// the canonical composition, written once. [`Backend::llama_block`]'s default is this
/// (without marks), and so is what the OpenCL backend falls back to when its block
/// kernel does not apply; [`Llama`]'s profiled plan runs it with marks.
///
/// Each step is an op of [`crate::ops`]; where two or more steps are one op
/// (`rms_norm_matmul3`: the norm and Q/K/V, `rope_qk`, `matmul_add`: a projection and
/// its residual add, `rms_norm_matmul_swiglu`) the trait's default composes the plain
/// ops and a backend may override it with one kernel. `marks` brackets each stage for a
/// profiler (`|_, _, _| {}` when nobody measures). With `mass` (`[capacity]` f32, a
/// score-based eviction policy's) the attention also adds each slot's attention mass
/// into it ([`ops::attention_mass`]).
#[allow(clippy::too_many_arguments)]
pub fn llama_block<B: Backend + ?Sized>(
    b: &mut B,
    mut x: TensorMut<'_, B>,
    w: BlockWeights<'_, B>,
    kv: BlockKv<'_, B>,
    inv_freq: TensorRef<'_, B>,
    p: BlockParams,
    s: BlockScratch<'_, B>,
    marks: &mut BlockMarks<'_, B>,
    mass: Option<TensorMut<'_, B>>,
) -> Result<()> {
    let a = p.attn;
    let n = x.shape.rows();
    let kv_dim = a.n_kv_head * a.head_dim;
    let heads = Shape::d3(n, a.n_head, a.head_dim); // q and att seen per head
    let kv_heads = Shape::d3(n, a.n_kv_head, a.head_dim);
    let BlockScratch {
        mut xn,  // (n, dim)
        mut tmp, // (n, dim)
        mut q,   // (n, n_head * head_dim)
        mut att, // (n, n_head * head_dim)
        gate,    // (n, ffn_dim)
        up,      // (n, ffn_dim)
        mut act, // (n, ffn_dim)
    } = s;
    let (mut k_cache, mut v_cache) = (kv.k, kv.v); // (capacity, n_kv_head, head_dim)

    // ---- attention ----
    // xn = rms_norm(x) · attn_norm; q = xn · Wqᵀ; k, v = xn · Wkᵀ, xn · Wvᵀ, written
    // straight into this chunk's cache slots n_past..n_past + n   (n, q_dim), (n, kv_dim)
    marks(b, OpKind::MatmulQkv, true);
    let v = v_cache.rows_mut(a.n_past, n, kv_dim);
    if !k_cache.dtype.is_quantized() {
        let mut k = k_cache.rows_mut(a.n_past, n, kv_dim);
        let (qkv_w, qkv) = ([w.wq, w.wk, w.wv], [q.reborrow(), k.reborrow(), v]);
        ops::rms_norm_matmul3(b, x.as_ref(), w.attn_norm, p.eps, xn.reborrow(), qkv_w, qkv)?;
        marks(b, OpKind::MatmulQkv, false);

        // q, k = rope(q), rope(k) at positions pos0..pos0 + n          (n, heads, head_dim)
        marks(b, OpKind::Rope, true);
        let (q_heads, k_heads) = (q.reborrow().reshape(heads), k.reshape(kv_heads));
        ops::rope_qk(b, q_heads, k_heads, inv_freq, p.pos0, p.style)?;
        marks(b, OpKind::Rope, false);
    } else {
        // A quantized cache (Q8_0): the new keys go to f32 scratch (`att`, free until
        // attention; kv_dim ≤ q_dim), are rotated there and quantized once into their
        // slots — quantizing before RoPE would round them twice.     (n, kv_dim)
        let mut k = att.rows_mut(0, n, kv_dim);
        let (qkv_w, qkv) = ([w.wq, w.wk, w.wv], [q.reborrow(), k.reborrow(), v]);
        ops::rms_norm_matmul3(b, x.as_ref(), w.attn_norm, p.eps, xn.reborrow(), qkv_w, qkv)?;
        marks(b, OpKind::MatmulQkv, false);

        marks(b, OpKind::Rope, true);
        let (q_heads, k_heads) = (q.reborrow().reshape(heads), k.reborrow().reshape(kv_heads));
        ops::rope_qk(b, q_heads, k_heads, inv_freq, p.pos0, p.style)?;
        ops::store_rows(b, k.as_ref(), k_cache.rows_mut(a.n_past, n, kv_dim))?;
        marks(b, OpKind::Rope, false);
    }

    // att = softmax(q · Kᵀ · scale, causal) · V over cache slots 0..=n_past + t;
    // query head h reads KV head h / (n_head / n_kv_head)                 (n, q_dim)
    marks(b, OpKind::Attention, true);
    let (q_heads, att_heads) = (q.as_ref().reshape(heads), att.reborrow().reshape(heads));
    match mass {
        Some(m) => ops::attention_mass(b, q_heads, k_cache.as_ref(), v_cache.as_ref(), a, att_heads, m)?,
        None => ops::attention(b, q_heads, k_cache.as_ref(), v_cache.as_ref(), a, att_heads)?,
    }
    marks(b, OpKind::Attention, false);

    // x += att · Woᵀ                                                       (n, dim)
    marks(b, OpKind::MatmulOut, true);
    ops::matmul_add(b, w.wo, att.as_ref(), tmp.reborrow(), x.reborrow())?;
    marks(b, OpKind::MatmulOut, false);

    // ---- feed-forward ----
    // xn = rms_norm(x) · ffn_norm; act = silu(xn · Wgateᵀ) ⊙ (xn · Wupᵀ)  (n, ffn_dim)
    marks(b, OpKind::MatmulFfn, true);
    ops::rms_norm_matmul_swiglu(
        b,
        x.as_ref(),
        w.ffn_norm,
        p.eps,
        xn,
        w.w_gate,
        w.w_up,
        gate,
        up,
        act.reborrow(),
    )?;
    // x += act · Wdownᵀ                                                    (n, dim)
    ops::matmul_add(b, w.w_down, act.as_ref(), tmp, x)?;
    marks(b, OpKind::MatmulFfn, false);
    Ok(())
}
