// common/rope.cl — rotary position embedding, shared by rope.cl and block.cl.
//
// Pair i of a head of size hd turns by angle pos * inv_freq[i] (computed by the caller:
// rope.cl with sin/cos, block.cl with sincos overlapped with other work). style 0 =
// adjacent pairs (x[2i], x[2i+1]) — ggml GGML_ROPE_TYPE_NORM; style 1 = half split
// (x[i], x[i + hd/2]) — Hugging Face rotate_half.

// Indices of pair i's two elements within a head.
inline uint rope_a(const uint style, const uint i) {
    return style == 0 ? 2 * i : i;
}
inline uint rope_b(const uint style, const uint i, const uint half_d) {
    return style == 0 ? 2 * i + 1 : i + half_d;
}

// (x0, x1) rotated by the angle whose cosine and sine are c and s.
inline float2 rope_rotate(const float x0, const float x1, const float c, const float s) {
    return (float2)(x0 * c - x1 * s, x0 * s + x1 * c);
}
