// rms_norm.cl — out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w  (f32).
//
// One work-group of LWS (a power of two, set with -DLWS) work-items per row: each sums
// squares over a strided slice, a local-memory tree reduction gives the row sum, then
// every work-item scales its slice. Element offsets.

__kernel void rms_norm_f32(__global const float *x, const ulong x_off,
                           __global const float *w, const ulong w_off,
                           __global float *out, const ulong out_off,
                           const uint n, const float eps) {
    __local float red[LWS];
    const uint row = get_group_id(0);
    const uint lid = get_local_id(0);
    __global const float *xr = x + x_off + (ulong)row * n;
    __global float *orow = out + out_off + (ulong)row * n;

    float s = 0.0f;
    for (uint i = lid; i < n; i += LWS) {
        const float v = xr[i];
        s += v * v;
    }
    red[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint k = LWS / 2; k > 0; k >>= 1) {
        if (lid < k) {
            red[lid] += red[lid + k];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = 1.0f / sqrt(red[0] / (float)n + eps);
    for (uint i = lid; i < n; i += LWS) {
        orow[i] = w[w_off + i] * (xr[i] * r);
    }
}

// add_rms_norm_f32 — the residual add fused with the next norm:
// x[r, :] += y[r, :]; out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w.
// Same work split as rms_norm_f32; each work-item rereads only elements it wrote.
__kernel void add_rms_norm_f32(__global float *x, const ulong x_off,
                               __global const float *y, const ulong y_off,
                               __global const float *w, const ulong w_off,
                               __global float *out, const ulong out_off,
                               const uint n, const float eps) {
    __local float red[LWS];
    const uint row = get_group_id(0);
    const uint lid = get_local_id(0);
    __global float *xr = x + x_off + (ulong)row * n;
    __global const float *yr = y + y_off + (ulong)row * n;
    __global float *orow = out + out_off + (ulong)row * n;

    float s = 0.0f;
    for (uint i = lid; i < n; i += LWS) {
        const float v = xr[i] + yr[i];
        xr[i] = v;
        s += v * v;
    }
    red[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint k = LWS / 2; k > 0; k >>= 1) {
        if (lid < k) {
            red[lid] += red[lid + k];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = 1.0f / sqrt(red[0] / (float)n + eps);
    for (uint i = lid; i < n; i += LWS) {
        orow[i] = w[w_off + i] * (xr[i] * r);
    }
}
