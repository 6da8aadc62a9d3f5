"""HDRM's fast path: its denoisers (``ConditionalDenoiser``) with the activations in place, the
bias added after the narrow layers' products and, for the triple batches, a first layer that
skips the input gradient nobody needs.

Used by ``pipeline/models/hdrm.py`` (``HDRM._denoise``, in training and scoring) only while the
switch of ``pipeline/models/fast`` is on; ``ConditionalDenoiser.forward`` in the model file is the
readable computation, and ``tests/test_fast_paths.py`` checks that both agree. Every product here
is torch's own (not oneDNN's, unlike DiffRec's fast path), so that where a trick does not change
the arithmetic the result is bit for bit the readable one. What each trick does:

* **Activations in place** (every path): the denoiser's ReLU (or tanh, sigmoid) overwrites its
  layer's output instead of allocating another batch x width tensor. Autograd allows it: a
  linear layer's backward needs its input, not its output, and the activation's backward needs
  only its own result. The same elementwise kernel on the same values: bit for bit the
  out-of-place activation.
* **First layer without the input gradient** (:class:`FirstLayer`, triple batches only): the
  first layer is ``Linear`` over [dropout(z_t), emb, cond]. z_t (the noised frozen tangent
  vector) and cond (the other side's frozen tangent vector) need no gradient, but emb (the time
  embedding, ``Linear(sinusoidal(t))``) does, so autograd forms the gradient of the whole
  concatenated input, batch x (2D + emb), a product as large as the layer's forward one; here only
  the emb columns, ``grad @ W_emb`` (the weight's emb columns). At the released size (D 512, dims [200,
  1100]) that product is 1,034 x 1,100 of the ~2.1M multiply-adds per row of a denoiser's forward
  pass, about a sixth of a training step's products; at the committed 64-d size ([200, 600])
  about 8%. The forward product and the weight and bias gradients are autograd's own calls
  (``F.linear``, ``grad^T h``, ``grad.sum(0)``); the emb gradient is a product over the emb
  columns instead of a slice of the full product, which BLAS computes with another kernel and so
  rounds differently (measured on an Intel CPU, one thread: with MKL's AVX2 kernels at the
  committed 64-d shapes; with its AVX-512 ones at 512-d, not at 64-d). The committed runs were trained with the user
  batches (``sampling: users``), so there the first layer stays autograd's and the runs
  reproduce bit for bit; the triple batches (``sampling: triples``, the released recipe, no
  committed run) take this layer.
* **The bias added after the product** (:func:`linear`, where it gives the same bits): ``nn.Linear``
  calls ``addmm(bias, x, W^T)``, which first writes the bias into every row of the batch x width
  output and then has BLAS add the product to it, a second pass over the output; here the
  product, then the bias added in place, where the activation's pass follows. BLAS sums each
  output's products in registers and adds the existing output once at the end when the whole
  inner dimension fits one of its blocks, so the two orders give the same bits there; the block
  is the CPU's: MKL's holds 256 inputs with its SSE4.2, AVX2 and AVX-512 kernels on the Intel
  machines measured, 192 on an AMD EPYC (Zen 3), where HDRM-64's 200 -> 600 layer splits it.
  So :func:`same_bits_with_the_bias_after` compares the two orders once per layer shape, power
  of two of the rows, thread count and device, on random values (where the order differs,
  nearly every output rounds differently), and :func:`linear` takes the bias after the product
  only where they are equal (layers of at most :data:`PROBED_INPUTS` inputs; wider ones are not
  probed): a layer gives ``nn.Linear``'s bits on every machine, and where the orders differ it
  is ``nn.Linear`` itself. The autograd graph's products and bias gradient are the same calls
  (mm's and add's backward); the gain is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.layers import timestep_embedding

IN_PLACE = {"relu": torch.relu_, "tanh": torch.tanh_, "sigmoid": torch.sigmoid_}
# The widest layer probed, MKL's block on the Intel machines measured; a probe costs two products,
# so wider layers are nn.Linear without one
PROBED_INPUTS = 256
# (rows' power of two, inputs, outputs, threads, dtype, device) -> whether the bias after the
# product gives addmm's bits
_SAME_BITS: dict[tuple, bool] = {}


def same_bits_with_the_bias_after(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``mm(x, W^T) + bias`` is ``addmm(bias, x, W^T)`` bit for bit on this machine for a
    contiguous ``x`` like this one and ``weight``'s shape, the thread count, dtype and device: both
    orders computed on random values of these shapes (seeded, without touching torch's global
    random state) the first time such a product comes, then remembered. Rows are taken by their
    power of two (the user batches' rows vary from batch to batch, and a probe costs two
    products): BLAS splits the inner dimension by its block whatever the rows."""
    key = (x.shape[0].bit_length(), x.shape[1], weight.shape[0], torch.get_num_threads(), x.dtype, x.device)
    if key not in _SAME_BITS:
        generator = torch.Generator().manual_seed(0)
        a, w, b = (torch.randn(*shape, generator=generator, dtype=x.dtype).to(x.device)
                   for shape in (tuple(x.shape), tuple(weight.shape), (weight.shape[0],)))
        _SAME_BITS[key] = torch.equal(torch.addmm(b, a, w.t()), torch.mm(a, w.t()).add_(b))
    return _SAME_BITS[key]


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a 2-D ``x``; the product, then the bias added in place, where that gives
    ``layer(x)``'s bits on this machine (one pass fewer over the output: module docstring)."""
    if (layer.bias is not None and x.dim() == 2 and x.is_contiguous() and layer.in_features <= PROBED_INPUTS
            and same_bits_with_the_bias_after(x, layer.weight)):
        return torch.mm(x, layer.weight.t()).add_(layer.bias)
    return layer(x)


class FirstLayer(torch.autograd.Function):
    """The denoiser's first layer, ``Linear`` over ``[x, emb, cond]``, with only the gradients its
    inputs need: when neither ``x`` nor ``cond`` needs one, the input gradient is formed for the
    ``emb`` columns alone (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, emb, cond], dim=-1)
        ctx.save_for_backward(h, weight)
        ctx.columns = (x.shape[-1], x.shape[-1] + emb.shape[-1])
        return F.linear(h, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, weight = ctx.saved_tensors
        a, b = ctx.columns
        grad_x = grad_emb = grad_cond = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:
            grad_h = grad.mm(weight)
            grad_x, grad_emb, grad_cond = grad_h[:, :a], grad_h[:, a:b], grad_h[:, b:]
        elif ctx.needs_input_grad[1]:
            grad_emb = grad.mm(weight[:, a:b])
        grad_weight = grad.t().mm(h) if ctx.needs_input_grad[3] else None  # autograd's own product for F.linear
        grad_bias = grad.sum(0) if ctx.needs_input_grad[4] else None
        return grad_x, grad_emb, grad_cond, grad_weight, grad_bias


def denoise(den: nn.Module, z_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, narrow_first_layer: bool) -> torch.Tensor:
    """``den(z_t, cond, t)`` (``ConditionalDenoiser.forward``) with the activations in place and,
    where ``narrow_first_layer`` (the triple batches) and autograd is recording, :class:`FirstLayer`.
    The same random draws (the dropout mask) in the same order."""
    act_ = IN_PLACE[den.act_name]
    emb = den.emb_layer(timestep_embedding(t, den.emb_size).to(z_t.dtype))
    x = den._drop(z_t)
    first = den.in_layers[0]
    if narrow_first_layer and torch.is_grad_enabled() and not x.requires_grad and not cond.requires_grad:
        h = FirstLayer.apply(x, emb, cond, first.weight, first.bias)
    else:
        h = linear(first, torch.cat([x, emb, cond], dim=-1))
    h = act_(h)
    for layer in den.in_layers[1:]:
        h = act_(linear(layer, h))
    last = len(den.out_layers) - 1
    for i, layer in enumerate(den.out_layers):
        h = linear(layer, h)
        if i != last:
            h = act_(h)
    return h
