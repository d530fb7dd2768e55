// common/int8.cl — 4-way int8 dot products, shared by block.cl (AG_INT8: decode against
// an int8 copy of the staged vector) and mul_mm_q8_1.cl (the int8 prefill matmuls).
// dp4a_us(a, b, c) = c + Σ (uchar) a_k · (char) b_k, dp4a_ss with signed a. NVIDIA
// (AG_NV_DP4A): PTX `dp4a` (sm_61+); elsewhere the same sum in plain OpenCL C.
#ifdef AG_NV_DP4A
inline int dp4a_us(const uint a, const int b, const int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}
inline int dp4a_ss(const int a, const int b, const int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}
#else
inline int dp4a_us(const uint a, const int b, const int c) {
    const int4 x = convert_int4(as_uchar4(a));
    const int4 y = convert_int4(as_char4(b));
    return c + x.s0 * y.s0 + x.s1 * y.s1 + x.s2 * y.s2 + x.s3 * y.s3;
}
inline int dp4a_ss(const int a, const int b, const int c) {
    const int4 x = convert_int4(as_char4(a));
    const int4 y = convert_int4(as_char4(b));
    return c + x.s0 * y.s0 + x.s1 * y.s1 + x.s2 * y.s2 + x.s3 * y.s3;
}
#endif
