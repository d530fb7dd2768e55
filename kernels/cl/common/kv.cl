// common/kv.cl — one KV-cache head in the cache dtype KV_T: its bytes, its values read as
// f32, and (f32, f16) a value written back; plus ggml's Q8_0 block quantizer. Shared by
// attention.cl, kv_cache.cl (both built once per cache dtype, `-DKV_T=T_F16` …; a family
// built without the option reads f32) and get_rows.cl's store_rows_q8_0.
//
// A cache is [capacity, n_kv_head, hd] values addressed in bytes: head h of slot s is at
// byte (s * n_kv_head + h) * kv_head_bytes(hd) of the view. The layouts are the CPU's:
//   f32:  hd floats;
//   f16:  hd halves (read with vload_half: no cl_khr_fp16 needed, widening is exact);
//   Q8_0: hd / QK ggml block_q8_0 { half d; char qs[32]; } (34 bytes; value q * d, the
//         product formed in f32 as the CPU's dequantize_row_q8_0 does). A Q8_0 cache's
//         head_dim is a multiple of QK (KvCache::new checks it), so a head never shares a
//         block with the next one.

#ifndef KV_T
#define KV_T T_F32
#endif

// Bytes of one cached head of hd values.
inline ulong kv_head_bytes(const uint hd) {
#if KV_T == T_F32
    return (ulong)hd * 4;
#elif KV_T == T_F16
    return (ulong)hd * 2;
#else
    return (ulong)(hd / QK) * Q8_0_BYTES;
#endif
}

// Value i of the head at hp.
inline float kv_get(__global const uchar *hp, const uint i) {
#if KV_T == T_F32
    return ((__global const float *)hp)[i];
#elif KV_T == T_F16
    return vload_half(i, (__global const half *)hp);
#else
    __global const uchar *blk = hp + (i / QK) * Q8_0_BYTES;
    return (float)((__global const char *)blk)[2 + i % QK] * vload_half(0, (__global const half *)blk);
#endif
}

// Values i .. i + 3 of the head at hp (i a multiple of 4: never across a Q8_0 block).
inline float4 kv_get4(__global const uchar *hp, const uint i) {
#if KV_T == T_F32
    return vload4(0, (__global const float *)hp + i);
#elif KV_T == T_F16
    return vload_half4(i / 4, (__global const half *)hp); // (no arithmetic on half pointers: no cl_khr_fp16)
#else
    __global const uchar *blk = hp + (i / QK) * Q8_0_BYTES;
    const float d = vload_half(0, (__global const half *)blk);
    return convert_float4(vload4(0, (__global const char *)blk + 2 + i % QK)) * d;
#endif
}

// kv_get4 from a head whose address is aligned to its values' vector (f32: 16 bytes,
// f16: 8): one vector load instead of four scalar ones. NVIDIA's compiler cannot see
// the alignment of a byte pointer, so vload4 there is four 4-byte loads — and a key row
// read by a pair of work-items touched a cache line per load (block.cl's stage B).
// kv_get4v takes the vector form where `vec` says so: kv_vec_ok of the cache's base
// (a head is a multiple of 4 values, so every head and slot keeps the base's
// alignment; i is a multiple of 4). A backend's caches start at offset 0; the
// conformance tests place them both ways. Q8_0: kv_get4 always.
#if KV_T == T_F32
#define KV_VEC_ALIGN 16
#elif KV_T == T_F16
#define KV_VEC_ALIGN 8
#else
#define KV_VEC_ALIGN 1
#endif
inline bool kv_vec_ok(__global const uchar *base) {
    return ((size_t)base & (KV_VEC_ALIGN - 1)) == 0;
}
inline float4 kv_get4v(__global const uchar *hp, const uint i, const bool vec) {
#if KV_T == T_F32
    return vec ? ((__global const float4 *)hp)[i / 4] : kv_get4(hp, i);
#elif KV_T == T_F16
    return vec ? vloada_half4(i / 4, (__global const half *)hp) : kv_get4(hp, i);
#else
    return kv_get4(hp, i);
#endif
}

#if KV_T != T_Q8_0
// Writes value i of the head at hp (f16: rounded to nearest even, as the CPU's f16::from_f32).
inline void kv_put(__global uchar *hp, const uint i, const float v) {
#if KV_T == T_F32
    ((__global float *)hp)[i] = v;
#else
    vstore_half_rte(v, i, (__global half *)hp);
#endif
}
#endif

// ggml's quantize_row_q8_0 for one block of QK values x (private memory) into blk:
// d = amax / 127, q = round(x / d) (half away from zero, through the reciprocal as ggml
// does), d stored as f16 rounded to nearest even.
inline void q8_0_store_block(const float *x, __global uchar *blk) {
    float amax = 0.0f;
    for (uint j = 0; j < QK; j++) {
        amax = fmax(amax, fabs(x[j]));
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    vstore_half_rte(d, 0, (__global half *)blk);
    for (uint j = 0; j < QK; j++) {
        ((__global char *)blk)[2 + j] = (char)round(x[j] * id);
    }
}
