// Python binding: checks arguments, turns tensors into pointers, sizes and element strides,
// allocates outputs and launches the kernels of ops.h on the current stream of the input's
// device. The autograd logic lives in kernels.py.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <algorithm>
#include <optional>

#include "ops.h"

namespace {

toonforge::DType dtype_of(const at::Tensor& t) {
  const at::ScalarType type = t.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kHalf || type == at::kBFloat16,
              "toonforge ops support float32, float16 and bfloat16, got ", type);
  if (type == at::kHalf) return toonforge::DType::kFloat16;
  if (type == at::kBFloat16) return toonforge::DType::kBFloat16;
  return toonforge::DType::kFloat32;
}

void check_launch(cudaError_t error, const char* op) {
  TORCH_CHECK(error == cudaSuccess, op, " kernel launch failed: ", cudaGetErrorString(error));
}

// x: [N, C, H, W] with any strides (channels-last included); f: 2-D float32 filter.
// The output has x's suggested memory format.
at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y,
                     int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                     int64_t pad_y0, int64_t pad_y1, bool flip_filter, double gain) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4, "upfirdn2d: x must be a 4-D CUDA tensor");
  TORCH_CHECK(f.device() == x.device() && f.dim() == 2 && f.scalar_type() == at::kFloat,
              "upfirdn2d: f must be a 2-D float32 tensor on x's device");
  TORCH_CHECK(f.size(0) >= 1 && f.size(1) >= 1, "upfirdn2d: f must not be empty");
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1,
              "upfirdn2d: up and down must be >= 1");
  const toonforge::DType dtype = dtype_of(x);
  const c10::cuda::OptionalCUDAGuard device_guard(x.device());
  const at::Tensor filter = f.contiguous();

  // Length of the "valid" convolution of the padded, upsampled input, before downsampling.
  const int64_t span_x = x.size(3) * up_x + pad_x0 + pad_x1 - filter.size(1) + 1;
  const int64_t span_y = x.size(2) * up_y + pad_y0 + pad_y1 - filter.size(0) + 1;
  TORCH_CHECK(span_x >= 1 && span_y >= 1,
              "upfirdn2d: the padded input is smaller than the filter; output would be empty");
  const int64_t out_w = (span_x + down_x - 1) / down_x;
  const int64_t out_h = (span_y + down_y - 1) / down_y;
  at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w},
                           x.options().memory_format(x.suggest_memory_format()));

  toonforge::Upfirdn2dArgs args{};
  args.x = x.data_ptr();
  args.y = y.data_ptr();
  args.f = filter.data_ptr<float>();
  args.dtype = dtype;
  args.batch = x.size(0);
  args.channels = x.size(1);
  args.in_h = x.size(2);
  args.in_w = x.size(3);
  args.out_h = out_h;
  args.out_w = out_w;
  for (int d = 0; d < 4; ++d) {
    args.x_strides[d] = x.stride(d);
    args.y_strides[d] = y.stride(d);
  }
  args.f_h = static_cast<int>(filter.size(0));
  args.f_w = static_cast<int>(filter.size(1));
  args.up_x = static_cast<int>(up_x);
  args.up_y = static_cast<int>(up_y);
  args.down_x = static_cast<int>(down_x);
  args.down_y = static_cast<int>(down_y);
  args.pad_x0 = static_cast<int>(pad_x0);
  args.pad_y0 = static_cast<int>(pad_y0);
  args.flip_filter = flip_filter;
  args.gain = static_cast<float>(gain);
  check_launch(toonforge::launch_upfirdn2d(args, c10::cuda::getCurrentCUDAStream()), "upfirdn2d");
  return y;
}

// order 0: bias + activation; order 1 / 2: grad times its first / second derivative (ops.h).
// The kernel walks x in storage order, so x must be dense: other strided views are made
// contiguous first, and grad is copied into x's layout when its strides differ.
at::Tensor bias_act(const at::Tensor& x_in, const std::optional<at::Tensor>& b,
                    const std::optional<at::Tensor>& grad_in, int64_t dim, int64_t act,
                    double alpha, double gain, double clamp, int64_t order) {
  TORCH_CHECK(x_in.is_cuda(), "bias_act: x must be a CUDA tensor");
  TORCH_CHECK(0 <= dim && dim < std::max<int64_t>(x_in.dim(), 1), "bias_act: bad dim ", dim);
  TORCH_CHECK(0 <= act && act <= static_cast<int64_t>(toonforge::Activation::kSwish),
              "bias_act: unknown activation code ", act);
  TORCH_CHECK(0 <= order && order <= 2, "bias_act: order must be 0, 1 or 2");
  TORCH_CHECK((order == 0) == !grad_in.has_value(), "bias_act: grad is needed iff order > 0");
  const toonforge::DType dtype = dtype_of(x_in);
  const c10::cuda::OptionalCUDAGuard device_guard(x_in.device());
  const at::Tensor x = x_in.is_non_overlapping_and_dense() ? x_in : x_in.contiguous();

  at::Tensor grad;
  if (grad_in.has_value()) {
    TORCH_CHECK(grad_in->device() == x.device() && grad_in->sizes() == x.sizes(),
                "bias_act: grad must match x in shape and device");
    grad = grad_in->to(x.scalar_type());
    if (grad.strides() != x.strides()) grad = at::empty_like(x).copy_(grad);
  }

  at::Tensor bias;
  if (b.has_value()) {
    TORCH_CHECK(x.dim() > 0 && b->device() == x.device() && b->dim() == 1 &&
                    b->numel() == x.size(dim),
                "bias_act: b must be 1-D, on x's device, with x.shape[dim] elements");
    bias = b->to(at::kFloat).contiguous();
  }

  at::Tensor y = at::empty_like(x);  // same strides as the dense x
  toonforge::BiasActArgs args{};
  args.x = x.data_ptr();
  args.grad = grad.defined() ? grad.data_ptr() : nullptr;
  args.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
  args.y = y.data_ptr();
  args.dtype = dtype;
  args.numel = x.numel();
  args.bias_size = bias.defined() ? x.size(dim) : 1;
  args.bias_stride = bias.defined() && x.size(dim) > 1 ? x.stride(dim) : 1;
  args.act = static_cast<toonforge::Activation>(act);
  args.order = static_cast<int>(order);
  args.alpha = static_cast<float>(alpha);
  args.gain = static_cast<float>(gain);
  args.clamp = static_cast<float>(clamp);
  check_launch(toonforge::launch_bias_act(args, c10::cuda::getCurrentCUDAStream()), "bias_act");
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "toonforge StyleGAN3 CUDA ops (see kernels.py for the autograd wrappers)";
  m.def("upfirdn2d", &upfirdn2d, "Upsample, pad, FIR-filter and downsample NCHW images",
        py::arg("x"), py::arg("f"), py::arg("up_x"), py::arg("up_y"), py::arg("down_x"),
        py::arg("down_y"), py::arg("pad_x0"), py::arg("pad_x1"), py::arg("pad_y0"),
        py::arg("pad_y1"), py::arg("flip_filter"), py::arg("gain"));
  m.def("bias_act", &bias_act, "Bias + activation (order 0) or its derivatives (order 1, 2)",
        py::arg("x"), py::arg("b"), py::arg("grad"), py::arg("dim"), py::arg("act"),
        py::arg("alpha"), py::arg("gain"), py::arg("clamp"), py::arg("order"));
}
