"""Loading the layouts users have on disk, and precise errors for broken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from longlive_runner import CheckpointError, load_pipeline
from longlive_runner.model import checkpoints as ckpt


def _first_frames(pipe, prompt: str = "a red circle") -> np.ndarray:
    return pipe.generator(seed=0).generate_block(prompt).frames


def test_wan_plus_longlive_layout_loads_with_the_lora_merged(real_layout, tiny_pipe):
    pipe = load_pipeline("tiny", wan_dir=real_layout["wan"], longlive_dir=real_layout["longlive"])
    base, lora = real_layout["dit_state"], real_layout["lora"]
    got = pipe.dit.state_dict()
    for key in ("blocks.0.self_attn.q.weight", "blocks.1.ffn.2.weight", "blocks.1.cross_attn.o.weight"):
        a = lora[f"base_model.model.{key.removesuffix('.weight')}.lora_A.weight"]
        b = lora[f"base_model.model.{key.removesuffix('.weight')}.lora_B.weight"]
        torch.testing.assert_close(got[key], base[key] + b @ a, rtol=0, atol=1e-6)
    # Weights that carry no LoRA come from longlive_base.pt, not from the (zeroed) Wan DiT file.
    torch.testing.assert_close(got["patch_embedding.weight"], base["patch_embedding.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        pipe.vae.state_dict()["decoder.conv1.weight"], tiny_pipe.vae.state_dict()["decoder.conv1.weight"]
    )
    assert _first_frames(pipe).shape == (9, 64, 112, 3)


def test_wan_layout_alone_uses_the_wan_dit_file(real_layout):
    pipe = load_pipeline("tiny", wan_dir=real_layout["wan"])
    assert float(pipe.dit.state_dict()["patch_embedding.weight"].abs().sum()) == 0.0


def test_converted_folder_round_trip_matches_the_source_layout(real_layout, tmp_path):
    from longlive_runner.cli import main

    out = tmp_path / "converted"
    rc = main(["convert", "--model", "tiny", "--wan-dir", str(real_layout["wan"]),
               "--longlive-dir", str(real_layout["longlive"]), "--out", str(out), "--dtype", "fp32", "--quiet"])  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "dit.safetensors",
        "t5.safetensors",
        "tokenizer.json",
        "vae.safetensors",
    ]
    src = load_pipeline("tiny", wan_dir=real_layout["wan"], longlive_dir=real_layout["longlive"])
    conv = load_pipeline(out)
    assert conv.config == src.config
    assert np.array_equal(_first_frames(src), _first_frames(conv))


def _copy_layout(real_layout, tmp_path) -> tuple[Path, Path]:
    wan, ll = tmp_path / "wan", tmp_path / "ll"
    shutil.copytree(real_layout["wan"], wan)
    shutil.copytree(real_layout["longlive"], ll)
    return wan, ll


def test_truncated_safetensors_names_the_file(real_layout, tmp_path):
    wan, _ = _copy_layout(real_layout, tmp_path)
    f = wan / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_pipeline("tiny", wan_dir=wan)
    assert info.value.path == str(f)


def test_truncated_pickle_names_the_file(real_layout, tmp_path):
    wan, ll = _copy_layout(real_layout, tmp_path)
    f = ll / "models" / "lora.pt"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="lora.pt"):
        load_pipeline("tiny", wan_dir=wan, longlive_dir=ll)


def test_missing_key_is_named(real_layout, tmp_path):
    wan, _ = _copy_layout(real_layout, tmp_path)
    f = wan / "diffusion_pytorch_model.safetensors"
    state = load_file(str(f))
    del state["blocks.1.cross_attn.k.weight"]
    save_file(state, str(f))
    with pytest.raises(CheckpointError, match=r"missing key 'blocks\.1\.cross_attn\.k\.weight'") as info:
        load_pipeline("tiny", wan_dir=wan)
    assert info.value.key == "blocks.1.cross_attn.k.weight" and "diffusion_pytorch_model" in str(info.value)


def test_unexpected_key_is_named(real_layout, tmp_path):
    wan, _ = _copy_layout(real_layout, tmp_path)
    f = wan / "Wan2.1_VAE.pth"
    state = torch.load(f, weights_only=True)
    state["decoder.extra.weight"] = torch.zeros(3)
    torch.save(state, f)
    with pytest.raises(CheckpointError, match=r"unexpected key 'decoder\.extra\.weight'"):
        load_pipeline("tiny", wan_dir=wan)


def test_wrong_shape_is_named(real_layout, tmp_path):
    wan, _ = _copy_layout(real_layout, tmp_path)
    f = wan / "diffusion_pytorch_model.safetensors"
    state = load_file(str(f))
    state["head.head.weight"] = state["head.head.weight"][:-1].contiguous()
    save_file(state, str(f))
    with pytest.raises(CheckpointError, match=r"'head\.head\.weight' has shape"):
        load_pipeline("tiny", wan_dir=wan)


def test_lora_with_a_missing_half_is_named(real_layout, tmp_path):
    wan, ll = _copy_layout(real_layout, tmp_path)
    f = ll / "models" / "lora.pt"
    data = torch.load(f, weights_only=True)
    del data["generator_lora"]["base_model.model.blocks.0.ffn.0.lora_B.weight"]
    torch.save(data, f)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.ffn\.0"):
        load_pipeline("tiny", wan_dir=wan, longlive_dir=ll)


class _Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickle_that_would_run_code_is_refused(real_layout, tmp_path, capsys):
    wan, ll = _copy_layout(real_layout, tmp_path)
    torch.save({"generator": _Boom()}, ll / "models" / "longlive_base.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_pipeline("tiny", wan_dir=wan, longlive_dir=ll)
    assert "pwned" not in capsys.readouterr().out


def test_missing_file_says_what_it_is(real_layout, tmp_path):
    wan, ll = _copy_layout(real_layout, tmp_path)
    (ll / "models" / "lora.pt").unlink()
    with pytest.raises(CheckpointError, match="missing weight file.*lora.pt.*LoRA"):
        load_pipeline("tiny", wan_dir=wan, longlive_dir=ll)


def test_bad_wan_config_json(real_layout, tmp_path):
    wan, _ = _copy_layout(real_layout, tmp_path)
    (wan / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_pipeline("tiny", wan_dir=wan)
    (wan / "config.json").write_text(json.dumps({"model_type": "i2v"}))
    with pytest.raises(CheckpointError, match="i2v"):
        load_pipeline("tiny", wan_dir=wan)


def test_read_state_dict_rejects_non_tensor_entries(tmp_path):
    f = tmp_path / "x.pt"
    torch.save({"a": 1}, f)
    with pytest.raises(CheckpointError, match="mapping of names to tensors"):
        ckpt.read_state_dict(f)
