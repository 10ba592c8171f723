"""WanVAE: parity with diffusers' AutoencoderKLWan (the test oracle), streaming decode, helpers."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from _vae_weights import random_weights
from longlive_runner.model.config import PRESETS, VAEConfig
from longlive_runner.model.vae import WanVAE, to_uint8

TINY = PRESETS["tiny"].vae  # base_dim 8, dim_mult (1, 2, 2, 2)
STANDARD_SMALL = VAEConfig(base_dim=8, dim_mult=(1, 2, 4, 4))  # the real layout, narrow
LATENT_HW = (4, 6)


def random_vae(cfg: VAEConfig, seed: int = 0) -> WanVAE:
    """A VAE with every parameter random: RMS gammas and zero-initialised projections included."""
    return random_weights(lambda: WanVAE(cfg), seed)


def diffusers_vae(vae: WanVAE) -> AutoencoderKLWan:
    cfg = vae.cfg
    ref = AutoencoderKLWan(
        base_dim=cfg.base_dim,
        z_dim=cfg.z_dim,
        dim_mult=list(cfg.dim_mult),
        num_res_blocks=cfg.num_res_blocks,
        temperal_downsample=list(cfg.temporal_downsample),
        latents_mean=list(cfg.latents_mean),
        latents_std=list(cfg.latents_std),
    ).eval()
    sd = convert_wan_vae_to_diffusers(vae.state_dict())
    # The converter knows only the decoder shortcut of the standard dim_mult (upsamples.4); for other
    # layouts it leaves `decoder.up_blocks.<native index>.conv_shortcut`. Map those to level/resnet.
    per_level = cfg.num_res_blocks + 2  # resnets + the upsampler
    fixed = {}
    for key, value in sd.items():
        m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.conv_shortcut\.(\w+)", key)
        if m and int(m.group(1)) >= len(cfg.dim_mult):
            idx = int(m.group(1))
            key = f"decoder.up_blocks.{idx // per_level}.resnets.{idx % per_level}.conv_shortcut.{m.group(2)}"
        fixed[key] = value
    ref.load_state_dict(fixed, strict=True)
    return ref


def test_state_dict_matches_native_wan_layout():
    # Full-size model on the meta device: our native names, converted, must be exactly diffusers' keys/shapes.
    with torch.device("meta"):
        ours = WanVAE(VAEConfig())
        ref = AutoencoderKLWan()
    sd = ours.state_dict()
    for key in ("encoder.conv1.weight", "conv1.weight", "conv2.bias", "decoder.conv1.weight"):
        assert key in sd
    for key in ("decoder.middle.0.residual.0.gamma", "decoder.upsamples.4.shortcut.weight"):
        assert key in sd
    assert sd["decoder.head.0.gamma"].shape == (96, 1, 1, 1)
    assert sd["decoder.head.2.weight"].shape == (3, 96, 3, 3, 3)
    assert sd["decoder.upsamples.3.time_conv.weight"].shape == (768, 384, 3, 1, 1)
    assert sd["encoder.downsamples.5.time_conv.weight"].shape == (192, 192, 3, 1, 1)
    assert not any("latents_" in k for k in sd)  # normalisation stats are not checkpoint entries
    converted = convert_wan_vae_to_diffusers(sd)
    expected = ref.state_dict()
    assert set(converted) == set(expected)
    assert all(converted[k].shape == expected[k].shape for k in expected)
    assert sum(p.numel() for p in ours.parameters()) == 126_892_531


@pytest.mark.parametrize("cfg", [STANDARD_SMALL, TINY], ids=["dim_mult_1244", "tiny_1222"])
def test_parity_with_diffusers(cfg: VAEConfig):
    vae = random_vae(cfg)
    ref = diffusers_vae(vae)
    torch.manual_seed(1)
    z = torch.randn(1, cfg.z_dim, 9, *LATENT_HW)  # normalised latents

    dec = vae.stream_decoder()
    ours = torch.cat([dec.decode(z[:, :, s : s + 3]) for s in (0, 3, 6)], dim=2)
    with torch.no_grad():
        expected = ref.decode(z * vae.latents_std + vae.latents_mean).sample  # diffusers: raw latents
    assert ours.shape == expected.shape == (1, 3, 33, 32, 48)
    # the check means something only if the output is not saturated at +-1
    assert (expected.abs() < 0.99).float().mean() > 0.5
    diff = (ours - expected).abs().max().item()
    print(f"decode max abs diff vs diffusers ({cfg.dim_mult}): {diff:.2e}")
    assert diff <= 1e-4

    video = torch.rand(1, 3, 9, 32, 48) * 2 - 1
    mu = vae.encode(video)
    with torch.no_grad():
        ref_mu = ref.encode(video).latent_dist.mean
    assert mu.shape == (1, cfg.z_dim, 3, *LATENT_HW)
    diff = (mu * vae.latents_std + vae.latents_mean - ref_mu).abs().max().item()
    print(f"encode max abs diff vs diffusers ({cfg.dim_mult}): {diff:.2e}")
    assert diff <= 1e-4


@pytest.fixture(scope="module")
def tiny_vae() -> WanVAE:
    return random_vae(TINY, seed=3)


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    torch.manual_seed(4)
    return torch.randn(1, 16, 9, *LATENT_HW)


def test_frame_counts_and_bounded_cache(tiny_vae: WanVAE, latents: torch.Tensor):
    dec = tiny_vae.stream_decoder()
    sizes = []
    for s, frames in ((0, 9), (3, 12), (6, 12)):
        video = dec.decode(latents[:, :, s : s + 3])
        assert video.shape == (1, 3, frames, 32, 48)
        assert video.dtype == torch.float32
        assert video.min() >= -1.0 and video.max() <= 1.0
        sizes.append(sum(t.numel() for t in dec.cache.values()))
        assert max(t.shape[2] for t in dec.cache.values()) <= 2
    assert sizes[1] == sizes[2]  # the conv context does not grow with the video


def test_streaming_equals_whole_decode(tiny_vae: WanVAE, latents: torch.Tensor):
    whole = tiny_vae.decode(latents)
    assert whole.shape == (1, 3, 33, 32, 48)
    dec = tiny_vae.stream_decoder()
    with torch.inference_mode():
        blocks = [dec.decode(latents[:, :, s : s + 3]) for s in (0, 3, 6)]
    streamed = torch.cat(blocks, dim=2)
    assert (streamed - whole).abs().max().item() <= 1e-6
    # the carried context matters: a block decoded as its own video differs
    alone = tiny_vae.decode(latents[:, :, 3:6])  # 9 frames
    assert (blocks[1][:, :, -8:] - alone[:, :, -8:]).abs().max().item() > 1e-2


def test_reset_equals_fresh_decoder(tiny_vae: WanVAE, latents: torch.Tensor):
    dec = tiny_vae.stream_decoder()
    dec.decode(latents[:, :, :3])
    carried = dec.decode(latents[:, :, 3:6])
    dec.reset()
    after_reset = dec.decode(latents[:, :, 3:6])
    fresh = tiny_vae.stream_decoder().decode(latents[:, :, 3:6])
    assert after_reset.shape == fresh.shape == (1, 3, 9, 32, 48)
    assert torch.equal(after_reset, fresh)
    assert carried.shape[2] == 12


def test_encode_shapes_and_validation(tiny_vae: WanVAE):
    torch.manual_seed(5)
    mu = tiny_vae.encode(torch.rand(2, 3, 5, 16, 24) * 2 - 1)
    assert mu.shape == (2, 16, 2, 2, 3)
    assert torch.isfinite(mu).all()
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        tiny_vae.encode(torch.zeros(1, 3, 4, 16, 24))


def test_to_uint8():
    # inputs in [-1, 1], as the decoders return them (they clamp; to_uint8 does not clamp again)
    video = torch.tensor([-1.0, 0.0, 1.0, -0.999, 0.999, 0.5]).view(1, 1, 6, 1, 1).expand(2, 3, 6, 2, 4)
    frames = to_uint8(video)
    assert isinstance(frames, np.ndarray)
    assert frames.dtype == np.uint8 and frames.shape == (6, 2, 4, 3)
    assert frames[:, 0, 0, 0].tolist() == [0, 128, 255, 0, 255, 191]  # 127.5 rounds to even, 191.25 -> 191
    assert torch.equal(video, video.clamp(-1.0, 1.0))  # the input is left as it was
