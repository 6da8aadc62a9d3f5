"""T-DiffRec: DiffRec with time-aware reweighting of the interaction row.

Reference: Wenjie Wang, Yiyan Xu, Fuli Feng, Xinyu Lin, Xiangnan He, Tat-Seng Chua.
"Diffusion Recommender Model". SIGIR 2023. arXiv:2304.04971, Section 3.4 (T-DiffRec).
Released code: github.com/YiyanXu/DiffRec (T-DiffRec folder).

A user's train interactions, in their time order, get weights linspace(w_min, w_max, n_u)
(oldest w_min, newest w_max) instead of ones; the weighted row is both the training target x_0
and, at test time, the model input. Everything else is DiffRec (same contract, same diffusion,
same denoiser): only ``input_matrix`` and the two weight hyperparameters differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import scipy.sparse as sp

from pipeline.data.dataset import InteractionData, temporal_weights
from pipeline.models.diffrec import DiffRec, DiffRecConfig


@dataclass(frozen=True)
class TDiffRecConfig(DiffRecConfig):
    # the released T-DiffRec's defaults: weights linspace(w_min, w_max) from the oldest to the
    # newest interaction (params.yaml's tdiffrec sets the w_min chosen for ML-1M)
    w_min: float = 0.1
    w_max: float = 1.0

    def problems(self) -> list:
        out = super().problems()
        if not 0.0 <= self.w_min <= self.w_max:
            out.append((("w_min", "w_max"), f"need 0 <= w_min <= w_max, got {self.w_min} and {self.w_max}"))
        return out


class TDiffRec(DiffRec, key="tdiffrec"):
    Config = TDiffRecConfig
    display_name = "T-DiffRec"
    family = "diffusion"  # the tables' row group: classic, generative or diffusion
    uses_time_order = True  # time-weighted rows

    def input_matrix(self, data: InteractionData) -> sp.csr_matrix:
        return temporal_weights(data.train_rank, self.config.w_min, self.config.w_max)
