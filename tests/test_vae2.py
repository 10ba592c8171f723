"""Wan22VAE: native names, parity with diffusers' AutoencoderKLWan (Wan2.2 config), streaming decode,
clip-start decode, checkpoint loading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan

from _vae_weights import random_weights
from longlive_runner.model.checkpoints import CheckpointError
from longlive_runner.model.config import WAN22_VAE, VAEConfig
from longlive_runner.model.vae import WanVAE
from longlive_runner.model.vae2 import Wan22VAE, build_vae, load_wan22_vae, patchify, unpatchify

# The real layout (dim_mult 1,2,4,4, temporal [F,T,T], 2 res blocks, patch 2), narrow: encoder 8,
# decoder 16 (a wider decoder, as 160/256), 8 latent channels.
SMALL = VAEConfig(
    z_dim=8,
    base_dim=8,
    decoder_base_dim=16,
    latents_mean=tuple(0.1 * i - 0.3 for i in range(8)),
    latents_std=tuple(0.5 + 0.1 * i for i in range(8)),
    patch_size=2,
    is_residual=True,
)
LATENT_HW = (3, 4)  # -> video 48 x 64


def random_vae(cfg: VAEConfig, seed: int = 0) -> Wan22VAE:
    """Every parameter random (RMS gammas and zero-initialised projections included)."""
    return random_weights(lambda: Wan22VAE(cfg), seed)


# --- the test-side key map: native Wan2.2 names -> diffusers names ------------------------------
_PART = {"residual.0.gamma": "norm1.gamma", "residual.2": "conv1", "residual.3.gamma": "norm2.gamma",
         "residual.6": "conv2", "shortcut": "conv_shortcut"}  # fmt: skip


def _resnet_part(rest: str) -> str:
    for native, name in _PART.items():
        if rest.startswith(native):
            return name + rest[len(native) :]
    raise KeyError(rest)


def native_to_diffusers(key: str, num_res_blocks: int) -> str:
    top = {"conv1.weight": "quant_conv.weight", "conv1.bias": "quant_conv.bias",
           "conv2.weight": "post_quant_conv.weight", "conv2.bias": "post_quant_conv.bias"}  # fmt: skip
    if key in top:
        return top[key]
    side, rest = key.split(".", 1)
    if m := re.fullmatch(r"conv1\.(\w+)", rest):
        return f"{side}.conv_in.{m[1]}"
    if m := re.fullmatch(r"head\.0\.gamma", rest):
        return f"{side}.norm_out.gamma"
    if m := re.fullmatch(r"head\.2\.(\w+)", rest):
        return f"{side}.conv_out.{m[1]}"
    if m := re.fullmatch(r"middle\.1\.(.+)", rest):
        return f"{side}.mid_block.attentions.0.{m[1]}"
    if m := re.fullmatch(r"middle\.([02])\.(.+)", rest):
        return f"{side}.mid_block.resnets.{int(m[1]) // 2}.{_resnet_part(m[2])}"
    if m := re.fullmatch(r"(downsamples|upsamples)\.(\d+)\.\1\.(\d+)\.(.+)", rest):
        kind, level, n, tail = m[1], m[2], int(m[3]), m[4]
        blocks = "down_blocks" if kind == "downsamples" else "up_blocks"
        if tail.startswith(("resample.", "time_conv.")):
            sampler = "downsampler" if kind == "downsamples" else "upsampler"
            return f"{side}.{blocks}.{level}.{sampler}.{tail}"
        return f"{side}.{blocks}.{level}.resnets.{n}.{_resnet_part(tail)}"
    raise KeyError(key)


def diffusers_config(cfg: VAEConfig) -> dict:
    return dict(
        base_dim=cfg.base_dim,
        decoder_base_dim=cfg.decoder_base_dim,
        z_dim=cfg.z_dim,
        dim_mult=list(cfg.dim_mult),
        num_res_blocks=cfg.num_res_blocks,
        temperal_downsample=list(cfg.temporal_downsample),
        latents_mean=list(cfg.latents_mean),
        latents_std=list(cfg.latents_std),
        is_residual=True,
        in_channels=3 * cfg.patch_size**2,
        out_channels=3 * cfg.patch_size**2,
        patch_size=cfg.patch_size,
        scale_factor_spatial=cfg.spatial_compression,
        scale_factor_temporal=cfg.temporal_compression,
    )


def to_diffusers(vae: Wan22VAE) -> AutoencoderKLWan:
    ref = AutoencoderKLWan(**diffusers_config(vae.cfg)).eval()
    n = vae.cfg.num_res_blocks
    ref.load_state_dict({native_to_diffusers(k, n): v for k, v in vae.state_dict().items()}, strict=True)
    return ref


# --- names and shapes ---------------------------------------------------------------------------
def test_state_dict_is_the_native_wan22_layout():
    with torch.device("meta"):
        ours = Wan22VAE(WAN22_VAE)
        ref = AutoencoderKLWan(**diffusers_config(WAN22_VAE))
    sd = ours.state_dict()
    assert not any("latents_" in k for k in sd)
    # a few native names and shapes of Wan2.2_VAE.pth (widths 160 / 256, z 48, 12 pixel channels)
    assert sd["encoder.conv1.weight"].shape == (160, 12, 3, 3, 3)
    assert sd["encoder.downsamples.1.downsamples.0.shortcut.weight"].shape == (320, 160, 1, 1, 1)
    assert sd["encoder.downsamples.1.downsamples.2.time_conv.weight"].shape == (320, 320, 3, 1, 1)
    assert sd["encoder.downsamples.0.downsamples.2.resample.1.weight"].shape == (160, 160, 3, 3)
    assert sd["encoder.head.2.weight"].shape == (96, 640, 3, 3, 3)
    assert sd["conv1.weight"].shape == (96, 96, 1, 1, 1) and sd["conv2.weight"].shape == (48, 48, 1, 1, 1)
    assert sd["decoder.conv1.weight"].shape == (1024, 48, 3, 3, 3)
    assert sd["decoder.upsamples.0.upsamples.3.time_conv.weight"].shape == (2048, 1024, 3, 1, 1)
    assert sd["decoder.upsamples.0.upsamples.3.resample.1.weight"].shape == (1024, 1024, 3, 3)
    assert sd["decoder.upsamples.2.upsamples.0.shortcut.weight"].shape == (512, 1024, 1, 1, 1)
    assert sd["decoder.upsamples.3.upsamples.2.residual.6.weight"].shape == (256, 256, 3, 3, 3)
    assert sd["decoder.head.2.weight"].shape == (12, 256, 3, 3, 3)
    assert not any(
        k.startswith("decoder.upsamples.3.upsamples.3") for k in sd
    )  # the last level: no upsampler
    # every native key maps onto exactly diffusers' keys, with the same shapes
    mapped = {native_to_diffusers(k, 2): v.shape for k, v in sd.items()}
    expected = {k: v.shape for k, v in ref.state_dict().items()}
    assert mapped == expected
    ours_n, ref_n = sum(p.numel() for p in ours.parameters()), sum(p.numel() for p in ref.parameters())
    print(f"Wan2.2 VAE parameters: {ours_n:,}")
    assert ours_n == ref_n
    assert WAN22_VAE.spatial_compression == 16 and WAN22_VAE.temporal_compression == 4


def test_family_is_chosen_by_the_config():
    with torch.device("meta"):
        assert type(build_vae(WAN22_VAE)) is Wan22VAE
        assert type(build_vae(VAEConfig())) is WanVAE
        with pytest.raises(ValueError, match="Wan2.2"):
            WanVAE(WAN22_VAE)
        with pytest.raises(ValueError, match="is_residual"):
            Wan22VAE(VAEConfig())


def test_patchify_layout_and_inverse():
    video = torch.arange(2 * 3 * 2 * 4 * 6, dtype=torch.float32).view(2, 3, 2, 4, 6)
    x = patchify(video, 2)
    assert x.shape == (2, 12, 2, 2, 3)
    # channel c*4 + wx*2 + hy holds pixel (2i + hy, 2j + wx) of colour c
    for c, wx, hy in ((0, 0, 0), (1, 0, 1), (2, 1, 0), (2, 1, 1)):
        assert torch.equal(x[:, c * 4 + wx * 2 + hy], video[:, c, :, hy::2, wx::2])
    assert torch.equal(unpatchify(x, 2), video)


# --- parity with diffusers -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_vae() -> Wan22VAE:
    return random_vae(SMALL, seed=3)


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    torch.manual_seed(4)
    return torch.randn(1, SMALL.z_dim, 8, *LATENT_HW)  # normalised latents


def test_parity_with_diffusers(small_vae: Wan22VAE, latents: torch.Tensor):
    vae = small_vae
    ref = to_diffusers(vae)
    dec = vae.stream_decoder()
    ours = torch.cat([dec.decode(latents[:, :, s : s + 4]) for s in (0, 4)], dim=2)
    with torch.no_grad():
        expected = ref.decode(latents * vae.latents_std + vae.latents_mean).sample  # diffusers: raw latents
    assert ours.shape == expected.shape == (1, 3, 29, 48, 64)
    assert (expected.abs() < 0.99).float().mean() > 0.5  # not saturated at +-1: the check means something
    diff = (ours - expected).abs().max().item()
    print(f"Wan2.2 decode max abs diff vs diffusers: {diff:.2e}")
    assert diff <= 1e-4

    torch.manual_seed(5)
    video = torch.rand(1, 3, 9, 48, 64) * 2 - 1
    mu = vae.encode(video)
    with torch.no_grad():
        ref_mu = ref.encode(video).latent_dist.mean
    assert mu.shape == ref_mu.shape == (1, SMALL.z_dim, 3, *LATENT_HW)
    assert ref_mu.abs().max() > 0.1
    diff = (mu * vae.latents_std + vae.latents_mean - ref_mu).abs().max().item()
    print(f"Wan2.2 encode max abs diff vs diffusers: {diff:.2e}")
    assert diff <= 1e-4


# --- streaming --------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 3, 8], ids=["1_latent", "3_latents", "whole"])
def test_streaming_equals_whole_decode(small_vae: Wan22VAE, latents: torch.Tensor, chunk: int):
    whole = small_vae.decode(latents)
    assert whole.shape == (1, 3, 29, 48, 64)
    dec = small_vae.stream_decoder()
    pieces = []
    for s in range(0, latents.shape[2], chunk):
        piece = dec.decode(latents[:, :, s : s + chunk])
        n = min(chunk, latents.shape[2] - s)
        assert piece.shape[2] == dec.frames_for(n, first=s == 0) == (1 + 4 * (n - 1) if s == 0 else 4 * n)
        pieces.append(piece)
    streamed = torch.cat(pieces, dim=2)
    assert (streamed - whole).abs().max().item() <= 1e-6
    assert max(t.shape[2] for t in dec.cache.values()) <= 2  # the context never grows


def test_clip_start_decodes_every_chunk_as_a_new_video(small_vae: Wan22VAE, latents: torch.Tensor):
    dec = small_vae.stream_decoder(clip_start=True)
    chunks = [dec.decode(latents[:, :, s : s + 4]) for s in (0, 4)]
    assert [c.shape[2] for c in chunks] == [13, 13] == [dec.frames_for(4, first=False)] * 2
    # the second chunk equals the first chunk of a fresh video of those latents
    alone = small_vae.decode(latents[:, :, 4:8])
    assert torch.equal(chunks[1], alone)
    # and differs from the continuous decode's frames (no context carried across chunks)
    continuous = small_vae.stream_decoder()
    continuous.decode(latents[:, :, :4])
    carried = continuous.decode(latents[:, :, 4:8])  # 16 frames
    assert (chunks[1][:, :, -4:] - carried[:, :, -4:]).abs().max().item() > 1e-2


# --- loading a Wan2.2_VAE.pth-style file -------------------------------------------------------
def test_load_native_file(tmp_path: Path, small_vae: Wan22VAE, latents: torch.Tensor):
    path = tmp_path / "Wan2.2_VAE.pth"
    torch.save(small_vae.state_dict(), path)  # the native file is a flat {name: tensor} pickle
    loaded = load_wan22_vae(path, SMALL)
    assert torch.equal(loaded.decode(latents[:, :, :2]), small_vae.decode(latents[:, :, :2]))

    state = small_vae.state_dict()
    missing = dict(state)
    del missing["decoder.upsamples.1.upsamples.3.time_conv.weight"]
    extra = {**state, "decoder.upsamples.3.upsamples.3.resample.1.weight": torch.zeros(1)}
    bad_shape = {**state, "encoder.conv1.weight": torch.zeros(8, 3, 3, 3, 3)}  # an RGB (Wan2.1) input conv
    for name, sd, key, words in (
        ("missing", missing, "decoder.upsamples.1.upsamples.3.time_conv.weight", "missing key"),
        ("extra", extra, "decoder.upsamples.3.upsamples.3.resample.1.weight", "unexpected key"),
        ("shape", bad_shape, "encoder.conv1.weight", "has shape (8, 3, 3, 3, 3)"),
    ):
        bad = tmp_path / f"{name}.pth"
        torch.save(sd, bad)
        with pytest.raises(CheckpointError, match=re.escape(words)) as err:
            load_wan22_vae(bad, SMALL)
        assert err.value.key == key and err.value.path == str(bad)
        assert key in str(err.value) and str(bad) in str(err.value)


def test_refuses_a_pickle_that_runs_code(tmp_path: Path):
    path = tmp_path / "Wan2.2_VAE.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(1), "hook": Path("x")}, path)  # a non-tensor object
    with pytest.raises(CheckpointError, match="refused"):
        load_wan22_vae(path, SMALL)
