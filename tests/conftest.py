"""Shared fixtures: the tiny preset, and its weights written in the real on-disk layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _cluster_process import cluster_process, cluster_url  # noqa: F401  (fixtures)
from _runner_process import runner_process, runner_url  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    # CI has 2 cores; tiny models are faster single-threaded and tests stay deterministic.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipe():
    from longlive_runner import load_pipeline

    return load_pipeline("tiny", device="cpu", init_seed=0)


@pytest.fixture(scope="module")
def pipes(tiny_pipe):
    """Two tiny pipelines, one per in-process cluster worker (a worker owns its model)."""
    from longlive_runner import load_pipeline

    return [tiny_pipe, load_pipeline("tiny", device="cpu", init_seed=0)]


LORA_RANK = 4
LORA_MODULES = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")  # fmt: skip


def make_lora(dit_state: dict[str, torch.Tensor], num_layers: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """A PEFT-named LoRA over every Linear of every block, as LongLive's lora.pt holds it."""
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for n in range(num_layers):
        for mod in LORA_MODULES:
            out_f, in_f = dit_state[f"blocks.{n}.{mod}.weight"].shape
            prefix = f"base_model.model.blocks.{n}.{mod}"
            lora[f"{prefix}.lora_A.weight"] = torch.randn(LORA_RANK, in_f, generator=g) * 0.1
            lora[f"{prefix}.lora_B.weight"] = torch.randn(out_f, LORA_RANK, generator=g) * 0.1
    return lora


@pytest.fixture(scope="session")
def real_layout(tmp_path_factory, tiny_pipe) -> dict[str, Path]:
    """The tiny preset's weights saved exactly as users download the real ones."""
    import json

    from safetensors.torch import save_file

    from longlive_runner.model.tokenizer import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("weights")
    wan, ll = root / "Wan2.1-T2V-1.3B", root / "LongLive"
    (wan / "google" / "umt5-xxl").mkdir(parents=True)
    (ll / "models").mkdir(parents=True)
    cfg = tiny_pipe.config
    d = cfg.dit
    (wan / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "model_type": "t2v", "dim": d.dim, "ffn_dim": d.ffn_dim, "num_heads": d.num_heads,
        "num_layers": d.num_layers, "in_dim": d.in_dim, "out_dim": d.out_dim, "text_len": d.text_len,
        "freq_dim": d.freq_dim, "eps": d.eps,
    }))  # fmt: skip
    dit_state = {k: v.clone() for k, v in tiny_pipe.dit.state_dict().items()}
    # The Wan DiT file holds *other* weights: LongLive's base overwrites every one of them.
    save_file(
        {k: torch.zeros_like(v) for k, v in dit_state.items()},
        str(wan / "diffusion_pytorch_model.safetensors"),
    )
    torch.save(tiny_pipe.vae.state_dict(), wan / "Wan2.1_VAE.pth")
    torch.save({k: v.to(torch.bfloat16) for k, v in tiny_pipe.text_encoder.model.state_dict().items()},
               wan / "models_t5_umt5-xxl-enc-bf16.pth")  # fmt: skip
    (wan / "google" / "umt5-xxl" / "tokenizer.json").write_text(build_tiny_tokenizer().to_str())
    torch.save(
        {"generator": {f"model.{k}": v for k, v in dit_state.items()}}, ll / "models" / "longlive_base.pt"
    )
    lora = make_lora(dit_state, d.num_layers)
    torch.save({"generator_lora": lora, "critic_lora": {}}, ll / "models" / "lora.pt")
    return {"wan": wan, "longlive": ll, "dit_state": dit_state, "lora": lora}  # type: ignore[dict-item]
