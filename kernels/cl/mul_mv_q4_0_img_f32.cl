// mul_mv_q4_0_img_f32.cl — matrix x vector(s) for Q4_0 weights repacked into two
// image1d_buffer planes (structure of arrays), f32 activations. The Adreno-minded twin of
// mul_mv_q4_0_f32.cl: weights come in through the texture path (read_imageui /
// read_imagef, cached by the GPU's texture cache), activations through plain loads.
// A file of its own because it needs image support: it is built only when the backend's
// image path is on (core/src/opencl/image.rs), never on devices without images.
//
// The layout (written by image.rs's repack_q4_0 from GGUF's 18-byte block_q4_0):
//   q plane  CL_RGBA / CL_UNSIGNED_INT32: one 16-byte texel per block, the block's qs[16]
//            as they are; texel i = row * nb + b (nb = n_in / 32). Component c holds
//            qs[4c .. 4c+3] little-endian: byte k's low nibble is element 4c + k, its high
//            nibble element 16 + 4c + k.
//   d plane  CL_RGBA / CL_HALF_FLOAT: the blocks' f16 scales in the same order, four to a
//            texel (block i is component i % 4 of texel i / 4); read_imagef widens them,
//            so no cl_khr_fp16 is needed. The plane is padded to whole texels.
// Value of an element: (q - 8) * d, as in ggml.
//
// y[t, o] = sum_i w[o, i] * x[t, i] (or y += that when `accumulate` is set): x
// [n_tok, n_in] f32, y [n_tok, n_out] f32, both addressed in elements.
// A work-group of LWS work-items computes ROWS consecutive rows for a tile of up to NT
// tokens (global size (ceil(n_out / ROWS) * LWS, ceil(n_tok / NT))). TPR = LWS / ROWS
// work-items share a row: lane l takes blocks l, l + TPR, ... (neighbouring lanes read
// neighbouring texels), accumulates in f32, and the lanes of a row sum their shares by a
// tree in local memory. Rows past n_out (the last group's tail) compute nothing.

#define TPR (LWS / ROWS)

// Dot product of the 8 elements one 32-bit word of nibbles encodes with their
// activations: xl = elements 4c..4c+3, xh = elements 16+4c..16+4c+3.
inline float dot_word(const uint w, const float4 xl, const float4 xh) {
    return dot(q4_0_lo4(w), xl) + dot(q4_0_hi4(w), xh);
}

__kernel void mul_mv_q4_0_img_f32(__read_only image1d_buffer_t wq, __read_only image1d_buffer_t wd,
                                  __global const float *x, const ulong x_off,
                                  __global float *y, const ulong y_off,
                                  const uint n_in, const uint n_out, const uint n_tok,
                                  const uint accumulate) {
    __local float red[NT * LWS];
    const uint lid = get_local_id(0);
    const uint lane = lid % TPR;
    const uint row = get_group_id(0) * ROWS + lid / TPR;
    const uint t0 = get_group_id(1) * NT;
    const uint nt = min((uint)NT, n_tok - t0);
    const uint nb = n_in / 32;
    __global const float *xt = x + x_off + (ulong)t0 * n_in;
    float acc[NT];
    for (uint j = 0; j < NT; j++) {
        acc[j] = 0.0f;
    }
    if (row < n_out) {
        const int base = (int)(row * nb);
        for (uint b = lane; b < nb; b += TPR) {
            const int i = base + (int)b;
            const uint4 q = read_imageui(wq, i);
            const float4 d4 = read_imagef(wd, i >> 2);
            const int k = i & 3;
            const float d = k == 0 ? d4.x : (k == 1 ? d4.y : (k == 2 ? d4.z : d4.w));
            for (uint j = 0; j < NT; j++) {
                if (j < nt) {
                    __global const float *xb = xt + (ulong)j * n_in + b * 32;
                    const float s = dot_word(q.x, vload4(0, xb), vload4(4, xb))
                                  + dot_word(q.y, vload4(1, xb), vload4(5, xb))
                                  + dot_word(q.z, vload4(2, xb), vload4(6, xb))
                                  + dot_word(q.w, vload4(3, xb), vload4(7, xb));
                    acc[j] += d * s;
                }
            }
        }
    }

    for (uint j = 0; j < NT; j++) {
        red[j * LWS + lid] = acc[j];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint r = TPR / 2; r > 0; r >>= 1) {
        if (lane < r) {
            for (uint j = 0; j < NT; j++) {
                red[j * LWS + lid] += red[j * LWS + lid + r];
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lane == 0 && row < n_out) {
        for (uint j = 0; j < nt; j++) {
            __global float *yp = y + y_off + (ulong)(t0 + j) * n_out + row;
            *yp = accumulate ? *yp + red[j * LWS + lid] : red[j * LWS + lid];
        }
    }
}
