"""pipeline.models.fast.linear: oneDNN's float32 products equal torch's up to float rounding, are
strict float32 (no bfloat16 shortcut), deterministic, and fall back to torch where they cannot run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.fast import linear as L


def operands(rows=64, width=700, out=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, generator=g)
    weight = torch.randn(out, width, generator=g) / width**0.5
    bias = torch.randn(out, generator=g)
    return x, weight, bias


def test_fast_path_is_taken_on_this_cpu_and_not_for_others():
    x, weight, _ = operands()
    assert L._fast(x, weight) == L._ONEDNN
    assert L._fast(x, weight.t().contiguous().t())  # a transposed view is fine
    assert not L._fast(x.double(), weight.double())
    assert not L._fast(x[:0], weight)
    assert not L._fast(x, weight[:, ::2])  # strided: torch's products


def test_linear_equals_torch_up_to_rounding():
    x, weight, bias = operands()
    want = F.linear(x.double(), weight.double(), bias.double())
    torch.testing.assert_close(L.linear(x, weight, bias).double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(L.linear(x, weight).double(), want - bias.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(L.linear(x, weight.t().contiguous().t(), bias), L.linear(x, weight, bias))
    # the fused tanh: within 2 ulp of the exact tanh of the same product
    torch.testing.assert_close(L.linear_tanh(x, weight, bias).double(), torch.tanh(L.linear(x, weight, bias).double()), rtol=2.4e-7, atol=2.4e-7)
    other = torch.randn(64, 50)
    torch.testing.assert_close(L.linear_add(x, weight, other).double(), other.double() + want - bias.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not L._ONEDNN, reason="oneDNN not in this torch build")
def test_linear_add_rounds_as_onednn_fused_add():
    """The product, then the add: bit for bit what oneDNN's fused "add" post-op returns."""
    x, weight, _ = operands(rows=128, width=600, out=600)
    other = torch.randn(128, 600) * 10
    kept = other.clone()
    fused = torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, None, "add")
    assert torch.equal(L.linear_add(x, weight, other), fused)
    assert torch.equal(L.linear_add(x, L.pack(weight, 128), other), fused)
    assert torch.equal(other, kept)  # ``other`` itself is left as it was


def test_linear_is_strict_float32_and_deterministic():
    # 1 + 2^-12 needs 13 mantissa bits: bfloat16 (8) would return 1.0
    x = torch.full((64, 300), 1 + 2**-12)
    assert torch.equal(L.linear(x, torch.eye(300)), x)
    x, weight, bias = operands(rows=256, width=3000, out=300)
    exact = F.linear(x.double(), weight.double(), bias.double())
    assert (L.linear(x, weight, bias).double() - exact).abs().max().item() < 1e-4  # bfloat16: ~1e-1
    assert torch.equal(L.linear(x, weight, bias), L.linear(x, weight, bias))


def test_fallbacks_are_torch_exactly():
    x, weight, bias = operands()
    xd, wd, bd = x.double(), weight.double(), bias.double()
    assert torch.equal(L.linear(xd, wd, bd), F.linear(xd, wd, bd))
    assert torch.equal(L.linear_tanh(xd, wd, bd), torch.tanh(F.linear(xd, wd, bd)))
    strided = weight[:, ::2]
    assert torch.equal(L.linear(x[:, ::2].contiguous(), strided), F.linear(x[:, ::2].contiguous(), strided))


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_function_gradients_equal_autograd(with_bias):
    x, weight, bias = operands()
    x.requires_grad_(True)
    weight.requires_grad_(True)
    bias = bias.requires_grad_(True) if with_bias else None
    grad = torch.randn(64, 50)
    F.linear(x, weight, bias).backward(grad)
    want = [t.grad.clone() for t in (x, weight, bias) if t is not None]
    for t in (x, weight, bias):
        if t is not None:
            t.grad = None
    out = L.Linear.apply(x, weight, bias)
    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    out.backward(grad)
    got = [t.grad for t in (x, weight, bias) if t is not None]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-4)
    # only what is asked for
    x2 = x.detach()
    L.Linear.apply(x2, weight, bias).sum().backward()
    assert x2.grad is None


def test_packed_weights_give_the_plain_weights_values():
    """pack(): oneDNN's layout made once; the same values bit for bit for two or more rows, and
    a single row gets its value in a larger batch."""
    x, weight, bias = operands(rows=64, width=300, out=120)
    packed = L.pack(weight, 64)
    assert packed.is_mkldnn == L._PACK
    other = torch.randn(64, 120)
    for rows in (64, 17, 2):
        assert torch.equal(L.linear(x[:rows], packed, bias), L.linear(x[:rows], weight, bias))
        assert torch.equal(L.linear_tanh(x[:rows], packed, bias), L.linear_tanh(x[:rows], weight, bias))
        assert torch.equal(L.linear_add(x[:rows], packed, other[:rows]), L.linear_add(x[:rows], weight, other[:rows]))
    assert torch.equal(L.linear(x[:1], packed, bias), L.linear(x, packed, bias)[:1])
    # off the fast path pack() returns the weight, and the products are torch's
    wd = weight.double()
    assert L.pack(wd, 64) is wd
    assert torch.equal(L.linear(x.double(), L.pack(wd, 64)), F.linear(x.double(), wd))
