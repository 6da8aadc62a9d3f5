"""CODIGEM's fast path: train the network that ranks, and only it.

Used by ``pipeline/models/codigem.py`` (``CODIGEM.loss``) only while the switch of
``pipeline/models/fast`` is on; the model file's ``loss`` is the readable -ELBO of the release.

CODIGEM ranks with its decoder alone (``CODIGEM.scores``: the decoder at the mean of q(z_1 | x)),
and the decoder's parameters appear in one term of the -ELBO only, the reconstruction
-log N(x; mu_x(z_1), I); the T - 1 reverse networks appear only in the KL terms and share no
parameter with the decoder. Adamax updates each parameter from its own gradient, so the decoder's
weights after any number of steps are the same whether or not the reverse networks are trained,
provided z_1 is the same: the random stream is drawn exactly as the readable loss draws it
(T noise tensors of the batch's shape, in order), of which only the first is used. The readable
path's decoder gradient is the backward of ``-(reconstruction - kl).mean()`` with respect to
``reconstruction``, -1/B per row whatever ``kl`` is; here it is that of
``-reconstruction.mean()``, the same -1/B, followed by the same operations: the decoder's weights,
its scores and every metric are the readable path's bit for bit
(``tests/test_fast_paths.py`` checks the state after several seeded steps).

What is not the same: the reverse networks stay at their initialisation (they never influence a
score), and the loss returned (history.csv's ``loss``) is the decoder's term of the -ELBO,
-mean log N(x; mu_x, I), not the whole -ELBO. Their forward and backward passes are about three
quarters of an epoch's products at the released T = 3 (two networks of output width 2|I| beside a
decoder of width |I|), and most of its Adamax and elementwise work.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.layers import log_unit_normal


def decoder_loss(decoder: nn.Module, rows: torch.Tensor, steps: int, keep: float, spread: float) -> torch.Tensor:
    """-mean over the batch of log N(x; decoder(z_1), I), z_1 = keep x + spread eps_1, with the
    random stream advanced by the ``steps`` noise draws of the readable loss (eps_2 .. eps_T are
    drawn and dropped)."""
    z1 = torch.add(rows * keep, torch.randn_like(rows), alpha=spread)
    for _ in range(steps - 1):
        torch.randn_like(rows)  # the readable loss's eps_2 .. eps_T: the same stream afterwards
    return -log_unit_normal(rows, decoder(z1)).mean()
