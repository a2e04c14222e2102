"""A faster weight gradient for bf16 convolutions on small maps on CPU (ours, speed only).

On a 2-core AMX CPU, oneDNN's bf16 weight gradient of a 3x3 convolution on the small maps of a
miniature (64 x 128 channels at 9x3) took 6.5-8.8 ms, 5-6x its forward pass, while the same sums
written as one matrix product over shifted copies of the input took 1.5-2.4 ms
(``benchmarks/conv_weight_grad.py``). On large maps oneDNN wins (64 channels at 96x32: 10 ms
against 98 ms), so only convolutions whose output map has at most ``MAX_POSITIONS`` positions
take this path, and only in bf16 on CPU: fp32, CUDA and evaluation run torch's convolution
unchanged. The forward pass and the input gradient are torch's own in every case.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MAX_POSITIONS", "MatmulGradConv2d", "use_matmul_weight_grad", "weight_grad_by_matmul"]

# Output positions (height x width) up to which the matrix product was measured faster
# (9x3 and 18x6 maps: 1.8-4x; 24x8 with 512 channels: 1.3x; 48x16: 3x slower).
MAX_POSITIONS = 192
# Fewer input channels make the product too small to beat oneDNN (measured: 16 and 32).
MIN_IN_CHANNELS = 64


def weight_grad_by_matmul(
    x: Tensor,
    grad: Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> Tensor:
    """dL/dW of ``conv2d(x, W, stride, padding)`` (no groups, no dilation) given dL/dy.

    Each kernel tap (i, j) sees the padded input shifted by (i, j) and subsampled by the stride;
    stacking the taps gives the (N * Ho * Wo, kh * kw * C) patch matrix, and the gradient is
    ``grad^T @ patches``, one matrix product.
    """
    n, c = x.shape[:2]
    out_channels, out_h, out_w = grad.shape[1:]
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    padded = F.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1)  # N, H, W, C
    taps = [
        padded[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = torch.stack(taps, dim=3).reshape(n * out_h * out_w, kh * kw * c)
    grad_rows = grad.permute(0, 2, 3, 1).reshape(n * out_h * out_w, out_channels)
    weight_grad = grad_rows.t() @ patches
    return weight_grad.view(out_channels, kh, kw, c).permute(0, 3, 1, 2)


class _ConvMatmulWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride, padding) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad, ctx.stride, ctx.padding)
        if ctx.needs_input_grad[1]:
            grad_weight = weight_grad_by_matmul(
                x, grad, tuple(weight.shape[2:]), ctx.stride, ctx.padding
            )
        return grad_x, grad_weight, None, None


class MatmulGradConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state dict) whose bf16 CPU weight gradient on small
    maps is :func:`weight_grad_by_matmul`; see the module docstring for when it applies."""

    def forward(self, x: Tensor) -> Tensor:
        if not self._takes_matmul_path(x):
            return super().forward(x)
        return _ConvMatmulWeightGrad.apply(
            x.to(torch.bfloat16), self.weight.to(torch.bfloat16), self.stride, self.padding
        )

    def _takes_matmul_path(self, x: Tensor) -> bool:
        if not (
            torch.is_grad_enabled()
            and self.weight.requires_grad
            and x.device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
        ):
            return False
        out_h = (x.shape[2] + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        out_w = (x.shape[3] + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        return out_h * out_w <= MAX_POSITIONS


def use_matmul_weight_grad(model: nn.Module) -> int:
    """Switch ``model``'s eligible convolutions to :class:`MatmulGradConv2d`, in place.

    Eligible: no groups, no dilation, no bias, zero padding given as numbers, at least
    ``MIN_IN_CHANNELS`` input channels. Parameters, hooks and state-dict keys are untouched
    (only the class changes, which adds no state). Returns how many convolutions switched.
    """
    switched = 0
    for module in model.modules():
        if (
            type(module) is nn.Conv2d
            and module.groups == 1
            and module.dilation == (1, 1)
            and module.bias is None
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
            and module.in_channels >= MIN_IN_CHANNELS
        ):
            module.__class__ = MatmulGradConv2d
            switched += 1
    return switched
