//! [`OpenClOptions`]: how to pick and drive the device, and the one place the
//! `ANTIGRAVITY_OPENCL_*` environment variables are read ([`OpenClOptions::from_env`];
//! the table [`ENV`] lists them all, and `docs/opencl.md` shows the same table).
//!
//! Two kinds of setting: *user settings* (device choice, profiling, the decode path,
//! the image path) and *tuning overrides* (work-group sizes, rows per group, block-kernel
//! build variants) that exist for kernel work and measurements. A tuning override that
//! does not parse, or is not a value the kernel can take (not a power of two, out of
//! range), is ignored: the device default stays.

use alloc::string::{String, ToString};

/// Every environment variable the OpenCL backend reads: `(name, what it sets)`.
/// `docs/opencl.md` renders this table; a test checks the two agree.
pub const ENV: &[(&str, &str)] = &[
    (
        "ANTIGRAVITY_OPENCL_DEVICE",
        "`platform:device` indices or a case-insensitive name filter (`nvidia`, `pocl`): `platform`/`device`/`name_filter`",
    ),
    ("ANTIGRAVITY_OPENCL_PROFILE", "`1`: per-kernel device times (`profiling`)"),
    (
        "ANTIGRAVITY_OPENCL_BLOCK",
        "`0`: per-op decode kernels; `n`: the persistent block kernel with `n` work-groups (`persistent_groups`)",
    ),
    ("ANTIGRAVITY_OPENCL_IMAGES", "`1`/`0`: force the Q4_0 image weight path on/off (`images`)"),
    (
        "ANTIGRAVITY_OPENCL_MV_LWS",
        "tuning: work-group size of the `mul_mv` kernels, a power of two (`mv_lws`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_BLOCK_LWS",
        "tuning: work-group size of `block.cl`, a power of two ≥ 64 (`block_lws`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_BLOCK_SHFL",
        "tuning: `0`: `block.cl` reduces in local memory instead of NVIDIA warp shuffles (`block_shfl`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_BLOCK_CH",
        "tuning: attention chunk of `block.cl` in cache slots, a power of two in 16..=256 (`block_ch`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_BLOCK_WIDE",
        "`1`/`0`: `block.cl`'s wide attention (units of a KV head's whole GQA group, about one a work-group, merged by the last) on/off (`block_wide`; default on for NVIDIA GPUs, off elsewhere)",
    ),
    (
        "ANTIGRAVITY_OPENCL_BLOCK_WIDE_FROM",
        "tuning: cache slots from which a decode step takes the wide stage B where it is built (`block_wide_from`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_BLOCK_CORE",
        "tuning: `0`: one `block.cl` build for every weight type, no core-types variant for models without Q5/K-quant weights (`block_core`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_BLOCK_INT8",
        "`1`/`0`: `block.cl` with int8 activations and 4-way int8 dot products on/off (`block_int8`; default on for NVIDIA: PTX `dp4a`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_BLOCK_REPACK",
        "`1`/`0`: Q4_0 matrices repacked at load for the block kernel and the int8 prefill matmuls, a copy beside the GGUF bytes (`block_repack`; default on for discrete NVIDIA GPUs)",
    ),
    (
        "ANTIGRAVITY_OPENCL_MM_INT8",
        "`1`/`0`: the int8 prefill matmuls (`mul_mm_q8_1.cl`: activations quantized once per input, int8 tiles) on/off (`mm_int8`; default on for NVIDIA)",
    ),
    (
        "ANTIGRAVITY_OPENCL_MM_MMA",
        "`0`: the int8 prefill matmuls use `dp4a` instead of NVIDIA `mma.sync` tensor-core tiles (`mm_mma`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_MM_WIDE",
        "`1`/`0`: the int8 prefill matmuls on 128-row × 64-token tiles (2 × 4 `mma` fragments a warp) instead of 64 × 32 (`mm_wide`; default on with `mma.sync`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_MM_DEFINES",
        "tuning: extra `mul_mm_q8_1.cl` build options, e.g. `-DNB=4` (`mm_defines`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_BLOCK_DEFINES",
        "tuning: extra `block.cl` build options, e.g. `-DAG_NV_PLAIN_BARRIER` (`block_defines`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_HEAD_ROWS",
        "tuning: output rows per work-group of `llama_head_f32` (`head_rows`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_IMG_ROWS",
        "tuning: rows per work-group of the image kernel, dividing its work-group (`img_rows`)",
    ),
    (
        "ANTIGRAVITY_OPENCL_BINARY_CACHE",
        "`0`: no program-binary cache; a directory: keep it there (`binary_cache`; default `$ANTIGRAVITY_HOME/cl-cache`)",
    ),
];

/// How to pick and drive the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenClOptions {
    /// Platform index (as `clinfo -l` lists them).
    pub platform: Option<usize>,
    /// Device index within the platform.
    pub device: Option<usize>,
    /// Case-insensitive substring of the platform or device name (`"nvidia"`, `"pocl"`).
    pub name_filter: Option<String>,
    /// Record an event per kernel and sum device times
    /// ([`OpenClBackend::kernel_times`](super::OpenClBackend::kernel_times)).
    pub profiling: bool,
    /// Print the chosen device and its capabilities to stderr once.
    pub log: bool,
    /// Batches of at least this many tokens use the tiled `mul_mm` kernels instead of
    /// `mul_mv`. `None`: the device default (16 on GPUs; never on CPU devices, where
    /// PoCL runs `mul_mv` 3–4× faster for 64-token batches).
    pub mm_min_tokens: Option<usize>,
    /// Work-groups of the persistent decode kernel (`block.cl`, whole layers per launch):
    /// `None` = the device default (one per compute unit on NVIDIA GPUs, off elsewhere),
    /// `Some(0)` = off (per-op kernels), `Some(n)` = `n` work-groups (tests, tuning).
    pub persistent_groups: Option<usize>,
    /// Batches of at least this many query tokens use the prefill attention kernel
    /// (K/V tiles shared by 32 query rows) when the head fits it. `None`: 16.
    pub attn_prefill_min_tokens: Option<usize>,
    /// The image weight path (`image.rs`): Q4_0 weights repacked at load into
    /// `image1d_buffer` planes, read by `mul_mv_q4_0_img_f32` in decode's `matmul` /
    /// `matmul_add`. Costs a copy of every Q4_0 matrix (reported by
    /// [`OpenClBackend::repack_stats`](super::OpenClBackend::repack_stats)). `None`: on
    /// for Qualcomm/Adreno GPUs with `image1d_buffer` support, off elsewhere;
    /// `Some(true)` / `Some(false)` force it (forced on, a device that cannot run it says
    /// why and keeps the buffer kernels).
    pub images: Option<bool>,
    /// Caps the texels of one image below the device's `CL_DEVICE_IMAGE_MAX_BUFFER_SIZE`
    /// (tests of the too-large fallback; tuning). `None`: the device's limit.
    pub image_max_texels: Option<u64>,
    /// Tuning: work-group size of the `mul_mv` kernels (a power of two; capped at the
    /// reduction kernels' size). `None`: 32 on GPUs, 8 on CPU devices.
    pub mv_lws: Option<usize>,
    /// Tuning: work-group size `block.cl` is first built for (a power of two; lowered
    /// when the compiled kernel allows fewer). `None`: 512.
    pub block_lws: Option<usize>,
    /// Tuning: `Some(false)` builds `block.cl` with local-memory reductions on NVIDIA
    /// (for comparing with the warp-shuffle ones, the default there).
    pub block_shfl: Option<bool>,
    /// Tuning: attention chunk of `block.cl` in cache slots (a power of two, 16..=256).
    /// `None`: 32.
    pub block_ch: Option<usize>,
    /// `block.cl`'s wide stage B (`AG_ATTN_WIDE`): a unit is one KV head's split of the
    /// slots for all its query heads, about one unit per work-group, the last unit of a
    /// KV head merging its heads' partials. `None`: on for NVIDIA GPUs (measured on an
    /// H200), off elsewhere (the (query head, chunk) units).
    pub block_wide: Option<bool>,
    /// Tuning: slots of context (`n_past + 1`) from which a decode step takes the wide
    /// stage B (where built); shorter contexts take the (query head, chunk) units, which
    /// are faster there. `None`: `block.rs`'s `WIDE_FROM`.
    pub block_wide_from: Option<usize>,
    /// `block.cl`'s quantized rows against int8 activations (the staged vector quantized
    /// once per stage to Q8_0-style blocks, 4-way int8 dot products: PTX `dp4a` on NVIDIA,
    /// plain OpenCL C elsewhere). `None`: on for NVIDIA GPUs, off elsewhere.
    pub block_int8: Option<bool>,
    /// Q4_0 matrices repacked at load (`rowsoa.rs`: each row's quant bytes as aligned
    /// 16-byte words, then its scales), read by the persistent block kernel (decode) and
    /// the int8 prefill matmuls instead of the GGUF blocks. Costs a copy of every Q4_0
    /// matrix (reported by
    /// [`OpenClBackend::repack_stats`](super::OpenClBackend::repack_stats)); only while
    /// one of those two runs. `None`: on for discrete NVIDIA GPUs (measured there: H100,
    /// 1B Q4_0 decode +11 %, +15 % after 2 000 tokens), off elsewhere.
    pub block_repack: Option<bool>,
    /// Tuning: `Some(false)` runs models whose block weights are all F32/F16/BF16/Q4_0/
    /// Q4_1/Q8_0 on the `block.cl` build that also has the Q5_0/Q5_1/K-quant arms,
    /// instead of a build without them (`AG_CORE_TYPES`, made on first use). `None`: the
    /// variant is used on NVIDIA (where it was measured; elsewhere the persistent kernel
    /// is off by default, and one more build costs PoCL minutes).
    pub block_core: Option<bool>,
    /// The int8 prefill matmuls (`mul_mm_q8_1.cl`): from `mm_min_tokens` tokens on, a
    /// quantized weight (Q4_0, Q4_1, Q8_0, Q5_0, Q5_1, Q4_K, Q5_K) multiplies activations
    /// quantized once per input to Q8_1-style blocks, by int8 dot products on tiles in
    /// local memory. `None`: on for NVIDIA GPUs (PTX `dp4a` / `mma.sync`), off elsewhere
    /// (`mul_mm`'s f32 tiles); `Some(true)` forces it on (the portable `dp4a` on other
    /// devices: PoCL runs it in the conformance suite).
    pub mm_int8: Option<bool>,
    /// Tuning: `Some(false)` keeps the int8 prefill matmuls on `dp4a` on NVIDIA instead of
    /// `mma.sync` int8 tensor-core tiles (the default where the compiler takes them).
    pub mm_mma: Option<bool>,
    /// The int8 prefill matmuls' tile: `Some(true)` 128 rows × 64 tokens, each warp
    /// 2 × 4 `mma` fragments (fewer fragment loads and scale reads per product);
    /// `Some(false)` 64 × 32, one row fragment × 2. `None`: wide where `mma.sync` builds.
    /// Without `mma` the wide tile computes the same ownership with `dp4a` (how PoCL
    /// checks it).
    pub mm_wide: Option<bool>,
    /// Tuning: extra build options for `mul_mm_q8_1.cl` (e.g. `-DNB=4`, blocks per step).
    pub mm_defines: String,
    /// Tuning: extra build options for `block.cl` (kernel experiments).
    pub block_defines: String,
    /// Tuning: output rows per work-group of the head kernel. `None`: 64.
    pub head_rows: Option<usize>,
    /// Tuning: rows per work-group of the image kernel (dividing its work-group, with a
    /// power-of-two share per row). `None`: 4 on GPUs, 2 on CPU devices.
    pub img_rows: Option<usize>,
    /// Directory of the program-binary cache (`binary_cache.rs`: built programs' device
    /// binaries, so a later start skips compiling). `None`: off (the `Default`;
    /// [`OpenClOptions::from_env`] turns it on at `$ANTIGRAVITY_HOME/cl-cache`).
    pub binary_cache: Option<String>,
}

impl OpenClOptions {
    /// Options from the environment ([`ENV`] lists every variable). Unset variables, and
    /// tuning values that do not parse, leave the defaults.
    pub fn from_env() -> OpenClOptions {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Options from `get(name)` (the environment, or a test's table).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> OpenClOptions {
        let mut o = OpenClOptions::default();
        if let Some(v) = get("ANTIGRAVITY_OPENCL_DEVICE") {
            let idx = v
                .split_once(':')
                .and_then(|(p, d)| Some((p.trim().parse().ok()?, d.trim().parse().ok()?)));
            match idx {
                Some((p, d)) => {
                    o.platform = Some(p);
                    o.device = Some(d);
                }
                None if !v.trim().is_empty() => o.name_filter = Some(v.trim().to_string()),
                None => {}
            }
        }
        o.profiling = get("ANTIGRAVITY_OPENCL_PROFILE").is_some_and(|v| v == "1");
        let num = |name: &str| get(name).and_then(|v| v.trim().parse::<usize>().ok());
        o.persistent_groups = num("ANTIGRAVITY_OPENCL_BLOCK");
        o.images = get("ANTIGRAVITY_OPENCL_IMAGES").and_then(|v| match v.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        });
        o.mv_lws = num("ANTIGRAVITY_OPENCL_MV_LWS").filter(|v| v.is_power_of_two());
        o.block_lws = num("ANTIGRAVITY_OPENCL_BLOCK_LWS").filter(|v| v.is_power_of_two());
        o.block_shfl = get("ANTIGRAVITY_OPENCL_BLOCK_SHFL").map(|v| v != "0");
        o.block_ch = num("ANTIGRAVITY_OPENCL_BLOCK_CH").filter(|v| v.is_power_of_two() && (16..=256).contains(v));
        o.block_int8 = get("ANTIGRAVITY_OPENCL_BLOCK_INT8").and_then(|v| match v.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        });
        o.block_repack = get("ANTIGRAVITY_OPENCL_BLOCK_REPACK").and_then(|v| match v.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        });
        o.block_core = get("ANTIGRAVITY_OPENCL_BLOCK_CORE").map(|v| v.trim() != "0");
        o.block_wide = get("ANTIGRAVITY_OPENCL_BLOCK_WIDE").and_then(|v| match v.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        });
        o.block_wide_from = num("ANTIGRAVITY_OPENCL_BLOCK_WIDE_FROM");
        o.mm_int8 = get("ANTIGRAVITY_OPENCL_MM_INT8").and_then(|v| match v.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        });
        o.mm_mma = get("ANTIGRAVITY_OPENCL_MM_MMA").map(|v| v.trim() != "0");
        o.mm_wide = get("ANTIGRAVITY_OPENCL_MM_WIDE").and_then(|v| match v.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        });
        o.mm_defines = get("ANTIGRAVITY_OPENCL_MM_DEFINES").unwrap_or_default();
        o.block_defines = get("ANTIGRAVITY_OPENCL_BLOCK_DEFINES").unwrap_or_default();
        o.head_rows = num("ANTIGRAVITY_OPENCL_HEAD_ROWS").filter(|&v| v > 0);
        o.img_rows = num("ANTIGRAVITY_OPENCL_IMG_ROWS").filter(|&v| v > 0);
        o.binary_cache = match get("ANTIGRAVITY_OPENCL_BINARY_CACHE") {
            Some(v) if v.trim() == "0" => None,
            Some(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
            _ => super::binary_cache::default_dir(&get),
        };
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> OpenClOptions {
        OpenClOptions::from_lookup(|n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn every_variable_is_read_and_documented() {
        let o = from(&[
            ("ANTIGRAVITY_OPENCL_DEVICE", "1:2"),
            ("ANTIGRAVITY_OPENCL_PROFILE", "1"),
            ("ANTIGRAVITY_OPENCL_BLOCK", "0"),
            ("ANTIGRAVITY_OPENCL_IMAGES", "1"),
            ("ANTIGRAVITY_OPENCL_MV_LWS", "16"),
            ("ANTIGRAVITY_OPENCL_BLOCK_LWS", "256"),
            ("ANTIGRAVITY_OPENCL_BLOCK_SHFL", "0"),
            ("ANTIGRAVITY_OPENCL_BLOCK_CH", "64"),
            ("ANTIGRAVITY_OPENCL_BLOCK_INT8", "0"),
            ("ANTIGRAVITY_OPENCL_BLOCK_REPACK", "1"),
            ("ANTIGRAVITY_OPENCL_BLOCK_CORE", "0"),
            ("ANTIGRAVITY_OPENCL_BLOCK_WIDE", "1"),
            ("ANTIGRAVITY_OPENCL_BLOCK_WIDE_FROM", "300"),
            ("ANTIGRAVITY_OPENCL_BLOCK_DEFINES", "-DX"),
            ("ANTIGRAVITY_OPENCL_MM_INT8", "1"),
            ("ANTIGRAVITY_OPENCL_MM_MMA", "0"),
            ("ANTIGRAVITY_OPENCL_MM_WIDE", "1"),
            ("ANTIGRAVITY_OPENCL_MM_DEFINES", "-DNB=4"),
            ("ANTIGRAVITY_OPENCL_HEAD_ROWS", "32"),
            ("ANTIGRAVITY_OPENCL_IMG_ROWS", "1"),
            ("ANTIGRAVITY_OPENCL_BINARY_CACHE", "/tmp/x"),
        ]);
        assert_eq!(o.binary_cache.as_deref(), Some("/tmp/x"));
        assert_eq!((o.platform, o.device, o.profiling), (Some(1), Some(2), true));
        assert_eq!((o.persistent_groups, o.images), (Some(0), Some(true)));
        assert_eq!(
            (o.mv_lws, o.block_lws, o.block_shfl, o.block_ch),
            (Some(16), Some(256), Some(false), Some(64))
        );
        assert_eq!(
            (o.block_defines.as_str(), o.head_rows, o.img_rows),
            ("-DX", Some(32), Some(1))
        );
        assert_eq!(
            (o.block_int8, o.block_core, o.block_wide),
            (Some(false), Some(false), Some(true))
        );
        assert_eq!((o.block_wide_from, o.block_repack), (Some(300), Some(true)));
        assert_eq!(
            (o.mm_int8, o.mm_mma, o.mm_defines.as_str()),
            (Some(true), Some(false), "-DNB=4")
        );
        assert_eq!(o.mm_wide, Some(true));
        assert_eq!(ENV.len(), 21);
        let doc = include_str!("../../../docs/opencl.md");
        for (name, _) in ENV {
            assert!(
                doc.contains(&alloc::format!("`{name}`")),
                "{name} is missing from docs/opencl.md"
            );
        }
    }

    #[test]
    fn bad_tuning_values_keep_the_defaults() {
        let o = from(&[
            ("ANTIGRAVITY_OPENCL_DEVICE", "NVIDIA "),
            ("ANTIGRAVITY_OPENCL_MV_LWS", "12"),
            ("ANTIGRAVITY_OPENCL_BLOCK_CH", "512"),
            ("ANTIGRAVITY_OPENCL_HEAD_ROWS", "0"),
            ("ANTIGRAVITY_OPENCL_IMAGES", "maybe"),
        ]);
        assert_eq!(o.name_filter.as_deref(), Some("NVIDIA"));
        assert_eq!((o.mv_lws, o.block_ch, o.head_rows, o.images), (None, None, None, None));
        assert_eq!(from(&[]), OpenClOptions::default());
    }
}
