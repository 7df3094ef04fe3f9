"""The encoder's diagonal Gaussian posterior over latents."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Log-variance range the reference clamps to (keeps exp() finite).
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


@dataclass
class LatentDistribution:
    """Mean and log-variance of the posterior; both have the same shape and layout."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor, dim: int) -> LatentDistribution:
        """Split encoder output into mean (first half of ``dim``) and log-variance (second half)."""
        mean, logvar = torch.chunk(moments, 2, dim=dim)
        return cls(mean=mean, logvar=logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        """The most likely latent (the mean)."""
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std · N(0, 1); the noise is drawn on the generator's device so a seed is device-independent."""
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=torch.float32)
        return self.mean + self.std * noise.to(device=self.mean.device, dtype=self.mean.dtype)

    def transpose(self, dim0: int, dim1: int) -> LatentDistribution:
        """The same distribution with two dimensions swapped (e.g. to the network's (B, T, C) layout)."""
        return LatentDistribution(self.mean.transpose(dim0, dim1), self.logvar.transpose(dim0, dim1))
