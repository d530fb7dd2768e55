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
    tree_max(red, m, lid);
    const float mx = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);

    float s = 0.0f;
    for (uint i = lid; i < n; i += LWS) {
        const float e = exp(xr[i] - mx);
        xr[i] = e;
        s += e;
    }
    tree_sum(red, s, lid);
    const float inv = 1.0f / red[0];
    for (uint i = lid; i < n; i += LWS) {
        xr[i] *= inv;
    }
}

// Argmax helpers. `better(ov, oi, v, i)`: (ov, oi) beats (v, i) — larger value, or
// equal value and lower index (NaN never compares larger, so it never wins).
inline bool better(const float ov, const uint oi, const float v, const uint i) {
    return ov > v || (ov == v && oi < i);
}

// The work-group's best (value, index) of the pairs each work-item brings, left in
// bv[0] / bi[0] (every work-item must call it; one local slot per work-item).
inline void reduce_pair(__local float *bv, __local uint *bi, const float v, const uint idx,
                        const uint lid, const uint lsz) {
    bv[lid] = v;
    bi[lid] = idx;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = lsz / 2; s > 0; s >>= 1) {
        if (lid < s && better(bv[lid + s], bi[lid + s], bv[lid], bi[lid])) {
            bv[lid] = bv[lid + s];
            bi[lid] = bi[lid + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

// The work-group's best element of xr[i0..i1): each work-item scans ascending indices
// with a strict >, which keeps the first of equal values; then reduce_pair. An index of
// 0xFFFFFFFF means no value exceeded -inf.
inline void argmax_range(__global const float *xr, const uint i0, const uint i1,
                         __local float *bv, __local uint *bi) {
    const uint lid = get_local_id(0);
    const uint lsz = get_local_size(0);
    float v = -INFINITY;
    uint idx = 0xFFFFFFFFu;
    for (uint i = i0 + lid; i < i1; i += lsz) {
        const float xi = xr[i];
        if (xi > v) {
            v = xi;
            idx = i;
        }
    }
    reduce_pair(bv, bi, v, idx, lid, lsz);
}

// argmax_f32: out[row] = the index of the largest value of the row (NaN never wins;
// ties go to the lowest index), as a float (exact below 2^24), or -1 when no value
// exceeds -inf — what greedy decoding reads back instead of the logits row. One
// work-group per row of any size (the host picks up to 512); `bv`/`bi` are __local
// arguments of one slot per work-item.
__kernel void argmax_f32(__global const float *x, const ulong x_off, __global float *out,
                         const ulong o_off, const uint n, __local float *bv, __local uint *bi) {
    const uint row = get_group_id(0);
    argmax_range(x + x_off + (ulong)row * n, 0, n, bv, bi);
    if (get_local_id(0) == 0) {
        out[o_off + row] = bi[0] == 0xFFFFFFFFu ? -1.0f : (float)bi[0];
    }
}

// argmax_part_f32 / argmax_final_f32: argmax_f32 in two passes for long rows — the
// one-group kernel reads a 49152-wide row on a single compute unit (~40 µs on an H100).
// Pass 1: group (p, row) takes elements [p·chunk, (p+1)·chunk) of the row and writes
// its (max, index) pair to part[(row·P + p)·2 ..] (index as raw bits).
// Pass 2: one group per row reduces the P pairs under the same rule.
__kernel void argmax_part_f32(__global const float *x, const ulong x_off, const uint n,
                              const uint chunk, __global float *part,
                              __local float *bv, __local uint *bi) {
    const uint p = get_group_id(0);
    const uint row = get_group_id(1);
    const uint i0 = p * chunk;
    argmax_range(x + x_off + (ulong)row * n, i0, min(i0 + chunk, n), bv, bi);
    if (get_local_id(0) == 0) {
        __global float *pp = part + ((ulong)row * get_num_groups(0) + p) * 2;
        pp[0] = bv[0];
        pp[1] = as_float(bi[0]);
    }
}

__kernel void argmax_final_f32(__global const float *part, const uint np, __global float *out,
                               const ulong o_off, __local float *bv, __local uint *bi) {
    const uint row = get_group_id(0);
    const uint lid = get_local_id(0);
    const uint lsz = get_local_size(0);
    float v = -INFINITY;
    uint idx = 0xFFFFFFFFu;
    for (uint p = lid; p < np; p += lsz) {
        __global const float *pp = part + ((ulong)row * np + p) * 2;
        if (better(pp[0], as_uint(pp[1]), v, idx)) {
            v = pp[0];
            idx = as_uint(pp[1]);
        }
    }
    reduce_pair(bv, bi, v, idx, lid, lsz);
    if (lid == 0) {
        out[o_off + row] = bi[0] == 0xFFFFFFFFu ? -1.0f : (float)bi[0];
    }
}
