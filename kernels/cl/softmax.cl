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

// argmax_part_f32 / argmax_final_f32: argmax_f32 in two passes for long rows — the
// one-group kernel reads a 49152-wide row on a single compute unit (~40 µs on an H100).
// Pass 1: group (p, row) takes elements [p·chunk, (p+1)·chunk) of the row and writes
// its (max, index) pair to part[(row·P + p)·2 ..] (index as raw bits; ~0 when none).
// Pass 2: one group per row reduces the P pairs under the same rule. `bv`/`bi` as above.
__kernel void argmax_part_f32(__global const float *x, const ulong x_off, const uint n,
                              const uint chunk, __global float *part,
                              __local float *bv, __local uint *bi) {
    const uint p = get_group_id(0);
    const uint row = get_group_id(1);
    const uint np = get_num_groups(0);
    const uint lid = get_local_id(0);
    const uint lsz = get_local_size(0);
    __global const float *xr = x + x_off + (ulong)row * n;
    const uint i0 = p * chunk;
    const uint i1 = min(i0 + chunk, n);
    float v = -INFINITY;
    uint idx = 0xFFFFFFFFu;
    for (uint i = i0 + lid; i < i1; i += lsz) {
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
        part[((ulong)row * np + p) * 2] = bv[0];
        part[((ulong)row * np + p) * 2 + 1] = as_float(bi[0]);
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
        const float pv = part[((ulong)row * np + p) * 2];
        const uint pi = as_uint(part[((ulong)row * np + p) * 2 + 1]);
        if (pv > v || (pv == v && pi < idx)) {
            v = pv;
            idx = pi;
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
