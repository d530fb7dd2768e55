// silu_mul.cl — SwiGLU: out = silu(gate) * up = gate / (1 + exp(-gate)) * up (f32).
//
// Same formula as the CPU reference (`cpu::scalar::swiglu`). Element offsets.

__kernel void silu_mul_f32(__global const float *gate, const ulong gate_off,
                           __global const float *up, const ulong up_off,
                           __global float *out, const ulong out_off,
                           const uint n) {
    const uint i = get_global_id(0);
    if (i < n) {
        const float g = gate[gate_off + i];
        out[out_off + i] = g / (1.0f + exp(-g)) * up[up_off + i];
    }
}
