"""Prompt text -> umT5 features, cached per prompt text.

Like Wan, features past the prompt's real tokens (its `</s>` included) are exactly zero: the DiT's
cross-attention attends all `text_len` slots, padding included.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch

from longlive_runner.model.t5 import UMT5Encoder
from longlive_runner.model.tokenizer import TextTokenizer, clean_text

log = logging.getLogger(__name__)


class TextEncoder:
    """Tokenizer + umT5 encoder with an LRU cache of `cache_size` (cleaned) prompt texts."""

    def __init__(self, tokenizer: TextTokenizer, model: UMT5Encoder, cache_size: int = 64):
        if tokenizer.vocab_size > model.cfg.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the text encoder embeds only {model.cfg.vocab_size}"
            )
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.cache_size = cache_size
        self.calls = 0  # model runs (cache misses)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.inference_mode()
    def encode(self, prompt: str) -> torch.Tensor:
        """prompt -> features [1, text_len, dim] on the model's device and dtype; padding rows are zero.

        The returned tensor is shared with the cache: do not modify it in place.
        """
        key = clean_text(prompt)  # texts that clean to the same string encode identically
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached

        n = self.tokenizer.count_tokens(prompt)
        if n > self.tokenizer.text_len:
            log.warning("prompt has %d tokens; truncated to %d", n, self.tokenizer.text_len)
        param = next(self.model.parameters())
        ids, mask = self.tokenizer([prompt])  # [1, L], [1, L]
        ids, mask = ids.to(param.device), mask.to(param.device)
        feats: torch.Tensor = self.model(ids, mask)  # [1, L, dim]
        feats = feats.masked_fill(mask[..., None] == 0, 0.0).to(param.dtype)
        self.calls += 1

        if self.cache_size > 0:
            self._cache[key] = feats
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return feats
