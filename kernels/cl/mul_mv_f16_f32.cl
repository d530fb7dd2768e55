// mul_mv_f16_f32.cl — matrix x vector(s) for f16 weights and f32 activations.
//
// y[t, o] = sum_i w[o, i] * x[t, i] (or y[t, o] += that when `accumulate` is set — the
// residual add folded into the projection): w [n_out, n_in] f16, x [n_tok, n_in] f32, y f32.
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
// Weights f16, read with vload_half (no cl_khr_fp16 needed); strided like f32.

__kernel void mul_mv_f16_f32(__global const uchar *w, const ulong w_off,
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
    __global const half *wr = (__global const half *)(w + w_off) + (ulong)row * n_in;
    for (uint i = lid; i < n_in; i += LWS) {
        const float wv = vload_half(i, wr);
        for (uint j = 0; j < NT; j++) {
            if (j < nt) {
                acc[j] += wv * xt[(ulong)j * n_in + i];
            }
        }
    }

    reduce_store_nt(red, acc, nt, lid, y + y_off + (ulong)t0 * n_out + row, n_out, accumulate);
}
