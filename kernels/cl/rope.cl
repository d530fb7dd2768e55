// rope.cl — rotary position embedding in place on x [n_tok, n_heads, head_dim] (f32).
//
// Token t sits at position pos0 + t; pair i turns by pos * inv_freq[i] (the table is a
// buffer, so llama3-scaled or file-provided frequencies need no kernel change).
// The pair indices and the rotation (both styles) are common/rope.cl's, shared with
// block.cl.
// One work-item per (pair, head, token). Element offsets.

__kernel void rope_f32(__global float *x, const ulong x_off,
                       __global const float *inv_freq, const ulong f_off,
                       const uint pos0, const uint n_heads, const uint head_dim,
                       const uint style) {
    const uint i = get_global_id(0);   // pair
    const uint h = get_global_id(1);   // head
    const uint t = get_global_id(2);   // token
    const uint half_d = head_dim / 2;
    if (i >= half_d) {
        return;
    }
    const float theta = (float)(pos0 + t) * inv_freq[f_off + i];
    const float s = sin(theta);
    const float c = cos(theta);
    __global float *xh = x + x_off + ((ulong)t * n_heads + h) * head_dim;
    const uint a = rope_a(style, i);
    const uint b = rope_b(style, i, half_d);
    const float2 r = rope_rotate(xh[a], xh[b], c, s);
    xh[a] = r.x;
    xh[b] = r.y;
}

// rope_qk_f32 — the same rotation on q [n_tok, n_head_q, head_dim] and the new keys
// k [n_tok, n_head_k, head_dim] in one launch: heads 0..n_head_q are q's, the rest k's.
// Global size (head_dim / 2, n_head_q + n_head_k, n_tok).
__kernel void rope_qk_f32(__global float *q, const ulong q_off,
                          __global float *k, const ulong k_off,
                          __global const float *inv_freq, const ulong f_off,
                          const uint pos0, const uint n_head_q, const uint n_head_k,
                          const uint head_dim, const uint style) {
    const uint i = get_global_id(0);   // pair
    const uint hh = get_global_id(1);  // head (q heads, then k heads)
    const uint t = get_global_id(2);   // token
    const uint half_d = head_dim / 2;
    if (i >= half_d) {
        return;
    }
    const float theta = (float)(pos0 + t) * inv_freq[f_off + i];
    const float s = sin(theta);
    const float c = cos(theta);
    __global float *xh = hh < n_head_q
        ? q + q_off + ((ulong)t * n_head_q + hh) * head_dim
        : k + k_off + ((ulong)t * n_head_k + (hh - n_head_q)) * head_dim;
    const uint a = rope_a(style, i);
    const uint b = rope_b(style, i, half_d);
    const float2 r = rope_rotate(xh[a], xh[b], c, s);
    xh[a] = r.x;
    xh[b] = r.y;
}
