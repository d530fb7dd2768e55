// common/dtype.cl — weight dtypes and ggml block decoding, shared by every kernel family.
//
// The dtype codes (T_F32 … T_Q8_0), QK (elements per block) and the block sizes in bytes
// (Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES) are not written here: the backend generates them
// from Rust's DType (core/src/opencl/program.rs, `generated_header`) and puts them in
// front of this file.
//
// Blocks (ggml's, addressed in bytes; an imported GGUF tensor is only 2-byte aligned
// inside a block, so f16 scales are read with vload_half — no cl_khr_fp16 needed):
//   block_q4_0 { half d; uchar qs[16]; }          value (q - 8) * d
//   block_q4_1 { half d; half m; uchar qs[16]; }  value q * d + m
//   block_q8_0 { half d; char qs[32]; }           value q * d
// In both 4-bit types element j < 16 is the low nibble of qs[j] and element 16 + j the
// high nibble of qs[j]: the nibble helpers below are the only place that says so.

// Low / high nibbles of 8 quant bytes as floats (Q4_1: the raw 0..15 values).
inline float8 q4_lo8(const uchar8 q) {
    return convert_float8(q & (uchar8)(0x0F));
}
inline float8 q4_hi8(const uchar8 q) {
    return convert_float8(q >> (uchar8)(4));
}
// Q4_0: the same, centred (q - 8).
inline float8 q4_0_lo8(const uchar8 q) {
    return q4_lo8(q) - 8.0f;
}
inline float8 q4_0_hi8(const uchar8 q) {
    return q4_hi8(q) - 8.0f;
}
// Low and high nibbles of the 4 bytes of a 32-bit word (byte k: lanes k), centred.
inline float4 q4_0_lo4(const uint w) {
    const uint4 v = (uint4)(w) >> (uint4)(0u, 8u, 16u, 24u);
    return convert_float4(v & (uint4)(15u)) - 8.0f;
}
inline float4 q4_0_hi4(const uint w) {
    const uint4 v = (uint4)(w) >> (uint4)(0u, 8u, 16u, 24u);
    return convert_float4((v >> (uint4)(4u)) & (uint4)(15u)) - 8.0f;
}
// The 4-bit value of element j (0..31) of a block whose quants start at qs.
inline int q4_nibble(__global const uchar *qs, const uint j) {
    const uchar b = qs[j & 15];
    return j < 16 ? (b & 0x0F) : (b >> 4);
}

// Bytes of a row of n elements of dtype t.
inline ulong row_bytes(const uint t, const uint n) {
    switch (t) {
    case T_F32:
        return 4ul * n;
    case T_F16:
    case T_BF16:
        return 2ul * n;
    case T_Q4_0:
        return (ulong)(n / QK) * Q4_0_BYTES;
    case T_Q4_1:
        return (ulong)(n / QK) * Q4_1_BYTES;
    default:
        return (ulong)(n / QK) * Q8_0_BYTES;
    }
}

inline bool is_quant(const uint t) {
    return t == T_Q4_0 || t == T_Q4_1 || t == T_Q8_0;
}
