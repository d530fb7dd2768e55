// get_rows.cl — embedding lookup: out[t, :] = dequant(table[id_t, :]) as f32.
//
// One work-item per output element: global size (dim, n_ids). The row id comes from
// `single_id` when it is >= 0 (decode: one token, no id upload at all), from the `ids`
// buffer (u32, from `ids_off`) when it is -1, and when it is -2 from the same buffer read
// as f32 indices — what argmax wrote, so a greedy step feeds the next on the device (an
// index outside 0..n_rows, or NaN, reads row 0; every id is clamped below n_rows: the
// kernel never reads outside the table). The table is addressed in bytes (`table_off`, `row_bytes`): quantized
// blocks are 18/20/34-byte structs, read as bytes, with their f16 scales decoded by
// vload_half (2-byte aligned; no cl_khr_fp16 needed). `out_off` is in elements.
// Contraction is off so the dequantized values match the CPU reference bit for bit.

#pragma OPENCL FP_CONTRACT OFF

#define GET_ROWS_PROLOGUE                                                        \
    const uint e = get_global_id(0);                                             \
    const uint t = get_global_id(1);                                             \
    if (e >= dim) {                                                              \
        return;                                                                  \
    }                                                                            \
    uint id;                                                                     \
    if (single_id >= 0) {                                                        \
        id = (uint)single_id;                                                    \
    } else if (single_id == -1) {                                                \
        id = ids[ids_off + t];                                                   \
    } else {                                                                     \
        const float f = ((__global const float *)ids)[ids_off + t];              \
        id = f >= 0.0f && f < (float)n_rows ? (uint)f : 0u;                      \
    }                                                                            \
    id = min(id, n_rows - 1);                                                    \
    __global const uchar *row = table + table_off + (ulong)id * row_bytes;       \
    __global float *o = out + out_off + (ulong)t * dim;

#define GET_ROWS_ARGS                                                            \
    __global const uchar *table, const ulong table_off, const ulong row_bytes,  \
    const uint n_rows, __global const uint *ids, const ulong ids_off,            \
    const int single_id, __global float *out, const ulong out_off, const uint dim

__kernel void get_rows_f32(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    o[e] = ((__global const float *)row)[e];
}

__kernel void get_rows_f16(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    o[e] = vload_half(e, (__global const half *)row);
}

__kernel void get_rows_bf16(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    const uint u = ((__global const ushort *)row)[e];
    o[e] = as_float(u << 16);
}

// Blocks as common/dtype.cl describes them. Q4_0: value (q - 8) * d.
__kernel void get_rows_q4_0(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    __global const uchar *blk = row + (e / QK) * Q4_0_BYTES;
    const float d = vload_half(0, (__global const half *)blk);
    o[e] = (float)(q4_nibble(blk + 2, e % QK) - 8) * d;
}

// Q4_1: value q * d + m.
__kernel void get_rows_q4_1(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    __global const uchar *blk = row + (e / QK) * Q4_1_BYTES;
    const float d = vload_half(0, (__global const half *)blk);
    const float m = vload_half(1, (__global const half *)blk);
    o[e] = (float)q4_nibble(blk + 4, e % QK) * d + m;
}

// Q8_0: value q * d.
__kernel void get_rows_q8_0(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    __global const uchar *blk = row + (e / QK) * Q8_0_BYTES;
    const float d = vload_half(0, (__global const half *)blk);
    const char q = ((__global const char *)blk)[2 + e % QK];
    o[e] = (float)q * d;
}

// Q5_0, Q5_1 and the K-quants: the element helpers of common/dtype.cl.
__kernel void get_rows_q5_0(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    o[e] = q5_0_elem(row + (e / QK) * Q5_0_BYTES, e % QK);
}

__kernel void get_rows_q5_1(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    o[e] = q5_1_elem(row + (e / QK) * Q5_1_BYTES, e % QK);
}

__kernel void get_rows_q4_k(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    o[e] = q4_k_elem(row + (e / QK_K) * Q4_K_BYTES, e % QK_K);
}

__kernel void get_rows_q5_k(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    o[e] = q5_k_elem(row + (e / QK_K) * Q5_K_BYTES, e % QK_K);
}

__kernel void get_rows_q6_k(GET_ROWS_ARGS) {
    GET_ROWS_PROLOGUE
    o[e] = q6_k_elem(row + (e / QK_K) * Q6_K_BYTES, e % QK_K);
}

// store_rows_* — the inverse: n f32 values at src[src_off..] written into a KV-cache
// view of the kernel's dtype at byte offset dst_off (rows are contiguous in both, so the
// view is one run of values). f32: copied; f16: rounded to nearest even; Q8_0: one
// work-item per 32-value block, quantized by common/kv.cl's q8_0_store_block (ggml's
// quantize_row_q8_0).

#define STORE_ROWS_ARGS                                                          \
    __global const float *src, const ulong src_off, __global uchar *dst,         \
    const ulong dst_off, const uint n

__kernel void store_rows_f32(STORE_ROWS_ARGS) {
    const uint i = get_global_id(0);
    if (i < n) {
        ((__global float *)(dst + dst_off))[i] = src[src_off + i];
    }
}

__kernel void store_rows_f16(STORE_ROWS_ARGS) {
    const uint i = get_global_id(0);
    if (i < n) {
        vstore_half_rte(src[src_off + i], i, (__global half *)(dst + dst_off));
    }
}

__kernel void store_rows_q8_0(STORE_ROWS_ARGS) {
    const uint b = get_global_id(0);
    if (b >= n / QK) {
        return;
    }
    __global const float *x = src + src_off + (ulong)b * QK;
    float xb[QK];
    for (uint j = 0; j < QK; j++) {
        xb[j] = x[j];
    }
    q8_0_store_block(xb, dst + dst_off + (ulong)b * Q8_0_BYTES);
}
