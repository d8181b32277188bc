import math

import pytest
import torch

from psvae.config import ModelConfig
from psvae.model import PSVAE, count_parameters, plain_forward, same_padding


def test_default_network_has_the_papers_parameter_count():
    assert count_parameters(PSVAE((1, 128, 128), 4, ModelConfig(n_unsupervised=2))) == 8_746_005


@pytest.mark.parametrize(("size", "bottleneck"), [(192, (512, 3, 3)), (128, (512, 2, 2)), (64, (512, 1, 1))])
def test_bottleneck_sizes(size, bottleneck):
    assert PSVAE((1, size, size), 2, ModelConfig()).encoder.bottleneck == bottleneck


def test_same_padding_follows_tensorflow():
    assert same_padding(64, 5, 2) == (32, 1, 2)  # total pad 3: one before, two after
    assert same_padding(8, 5, 5) == (2, 1, 1)
    assert same_padding(4, 5, 5) == (1, 0, 1)
    assert same_padding(10, 5, 5) == (2, 0, 0)


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 100, 77), (2, 45, 61)])
def test_decoder_returns_the_input_shape(shape):
    model = PSVAE(shape, 3, ModelConfig(channels=(4, 4, 4, 4, 4), n_unsupervised=2))
    out = model(torch.rand(2, *shape))
    assert out.frames.shape == (2, *shape)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (2, 5)
    assert out.labels.shape == (2, 3)
    assert out.frames.min() > 0 and out.frames.max() < 1


def test_sampling_uses_the_standard_deviation_not_the_variance():
    # The reference sampled with exp(logvar) as the std; z must have variance exp(logvar).
    model = PSVAE((1, 32, 32), 1, ModelConfig(channels=(4, 4, 4, 4, 4), n_unsupervised=1))
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.zero_()
        model.encoder.logvar.bias.fill_(math.log(4.0))  # variance 4, std 2
    g = torch.Generator().manual_seed(0)
    out = model(torch.rand(20000, 1, 32, 32), generator=g)
    assert out.z.std().item() == pytest.approx(2.0, rel=0.03)
    assert torch.equal(model(torch.rand(3, 1, 32, 32)).z, torch.zeros(3, 2))  # no generator: z = mu


def test_labels_are_predicted_from_the_supervised_means():
    model = PSVAE((1, 32, 32), 2, ModelConfig(channels=(4, 4, 4, 4, 4)))
    with torch.no_grad():
        model.label_head.weight.copy_(torch.tensor([2.0, -1.0]))
        model.label_head.bias.copy_(torch.tensor([0.5, 0.0]))
    out = model(torch.rand(4, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        out.labels, out.mu[:, :2] * torch.tensor([2.0, -1.0]) + torch.tensor([0.5, 0.0])
    )
    torch.testing.assert_close(model.label_head.inverse(out.labels), out.mu[:, :2])


# -- the fast formulations compute the same function as PyTorch's own layers -------------
@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 128, 128), (2, 65, 100), (3, 33, 47)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_layers_match_plain_convolutions(shape, channels_last):
    torch.manual_seed(0)
    model = PSVAE(shape, 2, ModelConfig(channels=(8, 16, 16, 32, 32)))
    x = torch.rand(3, *shape)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    expected = plain_forward(model, x)
    torch.testing.assert_close(model(x).frames, expected, atol=1e-5, rtol=1e-4)
    # gradients agree too
    model(x).frames.square().sum().backward()
    fast_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    plain_forward(model, x).square().sum().backward()
    plain_grads = [p.grad for p in model.parameters() if p.grad is not None]
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("size", [4, 8, 16, 32])
def test_subpixel_and_patch_forms_match_transposed_convolutions(size):
    from psvae.model import patch_linear_conv, patch_linear_deconv, same_padding, subpixel_deconv

    torch.manual_seed(1)
    x = torch.randn(2, 6, size, size)
    for stride, kernel in ((2, 5), (3, 5), (2, 3)):
        _, before, _ = same_padding(size * stride, kernel, stride)
        deconv = torch.nn.ConvTranspose2d(6, 4, kernel, stride=stride, padding=before)
        out = (size * stride, size * stride)
        torch.testing.assert_close(
            subpixel_deconv(x, deconv, out), deconv(x)[..., : out[0], : out[1]], atol=1e-5, rtol=1e-4
        )
    deconv = torch.nn.ConvTranspose2d(6, 4, 5, stride=5, padding=1)
    out = (size * 5 - 2, size * 5 - 2)
    torch.testing.assert_close(
        patch_linear_deconv(x, deconv, out), deconv(x)[..., : out[0], : out[1]], atol=1e-5, rtol=1e-4
    )
    conv = torch.nn.Conv2d(6, 4, 2, stride=2)
    torch.testing.assert_close(patch_linear_conv(x, conv), conv(x), atol=1e-5, rtol=1e-4)


def test_bf16_autocast_forward_is_close_to_float32():
    torch.manual_seed(2)
    model = PSVAE((1, 64, 64), 2, ModelConfig(channels=(8, 16, 16, 32, 32)))
    x = torch.rand(4, 1, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x).frames.float()
    torch.testing.assert_close(low, model(x).frames, atol=2e-2, rtol=0)
