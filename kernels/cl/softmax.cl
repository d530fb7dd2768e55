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
