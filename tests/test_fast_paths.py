"""The speed-ups of pipeline/models/fast against the readable model files: with the switch on and
off, DiffRec's (and so T-DiffRec's and L-DiffRec's) training loss, gradients and scores agree up
to float32 rounding, the ranking of a planted example is the same, and each trick equals the
plain computation it replaces; TV-Diff's pair loss agrees; HDRM's loss, gradients and scores
agree, bit for bit with its user batches (the committed runs' setting).

Tolerances. float32 rounds each operation to a relative 2^-24 (half of ``EPS``). A dot product of
length n computed in another order (oneDNN's blocking instead of MKL's, or the folded loop's
reassociated products) differs by at most n * EPS * sum|a_i b_i| and in practice, the rounding
errors being independent, by about sqrt(n) * EPS times that sum (Higham and Mary, "A new
approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 2019); tanh is
1-Lipschitz and the posterior mean a convex-like combination (c1 + c2 <= about 1), so neither
amplifies it. Hence each path is held to ``bound(n, scale) = 2 sqrt(n) EPS scale`` of the float64
result, n the longest dot product of the model and ``scale`` the largest magnitude of the
quantity compared, and the two paths to twice that. Nothing is fitted to a machine's rounding:
the same bounds hold with oneDNN and ATen restricted to AVX2 kernels
(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2), where both paths round differently.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.models import fast
from pipeline.models.diffrec import DiffRec, DiffRecConfig
from pipeline.models.fast import diffrec as F
from pipeline.models.ldiffrec import LDiffRec, LDiffRecConfig

EPS = torch.finfo(torch.float32).eps


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def config(**overrides) -> DiffRecConfig:
    values = dict(batch_size=16, epochs=10, dims=[8, 16])  # the rest: DiffRecConfig's defaults (ML-1M clean)
    values.update(overrides)
    return DiffRecConfig(**values)


def bound(n: int, scale: float) -> float:
    """The rounding a float32 path may carry (see the module docstring)."""
    return 2 * math.sqrt(n) * EPS * scale


def longest_dot(model: DiffRec, batch: int = 0) -> int:
    """The longest dot product of the denoiser (widest layer input; a weight gradient sums over the batch)."""
    return max([batch] + [layer.in_features for layer in model.denoiser.modules() if isinstance(layer, nn.Linear)])


def trained(cfg: DiffRecConfig, n_users: int = 40, n_items: int = 50) -> DiffRec:
    """A model a few optimizer steps from its initialisation (weights no longer the init's)."""
    torch.manual_seed(0)
    model = DiffRec(cfg, n_users=n_users, n_items=n_items)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rows = (torch.rand(n_users, n_items) < 0.2).float()
    model.train()
    for _ in range(5):
        opt.zero_grad()
        model.loss(rows).backward()
        opt.step()
    return model.eval()


def readable(fn, *args):
    with fast.switched(False):
        return fn(*args)


def float64_scores(model: DiffRec, rows: torch.Tensor) -> torch.Tensor:
    """The readable reverse loop in float64, on a copy of the model's weights."""
    twin = copy.deepcopy(model).double()
    return readable(twin.scores, rows.double())


# --------------------------------------------------------------------------------------------
# the switch


def test_the_switch_is_on_by_default_and_restored():
    assert fast.enabled()
    with fast.switched(False):
        assert not fast.enabled()
        with fast.switched(True):
            assert fast.enabled()
        assert not fast.enabled()
    assert fast.enabled()


def test_switched_off_nothing_of_the_fast_module_runs(monkeypatch):
    """Off, training and scoring are the model file's own code: every entry point of the fast
    module fails if called."""

    def refuse(*args, **kwargs):
        raise AssertionError("fast path called with the switch off")

    for name in ("mlp", "folded_scores", "inference_plan", "fast_tanh_", "sparse_rows_matmul"):
        monkeypatch.setattr(F, name, refuse)
    for cls in (F.FirstLayer, F.Linear):
        monkeypatch.setattr(cls, "apply", refuse)
    torch.manual_seed(0)
    model = DiffRec(config(steps=5), 10, 20)
    rows = (torch.rand(10, 20) < 0.3).float()
    with fast.switched(False):
        model.train()
        model.loss(rows).backward()
        assert model.eval().scores(rows).shape == (10, 20)
    with pytest.raises(AssertionError, match="switch off"):
        model.scores(rows)  # on: the fast module


def test_the_state_dict_is_the_same_with_either_path():
    torch.manual_seed(0)
    on = DiffRec(config(steps=5), 10, 20).state_dict()
    torch.manual_seed(0)
    off = readable(DiffRec, config(steps=5), 10, 20).state_dict()
    assert list(on) == list(off) and all(torch.equal(on[k], off[k]) for k in on)


# --------------------------------------------------------------------------------------------
# scores: folded + oneDNN against the readable loop, both against float64


SCORE_CASES = {
    "ml1m-clean-like": dict(),
    "ml1m-noisy-like": dict(steps=5, noise_scale=0.5, noise_min=0.001, noise_max=0.01),
    "one-layer": dict(dims=[12], steps=5, noise_scale=0.01, noise_min=0.001, noise_max=0.01),
    "noise-scale-0": dict(noise_scale=0.0, steps=10),
    "noise-scale-0-one-layer": dict(dims=[12], noise_scale=0.0, steps=5),
    "no-beta-fix-linear": dict(beta_fixed=False, schedule="linear", steps=6, noise_scale=0.1, noise_min=0.01, noise_max=0.1),
    "odd-emb": dict(emb_size=7, steps=3, noise_scale=0.1, noise_min=0.01, noise_max=0.1),
    "norm (not folded)": dict(norm=True, steps=5, noise_scale=0.1, noise_min=0.01, noise_max=0.1),
}


@pytest.mark.parametrize("overrides", SCORE_CASES.values(), ids=SCORE_CASES.keys())
def test_scores_of_both_paths_agree(overrides):
    model = trained(config(**overrides))
    rows = (torch.rand(32, 50) < 0.2).float()
    quick, plain, exact = model.scores(rows), readable(model.scores, rows), float64_scores(model, rows)
    assert quick.shape == plain.shape == (32, 50) and quick.dtype == plain.dtype == torch.float32
    scale = exact.abs().max().item()
    assert exact.std() > 0.05  # not a degenerate output
    tol = bound(longest_dot(model), scale)
    assert (quick.double() - exact).abs().max().item() <= tol
    assert (plain.double() - exact).abs().max().item() <= tol
    assert (quick - plain).abs().max().item() <= 2 * tol
    # deterministic in eval mode (no dropout, no noise with sampling_steps = 0)
    assert torch.equal(model.scores(rows), quick)
    assert torch.equal(readable(model.scores, rows), plain)


def test_scores_agree_at_ml1m_width():
    """[200, 600] over 1,000 items: long dot products, the bound grows with sqrt(n)."""
    model = trained(config(dims=[200, 600], steps=10), n_users=40, n_items=1000)
    rows = (torch.rand(16, 1000) < 0.05).float()
    exact = float64_scores(model, rows)
    tol = bound(longest_dot(model), exact.abs().max().item())
    assert (model.scores(rows).double() - exact).abs().max().item() <= tol
    assert (readable(model.scores, rows).double() - exact).abs().max().item() <= tol


def test_scores_with_sampling_steps_agree():
    """sampling_steps > 0 noises the start point; with the same RNG state both paths agree."""
    torch.manual_seed(0)
    model = DiffRec(config(steps=5, sampling_steps=3, noise_scale=0.1, noise_min=0.01, noise_max=0.1), 20, 50).eval()
    rows = (torch.rand(16, 50) < 0.2).float()
    torch.manual_seed(11)
    quick = model.scores(rows)
    torch.manual_seed(11)
    plain = readable(model.scores, rows)
    assert (quick - plain).abs().max().item() <= 2 * bound(longest_dot(model), plain.abs().max().item())
    torch.manual_seed(12)
    assert not torch.equal(model.scores(rows), quick)  # the noise matters


def test_the_planted_ranking_is_the_same_exactly():
    """Users of three item blocks: both paths rank the same top 10 items in the same order, and
    the margins are wider than the bound, so this holds on any CPU, not by luck."""
    block, groups = 10, 3
    g = torch.Generator().manual_seed(0)
    rows = torch.zeros(60, block * groups)
    for u in range(60):
        k = u % groups
        rows[u, k * block : (k + 1) * block] = (torch.rand(block, generator=g) < 0.7).float()
    torch.manual_seed(0)
    model = DiffRec(config(dims=[16], emb_size=4, steps=5, noise_scale=0.1, noise_min=0.01, noise_max=0.1, dropout=0.0), 60, 30)
    opt = model.optimizer()
    model.train()
    for _ in range(300):
        opt.zero_grad()
        model.loss(rows).backward()
        opt.step()
    model.eval()
    quick, plain = model.scores(rows), readable(model.scores, rows)
    top = plain.topk(11, dim=1)
    gaps = (top.values[:, :-1] - top.values[:, 1:]).min().item()  # between any two neighbours of the top 11
    assert gaps > 2 * 2 * bound(longest_dot(model), plain.abs().max().item())  # wider than both paths' rounding
    assert torch.equal(quick.topk(10, dim=1).indices, top.indices[:, :10])
    # and the model learnt the blocks: each user's top 10 is its own block
    blocks = torch.arange(60) % groups
    assert ((top.indices[:, :10] // block) == blocks[:, None]).float().mean() > 0.95


# --------------------------------------------------------------------------------------------
# training: one batch's loss and gradients


def loss_and_grads(model: nn.Module, rows: torch.Tensor, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of one batch; the seed fixes the timesteps, noise and dropout mask."""
    model = copy.deepcopy(model).train()  # the importance-sampling history is recorded on a copy
    torch.manual_seed(seed)
    loss = model.loss(rows)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("overrides", [dict(), dict(dims=[200, 600], steps=10), dict(norm=True, noise_scale=0.1)],
                         ids=["small", "ml1m-width", "norm"])
def test_loss_and_gradients_of_both_paths_agree(overrides):
    n_items = 600 if overrides.get("dims") == [200, 600] else 50
    torch.manual_seed(0)
    model = DiffRec(config(**overrides), 64, n_items)
    rows = (torch.rand(64, n_items) < 0.2).float()
    quick_loss, quick = loss_and_grads(model, rows, seed=3)
    plain_loss, plain = readable(loss_and_grads, model, rows, 3)
    n = longest_dot(model, batch=64)
    assert abs(quick_loss.item() - plain_loss.item()) <= 2 * bound(n, plain_loss.item())
    assert set(quick) == set(plain) == {n for n, _ in model.named_parameters()}
    for name in plain:
        scale = plain[name].abs().max().item()
        assert (quick[name] - plain[name]).abs().max().item() <= 2 * bound(n, scale), name


def ldiffrec_config(**overrides) -> LDiffRecConfig:
    values = dict(lr_ae=1e-3, lr_denoiser=1e-3, weight_decay=0.0, batch_size=16, epochs=10, n_clusters=2, latent_size=20,
                  ae_dropout=0.0, emb_size=10, dims=[30], denoiser_dropout=0.5, mean_type="x0", schedule="linear-var",
                  steps=10, noise_scale=0.1, noise_min=0.001, noise_max=0.02, max_beta=0.999, beta_fixed=False, reweight=True,
                  sampling_steps=0, history_num_per_term=2, uniform_prob=0.001, lamda=0.03, lamda_floor=0.005,
                  lamda_anneal_epochs=5, kl_weight_max=0.3, kl_anneal_batches=3, temporal=False, w_min=0.1, w_max=1.0)
    values.update(overrides)
    return LDiffRecConfig(**values)


def test_ldiffrec_loss_and_gradients_of_both_paths_agree():
    """L-DiffRec shares the denoiser; there its input (the latent) needs a gradient too. Its
    encoders take the sparse first layer: without encoder dropout both paths see the same input
    and draw the same noise."""
    cfg = ldiffrec_config()
    torch.manual_seed(0)
    model = LDiffRec(cfg, 64, 80, clusters=np.arange(80) % 2)
    rows = (torch.rand(64, 80) < 0.2).float()
    quick_loss, quick = loss_and_grads(model, rows, seed=3)
    plain_loss, plain = readable(loss_and_grads, model, rows, 3)
    n = max(64, 80)
    assert abs(quick_loss.item() - plain_loss.item()) <= 2 * bound(n, abs(plain_loss.item()))
    assert set(quick) == set(plain)
    for name in plain:
        assert (quick[name] - plain[name]).abs().max().item() <= 2 * bound(n, plain[name].abs().max().item()), name
    model.eval()
    scores = model.scores(rows)
    assert (scores - readable(model.scores, rows)).abs().max().item() <= 2 * bound(n, scores.abs().max().item())


LDIFFREC_SCORE_CASES = {
    "ml1m-clean-like": dict(steps=40, noise_scale=0.005, noise_min=0.005, noise_max=0.02),
    "ml1m-noisy-like": dict(steps=100, noise_scale=0.005, noise_min=0.005, noise_max=0.02),
    "noise-scale-0": dict(steps=5, noise_scale=0.0, reweight=False),
}


@pytest.mark.parametrize("overrides", LDIFFREC_SCORE_CASES.values(), ids=LDIFFREC_SCORE_CASES.keys())
def test_ldiffrec_folded_scores_agree_with_the_readable_loop(overrides, monkeypatch):
    """L-DiffRec scores through DiffRec's folded reverse loop (on the encoders' dense latent
    rows); a trained model, the released step counts. Both paths against float64, with the
    longest dot product of the model (the decoder's, over the latent, or the encoders' over a
    cluster's items)."""
    torch.manual_seed(0)
    n_users, n_items = 48, 90
    model = LDiffRec(ldiffrec_config(**overrides), n_users, n_items, clusters=np.arange(n_items) % 2)
    rows = (torch.rand(n_users, n_items) < 0.2).float()
    optimizer = model.optimizer()
    for _ in range(5):
        optimizer.zero_grad()
        model.loss(rows).backward()
        optimizer.step()
    model.eval()
    folded = []
    real = F.folded_scores
    monkeypatch.setattr(F, "folded_scores", lambda *a, **k: folded.append(k) or real(*a, **k))
    quick = model.scores(rows)
    assert folded == [{"sparse_rows": False}]
    plain = readable(model.scores, rows)
    assert len(folded) == 1  # switched off: the authors' loop
    twin = copy.deepcopy(model).double()
    exact = readable(twin.scores, rows.double())
    assert exact.std() > 0.05
    n = max(n_items, model.config.latent_size + model.config.emb_size, *model.config.dims)
    tol = bound(n, exact.abs().max().item())
    assert (quick.double() - exact).abs().max().item() <= tol
    assert (plain.double() - exact).abs().max().item() <= tol
    assert torch.equal(model.scores(rows), quick)


# --------------------------------------------------------------------------------------------
# each trick against the plain computation it replaces


def test_first_layer_equals_linear_when_x_needs_a_gradient():
    """L-DiffRec's case (x = the encoder's latent): nn.Linear over [x, emb] with every gradient,
    up to float rounding (oneDNN's products instead of MKL's)."""
    torch.manual_seed(0)
    x, emb = torch.randn(16, 300, requires_grad=True), torch.randn(16, 4, requires_grad=True)
    layer = nn.Linear(304, 120)
    grad = torch.randn(16, 120)
    layer(torch.cat([x, emb], dim=-1)).backward(grad)
    expected = [t.grad.clone() for t in (x, emb, layer.weight, layer.bias)]
    for t in (x, emb, layer.weight, layer.bias):
        t.grad = None
    out = F.FirstLayer.apply(x, emb, layer.weight, layer.bias)
    torch.testing.assert_close(out, layer(torch.cat([x, emb], dim=-1)), rtol=1e-5, atol=1e-5)
    out.backward(grad)
    for got, want in zip((x.grad, emb.grad, layer.weight.grad, layer.bias.grad), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_first_layer_skips_the_gradient_of_x_and_keeps_the_others():
    """DiffRec's case (x = the noised data row, no gradient): weight, bias and emb gradients
    those of nn.Linear up to float rounding, none for x."""
    torch.manual_seed(0)
    x, emb = torch.randn(16, 300), torch.randn(16, 4, requires_grad=True)
    layer = nn.Linear(304, 120)
    grad = torch.randn(16, 120)
    layer(torch.cat([x, emb], dim=-1)).backward(grad)
    expected = [t.grad.clone() for t in (emb, layer.weight, layer.bias)]
    for t in (emb, layer.weight, layer.bias):
        t.grad = None
    F.FirstLayer.apply(x, emb, layer.weight, layer.bias).backward(grad)
    assert x.grad is None
    for got, want in zip((emb.grad, layer.weight.grad, layer.bias.grad), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_fast_tanh_is_in_place_and_within_one_ulp():
    x = torch.linspace(-12, 12, 10_001)
    want = torch.tanh(x.double()).float()
    got = F.fast_tanh_(x.clone())
    ulp = torch.finfo(torch.float32).eps * want.abs().clamp(min=torch.finfo(torch.float32).tiny)
    assert ((got - want).abs() <= ulp).all()
    y = torch.randn(6, 8)
    assert F.fast_tanh_(y) is y
    strided = torch.randn(8, 6).T  # not contiguous: torch's kernel
    assert torch.equal(F.fast_tanh_(strided.clone()), torch.tanh(strided))


def test_sparse_rows_matmul_equals_the_dense_product():
    torch.manual_seed(0)
    rows = (torch.rand(9, 40) < 0.2).float() * torch.rand(9, 40)  # weighted, like T-DiffRec's rows
    rows[3] = 0.0  # a user with no train item
    weight_t = torch.randn(40, 7)
    torch.testing.assert_close(F.sparse_rows_matmul(rows, weight_t), rows @ weight_t, rtol=1e-5, atol=1e-6)
    assert torch.equal(F.sparse_rows_matmul(rows, weight_t)[3], torch.zeros(7))


# --------------------------------------------------------------------------------------------
# the folded operands' cache


def small_model() -> DiffRec:
    torch.manual_seed(0)
    return DiffRec(config(steps=5, noise_scale=0.1, noise_min=0.01, noise_max=0.1), n_users=20, n_items=30)


def test_folded_scores_follow_parameter_updates():
    """Scores after a fused AdamW step (which leaves the tensors' version counters alone) and
    after loading a state use the new weights."""
    model = small_model()
    rows = (torch.rand(20, 30) < 0.3).float()
    model.eval()
    before = model.scores(rows)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = model.optimizer()  # fused AdamW, as in training
    model.train()
    opt.zero_grad()
    model.loss(rows).backward()
    opt.step()
    model.eval()
    after = model.scores(rows)
    assert not torch.allclose(after, before)
    plain = readable(model.scores, rows)
    assert (after - plain).abs().max().item() <= 2 * bound(longest_dot(model), plain.abs().max().item())
    model.load_state_dict(state)
    assert torch.equal(model.scores(rows), before)


def test_inference_plan_is_reused_until_any_weight_changes():
    """The folded operands are made once per set of weights: kept while every parameter is bit for
    bit unchanged, remade after any change, even one that leaves version counters alone."""
    model = small_model().eval()
    rows = (torch.rand(20, 30) < 0.3).float()
    first = F.inference_plan(model.denoiser, model.diffusion, 20)
    assert not any(t.requires_grad for t in (first.w_in_t, first.last_pre_bias, first.out_bias, *[s.pre_bias for s in first.steps]))
    assert F.inference_plan(model.denoiser, model.diffusion, 7) is first
    before = model.scores(rows)
    assert F.inference_plan(model.denoiser, model.diffusion, 20) is first
    weight = model.denoiser.out_layers[-1].weight
    saved = weight.detach().clone()
    version = weight._version
    weight.data.view(-1)[0] += 1.0  # through .data: the version counter stays
    assert weight._version == version
    assert F.inference_plan(model.denoiser, model.diffusion, 20) is not first
    plain = readable(model.scores, rows)
    assert (model.scores(rows) - plain).abs().max().item() <= 2 * bound(longest_dot(model), plain.abs().max().item())
    weight.data.copy_(saved)
    assert torch.equal(model.scores(rows), before)


def test_a_scoring_pass_makes_the_plan_once_and_frees_it(monkeypatch):
    """Within ``scoring_pass`` the operands are made at the first chunk, used for every chunk
    without comparing weights, and dropped at its end, with no copy of the weights; the scores are
    bit for bit those outside a pass, and a pass after a fused AdamW step uses the new weights."""
    model = small_model().eval()
    rows = (torch.rand(20, 30) < 0.3).float()
    outside = model.scores(rows)
    assert model.denoiser in F._PLANS
    made, compared = [], []
    real_make, real_same = F._make_plan, F._same_values
    monkeypatch.setattr(F, "_make_plan", lambda *a: made.append(1) or real_make(*a))
    monkeypatch.setattr(F, "_same_values", lambda *a: compared.append(1) or real_same(*a))
    with model.scoring_pass():
        assert model.denoiser not in F._PLANS  # what was kept before the pass is dropped
        chunks = [model.scores(rows[:7]), model.scores(rows[7:])]
    assert (len(made), len(compared)) == (1, 0)
    assert torch.equal(torch.cat(chunks), outside)
    assert model.denoiser not in F._PLANS and model.denoiser not in F._PASSES
    opt = model.optimizer()  # fused AdamW: the version counters stay
    model.train()
    opt.zero_grad()
    model.loss(rows).backward()
    opt.step()
    model.eval()
    with model.scoring_pass():
        after = model.scores(rows)
    assert len(made) == 2 and not torch.equal(after, outside)
    assert torch.equal(after, model.scores(rows))  # outside a pass: the same operands made again
    with fast.switched(False), model.scoring_pass():  # switched off: nothing to prepare
        model.scores(rows)
    assert len(made) == 3


def test_a_model_that_has_scored_can_be_copied_and_pickled():
    """The cached inference operands (oneDNN-packed, not copyable) stay out of copies."""
    model = small_model().eval()
    rows = (torch.rand(20, 30) < 0.3).float()
    before = model.scores(rows)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin.denoiser not in F._PLANS
        assert torch.equal(twin.scores(rows), before)
    assert model.denoiser in F._PLANS  # the original keeps its own


# --------------------------------------------------------------------------------------------
# the switch from params.yaml


def test_training_fast_in_params_sets_the_switch():
    """params.yaml's training.fast: true (the committed results' setting); build_model applies
    it, and the trainer applies its TrainingConfig's; a missing key means on."""
    from pipeline.config import load_params, training_config
    from pipeline.training.fitting import build_model

    params = load_params("params.yaml")
    assert params["training"]["fast"] is True and training_config(params).fast is True
    try:
        params["training"]["fast"] = False
        build_model(params, "diffrec", "ml-1m_clean", 1, 10, 20)
        assert not fast.enabled()
        del params["training"]["fast"]
        build_model(params, "diffrec", "ml-1m_clean", 1, 10, 20)
        assert fast.enabled()
    finally:
        fast.set_enabled(True)
        torch.set_num_threads(1)  # build_model set the run's threads


def test_the_fingerprint_names_the_switch_only_when_off(tmp_path):
    """A run with the default speed-ups keeps the fingerprint (and model.pt bytes) it had before the
    switch existed; one without them is fingerprinted apart (its checkpoints are not resumed by
    the other, whose float rounding differs)."""
    import dataclasses

    from pipeline.config import EvaluationConfig, TrainingConfig
    from pipeline.data.dataset import InteractionData
    from pipeline.training.checkpoint import fingerprint
    from pipeline.training.trainer import train_run
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    m = lambda p: sp.csr_matrix((rng.random((12, 20)) < p).astype(np.float32))  # noqa: E731
    data = InteractionData(12, 20, m(0.3), m(0.1), m(0.1), m(0.3))
    on = TrainingConfig(device="cpu", threads=1, eval_every=1, patience=5, select_metric="recall@10", checkpoint_every=1)
    evaluation = EvaluationConfig(topk=(10,), batch_size=8)
    identity = {"model": "diffrec", "split": "x", "seed": 1}
    prints = {}
    for training in (on, dataclasses.replace(on, fast=False)):
        torch.manual_seed(0)
        model = DiffRec(config(steps=5, epochs=1, noise_scale=0.1, noise_min=0.01, noise_max=0.1), 12, 20)
        out = tmp_path / str(training.fast)
        train_run(model, data, training, evaluation, out, identity, 1, tag="t", timing_path=out / "timing.json")
        prints[training.fast] = torch.load(out / "model.pt", weights_only=True)["fingerprint"]
        assert fast.enabled() == training.fast
    fast.set_enabled(True)
    old = {k: v for k, v in dataclasses.asdict(on).items() if k != "fast"}
    assert prints[True] == fingerprint({**identity, "training": old, "evaluation": dataclasses.asdict(evaluation)})
    assert prints[False] != prints[True]


# --------------------------------------------------------------------------------------------
# TV-Diff's pair loss (pipeline/models/fast/tvdiff.py): the squared error through the Gram matrix


def tvdiff_pair_batch(ar_gsp: bool, dtype: torch.dtype):
    """A TV-Diff in training mode (dropout and noise on) with a pair batch of 48 rows of 30 users'
    train rows over 70 items, in ``dtype``."""
    import scipy.sparse as sp

    from pipeline.data.dataset import InteractionData, dense_rows
    from pipeline.models.tvdiff import TVDiff, TVDiffConfig

    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((30, 70)) < 0.15).astype(np.float32))
    empty = sp.csr_matrix((30, 70), dtype=np.float32)
    data = InteractionData(30, 70, train, empty, empty, train)
    cfg = TVDiffConfig(batch_size=48, dims=[24, 16], emb_size=8, steps=5, noise_scale=0.5, noise_min=0.01, noise_max=0.1,
                       temp=2.0, ar_gsp=ar_gsp, gamma=0.3)
    torch.manual_seed(0)
    model = TVDiff(cfg, 30, 70, data=data).to(dtype).train()
    torch.manual_seed(1)
    rows, users, positives = next(iter(model.batches(data.train)))
    return model, rows.to(dtype), users, positives


def pair_loss_and_grads(model, rows, users, positives):
    model.zero_grad()
    torch.manual_seed(5)  # the same timesteps, noise, dropout masks and negatives on both paths
    loss = model.loss(rows, users, positives)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("ar_gsp", [False, True], ids=["uniform", "ar-gsp"])
def test_tvdiff_pair_loss_of_both_paths_is_the_same_function(ar_gsp):
    """In float64 (rounding out of the way) the Gram-matrix loss and its gradients equal the
    readable loss's: the same draws, the same algebra."""
    model, rows, users, positives = tvdiff_pair_batch(ar_gsp, torch.float64)
    quick_loss, quick = pair_loss_and_grads(model, rows, users, positives)
    plain_loss, plain = readable(pair_loss_and_grads, model, rows, users, positives)
    assert quick_loss.item() == pytest.approx(plain_loss.item(), rel=1e-12)
    assert set(quick) == set(plain) and len(plain) == len(list(model.parameters()))
    for name in plain:
        torch.testing.assert_close(quick[name], plain[name], rtol=1e-10, atol=1e-12 * plain[name].abs().max().item())


def test_tvdiff_pair_loss_of_both_paths_agree_in_float32():
    """In float32: the expanded squared error sum_i x^_i^2 - 2 x_0i x^_i + x_0i^2 adds terms up to
    the size of sum_i x^_i^2 + x_0i^2 over a sum of |I| d^2 products, so the loss is held to
    bound(|I| d, that size / |I|) twice over; the gradients to bound(|I| d, their largest entry)."""
    model, rows, users, positives = tvdiff_pair_batch(False, torch.float32)
    quick_loss, quick = pair_loss_and_grads(model, rows, users, positives)
    plain_loss, plain = readable(pair_loss_and_grads, model, rows, users, positives)
    with torch.no_grad():
        out = model.denoiser(rows, torch.zeros(len(rows), dtype=torch.long))
    n = rows.shape[1] * model.config.dims[0]
    size = ((out ** 2).sum(1) + (rows ** 2).sum(1)).max().item() / rows.shape[1] + abs(plain_loss.item())
    assert abs(quick_loss.item() - plain_loss.item()) <= 2 * bound(n, size)
    for name in plain:
        assert (quick[name] - plain[name]).abs().max().item() <= 2 * bound(n, plain[name].abs().max().item()), name


# --------------------------------------------------------------------------------------------
# HDRM's denoisers (pipeline/models/fast/hdrm.py): activations in place everywhere; on the
# triple batches, a first layer without the input gradient


def hdrm_setup(sampling: str, act: str = "relu", size: int = 16, dims=(8, 24), n_users: int = 40, n_items: int = 60,
               batch_size: int = 10**6, **overrides):
    """An HDRM on random stage-1 points (``size`` coordinates) and the first training batch of its
    ``sampling`` (by default the whole epoch in one batch); a short diffusion (T 10) with more
    noise than ML-1M's unless ``overrides`` say otherwise."""
    import scipy.sparse as sp

    from pipeline.models.hdrm import HDRM, HDRMConfig
    from pipeline.models.lorentz import expmap0

    g = torch.Generator().manual_seed(0)
    users = expmap0(torch.randn(n_users, size, generator=g) * 0.5)
    items = expmap0(torch.randn(n_items, size, generator=g) * 0.5)
    train = sp.csr_matrix((np.random.default_rng(0).random((n_users, n_items)) < 0.2).astype(np.float32))
    values = dict(steps=10, noise_scale=0.1, noise_min=0.01, noise_max=0.1)
    values.update(overrides)
    cfg = HDRMConfig(dims=list(dims), act=act, sampling=sampling, batch_size=batch_size, **values)
    torch.manual_seed(0)
    model = HDRM(cfg, n_users, n_items, hyperbolic=(users, items))
    torch.manual_seed(1)
    return model, next(iter(model.batches(train))), train


def hdrm_loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of one batch; the seed fixes the timesteps, noise and dropout masks."""
    model.train().zero_grad()
    torch.manual_seed(5)
    loss = model.loss(*batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def hdrm_scores(model, train) -> torch.Tensor:
    from pipeline.data.dataset import dense_rows

    users = np.arange(train.shape[0])
    torch.manual_seed(7)  # inference starts from q_sample(..., eps)
    return model.eval().scores(dense_rows(train, users), users)


def hdrm_longest_dot(model, batch_rows: int) -> int:
    return max([batch_rows] + [m.in_features for m in model.modules() if isinstance(m, nn.Linear)])


def test_hdrm_switched_off_nothing_of_the_fast_module_runs(monkeypatch):
    from pipeline.models.fast import hdrm as H

    def refuse(*args, **kwargs):
        raise AssertionError("fast path called with the switch off")

    monkeypatch.setattr(H, "denoise", refuse)
    monkeypatch.setattr(H.FirstLayer, "apply", refuse)
    for sampling in ("users", "triples"):
        model, batch, train = hdrm_setup(sampling)
        with fast.switched(False):
            hdrm_loss_and_grads(model, batch)
            assert hdrm_scores(model, train).shape == train.shape
        with pytest.raises(AssertionError, match="switch off"):
            hdrm_loss_and_grads(model, batch)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
def test_hdrm_user_batches_are_the_readable_arithmetic_bit_for_bit(act):
    """With the user batches (the committed runs' ``sampling: users``) the fast path only runs the
    activations in place: the same kernels on the same values, so loss, gradients and scores are
    the readable path's bit for bit, on any CPU."""
    model, batch, train = hdrm_setup("users", act=act)
    quick_loss, quick = hdrm_loss_and_grads(model, batch)
    plain_loss, plain = readable(hdrm_loss_and_grads, model, batch)
    assert torch.equal(quick_loss, plain_loss)
    assert set(quick) == set(plain) == {n for n, _ in model.named_parameters()}
    assert all(torch.equal(quick[n], plain[n]) for n in plain)
    assert torch.equal(hdrm_scores(model, train), readable(hdrm_scores, model, train))


@pytest.mark.parametrize("shape", [dict(), dict(size=64, dims=(200, 600), n_items=100), dict(size=512, dims=(200, 1100), n_items=100)],
                         ids=["small", "committed-width", "released-width"])
def test_hdrm_triple_batches_of_both_paths_agree(shape):
    """With the triple batches the first layer forms only the time embedding's input gradient:
    the forward pass is the same computation (same loss bit for bit), the gradients agree up to
    float32 rounding (only the time embedding's layer's gradients take another product); scoring
    has no gradient, so the scores are the readable ones bit for bit."""
    model, batch, train = hdrm_setup("triples", **shape)
    assert batch[0].shape == (train.nnz, 0)
    quick_loss, quick = hdrm_loss_and_grads(model, batch)
    plain_loss, plain = readable(hdrm_loss_and_grads, model, batch)
    assert torch.equal(quick_loss, plain_loss)
    assert set(quick) == set(plain) == {n for n, _ in model.named_parameters()}
    n = hdrm_longest_dot(model, len(batch[1]))
    for name in plain:
        assert (quick[name] - plain[name]).abs().max().item() <= 2 * bound(n, plain[name].abs().max().item()), name
    assert torch.equal(hdrm_scores(model, train), readable(hdrm_scores, model, train))


@pytest.mark.parametrize("inputs", [140, 192, 200, 256, 600, 1034])
def test_hdrm_bias_after_the_product_is_linear_bit_for_bit(inputs):
    """fast/hdrm.linear is nn.Linear bit for bit, output and the gradients of the weight, the bias
    and the input, on any CPU: it adds the bias after the product only where this machine's BLAS
    gives addmm's bits for the shape (the inner dimension in one of its blocks: 256 inputs with
    MKL on the Intel machines measured, 192 on an AMD Zen 3), and is nn.Linear elsewhere."""
    from pipeline.models.fast import hdrm as H

    torch.manual_seed(0)
    layer = nn.Linear(inputs, 600)
    x = torch.randn(300, inputs, requires_grad=True)
    grad = torch.randn(300, 600)
    outs = []
    for f in (H.linear, lambda lay, t: lay(t)):
        layer.zero_grad()
        x.grad = None
        out = f(layer, x)
        out.backward(grad)
        outs.append([out.detach(), layer.weight.grad.clone(), layer.bias.grad.clone(), x.grad.clone()])
    assert all(torch.equal(a, b) for a, b in zip(*outs))
    # the probe's answer for this shape is what both orders give on other values
    a, w, b = torch.randn(300, inputs), torch.randn(600, inputs), torch.randn(600)
    assert H.same_bits_with_the_bias_after(a, w) == torch.equal(torch.addmm(b, a, w.t()), torch.mm(a, w.t()).add_(b))


@pytest.mark.parametrize("cond_grad", [False, True], ids=["frozen-inputs", "every-input"])
def test_hdrm_first_layer_equals_linear(cond_grad):
    """nn.Linear over [x, emb, cond]: the same output; the gradients of what needs one up to
    float32 rounding, none for x and cond when they need none (HDRM's case: frozen vectors)."""
    from pipeline.models.fast import hdrm as H

    torch.manual_seed(0)
    x, emb = torch.randn(64, 33), torch.randn(64, 10, requires_grad=True)
    cond = torch.randn(64, 33, requires_grad=cond_grad)
    x.requires_grad_(cond_grad)
    layer = nn.Linear(76, 120)
    grad = torch.randn(64, 120)
    inputs = [t for t in (x, emb, cond, layer.weight, layer.bias) if t.requires_grad]
    out = layer(torch.cat([x, emb, cond], dim=-1))
    out.backward(grad)
    expected = [t.grad.clone() for t in inputs]
    for t in inputs:
        t.grad = None
    got = H.FirstLayer.apply(x, emb, cond, layer.weight, layer.bias)
    assert torch.equal(got, out.detach())
    got.backward(grad)
    if not cond_grad:
        assert x.grad is None and cond.grad is None
    n = max(64, 120)
    for t, want in zip(inputs, expected):
        assert (t.grad - want).abs().max().item() <= 2 * bound(n, want.abs().max().item())


def test_hdrm_three_seeded_steps_with_the_switch_on_are_the_readable_ones():
    """The committed HDRM runs (``sampling: users``, ``training.fast: true``) were trained before
    HDRM had a fast path, i.e. by the readable computation: with the switch on, three seeded
    optimizer steps of the default configuration and the scores after them are that computation's
    bit for bit, so those runs reproduce. (Checked once by hand against the commit before the fast
    path, 89a958c, with the same script: bit for bit, under AVX-512 and AVX2 kernels.)"""
    from pipeline.models.hdrm import HDRMConfig

    cfg = HDRMConfig()
    assert cfg.sampling == "users"
    # the code defaults, but 3 batches of 20 users
    defaults = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)} | dict(batch_size=20)

    def run():
        model, _, train = hdrm_setup(size=64, n_users=60, n_items=100, **defaults)
        assert model.config == dataclasses.replace(cfg, batch_size=20)
        optimizer = model.optimizer()
        torch.manual_seed(2)
        losses = []
        model.train()
        for rows, users, *extra in model.batches(train):
            optimizer.zero_grad()
            loss = model.loss(rows, users, *extra)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        assert len(losses) == 3
        return torch.stack(losses), model.state_dict(), hdrm_scores(model, train)

    quick, plain = run(), readable(run)
    assert torch.equal(quick[0], plain[0]) and torch.equal(quick[2], plain[2])
    assert list(quick[1]) == list(plain[1]) and all(torch.equal(quick[1][k], plain[1][k]) for k in plain[1])


# --------------------------------------------------------------------------------------------
# HGCF (HDRM's stage 1, pipeline/models/fast/hgcf.py): on the released triples, the graph
# products through torch's CSR kernel and the margin loss with its gradient written out


def hgcf_setup(sampling: str = "users", size: int = 16, n_users: int = 30, n_items: int = 40, dtype=torch.float32):
    """An HGCF a few coordinates wide on a random train matrix, its points moved off the
    initialisation (so some hinges are active and some are not), and the first batch of its
    ``sampling`` (the whole epoch in one batch)."""
    import scipy.sparse as sp

    from pipeline.data.dataset import InteractionData
    from pipeline.models.hgcf import HGCF, HGCFConfig
    from pipeline.models.lorentz import expmap0

    train = sp.csr_matrix((np.random.default_rng(0).random((n_users, n_items)) < 0.25).astype(np.float32))
    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    data = InteractionData(n_users=n_users, n_items=n_items, train=train, valid=empty, test=empty, train_rank=train)
    torch.manual_seed(0)
    model = HGCF(HGCFConfig(emb_size=size, sampling=sampling, batch_size=10**6, margin=0.5), n_users, n_items, data=data)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.user_embedding.copy_(expmap0(torch.randn(n_users, size, generator=g)))
        model.item_embedding.copy_(expmap0(torch.randn(n_items, size, generator=g)))
    model.to(dtype)
    return model, next(iter(model.batches(train, torch.Generator().manual_seed(2)))), train


def hgcf_loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(5)
    loss = model.loss(*batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("sampling", ["pairs", "users"])
def test_hgcf_fast_path_runs_only_with_the_switch_on(monkeypatch, sampling):
    """With the switch off, nothing of the fast module runs (loss, scores, optimiser); with it on,
    both the pair batches (HGCF-64) and the released triples (HGCF-512) take the fast path."""
    from pipeline.models.fast import hgcf as H

    def refuse(*args, **kwargs):
        raise AssertionError("fast path called")

    import geoopt

    monkeypatch.setattr(H, "triple_loss", refuse)
    monkeypatch.setattr(H, "propagate", refuse)
    model, batch, train = hgcf_setup(sampling)
    with fast.switched(False):
        hgcf_loss_and_grads(model, batch)
        model.scores(None, np.arange(train.shape[0]))
        assert type(model.optimizer()) is geoopt.optim.RiemannianSGD
    with pytest.raises(AssertionError, match="fast path called"):
        hgcf_loss_and_grads(model, batch)
    with pytest.raises(AssertionError, match="fast path called"):
        model._cache = None
        model.scores(None, np.arange(train.shape[0]))
    assert type(model.optimizer()) is H.RiemannianSGD


def test_hgcf_maps_are_geoopts_in_float64():
    """logmap0(projx(x)) and the model's expmap0(u) in closed form: geoopt's values and the
    gradients autograd forms through geoopt's functions, to 1e-12 of their size, for points from
    r = |x_s| ~ 0.05 to far out (time coordinate up to ~e^6). Nearer the origin geoopt's
    arcosh(sqrt(1 + r^2)) loses digits (sqrt(1 + r^2)^2 - 1 cancels: 1e-10 at r = 1e-3) where the
    closed form's asinh(r) does not."""
    from pipeline.models.fast import hgcf as H
    from pipeline.models.lorentz import expmap0, logmap0, projx

    g = torch.Generator().manual_seed(0)
    spread = torch.logspace(-1.8, 0.8, 60, dtype=torch.float64)[:, None]  # spatial norms ~0.05 to ~6 x sqrt(8)
    u = torch.randn(60, 9, generator=g, dtype=torch.float64) * spread
    upstream = torch.randn(60, 9, generator=g, dtype=torch.float64)
    for readable, quick, x in ((lambda t: logmap0(projx(t)), H.LogMap0Proj.apply, expmap0(u) + 1e-3 * u),
                               (expmap0, H.ExpMap0.apply, u)):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        plain, fast_out = readable(a), quick(b)
        size = plain.abs().amax(1, keepdim=True)
        assert ((fast_out - plain).abs() <= 1e-12 * size).all()
        plain.backward(upstream)
        fast_out.backward(upstream)
        size = a.grad.abs().amax(1, keepdim=True)
        assert ((b.grad - a.grad).abs() <= 1e-12 * size).all()


def _rsgd_run(cls, points: list[torch.Tensor], grads: list[list[torch.Tensor]], lr: float):
    """Points and momentum buffers after one optimiser step per gradient list (HGCF's momentum and
    weight decay), the optimiser of class ``cls`` on copies of ``points``."""
    import geoopt

    from pipeline.models.lorentz import LORENTZ

    params = [geoopt.ManifoldParameter(p.clone(), manifold=LORENTZ) for p in points]
    opt = cls(params, lr=lr, momentum=0.95, weight_decay=1e-3)
    for step in grads:
        for p, grad in zip(params, step):
            p.grad = grad.clone()
        opt.step()
    return [p.detach() for p in params], [opt.state[p]["momentum_buffer"] for p in params], opt


def test_hgcf_riemannian_sgd_is_geoopts_in_float64_and_resumes_from_its_state():
    """Steps of the in-place Riemannian SGD on float64 points of the hyperboloid: geoopt's points
    and momentum buffers to 1e-10 of their size (geoopt's transport divides by d^2: steps of
    0.01-0.3 here), and geoopt's state dict loads into it and continues the same run."""
    import geoopt

    from pipeline.models.fast import hgcf as H
    from pipeline.models.lorentz import expmap0

    g = torch.Generator().manual_seed(0)
    points = [expmap0(torch.randn(n, 8, generator=g, dtype=torch.float64) * 0.5) for n in (20, 30)]
    grads = [[torch.randn(p.shape, generator=g, dtype=torch.float64) * 3 for p in points] for _ in range(4)]
    plain_points, plain_buffers, plain_opt = _rsgd_run(geoopt.optim.RiemannianSGD, points, grads, lr=0.01)
    quick_points, quick_buffers, _ = _rsgd_run(H.RiemannianSGD, points, grads, lr=0.01)
    for a, b in zip(plain_points + plain_buffers, quick_points + quick_buffers):
        assert ((b - a).abs() <= 1e-10 * a.abs().amax(1, keepdim=True)).all()
    # resume: geoopt's state after two steps, then the fast optimiser's last two
    _, _, half = _rsgd_run(geoopt.optim.RiemannianSGD, points, grads[:2], lr=0.01)
    params = [geoopt.ManifoldParameter(p.clone(), manifold=plain_opt.param_groups[0]["params"][0].manifold)
              for p in half.param_groups[0]["params"]]
    resumed = H.RiemannianSGD(params, lr=0.01, momentum=0.95, weight_decay=1e-3)
    resumed.load_state_dict(half.state_dict())
    for step in grads[2:]:
        for p, grad in zip(params, step):
            p.grad = grad.clone()
        resumed.step()
    assert resumed.state_dict()["param_groups"][0]["step"] == 4
    for a, b in zip(plain_points, params):
        assert ((b.detach() - a).abs() <= 1e-10 * a.abs().amax(1, keepdim=True)).all()


def test_hgcf_riemannian_sgd_in_float32_stays_near_float64_where_geoopts_transport_does_not():
    """Short steps (1e-4 to 1e-3, the ML-1M runs' range) of float32 points: the in-place step's
    points within float32 rounding of the float64 step, and its momentum buffers within 1e-4 of
    their size; geoopt's own float32 buffers are off by more than 1e-2 somewhere (its transport's
    terms cancel to the points' rounding, then are divided by d^2), which is why the fast step
    uses the closed form (pipeline/models/fast/hgcf.py)."""
    import geoopt

    from pipeline.models.fast import hgcf as H
    from pipeline.models.lorentz import expmap0

    g = torch.Generator().manual_seed(0)
    points = [expmap0(torch.randn(200, 64, generator=g, dtype=torch.float64) * 0.2) for _ in range(2)]
    points = [p.float().double() for p in points]  # float32 points: off the hyperboloid by their rounding
    grads = [[torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.05 for p in points] for _ in range(3)]
    exact_points, exact_buffers, _ = _rsgd_run(H.RiemannianSGD, points, grads, lr=1e-3)

    def worst(run):
        out_points, out_buffers, _ = run
        point_err = max(((o.double() - e).abs().amax(1) / e.abs().amax(1)).max().item() for o, e in zip(out_points, exact_points))
        buffer_err = max(((o.double() - e).abs().amax(1) / e.abs().amax(1)).max().item() for o, e in zip(out_buffers, exact_buffers))
        return point_err, buffer_err

    low = [[grad.float() for grad in step] for step in grads]
    quick_points, quick_buffers = worst(_rsgd_run(H.RiemannianSGD, [p.float() for p in points], low, lr=1e-3))
    _, plain_buffers = worst(_rsgd_run(geoopt.optim.RiemannianSGD, [p.float() for p in points], low, lr=1e-3))
    assert quick_points <= bound(64, 1.0)
    assert quick_buffers <= 1e-4
    assert plain_buffers > 1e-2


def test_hgcf_triple_loss_is_the_readable_loss_in_float64():
    """On the same float64 points: the same loss bit for bit (the forward pass sums as geoopt's
    distance does) and the gradient that autograd forms through geoopt's distance, to 1e-12."""
    from pipeline.models.fast import hgcf as H
    from pipeline.models.lorentz import SQDIST_CLAMP, expmap0, sqdist

    g = torch.Generator().manual_seed(0)
    n_users, n_items, k = 20, 30, 500
    # spread from near the origin to far out, so some distances pass the clamp at 50
    points = expmap0(torch.randn(n_users + n_items, 8, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3.0, n_users + n_items, dtype=torch.float64)[:, None])
    users = torch.randint(n_users, (k,), generator=g)
    pos, neg = torch.randint(n_items, (k,), generator=g), torch.randint(n_items, (k,), generator=g)
    pos[:3] = neg[:3]  # equal positive and negative: hinge = margin exactly

    def readable_loss(p):
        u = p[users]
        d_pos, d_neg = sqdist(u, p[n_users + pos]).clamp(max=SQDIST_CLAMP), sqdist(u, p[n_users + neg]).clamp(max=SQDIST_CLAMP)
        return torch.relu(d_pos - d_neg + 0.5).sum()

    a, b = points.clone().requires_grad_(), points.clone().requires_grad_()
    plain, quick = readable_loss(a), H.triple_loss(b, users, pos, neg, n_users, 0.5)
    assert torch.equal(plain, quick)
    plain.backward()
    quick.backward()
    assert (sqdist(points[users], points[n_users + pos]) > SQDIST_CLAMP).any()
    assert ((b.grad - a.grad).abs() <= 1e-12 * a.grad.abs().max()).all()


def test_hgcf_csr_product_is_the_dense_product_and_repeats_bit_for_bit():
    """G @ X through torch's CSR kernel: the dense product in float64 (to 1e-12), and in float32
    the same bits on every call and with 1 or 2 threads (each row sums its nonzeros in one order)."""
    from pipeline.models.fast.graph import CSRProduct
    from pipeline.models.layers import row_normalized_adjacency, to_torch_csr
    import scipy.sparse as sp

    train = sp.csr_matrix((np.random.default_rng(0).random((300, 200)) < 0.1).astype(np.float32))
    g = row_normalized_adjacency(train)
    a, a_t = to_torch_csr(g), to_torch_csr(g.T.tocsr())
    dense = torch.from_numpy(g.toarray()).double()
    x = torch.randn(g.shape[0], 64, dtype=torch.float64, requires_grad=True)
    out = CSRProduct.apply(a.double(), a_t.double(), x)
    assert ((out - dense @ x).abs() <= 1e-12 * (dense.abs() @ x.abs())).all()
    grad = torch.randn_like(out)
    out.backward(grad)
    assert ((x.grad - dense.T @ grad).abs() <= 1e-12 * (dense.abs().T @ grad.abs())).all()
    x32 = x.detach().float()
    first = a @ x32
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 1, 2):
            torch.set_num_threads(threads)
            assert torch.equal(a @ x32, first)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("sampling", ["pairs", "users"])
def test_hgcf_both_paths_agree_in_float32(sampling):
    """The whole model, on pair batches and on the released triples: loss, gradients and scores of
    the fast path and of the readable one (scipy products, autograd through geoopt) agree up to
    float32 rounding (the same negatives: both draw them from the same seed). The bound is the
    module's: n the longest sum (the batch's triples, a row's nonzeros times the layers)."""
    model, batch, train = hgcf_setup(sampling, size=32)
    quick_loss, quick = hgcf_loss_and_grads(model, batch)
    plain_loss, plain = readable(hgcf_loss_and_grads, model, batch)
    n = len(batch[1]) if sampling == "users" else int((batch[0] > 0).sum())
    assert (quick_loss - plain_loss).abs().item() <= 2 * bound(n, plain_loss.abs().item())
    for name in plain:
        assert (quick[name] - plain[name]).abs().max().item() <= 2 * bound(n, plain[name].abs().max().item()), name
    users = np.arange(train.shape[0])
    model._cache = None
    quick_scores = model.scores(None, users)
    model._cache = None
    plain_scores = readable(model.scores, None, users)
    assert (quick_scores - plain_scores).abs().max().item() <= 2 * bound(n, plain_scores.abs().max().item())


# --------------------------------------------------------------------------------------------
# LightGCN (pipeline/models/fast/lightgcn.py): the graph products through torch's CSR kernel and
# the BPR loss's gradient as one sparse product; MF (no layers) keeps the readable path


def lightgcn_setup(model_class: str = "lightgcn", size: int = 16, n_users: int = 30, n_items: int = 40, dtype=torch.float32):
    """A LightGCN (or MF) on a random train matrix, its embeddings moved off the initialisation,
    and every user as one batch."""
    import scipy.sparse as sp

    from pipeline.data.dataset import InteractionData
    from pipeline.models.lightgcn import LightGCN, LightGCNConfig
    from pipeline.models.mf import MF, MFConfig

    train = sp.csr_matrix((np.random.default_rng(0).random((n_users, n_items)) < 0.25).astype(np.float32))
    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    data = InteractionData(n_users=n_users, n_items=n_items, train=train, valid=empty, test=empty, train_rank=train)
    torch.manual_seed(0)
    if model_class == "mf":
        model = MF(MFConfig(emb_size=size, reg_weight=0.1), n_users, n_items, data=data)
    else:
        model = LightGCN(LightGCNConfig(emb_size=size, reg_weight=0.1), n_users, n_items, data=data)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.randn(n_users, size, generator=g))
        model.item_embedding.weight.copy_(torch.randn(n_items, size, generator=g))
    return model.to(dtype), np.arange(n_users), train


def lightgcn_loss_and_grads(model, users) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(5)  # the same negatives on both paths
    loss = model.loss(None, users)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_lightgcn_fast_path_runs_only_with_the_switch_on_and_mf_takes_only_its_loss(monkeypatch):
    """With the switch off nothing of the fast module runs; with it on, LightGCN takes its products
    and its loss, MF (no layers) its loss only."""
    from pipeline.models.fast import lightgcn as L

    calls = []
    real = {name: getattr(L, name) for name in ("bpr_loss", "layer_mean")}
    for name in real:
        monkeypatch.setattr(L, name, lambda *args, _name=name: calls.append(_name) or real[_name](*args))
    for model_class in ("lightgcn", "mf"):
        model, users, _ = lightgcn_setup(model_class)
        readable(lightgcn_loss_and_grads, model, users)
        readable(model.scores, None, users)
        assert calls == []
        model._cache = None  # the readable path's propagation, cached for unchanged weights
    model, users, _ = lightgcn_setup("mf")
    lightgcn_loss_and_grads(model, users)
    model.scores(None, users)
    assert calls == ["bpr_loss"]
    # MF: its gradient into the two tables and fused Adam on the fast path; LightGCN keeps its optimizer
    assert model.optimizer().defaults["fused"] and readable(model.optimizer).defaults["fused"] is None
    assert lightgcn_setup()[0].optimizer().defaults["fused"] is None
    table_calls = []
    monkeypatch.setattr(L.TableBPRLoss, "apply", lambda *a, _real=L.TableBPRLoss.apply: table_calls.append(1) or _real(*a))
    lightgcn_loss_and_grads(model, users)
    assert table_calls == [1]
    calls.clear()
    model, users, _ = lightgcn_setup()
    lightgcn_loss_and_grads(model, users)
    assert calls == ["layer_mean", "bpr_loss"]
    model.scores(None, users)
    assert calls == ["layer_mean", "bpr_loss", "layer_mean"]


@pytest.mark.parametrize("model_class", ["lightgcn", "mf"])
def test_lightgcn_fast_loss_is_the_model_loss_in_float64(model_class):
    """The same function: in float64 the fast path's loss and gradients equal, to 1e-12 of the
    largest entry, the model's formula written out with a dense A~ and autograd (the readable
    path's scipy products are float32 whatever the input's type), on the same negatives; MF's
    final embeddings are its ego tables."""
    model, users, _ = lightgcn_setup(model_class, dtype=torch.float64)
    torch.manual_seed(5)
    u, p, n = model.sample_pairs(users)
    a = torch.from_numpy(model.adjacency.cpu.toarray()).double()
    weights = (model.user_embedding.weight, model.item_embedding.weight)

    def written_out(w_u, w_i):
        ego = torch.cat([w_u, w_i])
        final = (ego + a @ ego + a @ (a @ ego) + a @ (a @ (a @ ego))) / 4 if model_class == "lightgcn" else ego
        f_u, f_i = final[: model.n_users], final[model.n_users :]
        bpr = torch.nn.functional.softplus((f_u[u] * f_i[n]).sum(1) - (f_u[u] * f_i[p]).sum(1)).mean()
        reg = 0.5 * (w_u[u].pow(2).sum() + w_i[p].pow(2).sum() + w_i[n].pow(2).sum()) / len(u)
        return bpr + model.config.reg_weight * reg

    plain = [w.detach().clone().requires_grad_() for w in weights]
    plain_loss = written_out(*plain)
    model.zero_grad()
    torch.manual_seed(5)  # the same negatives
    quick_loss = model.loss(None, users)
    plain_loss.backward()
    quick_loss.backward()
    quick = [model.user_embedding.weight, model.item_embedding.weight]
    assert abs(quick_loss.item() - plain_loss.item()) <= 1e-12 * abs(plain_loss.item())
    for a_, b_ in zip(plain, quick):
        assert a_.grad.abs().max() > 0
        assert (b_.grad - a_.grad).abs().max().item() <= 1e-12 * a_.grad.abs().max().item()


@pytest.mark.parametrize("model_class", ["lightgcn", "mf"])
def test_lightgcn_paths_agree_in_float32_and_the_fast_one_repeats_bit_for_bit(model_class):
    """float32: loss, gradients and scores of both paths within the rounding bound (n: the longest
    sum, the pairs of the batch); the fast path gives the same bits again and with 1 or 2 threads."""
    model, users, _ = lightgcn_setup(model_class, size=32)
    quick_loss, quick = lightgcn_loss_and_grads(model, users)
    plain_loss, plain = readable(lightgcn_loss_and_grads, model, users)
    n = int(model._indptr[-1])
    assert (quick_loss - plain_loss).abs().item() <= 2 * bound(n, plain_loss.abs().item())
    for name in plain:
        assert (quick[name] - plain[name]).abs().max().item() <= 2 * bound(n, plain[name].abs().max().item()), name
    quick_scores = model.scores(None, users).clone()
    model._cache = None
    plain_scores = readable(model.scores, None, users)
    model._cache = None
    assert (quick_scores - plain_scores).abs().max().item() <= 2 * bound(n, plain_scores.abs().max().item())
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 1, 2):
            torch.set_num_threads(threads)
            again_loss, again = lightgcn_loss_and_grads(model, users)
            assert torch.equal(again_loss, quick_loss) and all(torch.equal(again[k], quick[k]) for k in quick)
            model._cache = None
            assert torch.equal(model.scores(None, users), quick_scores)
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------
# The autoencoder baselines (pipeline/models/fast/sparse_input.py): the first layer's product over
# the kept entries of the sparse input rows, through torch's CSR kernel; fused Adam


def autoencoder(name: str, dtype=torch.float32, drop: float = 0.5, n_users: int = 30, n_items: int = 50):
    """A small model of the variant ``name`` (its dropout / corruption ``drop``), binary rows."""
    from pipeline.models.cdae import CDAE, CDAEConfig
    from pipeline.models.multidae import MultiDAE, MultiDAEConfig
    from pipeline.models.multidaepp import MultiDAEPP, MultiDAEPPConfig
    from pipeline.models.multivae import MultiVAE, MultiVAEConfig

    torch.manual_seed(0)
    if name == "cdae":
        model = CDAE(CDAEConfig(hidden_size=12, corruption=drop, reg_weight=0.1), n_users, n_items)
    else:
        cls, cfg = {"multidae": (MultiDAE, MultiDAEConfig), "multidaepp": (MultiDAEPP, MultiDAEPPConfig),
                    "multivae": (MultiVAE, MultiVAEConfig)}[name]
        model = cls(cfg(dims=[6, 16], dropout=drop, reg_weight=0.01), n_users, n_items)
    rows = (torch.rand(n_users, n_items) < 0.2).to(dtype)
    rows[3] = 0.0  # a user without entries in the batch: an empty CSR row
    return model.to(dtype), rows, np.arange(n_users)


def ae_loss_and_grads(model, rows, users, seed: int = 3) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)
    loss = model.loss(rows, users)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


AUTOENCODERS = ["cdae", "multidae", "multidaepp", "multivae"]


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_autoencoder_fast_path_runs_only_with_the_switch_on(monkeypatch, name):
    """Off: the first layer is nn.Linear on the dense rows and Adam is torch's loop. On: scoring,
    and training on the train rows (not MultiDAE++'s noised ones), go through
    ``sparse_input.first_layer`` with the model's dropout in training and none in scoring; Adam
    is fused."""
    from pipeline.models.fast import sparse_input as S

    calls = []
    real = S.first_layer
    monkeypatch.setattr(S, "first_layer", lambda rows, layer, drop, normalize, **kw: calls.append((drop, normalize)) or real(rows, layer, drop, normalize, **kw))
    model, rows, users = autoencoder(name, drop=0.25)
    readable(ae_loss_and_grads, model, rows, users)
    readable(model.eval().scores, rows, users)
    assert calls == [] and readable(model.optimizer).defaults["fused"] is None
    ae_loss_and_grads(model, rows, users)
    model.eval().scores(rows, users)
    normalize = name != "cdae"
    assert calls == ([] if name == "multidaepp" else [(0.25, normalize)]) + [(0.0, normalize)]
    assert model.optimizer().defaults["fused"]


def test_kept_entries_are_the_nonzero_entries_normalised_and_scaled():
    """The kept entries are nonzero entries of the rows, row-major, after F.normalize (bit for
    bit) and scaled by 1 / (1 - p); p = 0 keeps them all unscaled; the share kept is 1 - p within 5
    standard deviations (a fixed seed: the same draw on every run)."""
    from pipeline.models.fast.sparse_input import kept_entries

    torch.manual_seed(1)
    rows = (torch.rand(200, 300) < 0.1).float() * 2.0
    rows[7] = 0.0
    nz = torch.nonzero(rows)
    r, c, v = kept_entries(rows, 0.0, normalize=False)
    assert torch.equal(torch.stack([r, c], 1), nz) and torch.equal(v, rows[r, c])
    r, c, v = kept_entries(rows, 0.0, normalize=True)
    assert torch.equal(torch.stack([r, c], 1), nz) and torch.equal(v, torch.nn.functional.normalize(rows, dim=1)[r, c])
    r, c, v = kept_entries(rows, 0.25, normalize=False)
    kept = r * 300 + c
    assert torch.equal(kept, kept.sort().values) and torch.isin(kept, nz[:, 0] * 300 + nz[:, 1]).all()
    assert torch.equal(v, rows[r, c] / 0.75)
    n = len(nz)
    assert abs(len(v) - 0.75 * n) <= 5 * math.sqrt(n * 0.25 * 0.75)


@pytest.mark.parametrize("normalize", [False, True])
def test_sparse_first_layer_is_the_linear_layer_in_float64(normalize):
    """The same function: in float64, with the fast path's own dropout draw, the output and the
    weight and bias gradients equal nn.Linear on the dense kept entries to 1e-12 of the largest."""
    from pipeline.models.fast.sparse_input import first_layer, kept_entries

    torch.manual_seed(2)
    rows = (torch.rand(20, 40) < 0.2).double()
    layer = nn.Linear(40, 7).double()
    torch.manual_seed(4)
    r, c, v = kept_entries(rows, 0.3, normalize)
    dense = torch.zeros_like(rows)
    dense[r, c] = v
    plain = copy.deepcopy(layer)
    out_plain = plain(dense)
    torch.manual_seed(4)
    out = first_layer(rows, layer, 0.3, normalize)
    g = torch.randn_like(out)
    out.backward(g)
    out_plain.backward(g)
    assert (out - out_plain).abs().max().item() <= 1e-12 * out_plain.abs().max().item()
    for a_, b_ in ((layer.weight, plain.weight), (layer.bias, plain.bias)):
        assert b_.grad.abs().max() > 0
        assert (a_.grad - b_.grad).abs().max().item() <= 1e-12 * b_.grad.abs().max().item()


def test_sparse_target_logistic_loss_is_torchs_in_float64():
    """sum softplus(x) - sum_nz v x and its gradient sigmoid(x) - y (corrected at the nonzeros only)
    equal torch's summed BCE-with-logits on the dense target, for targets in [0, 1] and logits of
    both signs up to |x| = 15, to 1e-12 of the largest entry; the dense target is never needed. In
    float32 the gradient of the batch mean (CDAE's per-row sums, averaged) is torch's bit for bit."""
    from pipeline.models.fast.sparse_input import logistic_loss_sum, nonzero_entries

    g = torch.Generator().manual_seed(6)
    target = (torch.rand(30, 50, generator=g, dtype=torch.float64) < 0.2) * torch.rand(30, 50, generator=g, dtype=torch.float64)
    target[3] = 0.0
    logits = (30 * torch.rand(30, 50, generator=g, dtype=torch.float64) - 15).requires_grad_()
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    (plain_grad,) = torch.autograd.grad(plain * 0.7, logits)
    quick = logistic_loss_sum(logits, nonzero_entries(target))
    (quick_grad,) = torch.autograd.grad(quick * 0.7, logits)
    assert abs(quick.item() - plain.item()) <= 1e-12 * abs(plain.item())
    assert (quick_grad - plain_grad).abs().max().item() <= 1e-12 * plain_grad.abs().max().item()
    # float32: the gradient is torch's bit for bit (the same sigmoid, subtraction and product)
    logits32, target32 = logits.detach().float().requires_grad_(), target.float()
    plain32 = torch.nn.functional.binary_cross_entropy_with_logits(logits32, target32, reduction="none").sum(1).mean()
    (plain_grad32,) = torch.autograd.grad(plain32, logits32)
    (quick_grad32,) = torch.autograd.grad(logistic_loss_sum(logits32, nonzero_entries(target32)) / 30, logits32)
    assert torch.equal(quick_grad32, plain_grad32)


def test_cdae_fast_loss_is_the_model_in_float64():
    """CDAE's loss and gradients with the fast path's own corruption draw equal the model's
    formula written out on the dense corrupted rows (autograd), to 1e-12 of the largest entry."""
    from pipeline.models.fast.sparse_input import kept_entries

    model, rows, users = autoencoder("cdae", torch.float64)
    torch.manual_seed(3)
    r, c, v = kept_entries(rows, model.config.corruption, normalize=False)
    corrupted = torch.zeros_like(rows)
    corrupted[r, c] = v
    plain = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    hidden = torch.sigmoid(corrupted @ plain["encoder.weight"].t() + plain["encoder.bias"] + plain["user_embedding.weight"][users])
    out = hidden @ plain["decoder.weight"].t() + plain["decoder.bias"]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out, rows, reduction="none").sum(1).mean()
    shared = sum(plain[k].pow(2).sum() for k in ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"))
    plain_loss = bce + 0.5 * model.config.reg_weight * (shared / model.n_users + plain["user_embedding.weight"][users].pow(2).sum(1).mean())
    plain_loss.backward()
    quick_loss, quick = ae_loss_and_grads(model, rows, users, seed=3)
    assert abs(quick_loss.item() - plain_loss.item()) <= 1e-12 * abs(plain_loss.item())
    for name, p in plain.items():
        assert p.grad.abs().max() > 0, name
        assert (quick[name] - p.grad).abs().max().item() <= 1e-12 * p.grad.abs().max().item(), name


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_autoencoder_paths_are_the_same_function_in_float64(name):
    """Without dropout (both paths see the same input; MultiVAE's z draw is seeded alike): loss,
    gradients and scores of both paths equal to 1e-12 of the largest entry in float64."""
    model, rows, users = autoencoder(name, torch.float64, drop=0.0)
    twin = copy.deepcopy(model)  # MultiVAE's KL weight follows the batches it has seen
    quick_loss, quick = ae_loss_and_grads(model, rows, users)
    plain_loss, plain = readable(ae_loss_and_grads, twin, rows, users)
    assert abs(quick_loss.item() - plain_loss.item()) <= 1e-12 * abs(plain_loss.item())
    assert quick.keys() == plain.keys()
    for k in plain:
        assert (quick[k] - plain[k]).abs().max().item() <= 1e-12 * plain[k].abs().max().item(), k
    quick_scores = model.eval().scores(rows, users)
    plain_scores = readable(model.scores, rows, users)
    assert (quick_scores - plain_scores).abs().max().item() <= 1e-12 * plain_scores.abs().max().item()


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_autoencoder_paths_agree_in_float32_and_the_fast_one_repeats_bit_for_bit(name):
    """float32, no dropout: loss, gradients and scores of both paths within the rounding bound (n:
    the items, the longest sum); the fast path (dropout on) gives the same bits again."""
    model, rows, users = autoencoder(name, drop=0.0)
    twin = copy.deepcopy(model)
    quick_loss, quick = ae_loss_and_grads(model, rows, users)
    plain_loss, plain = readable(ae_loss_and_grads, twin, rows, users)
    n = model.n_items
    assert (quick_loss - plain_loss).abs().item() <= 2 * bound(n, plain_loss.abs().item())
    for k in plain:
        assert (quick[k] - plain[k]).abs().max().item() <= 2 * bound(n, plain[k].abs().max().item()), k
    quick_scores = model.eval().scores(rows, users)
    plain_scores = readable(model.scores, rows, users)
    assert (quick_scores - plain_scores).abs().max().item() <= 2 * bound(n, plain_scores.abs().max().item())
    model, rows, users = autoencoder(name, drop=0.5)
    start = copy.deepcopy(model)
    first_loss, first = ae_loss_and_grads(model, rows, users)
    first_scores = model.eval().scores(rows, users)
    again_loss, again = ae_loss_and_grads(start, rows, users)
    assert torch.equal(again_loss, first_loss) and all(torch.equal(again[k], first[k]) for k in first)
    assert torch.equal(start.eval().scores(rows, users), first_scores)


def test_sparse_first_layer_gives_the_same_bits_with_1_or_2_threads():
    """The CSR products sum each row's entries in one order whatever the thread count (the dense
    layers after it are torch's own products, whose rounding may depend on it)."""
    from pipeline.models.fast.sparse_input import first_layer

    torch.manual_seed(2)
    rows = (torch.rand(64, 300) < 0.05).float()
    layer = nn.Linear(300, 32)
    g = torch.randn(64, 32)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 1, 2):
            torch.set_num_threads(threads)
            layer.zero_grad()
            torch.manual_seed(4)
            out = first_layer(rows, layer, 0.5, normalize=True)
            out.backward(g)
            results.append((out.detach(), layer.weight.grad.clone(), layer.bias.grad.clone()))
    finally:
        torch.set_num_threads(previous)
    assert all(torch.equal(a, b) for r in results[1:] for a, b in zip(r, results[0]))


COLUMN_MAJOR = {"multidae": "layers.0.weight", "multivae": "encoder.0.weight"}


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_first_layer_weight_is_column_major_only_where_it_feeds_csr_products(name):
    """Built with the switch on, MultiDAE's and MultiVAE's first-layer weights are column-major
    (their CSR products read W^T without a copy); MultiDAE++ (dense noised rows) and CDAE keep
    row-major; built with the switch off, every weight is row-major."""
    model, _, _ = autoencoder(name)
    with fast.switched(False):
        plain, _, _ = autoencoder(name)
    for key, weight in model.named_parameters():
        assert (weight.t().is_contiguous() and not weight.is_contiguous()) == (key == COLUMN_MAJOR.get(name)), key
    assert all(w.is_contiguous() for w in plain.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))


@pytest.mark.parametrize("name", sorted(COLUMN_MAJOR))
def test_column_major_first_layer_trains_the_same_bits_and_resumes(tmp_path, name):
    """Three fused-Adam steps of the fast path with the column-major weight give the bits of the
    same steps with it row-major; a checkpoint of the column-major state holds the row-major bytes;
    resumed from it (the trainer's moment layouts restored), two more steps equal two
    uninterrupted ones: fused Adam walks a weight and its moments in memory order. (The weights
    here, 16 x 50, are a multiple of every vector width in size; a weight that is not leaves its
    last elements in memory order to the fused kernel's scalar loop, which can round them otherwise:
    see pipeline/models/fast/sparse_input.py.)"""
    from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
    from pipeline.training.trainer import _moments_in_parameter_layout, for_saving

    def steps(model, optimizer, rows, users, seeds):
        for seed in seeds:
            optimizer.zero_grad()
            ae_loss_and_grads(model, rows, users, seed=seed)
            optimizer.step()

    model, rows, users = autoencoder(name)
    row_major, _, _ = autoencoder(name)
    layer = row_major.get_submodule(COLUMN_MAJOR[name].rsplit(".", 1)[0])
    layer.weight = torch.nn.Parameter(layer.weight.detach().contiguous())
    assert model.get_parameter(COLUMN_MAJOR[name]).t().is_contiguous() and layer.weight.is_contiguous()
    opt_a, opt_b = model.optimizer(), row_major.optimizer()
    steps(model, opt_a, rows, users, [1, 2, 3])
    steps(row_major, opt_b, rows, users, [1, 2, 3])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), row_major.state_dict().values()))

    for tag, m, o in (("col", model, opt_a), ("row", row_major, opt_b)):
        save_checkpoint(tmp_path / f"{tag}.pt", {"model": for_saving(m.state_dict()), "optimizer": o.state_dict()})
    assert (tmp_path / "col.pt").read_bytes() == (tmp_path / "row.pt").read_bytes()

    resumed, _, _ = autoencoder(name)
    opt_r = resumed.optimizer()
    saved = load_checkpoint(tmp_path / "col.pt")
    resumed.load_state_dict(saved["model"])
    opt_r.load_state_dict(saved["optimizer"])
    _moments_in_parameter_layout(opt_r)
    steps(model, opt_a, rows, users, [4, 5])
    steps(resumed, opt_r, rows, users, [4, 5])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))


def test_multidaepp_trains_on_the_noised_rows_with_the_readable_products():
    """MultiDAE++'s training input is dense (DiffRec-noised rows): its loss and gradients are the
    same bits with the switch on or off."""
    model, rows, users = autoencoder("multidaepp")
    twin = copy.deepcopy(model)
    quick_loss, quick = ae_loss_and_grads(model, rows, users)
    plain_loss, plain = readable(ae_loss_and_grads, twin, rows, users)
    assert torch.equal(quick_loss, plain_loss) and all(torch.equal(quick[k], plain[k]) for k in plain)


@pytest.mark.parametrize("values", ["binary", "weighted"])
def test_ldiffrec_sparse_encoders_are_the_readable_ones_in_float64(values):
    """L-DiffRec's encoders on the sparse rows (LT-DiffRec's time-weighted ones too), with the fast
    path's own dropout draw: mu, logvar and every encoder's gradients equal the readable encoders on
    the dense kept entries to 1e-12 (clusters of unequal sizes, items interleaved)."""
    from pipeline.models.fast.sparse_input import kept_entries

    torch.manual_seed(0)
    clusters = np.array([0, 2, 1, 0, 2, 2, 1, 0] * 10)
    model = LDiffRec(ldiffrec_config(n_clusters=3, ae_dropout=0.3), 24, 80, clusters=clusters).double()
    rows = (torch.rand(24, 80) < 0.2).double()
    if values == "weighted":
        rows = rows * torch.rand(24, 80, dtype=torch.float64)
    rows[5] = 0.0
    torch.manual_seed(7)
    r, c, v = kept_entries(rows, 0.3, normalize=False)
    dense = torch.zeros_like(rows)
    dense[r, c] = v
    twin = copy.deepcopy(model).eval()
    plain_mu, plain_logvar = readable(twin.encode, dense)
    model.train()
    torch.manual_seed(7)
    mu, logvar = model.encode(rows)
    g1, g2 = torch.randn_like(mu), torch.randn_like(logvar)
    (mu * g1 + logvar * g2).sum().backward()
    (plain_mu * g1 + plain_logvar * g2).sum().backward()
    assert (mu - plain_mu).abs().max().item() <= 1e-12 * plain_mu.abs().max().item()
    assert (logvar - plain_logvar).abs().max().item() <= 1e-12 * plain_logvar.abs().max().item()
    for (name, p), q in zip(model.encoders.named_parameters(), twin.encoders.parameters()):
        assert q.grad.abs().max() > 0, name
        assert (p.grad - q.grad).abs().max().item() <= 1e-12 * q.grad.abs().max().item(), name


def test_ldiffrec_fast_step_gives_the_same_bits_on_one_and_two_threads():
    """The fast path's training step and scores do not depend on the thread count: the decoder's
    input gradient, (batch x items) times (items x latent), goes through oneDNN (``decode``);
    through ``nn.Linear`` MKL may split its item sum between the threads, which changes the bits
    of every gradient upstream of the decoder (encoders, denoiser)."""

    def step(model, rows):
        model = copy.deepcopy(model).train()  # the annealing counter and importance history move
        torch.manual_seed(3)
        loss = model.loss(rows)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        return loss.detach(), grads, model.eval().scores(rows)

    torch.manual_seed(0)
    model = LDiffRec(ldiffrec_config(latent_size=64, dims=[64], batch_size=64, ae_dropout=0.1), 64, 2000,
                     clusters=np.arange(2000) % 2)
    rows = (torch.rand(64, 2000) < 0.03).float()
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        loss, grads, scores = step(model, rows)
        for threads in (2, 1, 2):
            torch.set_num_threads(threads)
            again_loss, again, again_scores = step(model, rows)
            assert torch.equal(again_loss, loss) and torch.equal(again_scores, scores)
            assert all(torch.equal(again[k], grads[k]) for k in grads), [k for k in grads if not torch.equal(again[k], grads[k])]
    finally:
        torch.set_num_threads(previous)


def test_ldiffrec_fast_path_runs_only_with_the_switch_on(monkeypatch):
    """Off: the encoders are nn.Linear on the dropped-out dense rows and AdamW is torch's loop;
    on: the encoders take the sparse entries (training with the encoder dropout, scoring
    without), AdamW is fused. The fast path's item maps are not saved (derived from item_order)."""
    from pipeline.models.fast import sparse_input as S

    calls = []
    real = S.kept_entries
    monkeypatch.setattr(S, "kept_entries", lambda rows, drop, normalize, **kw: calls.append(drop) or real(rows, drop, normalize, **kw))
    torch.manual_seed(0)
    model = LDiffRec(ldiffrec_config(ae_dropout=0.1), 40, 60, clusters=np.arange(60) % 2)
    rows = (torch.rand(40, 60) < 0.2).float()
    readable(loss_and_grads, model, rows, 3)
    readable(model.eval().scores, rows)
    assert calls == [] and readable(model.optimizer).defaults["fused"] is None
    loss_and_grads(model, rows, 3)
    model.eval().scores(rows)
    assert calls == [0.1, 0.0] and model.optimizer().defaults["fused"]
    assert "item_order" in model.state_dict() and not any(k.startswith("_item") for k in model.state_dict())


# --------------------------------------------------------------------------------------------
# CODIGEM: the decoder alone


def codigem_steps(steps: int, n_steps: int = 4) -> tuple[nn.Module, list[float]]:
    """A seeded CODIGEM trained for ``n_steps`` Adamax steps with the switch as it is; its losses."""
    from pipeline.models.codigem import CODIGEM, CODIGEMConfig

    torch.manual_seed(0)
    model = CODIGEM(CODIGEMConfig(lr=0.01, batch_size=16, steps=steps, hidden_size=16, hidden_layers=2), n_users=30, n_items=40)
    rows = (torch.rand(30, 40) < 0.2).float()
    optimizer = model.optimizer()
    losses = []
    for _ in range(n_steps):
        optimizer.zero_grad()
        loss = model.loss(rows)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, losses


@pytest.mark.parametrize("steps", [1, 3])
def test_codigem_fast_path_trains_the_same_decoder_bit_for_bit(steps):
    """On: the decoder's weights after seeded Adamax steps, and its scores, are the readable path's
    bit for bit (the same random stream, the same gradient); the reverse networks stay at their
    initialisation; the loss is the decoder's term of the -ELBO."""
    plain, plain_losses = readable(codigem_steps, steps)
    quick, quick_losses = codigem_steps(steps)
    for name, value in plain.decoder.state_dict().items():
        assert torch.equal(quick.decoder.state_dict()[name], value), name
    rows = (torch.rand(30, 40) < 0.2).float()
    assert torch.equal(quick.scores(rows), readable(plain.scores, rows))
    torch.manual_seed(0)
    untrained = type(quick)(quick.config, n_users=30, n_items=40)
    for name, value in untrained.reverse_nets.state_dict().items():
        assert torch.equal(quick.reverse_nets.state_dict()[name], value), name
    for name, value in plain.reverse_nets.state_dict().items():
        assert not torch.equal(quick.reverse_nets.state_dict()[name], value), name  # the readable path trains them
    assert quick_losses != plain_losses
    torch.manual_seed(0)  # the first step's loss by hand: -mean log N(x; decoder(z_1), I)
    model = type(quick)(quick.config, n_users=30, n_items=40)
    rows = (torch.rand(30, 40) < 0.2).float()
    z1 = model.keep * rows + model.spread * torch.randn_like(rows)
    expected = -torch.distributions.Normal(model.decoder(z1), 1.0).log_prob(rows).sum(1).mean()
    torch.testing.assert_close(torch.tensor(quick_losses[0]), expected.detach())
