// add.cl — residual add: dst[i] += src[i] (f32).
//
// Offsets are element offsets (the host divides byte offsets by 4), so views into
// larger buffers need no sub-buffers. One work-item per element.

__kernel void add_f32(__global float *dst, const ulong dst_off,
                      __global const float *src, const ulong src_off,
                      const uint n) {
    const uint i = get_global_id(0);
    if (i < n) {
        dst[dst_off + i] += src[src_off + i];
    }
}
