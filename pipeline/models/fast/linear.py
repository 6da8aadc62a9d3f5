"""Dense float32 layers through oneDNN on the CPU: the DiffRec denoiser's matrix products on the
fast path (``pipeline/models/fast``: used only while its switch is on).

torch sends a CPU float32 ``mm``/``addmm``/``F.linear`` to MKL, which on AMD cores runs at
about its AVX2 speed, while oneDNN's AVX-512 kernels, shipped with torch as
``torch.ops.mkldnn._linear_pointwise``, run about twice as fast on the same shapes
(``benchmarks/bench_diffrec.py`` prints both rates on the machine it runs on). Both are strict float32 (torch's default
``fp32_precision`` "none": no bfloat16 or TF32 shortcut) and deterministic for a fixed thread
count and shape; their roundings differ, so switching one for the other moves results by float
rounding.

``linear`` is ``F.linear`` with that fast path; ``Linear`` is the same as an autograd function
whose backward products also go through oneDNN. Off the CPU (CUDA), for other dtypes or where
the op is missing, both fall back to ``F.linear`` and torch's matrix products.

``pack`` puts a weight that several products share (inference) into oneDNN's blocked layout
once, instead of at every call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_PACK = _ONEDNN and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _fast(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        _ONEDNN
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 2
        and x.shape[0] > 0
        and (
            weight.is_mkldnn  # made by ``pack``, on the fast path only
            or weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and (weight.is_contiguous() or weight.t().is_contiguous())  # oneDNN copies other layouts slowly
        )
    )


def _plain(weight: torch.Tensor) -> torch.Tensor:
    """A packed weight back in torch's layout, for the fallbacks."""
    return weight.to_dense() if weight.is_mkldnn else weight


def pack(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` (out, in) in oneDNN's layout for products with about ``rows`` input rows, for
    ``linear``, ``linear_tanh`` and ``linear_add`` to reuse; ``weight`` itself off the fast path.

    Saves the reorder each product otherwise makes. The values are those of the unpacked weight
    for two or more rows (bit for bit, ``tests/test_linear.py``); for a single row the unpacked weight takes another kernel and rounds differently, the
    packed one gives that row's value in a larger batch.
    """
    if _PACK and weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.dim() == 2:
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), max(1, rows))
    return weight


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` (as ``F.linear``), no autograd; ``weight`` may be a transposed view
    (other strided weights take the fallback) or packed (``pack``)."""
    if _fast(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, _plain(weight), bias)


def linear_tanh(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``tanh(linear(x, weight, bias))``, no autograd; on the fast path the tanh runs inside
    oneDNN's product (within a few ulp of the exact tanh, as NumPy's float32 tanh)."""
    if _fast(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "tanh", [], "")
    return torch.tanh(F.linear(x, _plain(weight), bias))


def linear_add(x: torch.Tensor, weight: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``other + x @ weight.T`` (a new tensor), no autograd.

    On the fast path the product, then an in-place add: one rounding of the same two float32
    terms as oneDNN's fused "add" post-op (bit for bit), which was slower on the DiffRec
    inference's 600 x 600 product."""
    if _fast(x, weight) and other.dtype == torch.float32:
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "").add_(other)
    return torch.addmm(other, x, _plain(weight).t())


class Linear(torch.autograd.Function):
    """``linear`` with autograd: ``Linear.apply(x, weight, bias)``; both products of the
    backward (the input and weight gradients) through ``linear`` too, the bias gradient a column
    sum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = linear(grad, weight.t()) if ctx.needs_input_grad[0] else None
        grad_weight = linear(grad.t(), x.t()) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias
