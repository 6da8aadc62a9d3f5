"""DiffRec's fast paths: the denoiser's products through oneDNN and the folded reverse loop.

Used by ``pipeline/models/diffrec.py`` (and so by T-DiffRec and the latent variants, which share
its denoiser) only while the switch of ``pipeline/models/fast`` is on; the model file holds the
readable computation these replace, and ``tests/test_fast_paths.py`` checks that both agree. What
each trick does:

* **oneDNN products** (``linear.py``): every dense product of the denoiser, forward and backward,
  through oneDNN's float32 kernels instead of torch's default (MKL), which on the project's AMD
  CPU run at about half oneDNN's rate. Same strict float32; another rounding.
* **First layer without the data row's gradient** (:class:`FirstLayer`): ``Linear`` over
  ``[x, emb]`` as one autograd function. When ``x`` needs no gradient (DiffRec: x is the noised
  data row) autograd would still form the gradient of the whole concatenated input, batch x
  (items + emb), as costly as the layer itself, because ``emb`` needs one; here only the ``emb``
  columns are computed. When ``x`` needs one (L-DiffRec: x is the encoder's latent) the whole
  input gradient is computed.
* **Folded inference** (:func:`folded_scores`): ``scores`` runs the T reverse steps exactly as the
  reference loop, but algebraically folded. The posterior mean is linear in x_t and the
  denoiser's first and last layers are linear, so x_t never has to be materialised in item space:
  we keep z_t = W_in x_t (first-layer width), and a step's update c2 z + c1 W_in W_out h is one
  (h0 x h0) product added to z. The last step (t = 0) has posterior coefficient c2 = 0, so the
  result is that step's prediction, projected to items once. About one sixth of the reference
  loop's arithmetic at ML-1M's size. L-DiffRec and LT-DiffRec fold their reverse loop the same
  way on the encoders' latent rows (``LDiffRec.scores``): there the first layer's input is the
  latent (300 wide at ML-1M's setting), so folding saves the step's output product, half the
  loop's arithmetic.
* **Operands made once per set of weights** (:func:`inference_plan`): the folded weights, packed
  into oneDNN's layout (``linear.pack``), are made at an evaluation pass's first chunk and kept
  for its chunks (:func:`scoring_pass`, the model's ``scoring_pass``); outside a pass, kept while
  the denoiser's weights stay bit for bit the same and remade after any change.
* **Sparse first projection** (:func:`sparse_rows_matmul`): the unnoised start row (sampling
  steps 0) is mostly zeros, so W_in x sums only the weight rows of its nonzero entries.
* **tanh** (:func:`fast_tanh_`): NumPy's SIMD float32 tanh in place, several times torch's CPU
  rate and as accurate (within 1 ulp); inside the folded loop the hidden layers' tanh runs in
  oneDNN's product (``linear.linear_tanh``).

Not here: the folded inference applies to the DiffRec family without row normalisation
(``norm``) and with a DDPM posterior; otherwise ``folded_scores`` returns None and the model runs
its reference loop (with the fast denoiser).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.diffusion import GaussianDiffusion
from pipeline.models.fast.linear import Linear, linear, linear_add, linear_tanh, pack
from pipeline.models.layers import timestep_embedding


# ------------------------------------------------------------------------------ kernels
def fast_tanh_(x: torch.Tensor) -> torch.Tensor:
    """In-place tanh; on the CPU through NumPy's SIMD kernel, several times faster than torch's
    there and as accurate (within 1 ulp)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous():
        np.tanh(x.numpy(), out=x.numpy())
        return x
    return x.tanh_()


def sparse_rows_matmul(rows: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    """``rows @ weight_t`` for sparse (mostly zero) dense rows, summing only the nonzero
    entries' weight rows (an embedding bag)."""
    r, c = rows.nonzero(as_tuple=True)
    offsets = torch.searchsorted(r, torch.arange(rows.shape[0], device=rows.device))
    return F.embedding_bag(c, weight_t, offsets, mode="sum", per_sample_weights=rows[r, c])


class FirstLayer(torch.autograd.Function):
    """The denoiser's first layer, ``Linear`` over ``[x, emb]``, skipping the gradient of ``x``
    when ``x`` needs none (see the module docstring). Products through ``linear`` (oneDNN)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, emb: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, emb], dim=-1)
        ctx.save_for_backward(h, weight)
        ctx.n_x = x.shape[1]
        return linear(h, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, weight = ctx.saved_tensors
        n_x = ctx.n_x
        grad_x = grad_emb = None
        if ctx.needs_input_grad[0]:
            grad_h = linear(grad, weight.t())
            grad_x, grad_emb = grad_h[:, :n_x], grad_h[:, n_x:]
        elif ctx.needs_input_grad[1]:
            grad_emb = grad.mm(weight[:, n_x:])  # (batch, emb): tiny; a strided slice slows oneDNN
        grad_weight = linear(grad.t(), h.t()) if ctx.needs_input_grad[2] else None
        grad_bias = grad.sum(0) if ctx.needs_input_grad[3] else None
        return grad_x, grad_emb, grad_weight, grad_bias


def mlp(x: torch.Tensor, emb: torch.Tensor, in_layers: nn.ModuleList, out_layers: nn.ModuleList) -> torch.Tensor:
    """The denoiser's layers after its input is prepared (``MLPDenoiser.forward``): tanh(Linear)
    over [x, emb], then through the other layers, tanh between them; with autograd."""
    first = in_layers[0]
    h = torch.tanh(FirstLayer.apply(x, emb, first.weight, first.bias))
    for layer in in_layers[1:]:
        h = torch.tanh(Linear.apply(h, layer.weight, layer.bias))
    for i, layer in enumerate(out_layers):
        h = Linear.apply(h, layer.weight, layer.bias)
        if i != len(out_layers) - 1:
            h = torch.tanh(h)
    return h


# ------------------------------------------------------------------------------ folded inference
@dataclass
class _Step:
    """One reverse step of the folded inference: y <- [y +] h(scale * y + pre_bias) weight^T."""

    pre_bias: torch.Tensor  # (h0,) added to scale * y: time term and the folded output bias
    scale: float
    weight: torch.Tensor  # (h0, h0) W_in W_out times the step's coefficient, packed
    accumulate: bool  # False where c2 = 0: the step's result replaces y


@dataclass
class _InferencePlan:
    """The eval-mode operands of :func:`folded_scores` (:func:`_make_plan`)."""

    w_in_t: torch.Tensor  # (items, h0) first layer, for the sparse first projection
    steps: list[_Step]  # t = T-1 .. 1
    hidden: list[tuple[torch.Tensor, torch.Tensor]]  # hidden layers (packed weight, bias)
    last_pre_bias: torch.Tensor
    last_scale: float
    last_c1: float
    w_out: torch.Tensor  # (items, h_last) packed
    out_bias: torch.Tensor  # b_out * c1 of the last step


# denoiser -> (its weights when the plan was made, the plan or None). Weak keys: a denoiser's
# operands go with it; a copy or pickle of a model has none (oneDNN's packed weights cannot be
# copied) and makes its own when it scores.
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# denoiser -> the plan of the scoring pass in progress (:func:`scoring_pass`; _UNMADE before its
# first chunk; the plan may be None: the folding does not apply)
_PASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_UNMADE, _NO_PASS = object(), object()


@contextlib.contextmanager
def scoring_pass(denoiser: nn.Module) -> Iterator[None]:
    """One evaluation pass, over weights that do not change until it ends: the folded operands
    are made at its first chunk and used for every chunk without comparing the weights to those
    they were made from (outside a pass, every call compares them: at Amazon-book's 190 M
    parameters that reads 1.5 GB, 0.14 s, a chunk), and freed at its end, with no copy of the
    weights kept."""
    _PLANS.pop(denoiser, None)
    _PASSES[denoiser] = _UNMADE
    try:
        yield
    finally:
        _PASSES.pop(denoiser, None)


def _same_values(saved: list[torch.Tensor], current: list[torch.Tensor]) -> bool:
    """Whether ``current`` are bit for bit the tensors ``saved`` (same shapes, dtypes, devices)."""
    return len(saved) == len(current) and all(
        a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
        for a, b in zip(saved, current)
    )


@torch.no_grad()
def folded_scores(denoiser: nn.Module, diffusion: GaussianDiffusion, rows: torch.Tensor, sampling_steps: int,
                  sparse_rows: bool = True) -> torch.Tensor | None:
    """``diffusion.reverse(denoiser, rows, sampling_steps)`` folded (see the module docstring);
    None where it does not apply (training mode, row normalisation, not a DDPM posterior).
    ``sparse_rows``: the rows are mostly zeros (DiffRec's interaction rows; L-DiffRec's latent
    rows are dense), so the unnoised start's first projection sums only their nonzero entries."""
    if denoiser.norm or denoiser.training:
        return None
    plan = inference_plan(denoiser, diffusion, rows.shape[0])
    if plan is None:  # not a DDPM posterior (there alpha-bar before t = 0 is 1, so c2 = 0)
        return None
    x0 = diffusion.start_point(rows, sampling_steps)
    if sampling_steps == 0 and sparse_rows:
        y = sparse_rows_matmul(x0, plan.w_in_t)
    else:  # through oneDNN: with MKL's AVX2 kernels this product's bits depended on the thread count
        y = linear(x0, plan.w_in_t.T)
    for step in plan.steps:
        h = _hidden(torch.add(step.pre_bias, y, alpha=step.scale), plan.hidden)
        y = linear_add(h, step.weight, y) if step.accumulate else linear(h, step.weight)
    # last step (t = 0): c2 = 0, so the result is c1 x0_pred, the denoiser's output
    h = _hidden(torch.add(plan.last_pre_bias, y, alpha=plan.last_scale), plan.hidden)
    return linear(h.mul_(plan.last_c1), plan.w_out, plan.out_bias)


def _hidden(first: torch.Tensor, hidden_layers) -> torch.Tensor:
    """The denoiser's hidden activations from its first layer's pre-activation (in place)."""
    h = fast_tanh_(first)
    for weight, bias in hidden_layers:
        h = linear_tanh(h, weight, bias)
    return h


@torch.no_grad()
def inference_plan(denoiser: nn.Module, diffusion: GaussianDiffusion, rows: int) -> _InferencePlan | None:
    """The eval-mode operands of :func:`folded_scores`: within :func:`scoring_pass` made at its
    first chunk and kept until it ends; otherwise made once and reused while the denoiser's
    weights stay bit for bit those they were made from (an optimizer step or ``load_state_dict``
    changes the weights; fused AdamW leaves the tensors' version counters alone, so the check
    compares values)."""
    in_pass = _PASSES.get(denoiser, _NO_PASS)
    if in_pass is not _NO_PASS:  # within scoring_pass: the weights stay as they are until it ends
        if in_pass is _UNMADE:
            in_pass = _PASSES[denoiser] = _make_plan(denoiser, diffusion, rows)
        return in_pass
    weights = list(denoiser.parameters())
    cached = _PLANS.get(denoiser)
    if cached is not None and _same_values(cached[0], weights):
        return cached[1]
    _PLANS.pop(denoiser, None)  # frees the old operands before the new ones are made (peak memory)
    plan = _make_plan(denoiser, diffusion, rows)
    _PLANS[denoiser] = ([w.detach().clone() for w in weights], plan)
    return plan


def _make_plan(den: nn.Module, diffusion: GaussianDiffusion, rows: int) -> _InferencePlan | None:
    """Fold the reverse loop (see the module docstring) into per-step operands.

    x_t = a x0 + W_out H + coef_fold b_out for some a and H. Its first-layer image W_in x_t,
    less the bias part coef_fold W_in b_out (added to the step's time term W_emb emb(t) + b_in
    instead of to every row), is kept as scale * y: a step's update c2 z + c1 W_in W_out h is
    then one product added to y (``linear_add``), with c1 and scale (the product of the c2 so far) in
    the step's weight. Weights are packed for oneDNN (``pack``; values unchanged)."""
    first, last = den.in_layers[0], den.out_layers[-1]
    n_items = first.in_features - den.emb_size
    w_in, w_emb = first.weight[:, :n_items], first.weight[:, n_items:]
    coefficients = []
    for t, c1, c2 in diffusion.reverse_coefficients():
        t_vec = torch.full((1,), t, dtype=torch.long, device=w_in.device)
        time_term = (den.emb_layer(timestep_embedding(t_vec, den.emb_size)) @ w_emb.T + first.bias)[0]
        coefficients.append((time_term, float(np.float32(c1)), float(np.float32(c2))))  # float32, as the reference
    *earlier, (last_term, last_c1, last_c2) = coefficients
    if last_c2 != 0.0:
        return None
    fold, fold_bias = linear(w_in, last.weight.T), w_in @ last.bias
    steps = []
    scale, coef_fold = 1.0, 0.0
    for time_term, c1, c2 in earlier:
        pre_bias, pre_scale = time_term + coef_fold * fold_bias, scale
        if c2 == 0.0:  # (noise_scale 0: every step) the past drops out
            weight, accumulate, scale = fold, False, c1
        else:
            scale *= c2
            weight, accumulate = fold * (c1 / scale), True
        steps.append(_Step(pre_bias, pre_scale, pack(weight, rows), accumulate))
        coef_fold = c2 * coef_fold + c1
    hidden = [(pack(layer.weight, rows), layer.bias) for layer in [*den.in_layers[1:], *den.out_layers[:-1]]]
    return _InferencePlan(
        w_in_t=w_in.T.contiguous(),
        steps=steps,
        hidden=hidden,
        last_pre_bias=last_term + coef_fold * fold_bias,
        last_scale=scale,
        last_c1=last_c1,
        w_out=pack(last.weight, rows),
        out_bias=last.bias * last_c1,
    )
