// rms_norm.cl — out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w  (f32).
//
// One work-group of LWS (a power of two, set with -DLWS) work-items per row: each sums
// squares over a strided slice, a local-memory tree reduction (tree_sum,
// common/reduce.cl) gives the row sum, then
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
    tree_sum(red, s, lid);
    const float r = 1.0f / sqrt(red[0] / (float)n + eps);
    for (uint i = lid; i < n; i += LWS) {
        orow[i] = w[w_off + i] * (xr[i] * r);
    }
}
