"""The PS-VAE network (``model.md`` §2-3).

Encoder: convolutions with TensorFlow-style "same" padding and LeakyReLU(0.05), then two
linear heads for the posterior mean and log-variance of all L = K + B + U latents. Decoder:
a linear map back to the bottleneck and transposed convolutions that are the exact adjoints
of the encoder's (same kernel, stride and padding), so the output is (C, H, W) for any H, W.
Label head: a diagonal affine map on the means of the supervised latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from psvae.config import ModelConfig

LEAK = 0.05
MIN_FRAME_SIZE = 32  # the four stride-2 layers leave at least 2x2 pixels for the last one


@dataclass(frozen=True)
class LayerGeometry:
    """One convolution's spatial sizes and its TensorFlow "same" padding, per axis (h, w)."""

    size_in: tuple[int, int]
    size_out: tuple[int, int]
    pad_before: tuple[int, int]
    pad_after: tuple[int, int]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """Output size and (before, after) padding of a "same" convolution along one axis.

    out = ceil(size / stride); the total padding max(0, (out - 1) * stride + kernel - size)
    is split with the odd pixel after, as TensorFlow does.
    """
    out = math.ceil(size / stride)
    total = max(0, (out - 1) * stride + kernel - size)
    return out, total // 2, total - total // 2


def encoder_geometry(frame_hw: tuple[int, int], kernel: int, strides: tuple[int, ...]) -> list[LayerGeometry]:
    layers = []
    h, w = frame_hw
    for stride in strides:
        h_out, h_before, h_after = same_padding(h, kernel, stride)
        w_out, w_before, w_after = same_padding(w, kernel, stride)
        layers.append(LayerGeometry((h, w), (h_out, w_out), (h_before, w_before), (h_after, w_after)))
        h, w = h_out, w_out
    return layers


class Encoder(nn.Module):
    def __init__(self, n_channels: int, frame_hw: tuple[int, int], cfg: ModelConfig, n_latents: int) -> None:
        super().__init__()
        self.geometry = encoder_geometry(frame_hw, cfg.kernel_size, cfg.strides)
        widths = (n_channels, *cfg.channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, cfg.kernel_size, stride=s)
            for c_in, c_out, s in zip(widths[:-1], widths[1:], cfg.strides, strict=True)
        )
        h, w = self.geometry[-1].size_out
        self.bottleneck = (cfg.channels[-1], h, w)
        n_features = cfg.channels[-1] * h * w
        self.mu = nn.Linear(n_features, n_latents)
        self.logvar = nn.Linear(n_features, n_latents)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (M, C, H, W) in [0, 1] -> mu, logvar: (M, L)."""
        for conv, g in zip(self.convs, self.geometry, strict=True):
            # F.pad takes (left, right, top, bottom)
            x = F.pad(x, (g.pad_before[1], g.pad_after[1], g.pad_before[0], g.pad_after[0]))
            x = F.leaky_relu(conv(x), LEAK)
        x = x.flatten(1)  # (M, C_last * h * w)
        return self.mu(x), self.logvar(x)


class Decoder(nn.Module):
    def __init__(
        self,
        n_channels: int,
        encoder_layers: list[LayerGeometry],
        bottleneck: tuple[int, int, int],
        cfg: ModelConfig,
        n_inputs: int,
    ) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        self.linear = nn.Linear(n_inputs, math.prod(bottleneck))
        widths = (n_channels, *cfg.channels)
        # mirror the encoder: last encoder layer first
        self.geometry = encoder_layers[::-1]
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, cfg.kernel_size, stride=s, padding=g.pad_before)
            for c_in, c_out, s, g in zip(
                widths[:0:-1], widths[-2::-1], cfg.strides[::-1], self.geometry, strict=True
            )
        )

    def forward(self, z: Tensor) -> Tensor:
        """z: (M, L_in) -> frames (M, C, H, W) in (0, 1)."""
        x = self.linear(z).view(-1, *self.bottleneck)  # (M, C_last, h, w)
        last = len(self.deconvs) - 1
        for i, (deconv, g) in enumerate(zip(self.deconvs, self.geometry, strict=True)):
            # The transposed convolution already dropped pad_before on both sides; cropping to
            # the encoder layer's input size drops the rest of pad_after.
            x = deconv(x)[..., : g.size_in[0], : g.size_in[1]]
            x = torch.sigmoid(x) if i == last else F.leaky_relu(x, LEAK)
        return x


class LabelHead(nn.Module):
    """y_hat_k = d_k * mu_s,k + b_k: one weight and one bias per label."""

    def __init__(self, n_labels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_labels))
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def forward(self, mu_s: Tensor) -> Tensor:
        return mu_s * self.weight + self.bias

    def inverse(self, labels: Tensor) -> Tensor:
        """The supervised latent mean that predicts ``labels`` (z-scored units)."""
        return (labels - self.bias) / self.weight


@dataclass
class ForwardOutput:
    """Everything one pass produces. Shapes: M frames, L = K + B + U latents."""

    mu: Tensor  # (M, L)
    logvar: Tensor  # (M, L)
    z: Tensor  # (M, L), sampled in training, = mu in evaluation
    frames: Tensor  # (M, C, H, W), in (0, 1)
    labels: Tensor  # (M, K), z-scored units, predicted from mu_s


class PSVAE(nn.Module):
    """Partitioned-subspace VAE: latents [supervised K | background B | unsupervised U]."""

    def __init__(
        self,
        frame_shape: tuple[int, int, int],
        n_labels: int,
        cfg: ModelConfig,
        n_background: int = 0,
    ) -> None:
        super().__init__()
        n_channels, height, width = frame_shape
        if min(height, width) < MIN_FRAME_SIZE:
            raise ValueError(f"frames of {height}x{width} are smaller than {MIN_FRAME_SIZE}x{MIN_FRAME_SIZE}")
        self.frame_shape = frame_shape
        self.n_labels = n_labels
        self.n_background = n_background
        self.n_unsupervised = cfg.n_unsupervised
        self.n_latents = n_labels + n_background + cfg.n_unsupervised
        self.encoder = Encoder(n_channels, (height, width), cfg, self.n_latents)
        self.decoder = Decoder(
            n_channels, self.encoder.geometry, self.encoder.bottleneck, cfg, self.n_latents
        )
        self.label_head = LabelHead(n_labels)

    def split_latents(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(M, L) -> supervised (M, K), background (M, B), unsupervised (M, U)."""
        k, b = self.n_labels, self.n_background
        return z[:, :k], z[:, k : k + b], z[:, k + b :]

    def forward(self, frames: Tensor, generator: torch.Generator | None = None) -> ForwardOutput:
        """frames: (M, C, H, W) in [0, 1].

        With ``generator`` the latents are sampled, z = mu + eps * exp(logvar / 2); without it
        z = mu (evaluation, export, traversals).
        """
        mu, logvar = self.encoder(frames)
        if generator is None:
            z = mu
        else:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + eps * torch.exp(0.5 * logvar)
        return ForwardOutput(
            mu=mu,
            logvar=logvar,
            z=z,
            frames=self.decoder(z),
            labels=self.label_head(mu[:, : self.n_labels]),
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
