"""The matrix-product weight gradient against a plain loop and against torch's convolution."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from canlib.conv_weight_grad import (
    MAX_POSITIONS,
    MatmulGradConv2d,
    use_matmul_weight_grad,
    weight_grad_by_matmul,
)
from canlib.model import build_model


def _loop_weight_grad(x, grad, kernel, stride, padding):
    """dL/dW[o, c, i, j] = sum over n, y, x of grad[n, o, y, x] * xpad[n, c, y*s + i, x*s + j]."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xpad = F.pad(x, (pw, pw, ph, ph))
    out_h, out_w = grad.shape[2:]
    out = torch.zeros(grad.shape[1], x.shape[1], kh, kw, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            for y in range(out_h):
                for z in range(out_w):
                    patch = xpad[:, :, y * sh + i, z * sw + j]  # (N, C)
                    out[:, :, i, j] += grad[:, :, y, z].t() @ patch
    return out


@pytest.mark.parametrize(
    "kernel,stride,padding",
    [
        ((3, 3), (1, 1), (1, 1)),
        ((3, 3), (2, 2), (1, 1)),
        ((1, 1), (1, 1), (0, 0)),
        ((1, 1), (2, 2), (0, 0)),
        ((3, 1), (1, 2), (1, 0)),
    ],
)
def test_weight_grad_matches_a_plain_loop(kernel, stride, padding):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 7, 5, generator=gen, dtype=torch.float64)
    out_h = (7 + 2 * padding[0] - kernel[0]) // stride[0] + 1
    out_w = (5 + 2 * padding[1] - kernel[1]) // stride[1] + 1
    grad = torch.randn(3, 6, out_h, out_w, generator=gen, dtype=torch.float64)
    expected = _loop_weight_grad(x, grad, kernel, stride, padding)
    got = weight_grad_by_matmul(x, grad, kernel, stride, padding)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_weight_grad_accepts_channels_last_inputs():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 6, 4, generator=gen, dtype=torch.float64)
    grad = torch.randn(2, 5, 6, 4, generator=gen, dtype=torch.float64)
    expected = _loop_weight_grad(x, grad, (3, 3), (1, 1), (1, 1))
    got = weight_grad_by_matmul(
        x.contiguous(memory_format=torch.channels_last),
        grad.contiguous(memory_format=torch.channels_last),
        (3, 3),
        (1, 1),
        (1, 1),
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def _pair(in_channels, out_channels, stride, seed=0):
    torch.manual_seed(seed)
    plain = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
    fast = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
    fast.load_state_dict(plain.state_dict())
    assert use_matmul_weight_grad(fast) == 1
    return plain, fast


@pytest.mark.parametrize("stride", [1, 2])
def test_bf16_gradients_agree_with_torch_within_bf16_rounding(stride):
    plain, fast = _pair(64, 32, stride)
    x = torch.randn(4, 64, 9, 5)
    grads = []
    for conv in (plain, fast):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(xi)
        assert y.dtype == torch.bfloat16
        (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads.append((y.detach().float(), xi.grad, conv.weight.grad))
    (y0, gx0, gw0), (y1, gx1, gw1) = grads
    assert torch.equal(y0, y1)  # the forward pass is torch's in both
    assert torch.equal(gx0, gx1)  # and so is the input gradient
    # bf16 keeps 8 bits of mantissa: both results are rounded sums of the same products.
    torch.testing.assert_close(gw1, gw0, rtol=2e-2, atol=2e-2 * gw0.abs().max().item())


def test_fp32_large_maps_and_no_grad_take_torchs_path():
    plain, fast = _pair(64, 16, 1)
    big = torch.randn(2, 64, 16, 16)  # 256 > MAX_POSITIONS output positions
    assert 16 * 16 > MAX_POSITIONS
    for x, autocast in ((torch.randn(2, 64, 9, 3), False), (big, True)):
        results = []
        for conv in (plain, fast):
            conv.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                conv(x).float().square().sum().backward()
            results.append(conv.weight.grad.clone())
        assert torch.equal(results[0], results[1])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(plain(big), fast(big))


def test_only_eligible_convolutions_switch_and_the_state_dict_is_unchanged():
    model = build_model("can", 10, parts=(3,), backbone="resnet18-quarter", input_size=(144, 48))
    keys = list(model.state_dict())
    eligible = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.in_channels >= 64 and m.groups == 1
    ]
    assert use_matmul_weight_grad(model) == len(eligible) > 0
    switched = [n for n, m in model.named_modules() if isinstance(m, MatmulGradConv2d)]
    assert switched == eligible
    assert list(model.state_dict()) == keys
    assert use_matmul_weight_grad(model) == 0  # already switched
    depthwise = nn.Conv2d(64, 64, 3, groups=64, bias=False)
    with_bias = nn.Conv2d(64, 64, 3)
    assert use_matmul_weight_grad(nn.Sequential(depthwise, with_bias)) == 0
