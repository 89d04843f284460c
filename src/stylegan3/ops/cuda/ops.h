// Plain C++ interface between the torch binding (binding.cpp) and the CUDA kernels (*.cu):
// raw pointers, sizes, element strides, a dtype tag and a stream, so the kernels need no torch
// headers. Every launcher returns the CUDA error of its launch (cudaSuccess when fine).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace toonforge {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// y = gain * (pad(upsample(x)) convolved with f)[::down], per image and channel.
// Upsampling inserts up-1 zeros after every sample; the padded, upsampled row of length
// in*up + pad0 + pad1 (negative pads crop) is convolved "valid" with the filter.
struct Upfirdn2dArgs {
  const void* x;     // input, indexed [batch, channels, in_h, in_w] through x_strides
  void* y;           // output, indexed [batch, channels, out_h, out_w] through y_strides
  const float* f;    // filter [f_h, f_w], contiguous float32
  DType dtype;       // element type of x and y
  int64_t batch, channels;
  int64_t in_h, in_w, out_h, out_w;
  int64_t x_strides[4];  // in elements, order N, C, H, W
  int64_t y_strides[4];
  int f_h, f_w;
  int up_x, up_y, down_x, down_y;
  int pad_x0, pad_y0;  // leading padding; the trailing padding only shows in out_h / out_w
  bool flip_filter;    // false: true convolution (taps reversed), true: plain correlation
  float gain;
};

cudaError_t launch_upfirdn2d(const Upfirdn2dArgs& args, cudaStream_t stream);

enum class Activation : int {
  kLinear = 0,
  kRelu = 1,
  kLrelu = 2,
  kTanh = 3,
  kSigmoid = 4,
  kElu = 5,
  kSelu = 6,
  kSoftplus = 7,
  kSwish = 8,
};

// Elementwise bias + activation over a dense tensor, walked in storage order (x, grad and y
// share one layout). With z = x + bias and v = gain * act(z):
//   order 0: y = v clamped to [-clamp, clamp]
//   order 1: y = grad * gain * act'(z)
//   order 2: y = grad * gain * act''(z)
// where orders 1 and 2 are zero wherever |v| > clamp (the clamp has no gradient there).
struct BiasActArgs {
  const void* x;
  const void* grad;   // upstream gradient for orders 1 and 2, else nullptr
  const float* bias;  // bias_size float32 values, or nullptr
  void* y;
  DType dtype;  // element type of x, grad and y
  int64_t numel;
  int64_t bias_stride;  // element i uses bias[(i / bias_stride) % bias_size]
  int64_t bias_size;
  Activation act;
  int order;
  float alpha, gain;
  float clamp;  // negative: no clamp
};

cudaError_t launch_bias_act(const BiasActArgs& args, cudaStream_t stream);

}  // namespace toonforge

#ifdef __CUDACC__
// Helpers shared by the kernels: loads and stores through float, and the launch grid.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace toonforge::detail {

__host__ __device__ inline float to_float(float v) { return v; }
__host__ __device__ inline float to_float(__half v) { return __half2float(v); }
__host__ __device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__host__ __device__ inline T from_float(float v);
template <>
__host__ __device__ inline float from_float<float>(float v) {
  return v;
}
template <>
__host__ __device__ inline __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__host__ __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

constexpr int kThreadsPerBlock = 256;

// Blocks for a grid-stride loop over `count` elements (kernels loop when count exceeds the grid).
inline unsigned int grid_blocks(int64_t count) {
  const int64_t max_blocks = 65536;
  const int64_t blocks = (count + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<unsigned int>(blocks < max_blocks ? blocks : max_blocks);
}

}  // namespace toonforge::detail
#endif
