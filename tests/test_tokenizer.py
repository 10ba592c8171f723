"""TextTokenizer: Wan's cleaning, EOS, pad/truncate, tokenizer.json round trip; the tiny tokenizer."""

from __future__ import annotations

import pytest
import torch

from longlive_runner.model.config import get_preset
from longlive_runner.model.tokenizer import TextTokenizer, build_tiny_tokenizer, clean_text

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer(build_tiny_tokenizer(), text_len=16)


def test_clean_text_like_wan_whitespace_clean():
    assert clean_text("  a  cat\n\tand\r\n a   dog  ") == "a cat and a dog"
    assert clean_text("fish &amp;amp; chips") == "fish & chips"  # unescaped twice
    assert clean_text("&lt;b&gt; x&nbsp;y") == "<b> x y"  # nbsp becomes whitespace, then collapses
    assert clean_text("   ") == ""


def test_tiny_tokenizer_special_ids_and_size():
    t = build_tiny_tokenizer()
    assert [t.token_to_id(s) for s in ("<pad>", "</s>", "<unk>")] == [PAD_ID, EOS_ID, UNK_ID]
    assert t.get_vocab_size() <= get_preset("tiny").t5.vocab_size
    assert t.to_str() == build_tiny_tokenizer().to_str()  # deterministic
    enc = t.encode("the cat, 42!")
    assert enc.ids[-1] == EOS_ID and UNK_ID not in enc.ids
    assert t.decode(enc.ids, skip_special_tokens=True) == "the cat, 42!"
    assert UNK_ID in t.encode("naïve ☃").ids  # outside the vocabulary


def test_call_pads_and_appends_eos(tok: TextTokenizer):
    ids, mask = tok(["the cat", "a dog walking slowly"])
    assert ids.shape == mask.shape == (2, 16)
    assert ids.dtype == mask.dtype == torch.long
    for row, m, text in zip(ids, mask, ["the cat", "a dog walking slowly"], strict=True):
        n = int(m.sum())
        assert n == tok.count_tokens(text)
        assert torch.all(m[:n] == 1) and torch.all(m[n:] == 0)
        assert row[n - 1] == EOS_ID and EOS_ID not in row[: n - 1].tolist()
        assert torch.all(row[n:] == PAD_ID)
    assert ids[0, :3].tolist() == [tok._raw.token_to_id("▁the"), tok._raw.token_to_id("▁cat"), EOS_ID]


def test_cleaning_is_applied_before_tokenizing(tok: TextTokenizer):
    a_ids, a_mask = tok(["  the   cat &amp;amp; the\n dog "])
    b_ids, b_mask = tok(["the cat & the dog"])
    assert torch.equal(a_ids, b_ids) and torch.equal(a_mask, b_mask)


def test_truncation_keeps_eos_and_count_tokens_is_untruncated(tok: TextTokenizer):
    text = "a very long prompt about a cat walking in a city street at night with light"
    n = tok.count_tokens(text)
    assert n > tok.text_len
    ids, mask = tok([text])
    assert ids.shape == (1, 16) and torch.all(mask == 1)
    assert ids[0, -1] == EOS_ID
    # The kept tokens are the prefix of the untruncated encoding.
    full = tok._raw.encode(clean_text(text)).ids
    assert len(full) == n
    assert ids[0, :-1].tolist() == full[: tok.text_len - 1]


def test_empty_prompt_is_just_eos(tok: TextTokenizer):
    ids, mask = tok([""])
    assert ids[0, 0] == EOS_ID and mask[0].tolist() == [1] + [0] * 15
    assert tok.count_tokens("") == 1


def test_save_load_round_trip(tmp_path, tok: TextTokenizer):
    path = tmp_path / "tokenizer.json"
    build_tiny_tokenizer().save(str(path))
    loaded = TextTokenizer.from_file(path, text_len=16)
    texts = ["the cat", "A Dog, running; FAST!", "a very long prompt about a cat walking in a city street"]
    for a, b in zip(loaded(texts), tok(texts), strict=True):
        assert torch.equal(a, b)
    assert loaded.vocab_size == tok.vocab_size
    assert [loaded.count_tokens(t) for t in texts] == [tok.count_tokens(t) for t in texts]


def test_matches_transformers_fast_tokenizer_padding_and_truncation():
    # Wan pads/truncates with a transformers tokenizer (padding='max_length', truncation=True).
    import transformers

    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=build_tiny_tokenizer(), pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    ours = TextTokenizer(build_tiny_tokenizer(), text_len=12)
    texts = ["the sky", "a woman walking with a dog in the forest, slowly"]
    out = hf([clean_text(t) for t in texts], padding="max_length", truncation=True, max_length=12)
    ids, mask = ours(texts)
    assert ids.tolist() == out["input_ids"]
    assert mask.tolist() == out["attention_mask"]
