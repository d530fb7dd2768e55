// attention.cl — causal grouped-query attention over the KV cache (f32), decode and
// prefill in one kernel.
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
// Offsets are in elements. Build options: LWS (power of two), MAX_HD (multiple of LWS).

#define DPT (MAX_HD / LWS)

__kernel void attention_f32(__global const float *q, const ulong q_off,
                            __global const float *k, const ulong k_off,
                            __global const float *v, const ulong v_off,
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
    const ulong kv_stride = (ulong)n_kv_head * hd;
    __global const float *kb = k + k_off + (ulong)kvh * hd;
    __global const float *vb = v + v_off + (ulong)kvh * hd;

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
            __global const float *kr = kb + (ulong)s * kv_stride;
            float4 d4 = (float4)(0.0f);
            uint i = 0;
            for (; i + 4 <= hd; i += 4) {
                d4 += vload4(0, ql + i) * vload4(0, kr + i);
            }
            float dot = (d4.x + d4.y) + (d4.z + d4.w);
            for (; i < hd; i++) {
                dot += ql[i] * kr[i];
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
                    acc += ps[i] * vb[(ulong)(base + i) * kv_stride + j];
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
