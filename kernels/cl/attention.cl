// attention.cl — causal grouped-query attention over the KV cache, decode and prefill.
//
// The cache's dtype is the build option KV_T (T_F32, T_F16 or T_Q8_0; common/kv.cl): the
// family is built once per cache dtype and its kernels read K and V in that dtype
// directly — f16 widened, Q8_0 blocks dequantized value by value as they are loaded, no
// dequantized copy of the cache — with f32 arithmetic throughout (the kernel names say
// the f32 query and output).
//
// q [n_tok, n_head, hd], k/v [capacity, n_kv_head, hd], out [n_tok, n_head, hd];
// query token t sits in cache slot n_past + t and sees slots 0..=n_past + t. Query head h
// reads KV head h / (n_head / n_kv_head): K/V are never replicated.
//
// One work-group of LWS work-items per (query head, token). The context is walked in
// tiles of LWS slots with an online softmax (running max m, running sum l, rescale by
// exp(m_old - m_new) per tile — the FlashAttention recurrence), so any context length
// works with O(LWS + hd) local memory:
//   1. work-item i scores slot base + i: scale * dot(q, k[slot]) (q staged in local);
//   2. a local max reduction, p_i = exp(score_i - m_new), a local sum reduction;
//   3. work-item i owns output dims i, i + LWS, ...: o = o * corr + sum_i p_i * v[slot_i].
// Split context (flash-decoding): with few query rows (decode) there are only n_head
// work-groups, too few to fill a GPU at long contexts. Then a third grid dimension cuts
// the context into `chunk`-slot pieces; each work-group writes its partial
// (m, l, o[hd] unnormalized) to `part`, and attention_combine_f32 merges them:
// out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c, M = max_c m_c.
// With one chunk (get_num_groups(2) == 1) the kernel writes `out` directly.
//
// Offsets of q, out and part are in elements, of k and v in bytes. Build options: LWS
// (power of two), MAX_HD (multiple of LWS), KV_T.

#define DPT (MAX_HD / LWS)

__kernel void attention_f32(__global const float *q, const ulong q_off,
                            __global const uchar *k, const ulong k_off,
                            __global const uchar *v, const ulong v_off,
                            __global float *out, const ulong out_off,
                            const uint n_head, const uint n_kv_head, const uint hd,
                            const float scale, const uint n_past,
                            const uint chunk, __global float *part) {
    __local float ql[MAX_HD];
    __local float ps[LWS];
    __local float red[LWS];
    const uint h = get_group_id(0);
    const uint t = get_group_id(1);
    const uint lid = get_local_id(0);
    const uint kvh = h / (n_head / n_kv_head);
    const uint n_ctx = n_past + t + 1;
    const uint c = get_group_id(2);
    const uint n_chunks = get_num_groups(2);
    const uint c0 = n_chunks == 1 ? 0 : min(c * chunk, n_ctx);
    const uint c1 = n_chunks == 1 ? n_ctx : min(c0 + chunk, n_ctx);
    const ulong hb = kv_head_bytes(hd);
    const ulong kv_stride = (ulong)n_kv_head * hb;
    __global const uchar *kb = k + k_off + (ulong)kvh * hb;
    __global const uchar *vb = v + v_off + (ulong)kvh * hb;

    __global const float *qh = q + q_off + ((ulong)t * n_head + h) * hd;
    for (uint i = lid; i < hd; i += LWS) {
        ql[i] = qh[i];
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    float m = -INFINITY;
    float l = 0.0f;
    float o[DPT];
    for (uint d = 0; d < DPT; d++) {
        o[d] = 0.0f;
    }

    for (uint base = c0; base < c1; base += LWS) {
        const uint s = base + lid;
        float sc = -INFINITY;
        if (s < c1) {
            __global const uchar *kr = kb + (ulong)s * kv_stride;
            float4 d4 = (float4)(0.0f);
            uint i = 0;
            for (; i + 4 <= hd; i += 4) {
                d4 += vload4(0, ql + i) * kv_get4(kr, i);
            }
            float dot = (d4.x + d4.y) + (d4.z + d4.w);
            for (; i < hd; i++) {
                dot += ql[i] * kv_get(kr, i);
            }
            sc = dot * scale;
        }
        red[lid] = sc;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint r = LWS / 2; r > 0; r >>= 1) {
            if (lid < r) {
                red[lid] = fmax(red[lid], red[lid + r]);
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        const float m_new = fmax(m, red[0]);
        barrier(CLK_LOCAL_MEM_FENCE);

        const float p = s < c1 ? exp(sc - m_new) : 0.0f;
        ps[lid] = p;
        red[lid] = p;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint r = LWS / 2; r > 0; r >>= 1) {
            if (lid < r) {
                red[lid] += red[lid + r];
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        const float corr = exp(m - m_new);
        l = l * corr + red[0];
        m = m_new;

        const uint n_tile = min((uint)LWS, c1 - base);
        for (uint d = 0; d < DPT; d++) {
            const uint j = lid + d * LWS;
            if (j < hd) {
                float acc = 0.0f;
                for (uint i = 0; i < n_tile; i++) {
                    acc += ps[i] * kv_get(vb + (ulong)(base + i) * kv_stride, j);
                }
                o[d] = o[d] * corr + acc;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    if (n_chunks > 1) {
        __global float *pp = part + (((ulong)t * n_head + h) * n_chunks + c) * (hd + 2);
        if (lid == 0) {
            pp[0] = m;
            pp[1] = l;
        }
        for (uint d = 0; d < DPT; d++) {
            const uint j = lid + d * LWS;
            if (j < hd) {
                pp[2 + j] = o[d];
            }
        }
        return;
    }
    __global float *oh = out + out_off + ((ulong)t * n_head + h) * hd;
    const float inv = 1.0f / l;
    for (uint d = 0; d < DPT; d++) {
        const uint j = lid + d * LWS;
        if (j < hd) {
            oh[j] = o[d] * inv;
        }
    }
}

// Merges the n_chunks partials of each (head, token): one work-group of LWS work-items
// per (head, token), each owning output dims lid, lid + LWS, ...; every work-item
// recomputes the (few) chunk maxima and sums itself, so no barriers are needed.
__kernel void attention_combine_f32(__global const float *part,
                                    __global float *out, const ulong out_off,
                                    const uint n_head, const uint hd, const uint n_chunks) {
    const uint h = get_group_id(0);
    const uint t = get_group_id(1);
    const uint lid = get_local_id(0);
    const uint stride = hd + 2;
    __global const float *pp = part + ((ulong)t * n_head + h) * n_chunks * stride;
    float mx = -INFINITY;
    for (uint c = 0; c < n_chunks; c++) {
        mx = fmax(mx, pp[c * stride]);
    }
    float l = 0.0f;
    for (uint c = 0; c < n_chunks; c++) {
        l += exp(pp[c * stride] - mx) * pp[c * stride + 1];
    }
    const float inv = 1.0f / l;
    __global float *oh = out + out_off + ((ulong)t * n_head + h) * hd;
    for (uint j = lid; j < hd; j += LWS) {
        float acc = 0.0f;
        for (uint c = 0; c < n_chunks; c++) {
            acc += exp(pp[c * stride] - mx) * pp[c * stride + 2 + j];
        }
        oh[j] = acc * inv;
    }
}

// ---- prefill: K/V tiles shared by a tile of query rows ----------------------------------
//
// attention_prefill_f32 computes the same function as attention_f32 for batches of many
// query tokens. A query *row* is a (token, head-of-group) pair: row R = t * G + g reads
// query head kvh * G + g (G = n_head / n_kv_head), so every row of a work-group reads the
// same KV head and a K/V tile staged in local memory serves PBR rows at once (all G
// heads of a group and PBR / G tokens) instead of one. Grid: (row tiles × PLWS, n_kv_head);
// the row tiles run last-first, so the longest contexts start earliest.
//
// Per tile of PBC cache slots (FlashAttention-2 recurrence, f32):
//   1. the work-group stores K and V rows base..base+PBC into local memory (fetched into
//      registers during the previous tile: the global loads overlap the math);
//   2. scores S = (q · scale) Kᵀ: work-item (sr, sj) computes row sr × slots sj + 4j
//      (j < 8) from float4 local reads; slots past the row's causal limit are -inf. (The
//      four sj of a warp read key rows sj + 4j at one time: 4 (sj + 4j) mod 32 puts them
//      on distinct banks with the 68-float row stride. Rows 8 sj + j, the first layout,
//      all fell on the same banks — a 4-way conflict on every key load.);
//   3. the 4 work-items of a row exchange their tile maxima through local memory, each
//      forms m_new, keeps its own partial row sum l (the 4 are added once at the end),
//      and writes p = exp(s - m_new) slot-major into local memory and corr = exp(m - m_new);
//   4. work-item (or, od) owns output rows 4or..4or+3 × dims 4od..4od+3 in registers:
//      o = o * corr + P · V.
// The first tile always holds slot 0, which every row sees, so m is finite after it and
// exp(m - m_new) never meets -inf - -inf. Tail rows (past n_tok * G) compute a clamped
// row and write nothing. head_dim ≤ PHD; larger heads take attention_f32.

#define PBR 32                 // query rows per work-group
#define PBC 32                 // cache slots per tile
#define PHD 64                 // largest head_dim
#define PLWS 128               // work-items: 4 per row in step 2, 16 × 8 in step 4
#define PQS (PHD + 4)          // row strides in local memory (float4-aligned, bank-shifted)
#define PPS (PBR + 4)
#define PKV (PBC * PHD / PLWS)  // K (and V) elements of a tile per work-item

// Elements lid + e·PLWS (e < PKV) of the K and V tile at slot `base`, as (slot, dim) of a
// PBC × PHD tile: zeros past the context or the head.
// (kb, vb: the KV head's first slot; kv_stride: bytes from one slot to the next.)
inline void kv_fetch(__global const uchar *kb, __global const uchar *vb, ulong kv_stride, uint base,
                     uint ctx_end, uint hd, uint lid, float *kr, float *vr) {
    for (uint e = 0; e < PKV; e++) {
        const uint i = lid + e * PLWS;
        const uint s = base + i / PHD, d = i % PHD;
        const bool ok = s < ctx_end && d < hd;
        kr[e] = ok ? kv_get(kb + (ulong)s * kv_stride, d) : 0.0f;
        vr[e] = ok ? kv_get(vb + (ulong)s * kv_stride, d) : 0.0f;
    }
}

__kernel __attribute__((reqd_work_group_size(PLWS, 1, 1)))
void attention_prefill_f32(__global const float *q, const ulong q_off,
                           __global const uchar *k, const ulong k_off,
                           __global const uchar *v, const ulong v_off,
                           __global float *out, const ulong out_off,
                           const uint n_head, const uint n_kv_head, const uint hd,
                           const float scale, const uint n_past, const uint n_tok) {
    __local float qs[PBR * PQS];
    __local float ks[PBC * PQS];
    __local float vs[PBC * PHD];
    __local float ps[PBC * PPS];
    __local float mx[PBR * 4];
    __local float cr[PBR];
    const uint lid = get_local_id(0);
    const uint kvh = get_group_id(1);
    const uint grp = n_head / n_kv_head;
    const uint n_rows = n_tok * grp;
    const uint row0 = (get_num_groups(0) - 1 - get_group_id(0)) * PBR;
    const uint row_end = min(row0 + PBR, n_rows);
    const uint ctx_end = n_past + (row_end - 1) / grp + 1;
    const ulong hb = kv_head_bytes(hd);
    const ulong kv_stride = (ulong)n_kv_head * hb;
    __global const uchar *kb = k + k_off + (ulong)kvh * hb;
    __global const uchar *vb = v + v_off + (ulong)kvh * hb;

    for (uint i = lid; i < PBR * PHD; i += PLWS) {
        const uint r = i / PHD, d = i % PHD;
        const uint R = row0 + r;
        float x = 0.0f;
        if (R < n_rows && d < hd) {
            const uint t = R / grp, g = R % grp;
            x = q[q_off + ((ulong)t * n_head + kvh * grp + g) * hd + d] * scale;
        }
        qs[r * PQS + d] = x;
    }

    const uint sr = lid / 4, sj = lid % 4;
    const uint s_ctx = n_past + min(row0 + sr, n_rows - 1) / grp + 1;
    const uint orow = 4 * (lid / 16), od = 4 * (lid % 16);
    const uint hd4 = (hd + 3) & ~3u;
    float m = -INFINITY;
    float l = 0.0f;
    float4 o0 = (float4)(0.0f), o1 = (float4)(0.0f), o2 = (float4)(0.0f), o3 = (float4)(0.0f);

    float kr[PKV], vr[PKV];
    kv_fetch(kb, vb, kv_stride, 0, ctx_end, hd, lid, kr, vr);
    for (uint base = 0; base < ctx_end; base += PBC) {
        barrier(CLK_LOCAL_MEM_FENCE);   // q staged / the previous tile fully read
        for (uint e = 0; e < PKV; e++) {
            const uint i = lid + e * PLWS;
            ks[(i / PHD) * PQS + i % PHD] = kr[e];
            vs[i] = vr[e];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (base + PBC < ctx_end) {     // next tile's loads in flight during this one's math
            kv_fetch(kb, vb, kv_stride, base + PBC, ctx_end, hd, lid, kr, vr);
        }

        float sc[8];
        for (uint j = 0; j < 8; j++) sc[j] = 0.0f;
        for (uint d = 0; d < hd4; d += 4) {
            const float4 qv = vload4(0, qs + sr * PQS + d);
            for (uint j = 0; j < 8; j++) {
                sc[j] += dot(qv, vload4(0, ks + (sj + 4 * j) * PQS + d));
            }
        }
        float tmax = -INFINITY;
        for (uint j = 0; j < 8; j++) {
            if (base + sj + 4 * j >= s_ctx) sc[j] = -INFINITY;
            tmax = fmax(tmax, sc[j]);
        }
        mx[sr * 4 + sj] = tmax;
        barrier(CLK_LOCAL_MEM_FENCE);
        const float4 m4 = vload4(0, mx + sr * 4);
        const float m_new = fmax(m, fmax(fmax(m4.x, m4.y), fmax(m4.z, m4.w)));
        const float corr = exp(m - m_new);
        m = m_new;
        l *= corr;
        for (uint j = 0; j < 8; j++) {
            const float p = exp(sc[j] - m_new);
            l += p;
            ps[(sj + 4 * j) * PPS + sr] = p;
        }
        if (sj == 0) cr[sr] = corr;
        barrier(CLK_LOCAL_MEM_FENCE);

        const float4 c4 = vload4(0, cr + orow);
        o0 *= c4.x; o1 *= c4.y; o2 *= c4.z; o3 *= c4.w;
        const uint n_c = min((uint)PBC, ctx_end - base);
        for (uint c = 0; c < n_c; c++) {
            const float4 p4 = vload4(0, ps + c * PPS + orow);
            const float4 v4 = vload4(0, vs + c * PHD + od);
            o0 = fma((float4)(p4.x), v4, o0);
            o1 = fma((float4)(p4.y), v4, o1);
            o2 = fma((float4)(p4.z), v4, o2);
            o3 = fma((float4)(p4.w), v4, o3);
        }
    }

    barrier(CLK_LOCAL_MEM_FENCE);
    mx[sr * 4 + sj] = l;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (sj == 0) {
        const float4 l4 = vload4(0, mx + sr * 4);
        cr[sr] = 1.0f / ((l4.x + l4.y) + (l4.z + l4.w));
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float4 inv = vload4(0, cr + orow);
    const float4 res[4] = {o0 * inv.x, o1 * inv.y, o2 * inv.z, o3 * inv.w};
    for (uint i = 0; i < 4; i++) {
        const uint R = row0 + orow + i;
        if (R < n_rows) {
            const uint t = R / grp, g = R % grp;
            __global float *oh = out + out_off + ((ulong)t * n_head + kvh * grp + g) * hd;
            const float r4[4] = {res[i].x, res[i].y, res[i].z, res[i].w};
            for (uint e = 0; e < 4; e++) {
                if (od + e < hd) oh[od + e] = r4[e];
            }
        }
    }
}
