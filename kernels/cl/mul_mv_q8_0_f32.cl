// mul_mv_q8_0_f32.cl — matrix x vector(s) for Q8_0 weights and f32 activations.
//
// y[t, o] = sum_i w[o, i] * x[t, i] (or y[t, o] += that when `accumulate` is set — the
// residual add folded into the projection): w [n_out, n_in] Q8_0, x [n_tok, n_in] f32, y f32.
// One work-group of LWS work-items per output row and per tile of up to NT tokens
// (global size (n_out * LWS, ceil(n_tok / NT))): each weight row is read once per NT
// tokens (decode: NT = 1 in effect; prefill reuses it), each work-item accumulates in f32
// a strided share of the row, and a local-memory tree reduction sums the shares
// (reduce_store_nt, common/reduce.cl).
// Activations stay f32 (the CPU backend quantizes them to Q8 first, so results differ
// at the ~1e-5 NMSE level; see core/tests/conformance.rs).
// w is addressed in bytes (w_off: 2-aligned, blocks need no more); x and y in elements.
// f16 scales are decoded with vload_half (no cl_khr_fp16 needed).
//
// Q8_0 blocks (common/dtype.cl): value q * d. Work unit = half a block (16 consecutive
// elements).

__kernel void mul_mv_q8_0_f32(__global const uchar *w, const ulong w_off,
                            __global const float *x, const ulong x_off,
                            __global float *y, const ulong y_off,
                            const uint n_in, const uint n_out, const uint n_tok,
                            const uint accumulate) {
    __local float red[NT * LWS];
    const uint row = get_group_id(0);
    const uint lid = get_local_id(0);
    const uint t0 = get_group_id(1) * NT;
    const uint nt = min((uint)NT, n_tok - t0);
    __global const float *xt = x + x_off + (ulong)t0 * n_in;
    float acc[NT];
    for (uint j = 0; j < NT; j++) {
        acc[j] = 0.0f;
    }
    const uint nb = n_in / 32;
    __global const uchar *wr = w + w_off + (ulong)row * nb * Q8_0_BYTES;
    for (uint u = lid; u < 2 * nb; u += LWS) {
        const uint b = u >> 1;
        const uint hf = u & 1;
        __global const uchar *blk = wr + b * Q8_0_BYTES;
        const float d = vload_half(0, (__global const half *)blk);
        const float16 q = convert_float16(vload16(0, (__global const char *)(blk + 2 + 16 * hf)));
        for (uint j = 0; j < NT; j++) {
            if (j < nt) {
                __global const float *xb = xt + (ulong)j * n_in + b * 32 + 16 * hf;
                const float16 p = vload16(0, xb) * q;
                const float8 p8 = p.lo + p.hi;
                const float4 p4 = p8.lo + p8.hi;
                acc[j] += d * (p4.x + p4.y + p4.z + p4.w);
            }
        }
    }

    reduce_store_nt(red, acc, nt, lid, y + y_off + (ulong)t0 * n_out + row, n_out, accumulate);
}
