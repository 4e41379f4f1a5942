"""Linear CKA (Kornblith et al. 2019) between two representations of the same N items: the
normalised HSIC of their centred linear kernels, invariant to orthogonal maps and isotropic scaling
of either side, 1 for identical representations."""
from __future__ import annotations

import torch


def as_matrix(x: torch.Tensor, pooled: bool = False) -> torch.Tensor:
    """[N, ...] -> float64 [N, d] with centred columns; tokens [N, T, D] flattened, or averaged
    over the tokens with `pooled`."""
    x = x.double()
    if pooled and x.dim() == 3:
        x = x.mean(1)
    x = x.reshape(len(x), -1)
    return x - x.mean(0, keepdim=True)


def hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """<Kx, Ky>_F of centred matrices, through whichever of the d1 x d2 or N x N products is smaller."""
    n = len(x)
    if x.shape[1] * y.shape[1] <= n * n:
        return (x.T @ y).pow(2).sum()
    return ((x @ x.T) * (y @ y.T)).sum()


def linear_cka(x: torch.Tensor, y: torch.Tensor, pooled: bool = False) -> float:
    x, y = as_matrix(x, pooled), as_matrix(y, pooled)
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same items on both sides, got {len(x)} and {len(y)}")
    den = (hsic(x, x) * hsic(y, y)).sqrt()
    return float(hsic(x, y) / den) if den > 0 else 0.0


def centred_kernel(x: torch.Tensor, pooled: bool = False) -> torch.Tensor:
    """N x N linear kernel of centred features, scaled to mean diagonal 1 so that experts of any
    width weigh alike in a sum of kernels."""
    m = as_matrix(x, pooled)
    k = m @ m.T
    scale = k.diagonal().mean()
    return k / scale if scale > 0 else k


def kernel_cka(kx: torch.Tensor, ky: torch.Tensor) -> float:
    """CKA of two kernels on the same items (each centred here)."""
    def centre(k):
        return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()

    kx, ky = centre(kx.double()), centre(ky.double())
    den = ((kx * kx).sum() * (ky * ky).sum()).sqrt()
    return float((kx * ky).sum() / den) if den > 0 else 0.0
