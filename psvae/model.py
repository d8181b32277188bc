"""The PS-VAE network (``docs/model.md`` §2-3).

Encoder: convolutions with TensorFlow-style "same" padding and LeakyReLU(0.05), then two
linear heads for the posterior mean and log-variance of all L = K + B + U latents. Decoder:
a linear map back to the bottleneck and transposed convolutions that are the exact adjoints
of the encoder's (same kernel, stride and padding), so the output is (C, H, W) for any H, W.
Label head: a diagonal affine map on the means of the supervised latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from psvae.config import ModelConfig
from psvae.family import FAMILY
from psvae.thresholds import MIN_FRAME_SIZE

LEAK = 0.05


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


# Fast but exact formulations of the strided (transposed) convolutions. They use the very same
# parameters as the nn.Conv2d / nn.ConvTranspose2d modules and compute the same function up to
# float rounding; only the order of the arithmetic differs.

SUBPIXEL_MIN_FP32 = 16  # in float32 the sub-pixel form only pays off from this input size on


def _channels_last(t: Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def patch_linear_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """conv(x) for kernel == stride and no padding (non-overlapping patches) as one matmul."""
    k, cout = conv.kernel_size[0], conv.out_channels
    m, c, h, w = x.shape
    nh, nw = h // k, w // k
    # (M, H, W, C) -> (M, nh, nw, kh, kw, C): one row of kh * kw * C features per patch
    patches = x.permute(0, 2, 3, 1).reshape(m, nh, k, nw, k, c).transpose(2, 3)
    weight = conv.weight.permute(0, 2, 3, 1).reshape(cout, k * k * c)
    y = F.linear(patches.reshape(m, nh, nw, k * k * c), weight, conv.bias)
    return y.permute(0, 3, 1, 2)  # (M, C_out, nh, nw), channels-last in memory


def _padding(layer: nn.ConvTranspose2d) -> tuple[int, int]:
    return cast(tuple[int, int], layer.padding)  # always a pair of ints for our layers


def patch_linear_deconv(x: Tensor, deconv: nn.ConvTranspose2d, size: tuple[int, int]) -> Tensor:
    """deconv(x) cropped to ``size`` for kernel == stride (non-overlapping blocks) as one matmul."""
    k = deconv.kernel_size[0]
    ph, pw = _padding(deconv)
    cin, cout = deconv.weight.shape[:2]
    m, _, nh, nw = x.shape
    weight = deconv.weight.permute(2, 3, 1, 0).reshape(k * k * cout, cin)  # rows (kh, kw, c)
    bias = None if deconv.bias is None else deconv.bias.repeat(k * k)
    y = F.linear(x.permute(0, 2, 3, 1), weight, bias)  # (M, nh, nw, kh * kw * C_out)
    y = y.view(m, nh, nw, k, k, cout).transpose(2, 3).reshape(m, nh * k, nw * k, cout)
    # the transposed conv drops ``padding`` pixels at the start; the crop drops the rest
    return y[:, ph : ph + size[0], pw : pw + size[1]].permute(0, 3, 1, 2)


def _subpixel_taps(kernel: int, stride: int, pad: int) -> tuple[list[int], int, int]:
    """Per-axis taps of a transposed conv rewritten as a stride-1 conv plus pixel shuffle.

    Transposed-conv output o = stride * i + k (i input index, k kernel tap). After dropping
    ``pad`` leading pixels, output j = stride * m + r (phase r) receives tap
    k = r + pad - stride * d from input i = m + d. Returns (table, d_min, d_max) where
    table[r * n_taps + t] is the tap feeding phase r from input m + d_min + t, or ``kernel``
    (an appended zero tap) if there is none.
    """
    ds = [
        (r + pad - k) // stride for r in range(stride) for k in range(kernel) if (r + pad - k) % stride == 0
    ]
    d_min, d_max = min(ds), max(ds)
    table = [
        k if 0 <= (k := r + pad - stride * (d_min + t)) < kernel else kernel
        for r in range(stride)
        for t in range(d_max - d_min + 1)
    ]
    return table, d_min, d_max


def subpixel_deconv(x: Tensor, deconv: nn.ConvTranspose2d, size: tuple[int, int]) -> Tensor:
    """deconv(x) cropped to ``size``, as a stride-1 conv with stride**2 * C_out channels
    followed by pixel_shuffle; the conv weight is gathered from the deconv weight."""
    (kh, kw), (s, _), (ph, pw) = deconv.kernel_size, deconv.stride, _padding(deconv)
    th, dh0, dh1 = _subpixel_taps(kh, s, ph)
    tw, dw0, dw1 = _subpixel_taps(kw, s, pw)
    nh, nw = dh1 - dh0 + 1, dw1 - dw0 + 1
    cin, cout = deconv.weight.shape[:2]
    w = F.pad(deconv.weight, (0, 1, 0, 1))  # index kh / kw is the zero tap
    w = w.index_select(2, torch.tensor(th, device=w.device))
    w = w.index_select(3, torch.tensor(tw, device=w.device))  # (C_in, C_out, s*nh, s*nw)
    w = w.view(cin, cout, s, nh, s, nw).permute(1, 2, 4, 0, 3, 5)
    w = w.reshape(cout * s * s, cin, nh, nw)  # channel c * s * s + r_h * s + r_w
    if _channels_last(x):
        w = w.contiguous(memory_format=torch.channels_last)
    b = None if deconv.bias is None else deconv.bias.repeat_interleave(s * s)
    conv_pad = (min(-dh0, dh1), min(-dw0, dw1))
    extra = (-dw0 - conv_pad[1], dw1 - conv_pad[1], -dh0 - conv_pad[0], dh1 - conv_pad[0])
    if any(extra):
        x = F.pad(x, extra)
    y = F.pixel_shuffle(F.conv2d(x, w, b, 1, conv_pad), s)
    if y.shape[-2:] != size:
        y = y[..., : size[0], : size[1]]
    return y


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
        for layer, g in zip(self.convs, self.geometry, strict=True):
            conv = cast(nn.Conv2d, layer)
            patches = conv.kernel_size == conv.stride and conv.stride[0] == conv.stride[1]
            # symmetric padding goes into the convolution, only the excess through F.pad
            sym = (
                (0, 0)
                if patches
                else (min(g.pad_before[0], g.pad_after[0]), min(g.pad_before[1], g.pad_after[1]))
            )
            extra = (
                g.pad_before[1] - sym[1],
                g.pad_after[1] - sym[1],
                g.pad_before[0] - sym[0],
                g.pad_after[0] - sym[0],
            )
            if any(extra):  # F.pad takes (left, right, top, bottom)
                x = F.pad(x, extra)
            if patches:
                x = patch_linear_conv(x, conv)
            else:
                x = F.conv2d(x, conv.weight, conv.bias, cast(tuple[int, int], conv.stride), sym)
            x = F.leaky_relu(x, LEAK)
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

    def _layer(self, x: Tensor, deconv: nn.ConvTranspose2d, size: tuple[int, int]) -> Tensor:
        (kh, kw), (sh, sw) = deconv.kernel_size, deconv.stride
        if kh == kw == sh == sw:
            return patch_linear_deconv(x, deconv, size)
        low_precision = torch.is_autocast_enabled(x.device.type) or x.dtype != torch.float32
        if (
            sh == sw > 1
            and kh >= sh
            and kw >= sw
            and (low_precision or min(x.shape[-2:]) >= SUBPIXEL_MIN_FP32)
        ):
            return subpixel_deconv(x, deconv, size)
        x = deconv(x)
        if x.shape[-2:] != size:
            # The transposed convolution already dropped pad_before on both sides; cropping to
            # the encoder layer's input size drops the rest of pad_after.
            x = x[..., : size[0], : size[1]]
        return x

    def forward(self, z: Tensor) -> Tensor:
        """z: (M, L_in) -> frames (M, C, H, W) in (0, 1)."""
        x = self.linear(z).view(-1, *self.bottleneck)  # (M, C_last, h, w)
        last = len(self.deconvs) - 1
        for i, (layer, g) in enumerate(zip(self.deconvs, self.geometry, strict=True)):
            x = self._layer(x, cast(nn.ConvTranspose2d, layer), g.size_in)
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
    """Everything one pass produces. Shapes: M frames, L_enc latents from the encoder."""

    mu: Tensor  # (M, L_enc)
    logvar: Tensor  # (M, L_enc); unused by the deterministic autoencoders
    z: Tensor  # (M, L_enc), sampled in training (variational classes), = mu otherwise
    frames: Tensor  # (M, C, H, W), in (0, 1)
    labels: Tensor | None  # (M, K), z-scored units; None for classes that predict no labels


class PSVAE(nn.Module):
    """The PS-VAE and the other members of its family, one network with a per-class latent layout.

    Every class exposes its latents in one layout, [supervised K_s | background B | unsupervised U],
    which is what ``encode`` returns, ``decode`` takes and traversals vary:

    - ``ps-vae``: the encoder's latents as they are (B = 0); labels from a diagonal head on mu_s.
    - ``msps-vae``: the same with B background latents.
    - ``cond-ae``: the encoder gives U latents z; the decoder reads [z, labels]; the supervised
      block is the (z-scored) labels the frames were conditioned on.
    - ``cond-ae-msp``: the encoder gives L = K + U latents z and labels are y = P z (P: K x L, no
      bias); the supervised block is P z and the unsupervised block the coordinates of z in the
      null space of P.
    - ``vae``, ``beta-tcvae``: U latents, all unsupervised (K_s = 0).
    """

    def __init__(
        self,
        frame_shape: tuple[int, int, int],
        n_labels: int,
        cfg: ModelConfig,
        n_background: int | None = None,
    ) -> None:
        super().__init__()
        n_channels, height, width = frame_shape
        if min(height, width) < MIN_FRAME_SIZE:
            raise ValueError(f"frames of {height}x{width} are smaller than {MIN_FRAME_SIZE}x{MIN_FRAME_SIZE}")
        self.model_class = cfg.model_class
        self.kind = kind = FAMILY[cfg.model_class]
        self.frame_shape = frame_shape
        self.n_labels = n_labels  # K, labels in the data
        if n_background is None:
            n_background = cfg.n_background if kind.background else 0
        self.n_background = n_background
        self.n_unsupervised = cfg.n_unsupervised
        self.variational = kind.variational
        self.n_supervised = n_labels if kind.supervised else 0  # K_s
        self.n_latents = self.n_supervised + n_background + cfg.n_unsupervised  # the layout's L
        # the encoder's width: the conditional autoencoder's labels are inputs, not latents
        n_codes = cfg.n_unsupervised if kind.conditional else self.n_latents
        self.n_codes = n_codes
        n_decoder_in = n_codes + (n_labels if kind.conditional else 0)
        self.encoder = Encoder(n_channels, (height, width), cfg, n_codes)
        self.decoder = Decoder(n_channels, self.encoder.geometry, self.encoder.bottleneck, cfg, n_decoder_in)
        self.label_head = LabelHead(n_labels)
        self.projection = nn.Linear(n_codes, n_labels, bias=False) if kind.projection else None

    def split_latents(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(M, L) in the layout -> supervised (M, K_s), background (M, B), unsupervised (M, U)."""
        k, b = self.n_supervised, self.n_background
        return z[:, :k], z[:, k : k + b], z[:, k + b :]

    def predict_labels(self, mu: Tensor) -> Tensor | None:
        """Labels (M, K) in z-scored units from the encoder's means, or None if the class has none."""
        if self.kind.label_head:
            return cast(Tensor, self.label_head(mu[:, : self.n_labels]))
        if self.projection is not None:
            return cast(Tensor, self.projection(mu))
        return None

    def _null_space(self) -> tuple[Tensor, Tensor]:
        """MSP only: the pseudo-inverse of P (L x K) and an orthonormal basis of its null space (U x L)."""
        assert self.projection is not None
        p = self.projection.weight.float()  # (K, L)
        _, _, vh = torch.linalg.svd(p, full_matrices=True)
        return torch.linalg.pinv(p), vh[self.n_labels :]

    def to_layout(self, mu: Tensor, labels_z: Tensor | None = None) -> Tensor:
        """The encoder's means (M, L_enc) as the layout (M, L). ``labels_z`` (M, K): the
        conditional autoencoder's labels, which are part of its layout."""
        if self.kind.conditional:
            if labels_z is None:
                raise ValueError("a conditional autoencoder needs the labels of the frames")
            return torch.cat([labels_z.to(mu), mu], dim=1)
        if self.kind.projection:
            _, null = self._null_space()
            return torch.cat([cast(Tensor, self.projection(mu)), mu @ null.T], dim=1)  # type: ignore[misc]
        return mu

    def unsupervised(self, mu: Tensor) -> Tensor:
        """The unsupervised latents (M, U) of the encoder's means (M, L_enc)."""
        if self.kind.projection:
            return mu @ self._null_space()[1].T
        return mu[:, mu.shape[1] - self.n_unsupervised :]

    def decode_layout(self, latents: Tensor) -> Tensor:
        """Frames (M, C, H, W) from latents (M, L) in the layout."""
        s, _, u = self.split_latents(latents)
        if self.kind.conditional:
            z = torch.cat([u, s], dim=1)
        elif self.kind.projection:
            pinv, null = self._null_space()
            z = s @ pinv.T + u @ null  # P z = s and the null-space coordinates of z are u
        else:
            z = latents
        return cast(Tensor, self.decoder(z))

    def forward(
        self, frames: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None
    ) -> ForwardOutput:
        """frames: (M, C, H, W) in [0, 1]; labels (M, K) z-scored, needed by ``cond-ae`` only.

        With ``generator`` the latents of the variational classes are sampled,
        z = mu + eps * exp(logvar / 2); without it, and always for the autoencoders, z = mu
        (evaluation, export, traversals).
        """
        mu, logvar = self.encoder(frames)
        if generator is None or not self.variational:
            z = mu
        else:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + eps * torch.exp(0.5 * logvar)
        decoder_in = z
        if self.kind.conditional:
            if labels is None:
                raise ValueError("a conditional autoencoder needs the labels of the frames")
            decoder_in = torch.cat([z, labels.to(z.dtype)], dim=1)
        return ForwardOutput(
            mu=mu,
            logvar=logvar,
            z=z,
            frames=self.decoder(decoder_in),
            labels=self.predict_labels(mu),
        )


def plain_encode(model: PSVAE, frames: Tensor) -> tuple[Tensor, Tensor]:
    """The encoder written the obvious way (F.pad + Conv2d): mu, logvar (M, L).

    With :func:`plain_decode` this is the specification the fast layers above are tested
    against, and the baseline bench/ times them against; training never uses it.
    """
    x = frames
    for conv, g in zip(model.encoder.convs, model.encoder.geometry, strict=True):
        x = F.pad(x, (g.pad_before[1], g.pad_after[1], g.pad_before[0], g.pad_after[0]))
        x = F.leaky_relu(conv(x), LEAK)
    x = x.flatten(1)
    return model.encoder.mu(x), model.encoder.logvar(x)


def plain_decode(model: PSVAE, z: Tensor) -> Tensor:
    """The decoder written the obvious way (ConvTranspose2d, then crop): frames (M, C, H, W)."""
    y = model.decoder.linear(z).view(-1, *model.decoder.bottleneck)
    last = len(model.decoder.deconvs) - 1
    for i, (deconv, g) in enumerate(zip(model.decoder.deconvs, model.decoder.geometry, strict=True)):
        y = deconv(y)[..., : g.size_in[0], : g.size_in[1]]
        y = torch.sigmoid(y) if i == last else F.leaky_relu(y, LEAK)
    return y


def plain_forward(model: PSVAE, frames: Tensor) -> Tensor:
    """Reconstruction from the posterior means, through the plain layers."""
    return plain_decode(model, plain_encode(model, frames)[0])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
