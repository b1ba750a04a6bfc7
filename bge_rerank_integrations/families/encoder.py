"""The encoder family: cross-encoders with one logit (bge-reranker-base, -large, -v2-m3)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch

from ..loading import dtype_kwargs
from .base import Encoded, RerankerFamily, ScoreOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a (query, passage) pair, and their token types."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    query_type: int = 0
    passage_type: int = 0

    @property
    def special_count(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def learn_pair_template(tokenizer) -> PairTemplate:
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
    return PairTemplate(
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
    raise ValueError("Could not find the pair layout of this tokenizer; pass model_class explicitly or use an XLM-R/BERT tokenizer.")


class EncoderFamily(RerankerFamily):
    """XLM-RoBERTa-style sequence classifiers scored by their single logit."""

    name = "encoder"

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device, dtype: torch.dtype):
        super().__init__(model, tokenizer, device, dtype)
        self.template = learn_pair_template(tokenizer)
        self.uses_token_types = "token_type_ids" in tokenizer.model_input_names and model.config.type_vocab_size > 1

    @classmethod
    def load(cls, path: str, device: torch.device, dtype: torch.dtype) -> "EncoderFamily":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, **dtype_kwargs(dtype))
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

    def encode(self, pairs: Sequence[tuple[str, str]], options: ScoreOptions) -> list[Encoded]:
        """``<s> q </s></s> p </s>``: query cut to query_max_length, then only the passage cut to fit max_length.

        Where the query alone leaves no room for the passage, the reference logs an error and
        keeps an over-long pair; we cut the query instead so one passage token fits and the pair
        never exceeds max_length.
        """
        template = self.template
        queries = self._token_ids([q for q, _ in pairs], options.query_max_length)
        passages = self._token_ids([p for _, p in pairs], options.max_length)
        room = options.max_length - template.special_count
        encoded = []
        for query, passage in zip(queries, passages):
            query = query[: max(room - 1, 0)]
            passage = passage[: max(room - len(query), 0)]
            before = template.prefix + query + template.middle
            encoded.append(Encoded(before + passage + template.suffix, query_length=len(before)))
        return encoded

    def _token_ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]

    def forward(self, batch: Sequence[Encoded], options: ScoreOptions) -> torch.Tensor:
        width = max(len(item) for item in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        token_types = torch.full((len(batch), width), self.template.passage_type, dtype=torch.long)
        for row, item in enumerate(batch):
            input_ids[row, : len(item)] = torch.tensor(item.input_ids)
            attention_mask[row, : len(item)] = 1
            token_types[row, : item.query_length] = self.template.query_type
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        if self.uses_token_types:
            inputs["token_type_ids"] = token_types.to(self.device)
        logits = self.model(**inputs).logits
        return logits.view(1, -1).float().cpu()
