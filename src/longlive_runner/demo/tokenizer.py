"""The demo model's word-level tokenizer (a `tokenizers.Tokenizer`, saved as tokenizer.json).

Ids: <pad>=0, </s>=1, <unk>=2 (as in T5), then the words of the demo grammar in sorted order.
Text is lower-cased and split on whitespace; the post-processor appends </s> like umT5's.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .scenes import vocabulary

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def build_demo_tokenizer() -> Tokenizer:
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for w in vocabulary():
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)]
    )
    tok.add_special_tokens([PAD, EOS, UNK])
    return tok
