"""The text tokenizer: a `tokenizers.Tokenizer` (the umT5 `tokenizer.json`) plus Wan's text cleaning.

Wan tokenizes prompts with clean='whitespace': HTML entities unescaped (twice), runs of whitespace
collapsed to one space, ends stripped; the tokenizer's post-processor appends `</s>`; ids are padded
with `<pad>` (id 0) or truncated to `text_len` (the `</s>` survives truncation).
"""

from __future__ import annotations

import bisect
import html
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
_WORD = re.compile(r"\S+")

#: `prompt_warnings` names at most this many unknown words, each cut to `NAMED_WORD_CHARS`
#: characters (a prompt of 2,000 unknown characters gets a warning of bounded size).
MAX_NAMED_WORDS = 8
NAMED_WORD_CHARS = 40


@dataclass(frozen=True)
class PromptAnalysis:
    """What the tokenizer makes of a prompt (`TextTokenizer.analyze`)."""

    tokens: int
    """Tokens, the EOS included, before truncation (`count_tokens`)."""
    unknown_words: list[str]
    """Words holding a piece that maps to the unknown token (`unknown_words`)."""


def clean_text(text: str) -> str:
    """Wan's 'whitespace' cleaning (without ftfy): unescape HTML twice, collapse whitespace, strip."""
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class TextTokenizer:
    """Cleans, tokenizes, appends EOS and pads/truncates to `text_len` tokens."""

    def __init__(self, tokenizer: Tokenizer, text_len: int):
        self.text_len = text_len
        pad_id = tokenizer.token_to_id(PAD)
        self.pad_id = 0 if pad_id is None else pad_id
        # Two copies of the same tokenizer: `_raw` measures real lengths, `_fixed` gives fixed-size batches.
        self._raw = Tokenizer.from_str(tokenizer.to_str())
        self._raw.no_truncation()
        self._raw.no_padding()
        self._fixed = Tokenizer.from_str(tokenizer.to_str())
        # Truncation leaves room for the special tokens the post-processor adds (the trailing </s>).
        self._fixed.enable_truncation(max_length=text_len)
        self._fixed.enable_padding(length=text_len, pad_id=self.pad_id, pad_token=PAD, direction="right")

    @classmethod
    def from_file(cls, path: str | Path, text_len: int) -> TextTokenizer:
        return cls(Tokenizer.from_file(str(path)), text_len)

    @property
    def vocab_size(self) -> int:
        return self._raw.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> (ids long [B, text_len], mask long [B, text_len]; 1 = real token, EOS included)."""
        encodings = self._fixed.encode_batch([clean_text(t) for t in texts], add_special_tokens=True)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return ids, mask

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` (EOS included) before truncation; > text_len means the prompt gets cut."""
        return len(self._raw.encode(clean_text(text), add_special_tokens=True).ids)

    def decode(self, ids: list[int]) -> str:
        return self._raw.decode(ids, skip_special_tokens=True)

    @property
    def unk_id(self) -> int | None:
        """Id of the unknown token (`<unk>`, or the one the tokenizer's model names); None if none."""
        unk = self._raw.token_to_id(UNK)
        if unk is None:
            name = getattr(self._raw.model, "unk_token", None)
            unk = self._raw.token_to_id(name) if isinstance(name, str) else None
        return unk

    def unknown_words(self, text: str) -> list[str]:
        """The words of `text` (as written, in order, once each) holding a token that maps to the
        unknown token: words the model cannot read, which therefore do not steer the video."""
        return self.analyze(text).unknown_words

    def analyze(self, text: str) -> PromptAnalysis:
        """`count_tokens` and `unknown_words` of `text` from one encoding, in time linear in the
        length of the text (once normalized): what `prompt_warnings` needs.

        The encoding goes through `encode_batch`, which releases the GIL, so that a caller may run
        this on a worker thread without stalling the event loop's thread (serving/hub.py)."""
        cleaned = clean_text(text)
        [encoding] = self._raw.encode_batch([cleaned], add_special_tokens=False)
        ids = encoding.ids
        special = self._raw.post_processor
        count = len(ids) + (special.num_special_tokens_to_add(False) if special is not None else 0)
        unk = self.unk_id
        if unk is None or unk not in ids:
            return PromptAnalysis(count, [])
        # The whitespace-delimited words of the cleaned text, as (start, end) character offsets;
        # every unknown piece names the word its offsets fall in, found by bisection (a prompt
        # whose normalization expands one character into many pieces, e.g. U+FDFA under NFKC,
        # costs a lookup per piece, not a scan of its word).
        spans = [m.span() for m in _WORD.finditer(cleaned)]
        starts = [a for a, _ in spans]
        seen: set[int] = set()
        for token_id, (start, end) in zip(ids, encoding.offsets):
            if token_id != unk:
                continue
            i = bisect.bisect_right(starts, start) - 1
            if i < 0 or start >= spans[i][1]:  # the piece starts in whitespace: the next word
                i += 1
                if i >= len(spans) or spans[i][0] >= max(end, start + 1):
                    continue
            seen.add(i)
        words: dict[str, None] = {}  # in order of first appearance, once each
        for i in sorted(seen):
            words.setdefault(cleaned[spans[i][0] : spans[i][1]], None)
        return PromptAnalysis(count, list(words))


def prompt_warnings(
    tokenizer: TextTokenizer,
    prompt: str,
    *,
    hint: str | None = None,
    form: Callable[[str], str | None] | None = None,
) -> list[tuple[str, str]]:
    """Warnings for a prompt, as (code, message) pairs (docs/protocol.md, section 6.1):

    - `prompt_truncated`: more tokens than the text encoder keeps;
    - `unknown_words`: words that map to the unknown token (named), with `hint` (e.g. the demo
      model's grammar) appended to the message;
    - `prompt_form`: for a model trained on one form of prompt (`model_form`), what `form` says
      is wrong with this one (the parts it lacks), with `hint` appended.
    """
    out: list[tuple[str, str]] = []
    analysis = tokenizer.analyze(prompt)
    n = analysis.tokens
    if n > tokenizer.text_len:
        out.append(
            (
                "prompt_truncated",
                f"the prompt is {n} tokens; the text encoder keeps {tokenizer.text_len}, the rest is ignored",
            )
        )
    unknown = analysis.unknown_words
    if unknown:
        named = ", ".join(repr(_shorten(w)) for w in unknown[:MAX_NAMED_WORDS])
        if len(unknown) > MAX_NAMED_WORDS:
            named += f" and {len(unknown) - MAX_NAMED_WORDS} more"
        they = "it is" if len(unknown) == 1 else "they are"
        message = (
            f"the model does not know {named}: {they} read as the unknown token and will not steer the video"
        )
        out.append(("unknown_words", message + (f"; {hint}" if hint else "")))
    problem = form(prompt) if form is not None else None  # linear in the prompt
    if problem:  # the hint once: already in the unknown_words warning, if any
        out.append(("prompt_form", problem + (f"; {hint}" if hint and not unknown else "")))
    return out


def _shorten(word: str) -> str:
    return word if len(word) <= NAMED_WORD_CHARS else word[: NAMED_WORD_CHARS - 3] + "..."


def build_tiny_tokenizer() -> Tokenizer:
    """A small deterministic SentencePiece-like (Unigram + Metaspace) tokenizer for tests and the tiny preset.

    Ids: <pad>=0, </s>=1, <unk>=2 (as in T5), then single characters (printable ASCII),
    word-start pieces "▁x" and a few frequent words. Vocab size < 384 (the tiny preset's t5.vocab_size).
    """
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    words = (
        "the a an and of in on with to at is are by for from as it its this that "
        "cat dog man woman city street sky sea forest car light camera slowly walking running"
    ).split()
    vocab: list[tuple[str, float]] = [(PAD, 0.0), (EOS, 0.0), (UNK, 0.0)]
    vocab.append(("▁", -3.0))
    vocab += [("▁" + w, -4.0) for w in words]
    vocab += [("▁" + c, -5.0) for c in string.ascii_letters]
    vocab += [(c, -6.0) for c in chars]

    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)]
    )
    tok.add_special_tokens([PAD, EOS, UNK])
    return tok


def model_form(config: object) -> Callable[[str], str | None] | None:
    """For a model trained on one form of prompt (the demo model), what is wrong with a prompt
    (None when nothing is), for the `prompt_form` warning; None for others."""
    if getattr(config, "name", None) == "demo":
        from ..demo.scenes import form_problem

        return form_problem
    return None


def model_hint(config: object) -> str | None:
    """What a model can draw, for the `unknown_words` warning: the demo model's grammar; None
    for others (their vocabulary is open)."""
    if getattr(config, "name", None) == "demo":
        from ..demo.scenes import grammar

        return grammar()
    return None
