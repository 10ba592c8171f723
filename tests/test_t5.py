"""umT5 encoder parity with transformers' UMT5EncoderModel, and the cached TextEncoder."""

from __future__ import annotations

import torch
import transformers  # noqa: E402  (test-only oracle, a dev dependency)

from longlive_runner.model.config import T5Config, get_preset
from longlive_runner.model.t5 import UMT5Encoder, relative_position_buckets
from longlive_runner.model.text_encoder import TextEncoder
from longlive_runner.model.tokenizer import TextTokenizer, build_tiny_tokenizer

CFG = T5Config(vocab_size=384, dim=64, ffn_dim=96, num_heads=4, num_layers=2, text_len=48)


def randomised_encoder(cfg: T5Config, seed: int = 0) -> UMT5Encoder:
    torch.manual_seed(seed)
    model = UMT5Encoder(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "pos_embedding" in name:
                p.copy_(torch.randn_like(p))  # large enough that wrong buckets would show
            elif name == "token_embedding.weight":
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * p.shape[1] ** -0.5)
    return model


def to_transformers(sd: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Native Wan umT5 names -> transformers UMT5EncoderModel names."""
    out = {
        "shared.weight": sd["token_embedding.weight"],
        "encoder.embed_tokens.weight": sd["token_embedding.weight"],
    }
    for i in range(num_layers):
        src, dst = f"blocks.{i}.", f"encoder.block.{i}.layer."
        for n in "qkvo":
            out[f"{dst}0.SelfAttention.{n}.weight"] = sd[f"{src}attn.{n}.weight"]
        out[f"{dst}0.SelfAttention.relative_attention_bias.weight"] = sd[
            f"{src}pos_embedding.embedding.weight"
        ]
        out[f"{dst}0.layer_norm.weight"] = sd[f"{src}norm1.weight"]
        out[f"{dst}1.DenseReluDense.wi_0.weight"] = sd[f"{src}ffn.gate.0.weight"]  # the GELU branch
        out[f"{dst}1.DenseReluDense.wi_1.weight"] = sd[f"{src}ffn.fc1.weight"]  # the linear branch
        out[f"{dst}1.DenseReluDense.wo.weight"] = sd[f"{src}ffn.fc2.weight"]
        out[f"{dst}1.layer_norm.weight"] = sd[f"{src}norm2.weight"]
    out["encoder.final_layer_norm.weight"] = sd["norm.weight"]
    return out


def reference_model(cfg: T5Config, sd: dict[str, torch.Tensor]):
    hf_cfg = transformers.UMT5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.dim,
        d_kv=cfg.head_dim,
        d_ff=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=cfg.max_distance,
        dropout_rate=0.0,
        layer_norm_epsilon=cfg.eps,
        feed_forward_proj="gated-gelu",
    )
    hf_cfg._attn_implementation = "eager"
    ref = transformers.UMT5EncoderModel(hf_cfg).eval().float()
    missing, unexpected = ref.load_state_dict(to_transformers(sd, cfg.num_layers), strict=False)
    assert not unexpected and not [k for k in missing if k != "encoder.embed_tokens.weight"]
    return ref


def test_parameter_names_are_native_wan_names():
    model = UMT5Encoder(CFG)
    expected = {"token_embedding.weight", "norm.weight"}
    for i in range(CFG.num_layers):
        expected |= {f"blocks.{i}.{n}.weight" for n in ("norm1", "norm2", "ffn.gate.0", "ffn.fc1", "ffn.fc2")}
        expected |= {f"blocks.{i}.attn.{n}.weight" for n in "qkvo"}
        expected.add(f"blocks.{i}.pos_embedding.embedding.weight")
    sd = model.state_dict()
    assert set(sd) == expected
    assert sd["blocks.0.pos_embedding.embedding.weight"].shape == (CFG.num_buckets, CFG.num_heads)
    assert sd["blocks.1.ffn.fc2.weight"].shape == (CFG.dim, CFG.ffn_dim)
    assert sd["token_embedding.weight"].shape == (CFG.vocab_size, CFG.dim)


def test_relative_position_buckets_match_transformers():
    # 300 > max_distance, so the exact, logarithmic and clamped ranges are all exercised.
    hf_cfg = transformers.UMT5Config(relative_attention_num_buckets=32, relative_attention_max_distance=128)
    hf_cfg.is_decoder = False
    attn = transformers.models.umt5.modeling_umt5.UMT5Attention(hf_cfg, has_relative_attention_bias=True)
    pos = torch.arange(300)
    expected = attn._relative_position_bucket(pos[None, :] - pos[:, None])
    got = relative_position_buckets(300, 32, 128)
    assert torch.equal(got, expected)
    assert got.min() == 0 and got.max() == 31


def test_parity_with_transformers_umt5_encoder():
    model = randomised_encoder(CFG)
    ref = reference_model(CFG, model.state_dict())

    torch.manual_seed(1)
    B, L = 3, 40
    ids = torch.randint(3, CFG.vocab_size, (B, L))
    lengths = torch.tensor([40, 23, 9])
    mask = (torch.arange(L)[None, :] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)  # <pad> = 0

    with torch.no_grad():
        ours = model(ids, mask)
        theirs = ref(input_ids=ids, attention_mask=mask).last_hidden_state

    assert ours.shape == (B, L, CFG.dim)
    valid = mask.bool()
    diff = (ours - theirs).abs()[valid].max().item()
    print(f"max abs diff on valid positions vs transformers UMT5EncoderModel: {diff:.3e}")
    assert diff <= 1e-4
    assert ours.abs()[valid].mean() > 0.1  # a real signal, not a degenerate output


def test_padding_does_not_change_valid_features():
    model = randomised_encoder(CFG, seed=2)
    torch.manual_seed(3)
    n, L = 11, 32
    ids = torch.zeros(1, L, dtype=torch.long)
    ids[0, :n] = torch.randint(3, CFG.vocab_size, (n,))
    mask = (torch.arange(L) < n).long()[None]
    with torch.no_grad():
        padded = model(ids, mask)[:, :n]
        alone = model(ids[:, :n], mask[:, :n])
        unmasked = model(ids, None)[:, :n]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    assert (unmasked - alone).abs().max() > 1e-3  # the mask really matters


def make_text_encoder(cache_size: int = 64) -> tuple[TextEncoder, UMT5Encoder]:
    cfg = get_preset("tiny").t5
    model = randomised_encoder(cfg, seed=4)
    tok = TextTokenizer(build_tiny_tokenizer(), text_len=cfg.text_len)
    return TextEncoder(tok, model, cache_size=cache_size), model


def test_text_encoder_zeroes_padding_and_matches_model():
    enc, model = make_text_encoder()
    prompt = "a cat walking in the city at night"
    feats = enc.encode(prompt)
    L, dim = model.cfg.text_len, model.cfg.dim
    assert feats.shape == (1, L, dim) and feats.dtype == torch.float32

    ids, mask = enc.tokenizer([prompt])
    n = int(mask.sum())
    assert n == enc.tokenizer.count_tokens(prompt) < L
    assert torch.all(feats[0, n:] == 0)
    assert torch.all(feats[0, :n].abs().sum(-1) > 0)
    with torch.no_grad():
        direct = model(ids, mask)
    torch.testing.assert_close(feats[0, :n], direct[0, :n])


def test_text_encoder_runs_model_once_per_distinct_prompt():
    enc, _ = make_text_encoder(cache_size=2)
    a1 = enc.encode("a dog")
    a2 = enc.encode("a dog")
    assert enc.calls == 1 and a2 is a1
    enc.encode("  a   dog ")  # cleans to the same text
    assert enc.calls == 1
    b = enc.encode("the sea")
    assert enc.calls == 2 and not torch.equal(a1, b)
    enc.encode("a dog")  # still cached; now the most recent
    enc.encode("a forest")  # evicts "the sea" (least recently used)
    assert enc.calls == 3
    enc.encode("a dog")
    assert enc.calls == 3
    enc.encode("the sea")
    assert enc.calls == 4
