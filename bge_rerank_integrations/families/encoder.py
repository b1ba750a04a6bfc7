"""The encoder family: cross-encoders with one logit (bge-reranker-base, -large, -v2-m3)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..loading import check_loading_info, transformers_load_kwargs
from ..tokenization import load_tokenizer
from .base import Encoded, RerankerFamily, ScoreOptions
from .chunking import passage_windows, token_bound, tokenize_passages

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpecialTokenLayout:
    """Where a tokenizer puts its special tokens around a (query, passage) pair, and their token types."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    query_type: int = 0
    passage_type: int = 0

    @property
    def special_count(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def learn_special_token_layout(tokenizer) -> SpecialTokenLayout:
    """Read the special-token layout of a pair off the tokenizer itself.

    Tokenizes two single-token texts alone and as a pair, and finds them inside the pair:
    for XLM-RoBERTa this gives ``<s> A </s></s> B </s>``. Works the same under
    transformers 4.x and 5.x, which dropped ``prepare_for_model``.
    """
    first = tokenizer("a", add_special_tokens=False)["input_ids"]
    second = tokenizer("b", add_special_tokens=False)["input_ids"]
    pair = tokenizer("a", "b", return_token_type_ids=True)
    ids = pair["input_ids"]
    start_a = _find(ids, first, 0)
    start_b = _find(ids, second, start_a + len(first))
    types = pair.get("token_type_ids") or [0] * len(ids)
    return SpecialTokenLayout(
        prefix=ids[:start_a],
        middle=ids[start_a + len(first) : start_b],
        suffix=ids[start_b + len(second) :],
        query_type=types[start_a],
        passage_type=types[start_b],
    )


def _find(haystack: list[int], needle: list[int], start: int) -> int:
    for i in range(start, len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    raise ValueError(
        "Could not find the pair layout of this tokenizer; pass model_class explicitly or use an XLM-R/BERT tokenizer."
    )


def _truncate_second(first_length: int, second: list[int], max_length: int) -> list[int]:
    """The reference's "only_second" truncation: cut ``second`` to fit, unless it is no longer than the overflow.

    >>> _truncate_second(5, [1, 2, 3], 6), _truncate_second(8, [1, 2], 6)
    ([1], [1, 2])
    """
    overflow = first_length + len(second) - max_length
    return second[: len(second) - overflow] if 0 < overflow < len(second) else second


class EncoderFamily(RerankerFamily):
    """XLM-RoBERTa-style sequence classifiers scored by their single logit."""

    name = "encoder"

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device, dtype: torch.dtype):
        super().__init__(model, tokenizer, device, dtype)
        self.layout = learn_special_token_layout(tokenizer)
        self.uses_token_types = (
            "token_type_ids" in tokenizer.model_input_names and self.model.config.type_vocab_size > 1
        )
        self._last_layer = _cls_only_last_layer(model)

    @classmethod
    def load(cls, path: str, device: torch.device, dtype: torch.dtype) -> EncoderFamily:
        from transformers import AutoModelForSequenceClassification

        load_kwargs = transformers_load_kwargs(path, dtype)
        tokenizer = load_tokenizer(path)
        model, info = AutoModelForSequenceClassification.from_pretrained(path, **load_kwargs)
        check_loading_info(info, path, cls.name)
        if model.config.num_labels != 1:
            raise ValueError(f"{path!r} has {model.config.num_labels} labels; a reranker has exactly one.")
        return cls(model.to(device).eval(), tokenizer, device, dtype)

    @property
    def max_positions(self) -> int:
        config = self.model.config
        positions = config.max_position_embeddings
        if config.model_type in {"xlm-roberta", "roberta", "camembert", "xlm-roberta-xl"}:
            positions -= config.pad_token_id + 1  # RoBERTa positions start after the padding index
        return positions

    def encode(
        self, pairs: Sequence[tuple[str, str]], options: ScoreOptions, passage_starts: Sequence[int] | None = None
    ) -> list[Encoded]:
        """``<s> q </s></s> p </s>``: query cut to query_max_length, then only the passage cut to fit max_length.

        As in the reference, a passage no longer than the overflow is left whole (the pair then
        exceeds max_length). Beyond the model's positions, where the reference would fail, the
        passage and then the query are cut so the pair fits, with a warning. With
        ``max_chunks_per_passage > 1`` a cut passage gives windows (``chunking``), each assembled here
        as the pair (query, window ids).
        """
        queries = self._token_ids([q for q, _ in pairs], options.query_max_length)
        texts = [p for _, p in pairs]
        chunks = options.max_chunks_per_passage
        if chunks == 1:
            passages, offsets = self._token_ids(texts, options.max_length), None
        else:
            passages, offsets = tokenize_passages(self.tokenizer, texts, token_bound(chunks, options.max_length))
        encoded, capped = [], 0
        for index, (query, passage) in enumerate(zip(queries, passages)):
            item, cut = self._assemble(query, passage[: options.max_length], options.max_length)
            capped += cut
            if offsets is None:
                encoded.append(item)
                continue
            start = passage_starts[index] if passage_starts is not None else 0
            windows = passage_windows(
                item,
                len(item) - item.query_length - len(self.layout.suffix),
                passage,
                offsets[index],
                start,
                len(texts[index]) - start,
                chunks,
                options.chunk_overlap,
                functools.partial(self._assemble, query, max_length=options.max_length),
            )
            capped += sum(cut for _, cut, _ in windows)
            encoded.extend(window for window, _, _ in windows)
        if capped:
            logger.warning(
                "%d of %d pairs were longer than the model's %d positions and were cut (the query was capped); "
                "lower query_max_length or max_length to avoid it.",
                capped,
                len(encoded),
                self.max_positions,
            )
        return encoded

    def _assemble(self, query: list[int], passage: list[int], max_length: int) -> tuple[Encoded, bool]:
        """One pair from query and passage ids (each already cut to its own length), and whether it was capped."""
        layout = self.layout
        special = layout.special_count
        passage = _truncate_second(len(query) + special, passage, max_length)
        capped = len(query) + len(passage) + special > self.max_positions
        if capped:
            query = query[: self.max_positions - special - 1]
            passage = passage[: self.max_positions - special - len(query)]
        before = layout.prefix + query + layout.middle
        return Encoded(before + passage + layout.suffix, query_length=len(before)), capped

    def _token_ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]

    def forward(self, batch: Sequence[Encoded], options: ScoreOptions) -> torch.Tensor:
        width = max(len(item) for item in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        token_types = torch.full((len(batch), width), self.layout.passage_type, dtype=torch.long)
        for row, item in enumerate(batch):
            input_ids[row, : len(item)] = torch.tensor(item.input_ids)
            attention_mask[row, : len(item)] = 1
            token_types[row, : item.query_length] = self.layout.query_type
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        if self.uses_token_types:
            inputs["token_type_ids"] = token_types.to(self.device)
        if self._last_layer is None:
            logits = self.model(**inputs).logits
        else:
            logits = self._forward_cls_only(inputs)
        return logits.view(1, -1).float().cpu()

    def _forward_cls_only(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's own forward up to the last layer, then the last layer for the first token only.

        The classification head reads only the first token (``<s>``), so in the last layer only its
        query row, and only its feed-forward, are needed: keys and values still come from every
        token. Same arithmetic as the full layer for that row (within float rounding); saves about
        10/12 of one layer (8% of a 12-layer model). transformers' own code runs every other layer,
        so embeddings, masks and attention are exactly the model's.
        """
        layer = self._last_layer
        captured: list[torch.Tensor] = []

        def stop(module, args, kwargs):
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _StopForward

        handle = layer.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self.model(**inputs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        hidden = captured[0]
        attention = layer.attention.self
        batch, width, _ = hidden.shape
        heads, size = attention.num_attention_heads, attention.attention_head_size
        first = hidden[:, :1]
        query = attention.query(first).view(batch, 1, heads, size).transpose(1, 2)
        key = attention.key(hidden).view(batch, width, heads, size).transpose(1, 2)
        value = attention.value(hidden).view(batch, width, heads, size).transpose(1, 2)
        mask = inputs["attention_mask"][:, None, None, :].bool()
        context = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        context = context.transpose(1, 2).reshape(batch, 1, heads * size)
        attended = layer.attention.output(context, first)
        output = layer.output(layer.intermediate(attended), attended)
        return self.model.classifier(output)


class _StopForward(Exception):
    """Raised by a pre-hook to end the model's forward before its last layer."""


def _cls_only_last_layer(model: torch.nn.Module):
    """The last encoder layer when the first-token-only shortcut applies to ``model``, else None.

    Only for (XLM-)RoBERTa sequence classifiers in inference, with absolute positions and no
    cross-attention: their head reads ``features[:, 0]`` and nothing else. Anything else (BERT
    with a pooler, relative positions, adapters replacing the layers) runs the full forward.
    """
    config: Any = model.config  # a transformers config: its attributes depend on the model type
    base = getattr(model, "roberta", None)
    if (
        config.model_type not in {"xlm-roberta", "roberta"}
        or base is None
        or getattr(config, "position_embedding_type", "absolute") not in (None, "absolute")
        or config.is_decoder
        or getattr(config, "add_cross_attention", False)
        or type(getattr(model, "classifier", None)).__name__
        not in {"XLMRobertaClassificationHead", "RobertaClassificationHead"}
    ):
        return None
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not layers:
        return None
    last = layers[-1]
    attention = getattr(getattr(last, "attention", None), "self", None)
    needed = (
        attention,
        getattr(last.attention, "output", None),
        getattr(last, "intermediate", None),
        getattr(last, "output", None),
    )
    if any(part is None for part in needed) or not all(
        hasattr(attention, name) for name in ("query", "key", "value", "num_attention_heads", "attention_head_size")
    ):
        return None
    return last
