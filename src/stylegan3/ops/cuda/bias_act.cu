// bias_act: elementwise bias + activation + gain + clamp, and its first and second derivatives
// (order 1 and 2) for the backward passes. One thread per element, float32 math.
#include "ops.h"

namespace toonforge {
namespace {

using detail::from_float;
using detail::to_float;

constexpr float kSeluScale = 1.0507009873554805f;
constexpr float kSeluAlpha = 1.6732632423543772f;
// Like torch.nn.functional.softplus: above this input softplus(z) is z to float precision.
constexpr float kSoftplusThreshold = 20.f;

__host__ __device__ inline float sigmoid(float z) { return 1.f / (1.f + expf(-z)); }

// The activation (order 0) or its first or second derivative (order 1, 2) at z.
__host__ __device__ inline float activation(Activation act, float z, float alpha, int order) {
  switch (act) {
    case Activation::kLinear:
      return order == 0 ? z : (order == 1 ? 1.f : 0.f);
    case Activation::kRelu:
      if (order == 0) return z > 0.f ? z : 0.f;
      return order == 1 && z > 0.f ? 1.f : 0.f;
    case Activation::kLrelu:
      if (order == 0) return z > 0.f ? z : alpha * z;
      if (order == 1) return z > 0.f ? 1.f : alpha;
      return 0.f;
    case Activation::kTanh: {
      const float t = tanhf(z);
      if (order == 0) return t;
      return order == 1 ? 1.f - t * t : -2.f * t * (1.f - t * t);
    }
    case Activation::kSigmoid: {
      const float s = sigmoid(z);
      if (order == 0) return s;
      return order == 1 ? s * (1.f - s) : s * (1.f - s) * (1.f - 2.f * s);
    }
    case Activation::kElu:  // NVIDIA's table: elu ignores alpha (always 1)
      if (order == 0) return z > 0.f ? z : expm1f(z);
      if (order == 1) return z > 0.f ? 1.f : expf(z);
      return z > 0.f ? 0.f : expf(z);
    case Activation::kSelu:
      if (order == 0) return kSeluScale * (z > 0.f ? z : kSeluAlpha * expm1f(z));
      if (order == 1) return kSeluScale * (z > 0.f ? 1.f : kSeluAlpha * expf(z));
      return z > 0.f ? 0.f : kSeluScale * kSeluAlpha * expf(z);
    case Activation::kSoftplus: {
      if (order == 0) return z > kSoftplusThreshold ? z : log1pf(expf(z));
      const float s = sigmoid(z);
      return order == 1 ? s : s * (1.f - s);
    }
    case Activation::kSwish: {
      const float s = sigmoid(z);
      if (order == 0) return z * s;
      if (order == 1) return s * (1.f + z * (1.f - s));
      return s * (1.f - s) * (2.f + z * (1.f - 2.f * s));
    }
  }
  return 0.f;
}

template <typename T>
__host__ __device__ inline void bias_act_element(const BiasActArgs& a, int64_t i) {
  float z = to_float(static_cast<const T*>(a.x)[i]);
  if (a.bias != nullptr) z += a.bias[(i / a.bias_stride) % a.bias_size];
  const float value = a.gain * activation(a.act, z, a.alpha, 0);
  float out;
  if (a.order == 0) {
    // Comparisons (not fminf/fmaxf) so that NaN stays NaN, as with torch.clamp.
    out = value;
    if (a.clamp >= 0.f) out = value > a.clamp ? a.clamp : (value < -a.clamp ? -a.clamp : value);
  } else if (a.clamp >= 0.f && !(fabsf(value) <= a.clamp)) {
    out = 0.f;
  } else {
    const float grad = to_float(static_cast<const T*>(a.grad)[i]);
    out = grad * a.gain * activation(a.act, z, a.alpha, a.order);
  }
  static_cast<T*>(a.y)[i] = from_float<T>(out);
}

template <typename T>
__global__ void bias_act_kernel(const BiasActArgs args) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < args.numel;
       i += step) {
    bias_act_element<T>(args, i);
  }
}

}  // namespace

cudaError_t launch_bias_act(const BiasActArgs& args, cudaStream_t stream) {
  if (args.numel == 0) return cudaSuccess;
  const unsigned int blocks = detail::grid_blocks(args.numel);
  constexpr int threads = detail::kThreadsPerBlock;
  switch (args.dtype) {
    case DType::kFloat32:
      bias_act_kernel<float><<<blocks, threads, 0, stream>>>(args);
      break;
    case DType::kFloat16:
      bias_act_kernel<__half><<<blocks, threads, 0, stream>>>(args);
      break;
    case DType::kBFloat16:
      bias_act_kernel<__nv_bfloat16><<<blocks, threads, 0, stream>>>(args);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace toonforge
