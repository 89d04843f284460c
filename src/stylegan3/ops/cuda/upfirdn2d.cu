// upfirdn2d: one thread per output element. Output sample o reads the padded, upsampled input
// at positions o * down + k - pad0 (k = filter tap); only positions that are multiples of `up`
// hold real input samples (the rest are inserted zeros), so each thread visits just those taps
// (polyphase) and accumulates in float32.
#include "ops.h"

namespace toonforge {
namespace {

using detail::from_float;
using detail::to_float;

// Smallest k >= 0 with (start + k) % up == 0.
__host__ __device__ inline int first_real_tap(int64_t start, int up) {
  const int64_t remainder = start % up;  // in (-up, up)
  return static_cast<int>(remainder > 0 ? up - remainder : -remainder);
}

// Computes output element `index`. Elements are numbered with x fastest, or with the channel
// fastest when the output is channels-last, so neighbouring threads write neighbouring memory.
template <typename T>
__host__ __device__ inline void upfirdn2d_element(const Upfirdn2dArgs& a, int64_t index) {
  int64_t ox, oy, c, n;
  if (a.y_strides[1] == 1 && a.channels > 1) {
    c = index % a.channels;
    index /= a.channels;
    ox = index % a.out_w;
    index /= a.out_w;
    oy = index % a.out_h;
    n = index / a.out_h;
  } else {
    ox = index % a.out_w;
    index /= a.out_w;
    oy = index % a.out_h;
    index /= a.out_h;
    c = index % a.channels;
    n = index / a.channels;
  }
  const T* x = static_cast<const T*>(a.x) + n * a.x_strides[0] + c * a.x_strides[1];

  // Upsampled-input position under filter tap 0.
  const int64_t start_x = ox * a.down_x - a.pad_x0;
  const int64_t start_y = oy * a.down_y - a.pad_y0;
  float sum = 0.f;
  for (int ky = first_real_tap(start_y, a.up_y); ky < a.f_h; ky += a.up_y) {
    const int64_t iy = (start_y + ky) / a.up_y;  // exact: start_y + ky is a multiple of up_y
    if (iy < 0 || iy >= a.in_h) continue;
    const int fy = a.flip_filter ? ky : a.f_h - 1 - ky;
    for (int kx = first_real_tap(start_x, a.up_x); kx < a.f_w; kx += a.up_x) {
      const int64_t ix = (start_x + kx) / a.up_x;
      if (ix < 0 || ix >= a.in_w) continue;
      const int fx = a.flip_filter ? kx : a.f_w - 1 - kx;
      sum += a.f[fy * a.f_w + fx] * to_float(x[iy * a.x_strides[2] + ix * a.x_strides[3]]);
    }
  }
  T* y = static_cast<T*>(a.y);
  y[n * a.y_strides[0] + c * a.y_strides[1] + oy * a.y_strides[2] + ox * a.y_strides[3]] =
      from_float<T>(sum * a.gain);
}

template <typename T>
__global__ void upfirdn2d_kernel(const Upfirdn2dArgs args, int64_t count) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += step) {
    upfirdn2d_element<T>(args, i);
  }
}

}  // namespace

cudaError_t launch_upfirdn2d(const Upfirdn2dArgs& args, cudaStream_t stream) {
  const int64_t count = args.batch * args.channels * args.out_h * args.out_w;
  if (count == 0) return cudaSuccess;
  const unsigned int blocks = detail::grid_blocks(count);
  constexpr int threads = detail::kThreadsPerBlock;
  switch (args.dtype) {
    case DType::kFloat32:
      upfirdn2d_kernel<float><<<blocks, threads, 0, stream>>>(args, count);
      break;
    case DType::kFloat16:
      upfirdn2d_kernel<__half><<<blocks, threads, 0, stream>>>(args, count);
      break;
    case DType::kBFloat16:
      upfirdn2d_kernel<__nv_bfloat16><<<blocks, threads, 0, stream>>>(args, count);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace toonforge
