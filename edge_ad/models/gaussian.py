"""Per-location Gaussian of the teacher's features: a Mahalanobis-distance map beside the distillation maps.

1-cos between teacher and student sees local structure but is blind to slow changes of brightness or
texture statistics (magnetic_tile `uneven`); a Gaussian fitted per feature-map location on good images
catches those. It has no trainable weights: fitting is one pass of statistics after distillation.
The forward pass is plain AvgPool/Sub/MatMul, so it exports to ONNX and TensorRT with the rest of the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge_ad.errors import EdgeAdError

RIDGE = 1e-3  # added to every covariance, as a fraction of the features' mean variance over good images


def ledoit_wolf(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrunk covariance of each batch of samples: x (L, n, C) -> (mean (L, C), cov (L, C, C)), float64.

    Ledoit & Wolf (2004), the same estimate as sklearn's LedoitWolf: stable with fewer images than channels.
    """
    x = x.double()
    n, p = x.shape[1], x.shape[2]
    mean = x.mean(1)
    xc = x - mean[:, None]
    emp = xc.transpose(1, 2) @ xc / n
    mu = torch.diagonal(emp, dim1=1, dim2=2).sum(1) / p
    x2 = xc * xc
    beta_ = (x2.transpose(1, 2) @ x2).sum((1, 2))
    delta_ = (emp * emp).sum((1, 2))
    beta = (beta_ / n - delta_) / (p * n)
    eye = torch.eye(p, dtype=x.dtype, device=x.device)
    delta = ((emp - mu[:, None, None] * eye) ** 2).sum((1, 2)) / p
    shrink = torch.where(delta > 0, torch.minimum(beta, delta) / delta.clamp_min(1e-300), torch.zeros_like(delta))
    cov = (1 - shrink)[:, None, None] * emp + (shrink * mu)[:, None, None] * eye
    return mean, cov


def precision_factor(cov: torch.Tensor) -> torch.Tensor:
    """F with F @ F.T = inverse(cov), from the Cholesky factor of cov (L^-T).

    No LU inverse: batched torch.linalg.inv hangs in oneMKL (DLASWP errors) on some real covariance batches.
    """
    low = torch.linalg.cholesky(cov)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
    return torch.linalg.solve_triangular(low, eye, upper=False).transpose(-1, -2)


class LocationGaussian(nn.Module):
    """Mahalanobis distance of each location's (pooled) feature vector to that location's good-image Gaussian."""

    def __init__(self, channels: int, size: tuple[int, int] = (1, 1), pool: int = 3):
        super().__init__()
        self.pool = pool
        h, w = size
        self.register_buffer("mean", torch.zeros(channels, h, w))
        self.register_buffer("chol", torch.eye(channels).repeat(h * w, 1, 1))  # precision = chol @ chol.T

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        """Average over a pool x pool neighbourhood: a larger receptive field for slow changes."""
        if self.pool <= 1:
            return x
        return F.avg_pool2d(x, self.pool, 1, self.pool // 2, count_include_pad=False)

    @torch.no_grad()
    def fit(self, feats: torch.Tensor, chunk: int = 64) -> None:
        """Fit every location's mean and precision factor from good-image features (N, C, h, w)."""
        if feats.shape[0] < 2:
            raise EdgeAdError("the Gaussian map needs at least 2 good training images")
        x = self.smooth(feats.float())
        n, c, h, w = x.shape
        samples = x.flatten(2).permute(2, 0, 1)  # (h*w, N, C)
        # Where every good image looks the same (black background corners) the covariance is 0: a ridge tied to
        # the features' average variance keeps it invertible; elsewhere Ledoit-Wolf's shrinkage dwarfs it.
        ridge = RIDGE * float(x.var(0).mean()) or RIDGE
        eye = torch.eye(c, dtype=torch.float64, device=x.device)
        means, chols = [], []
        for i in range(0, h * w, chunk):
            mean, cov = ledoit_wolf(samples[i:i + chunk])
            chols.append(precision_factor(cov + ridge * eye).float())
            means.append(mean.float())
        self.mean = torch.cat(means).T.reshape(c, h, w).contiguous().to(feats.device)
        self.chol = torch.cat(chols).to(feats.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) teacher features -> (N, 1, h, w) distances."""
        n = x.shape[0]
        h, w = self.mean.shape[1:]
        d = (self.smooth(x) - self.mean).flatten(2).permute(2, 0, 1)  # (h*w, N, C)
        z = torch.matmul(d, self.chol)
        dist = torch.sqrt((z * z).sum(-1))  # (h*w, N)
        return dist.permute(1, 0).reshape(n, 1, h, w)


def gaussian_from_state(state: dict, pool: int) -> LocationGaussian:
    """Rebuild a fitted head from its saved buffers (its shape follows the training input size)."""
    c, h, w = state["mean"].shape
    g = LocationGaussian(c, (h, w), pool)
    g.load_state_dict(state)
    return g
