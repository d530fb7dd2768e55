// common/reduce.cl — work-group reductions, shared by every kernel family.
//
// * tree_sum / tree_max: the per-op kernels' local-memory tree over one LWS-wide array
//   (LWS a power of two); the result is in red[0] (callers read it after the call).
// * reduce_nt: the same tree for NT token sums at once — the reduce-and-store epilogue
//   of every mul_mv kernel (defined where the family is built with -DNT).
// * wg_sum / wg_max / row_reduce: block.cl's reductions, returned to every work-item;
//   with AG_NV_SHFL (NVIDIA: warps of 32 consecutive work-items, PTX `shfl.sync.bfly`)
//   sums and maxima meet in registers inside a warp and only the warps' results go
//   through local memory.
// Every work-item of the group must call these (they contain barriers).

// Sum of v over the work-group into red[0] (red: LWS floats).
inline void tree_sum(__local float *red, const float v, const uint lid) {
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint k = LWS / 2; k > 0; k >>= 1) {
        if (lid < k) {
            red[lid] += red[lid + k];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

// Maximum of v over the work-group into red[0] (red: LWS floats).
inline void tree_max(__local float *red, const float v, const uint lid) {
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint k = LWS / 2; k > 0; k >>= 1) {
        if (lid < k) {
            red[lid] = fmax(red[lid], red[lid + k]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

#ifdef NT
// Sums acc[j] over the work-group into red[j * LWS] for j < nt (red: NT * LWS floats;
// the j loops stay unrolled so acc stays in registers).
inline void reduce_nt(__local float *red, const float *acc, const uint nt, const uint lid) {
    for (uint j = 0; j < NT; j++) {
        if (j < nt) {
            red[j * LWS + lid] = acc[j];
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint r = LWS / 2; r > 0; r >>= 1) {
        if (lid < r) {
            for (uint j = 0; j < NT; j++) {
                if (j < nt) {
                    red[j * LWS + lid] += red[j * LWS + lid + r];
                }
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

// The mul_mv epilogue: the work-group's shares acc[j] summed (reduce_nt) and stored as
// y[t0 + j, row] for j < nt — or added to it when `accumulate` is set (the residual add
// folded into the projection). y_row0 = y + y_off + t0 * n_out + row.
inline void reduce_store_nt(__local float *red, const float *acc, const uint nt, const uint lid,
                            __global float *y_row0, const uint n_out, const uint accumulate) {
    reduce_nt(red, acc, nt, lid);
    for (uint j = lid; j < nt; j += LWS) {
        __global float *yp = y_row0 + (ulong)j * n_out;
        *yp = accumulate ? *yp + red[j * LWS] : red[j * LWS];
    }
}
#endif

// block.cl's reductions. With AG_NV_SHFL (NVIDIA: warps of 32 consecutive work-items, PTX
// `shfl.sync.bfly`) sums and maxima meet in registers inside a warp and only the warps'
// results go through local memory: one local barrier instead of three, and no serial
// loops over local arrays (a 512-item sum was ~0.8 µs that way). Every work-item of the
// group must call these (the shuffles name the whole warp).
#ifdef AG_NV_SHFL
inline float shfl_xor(const float v, const uint m) {
    float r;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "r"(m));
    return r;
}
inline float warp_sum(float v, const uint width) {
    for (uint m = width / 2; m > 0; m >>= 1) {
        v += shfl_xor(v, m);
    }
    return v;
}
inline float warp_max(float v) {
    for (uint m = 16; m > 0; m >>= 1) {
        v = fmax(v, shfl_xor(v, m));
    }
    return v;
}
#endif

// Sum of v over the work-group, returned to every work-item (each reads the 16
// partials itself: no broadcast slot to go stale).
inline float wg_sum(const float v, __local float *red, __local float *red2, const uint lid) {
#ifdef AG_NV_SHFL
    const float w = warp_sum(v, 32);
    if ((lid & 31) == 0) {
        red2[lid >> 5] = w;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float total = warp_sum((lid & 31) < LWS / 32 ? red2[lid & 31] : 0.0f, 32);
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
#else
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < 16) {
        float s = 0.0f;
        for (uint j = lid; j < LWS; j += 16) {
            s += red[j];
        }
        red2[lid] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float total = 0.0f;
    for (uint j = 0; j < 16; j++) {
        total += red2[j];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
#endif
}

// Maximum of v over the work-group, returned to every work-item.
inline float wg_max(const float v, __local float *red, __local float *red2, const uint lid) {
#ifdef AG_NV_SHFL
    const float w = warp_max(v);
    if ((lid & 31) == 0) {
        red2[lid >> 5] = w;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float total = warp_max((lid & 31) < LWS / 32 ? red2[lid & 31] : -INFINITY);
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
#else
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < 16) {
        float s = -INFINITY;
        for (uint j = lid; j < LWS; j += 16) {
            s = fmax(s, red[j]);
        }
        red2[lid] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float total = -INFINITY;
    for (uint j = 0; j < 16; j++) {
        total = fmax(total, red2[j]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
#endif
}

// Row sums: work-item lid holds a share of row slot lid / tpr; afterwards res[slot] is
// the row's sum for every slot (tpr a power of two ≤ LWS).
inline void row_reduce(const float acc, __local float *red, __local float *red2, __local float *res,
                       const uint lid, const uint tpr) {
    const uint slot = lid / tpr, lane = lid % tpr;
#ifdef AG_NV_SHFL
    const float w = warp_sum(acc, min(tpr, 32u));
    if (tpr <= 32) {
        if (lane == 0) {
            res[slot] = w;
        }
    } else {
        // a row spans tpr / 32 warps
        if ((lid & 31) == 0) {
            red2[lid >> 5] = w;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lane == 0) {
            float s = 0.0f;
            for (uint j = 0; j < tpr / 32; j++) {
                s += red2[(lid >> 5) + j];
            }
            res[slot] = s;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
#else
    const uint w8 = min(tpr, 8u); // partial sums per row
    red[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lane < w8) {
        float s = 0.0f;
        for (uint j = lane; j < tpr; j += w8) {
            s += red[slot * tpr + j];
        }
        red2[slot * w8 + lane] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lane == 0) {
        float s = 0.0f;
        for (uint j = 0; j < w8; j++) {
            s += red2[slot * w8 + j];
        }
        res[slot] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
#endif
}

