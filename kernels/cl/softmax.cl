// softmax.cl — numerically stable row-wise softmax in place (f32).
//
// One work-group of LWS work-items per row: a max reduction, exp and a sum reduction
// (local-memory trees), then a scale by 1/sum — the CPU reference's order of
// operations (`cpu::scalar::softmax`). Element offsets.

__kernel void softmax_f32(__global float *x, const ulong x_off, const uint n) {
    __local float red[LWS];
    const uint row = get_group_id(0);
    const uint lid = get_local_id(0);
    __global float *xr = x + x_off + (ulong)row * n;

    float m = -INFINITY;
    for (uint i = lid; i < n; i += LWS) {
        m = fmax(m, xr[i]);
    }
    red[lid] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint k = LWS / 2; k > 0; k >>= 1) {
        if (lid < k) {
            red[lid] = fmax(red[lid], red[lid + k]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float mx = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);

    float s = 0.0f;
    for (uint i = lid; i < n; i += LWS) {
        const float e = exp(xr[i] - mx);
        xr[i] = e;
        s += e;
    }
    red[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint k = LWS / 2; k > 0; k >>= 1) {
        if (lid < k) {
            red[lid] += red[lid + k];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float inv = 1.0f / red[0];
    for (uint i = lid; i < n; i += LWS) {
        xr[i] *= inv;
    }
}

// argmax_f32: out[row] = the index of the largest value of the row (NaN never wins;
// ties go to the lowest index), as a float (exact below 2^24), or -1 when no value
// exceeds -inf — what greedy decoding reads back instead of the logits row. One
// work-group per row of any size (the host picks up to 512: a 49152-wide row is then
// 96 loads per work-item); `bv`/`bi` are __local arguments of one slot per work-item.
__kernel void argmax_f32(__global const float *x, const ulong x_off, __global float *out,
                         const ulong o_off, const uint n, __local float *bv, __local uint *bi) {
    const uint row = get_group_id(0);
    const uint lid = get_local_id(0);
    const uint lsz = get_local_size(0);
    __global const float *xr = x + x_off + (ulong)row * n;
    float v = -INFINITY;
    uint idx = 0xFFFFFFFFu;
    // Ascending indices per work-item: a strict > keeps the first of equal values.
    for (uint i = lid; i < n; i += lsz) {
        const float xi = xr[i];
        if (xi > v) {
            v = xi;
            idx = i;
        }
    }
    bv[lid] = v;
    bi[lid] = idx;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = lsz / 2; s > 0; s >>= 1) {
        if (lid < s) {
            const float ov = bv[lid + s];
            const uint oi = bi[lid + s];
            if (ov > bv[lid] || (ov == bv[lid] && oi < bi[lid])) {
                bv[lid] = ov;
                bi[lid] = oi;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        out[o_off + row] = bi[0] == 0xFFFFFFFFu ? -1.0f : (float)bi[0];
    }
}
