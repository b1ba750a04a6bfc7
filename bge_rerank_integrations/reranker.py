"""``BGEReranker``: the one entry point that scores (query, passage) pairs with any BGE reranker."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import torch

from .batching import run_batches
from .device import is_mps_dtype_error, resolve_device, resolve_dtype
from .quantization import check_quantization
from .families.base import FAMILY_SPECIFIC_OPTIONS
from .families import KNOWN_MODELS, RerankerFamily, ScoreOptions, canonical_family, detect_family, family_class
from .inputs import as_pairs, check_bool, check_cache_dir, check_instruction_format, check_layers, check_positive_int
from .loading import read_config, resolve_checkpoint
from .model_cache import CachedModel, get_model
from .ranking import Ranking, RerankResult  # noqa: F401 - RerankResult: also importable from here, as before

logger = logging.getLogger(__name__)

Scores = Union[float, list[float], list[list[float]]]

#: On CPU a padded position costs as much as a real one: batches end before padding exceeds this share.
CPU_MAX_PADDING = 0.2
#: On CPU a batch holds at most this many padded tokens: it bounds the forward's activations (the
#: peak memory of the decoders, whose MLPs are 8x wider than the model) and costs no speed there.
CPU_MAX_BATCH_TOKENS = 1024


class BGEReranker(Ranking):
    """Score (query, passage) pairs with a BGE reranker, as FlagEmbedding does, on CUDA, MPS or CPU.

    The model family (encoder, llm, layerwise, lightweight) is decided from the six official
    ids, else from the checkpoint's ``config.json``; ``model_class`` overrides it. The model is
    loaded on first use (or by ``load()``) and shared with every reranker that asks for the same
    checkpoint, device, dtype and quantization. Every scoring option can be overridden per call.

    >>> reranker = BGEReranker("tests/fixtures/checkpoints/encoder", device="cpu")
    >>> reranker.compute_score(["what is panda?", "hi"])            # doctest: +SKIP
    -0.71
    >>> reranker.rerank("what is panda?", ["hi", "The giant panda is a bear."], top_n=1)  # doctest: +SKIP
    [RerankResult(index=1, score=1.3, text='The giant panda is a bear.')]
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        model_class: str | None = None,
        device: str | torch.device | None = None,
        use_fp16: bool = False,
        use_bf16: bool = False,
        quantization: str | None = None,
        batch_size: int = 128,
        max_length: int = 512,
        query_max_length: int | None = None,
        normalize: bool = False,
        query_instruction_for_rerank: str | None = None,
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str | None = None,
        passage_instruction_format: str = "{}{}",
        prompt: str | None = None,
        cutoff_layers: Sequence[int] | int | None = None,
        compress_ratio: int | None = None,
        compress_layers: Sequence[int] | int | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        show_progress: bool = False,
    ) -> None:
        if not isinstance(model_name_or_path, (str, Path)) or not str(model_name_or_path).strip():
            raise ValueError(f"model_name_or_path must be a Hub id or a local directory, got {model_name_or_path!r}.")
        self.model_name_or_path = str(model_name_or_path)
        self.model_class = canonical_family(model_class) if model_class is not None else None
        self._requested_device = None if device is None else str(device)
        self._requested_dtype = (use_fp16, use_bf16)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(self.device, check_bool(use_fp16, "use_fp16"), check_bool(use_bf16, "use_bf16"))
        self.quantization = check_quantization(quantization, self.device)
        if self.quantization and (use_fp16 or use_bf16):
            raise ValueError(f"quantization={quantization!r} and use_fp16/use_bf16 are both set; choose one.")
        self.cache_dir = check_cache_dir(cache_dir)
        self.local_files_only = check_bool(local_files_only, "local_files_only")
        self.show_progress = check_bool(show_progress, "show_progress")
        self._query_max_length = query_max_length
        self._defaults = _merge(
            ScoreOptions(),
            dict(
                normalize=normalize,
                max_length=max_length,
                query_max_length=query_max_length,
                batch_size=batch_size,
                query_instruction_for_rerank=query_instruction_for_rerank,
                query_instruction_format=query_instruction_format,
                passage_instruction_for_rerank=passage_instruction_for_rerank,
                passage_instruction_format=passage_instruction_format,
                prompt=prompt,
                cutoff_layers=cutoff_layers,
                compress_ratio=compress_ratio,
                compress_layers=compress_layers,
            ),
            constructor_query_max_length=query_max_length,
        )
        self._model: CachedModel | None = None
        self._path: Path | None = None
        self._family_name = self._family_without_loading()
        self.check_options()

    def __repr__(self) -> str:
        quantized = f", quantization={self.quantization!r}" if self.quantization else ""
        return f"BGEReranker({self.model_name_or_path!r}, device={str(self.device)!r}, dtype={self.dtype}{quantized})"

    @property
    def load_settings(self) -> dict[str, Any]:
        """The constructor's load settings as given (not as resolved): what rebuilds an equivalent reranker elsewhere.

        An unset ``device`` stays ``None`` and ``use_fp16`` stays as asked, so a configuration saved
        on a CPU machine does not pin CPU or float32 on a GPU one.

        >>> BGEReranker("tests/fixtures/checkpoints/encoder").load_settings["device"] is None
        True
        """
        settings = {
            "model_class": self.model_class,
            "device": self._requested_device,
            "use_fp16": self._requested_dtype[0],
            "use_bf16": self._requested_dtype[1],
            "cache_dir": None if self.cache_dir is None else os.fspath(self.cache_dir),
            "local_files_only": self.local_files_only,
            "show_progress": self.show_progress,
        }
        if self.quantization is not None:  # only when set: adapters' fields gain it with the options table (issue 20)
            settings["quantization"] = self.quantization
        return settings

    @property
    def options(self) -> ScoreOptions:
        """The scoring options calls start from."""
        return self._defaults

    @property
    def family(self) -> RerankerFamily:
        """The loaded model family (loads the model if needed)."""
        return self.load().family

    def check_options(self, **options: Any) -> ScoreOptions:
        """Check per-call ``options`` now, without scoring, and return the merged options.

        Values are always checked; options that do not apply to the family are checked as soon as
        the family is known (an official id, a local checkpoint or ``model_class``), and lengths
        and layers against the model once it is loaded. Adapters call this at construction.
        """
        merged = _merge(self._defaults, options, constructor_query_max_length=self._query_max_length)
        if self._model is not None:
            _check_against_model(self._model.family, merged)
        elif self._family_name is not None:
            _check_family_options(family_class(self._family_name), merged)
        return merged

    def _family_without_loading(self) -> str | None:
        """The family when it is known without fetching anything (override, official id, local config)."""
        if self.model_class is not None:
            return self.model_class
        if self.model_name_or_path.strip().lower() in KNOWN_MODELS:
            return detect_family(self.model_name_or_path, None)
        if (Path(self.model_name_or_path).expanduser() / "config.json").is_file():
            return detect_family(self.model_name_or_path, read_config(Path(self.model_name_or_path).expanduser()))
        return None

    def load(self) -> CachedModel:
        """Load the model now (otherwise it loads on the first scoring call) and check the options against it.

        A broken checkpoint (unreadable files, no tokenizer, weights that do not fit the family)
        raises ``CheckpointError`` naming the file or the weights; checkpoint code is never run.
        """
        if self._model is None:
            path = resolve_checkpoint(self.model_name_or_path, self.cache_dir, self.local_files_only)
            family = self._family_name or detect_family(self.model_name_or_path, read_config(path))
            model = get_model(path, family, self.device, self.dtype, self.quantization)
            _check_against_model(model.family, self._defaults)
            self._model, self._path = model, path
        return self._model

    def compute_score(self, sentence_pairs: Any, **options: Any) -> Scores:
        """Score one ``[query, passage]`` pair (-> float) or a list of pairs (-> list of floats).

        Keyword options (``normalize``, ``max_length``, ``query_max_length``, ``batch_size``,
        instructions, ``prompt``, ``cutoff_layers``, ``compress_ratio``, ``compress_layers``)
        override the constructor's for this call only. Several ``cutoff_layers`` give one list
        of scores per layer, in ascending layer order.

        >>> reranker.compute_score([["what is panda?", "hi"], ["what is panda?", "The giant panda ..."]])  # doctest: +SKIP
        [-8.1875, 5.26171875]
        """
        pairs, single = as_pairs(sentence_pairs)
        (scored,) = self.score_groups([pairs], **options)
        scores = scored.scores
        if not isinstance(scores[0] if scores else None, list):
            return scores[0] if single else scores
        return [layer[0] for layer in scores] if single else scores

    def score_groups(self, groups: Sequence[Any], **options: Any) -> list[GroupScores]:
        """Score several lists of pairs in shared forward batches, each exactly as its own ``compute_score`` call.

        Each list keeps what a call of its own would give it (truncation and, for the decoders,
        the positions of the reference's batches), so merging the pairs of concurrent requests
        never moves their scores. Returns, per list, its scores (one list per cutoff layer when
        several are asked for) and the number of tokens the model read for each pair.

        >>> reranker.score_groups([[("what is panda?", "hi")], [("q", "a"), ("q", "b")]])  # doctest: +SKIP
        [GroupScores(scores=[-8.1875], tokens=[9]), GroupScores(scores=[0.5, -1.2], tokens=[5, 5])]
        """
        checked = [as_pairs(group)[0] for group in groups]
        merged = _merge(self._defaults, options, constructor_query_max_length=self._query_max_length)
        if not any(checked):
            return [GroupScores([], []) for _ in checked]
        model = self.load()
        if options:
            _check_against_model(model.family, merged)
        scores, tokens = self._score(model, checked, merged)
        results, start = [], 0
        for pairs in checked:
            end = start + len(pairs)
            layers = [layer[start:end] for layer in scores]
            results.append(GroupScores(layers[0] if len(layers) == 1 else layers, tokens[start:end]))
            start = end
        return results

    def _score(
        self, model: CachedModel, groups: list[list[tuple[str, str]]], options: ScoreOptions
    ) -> tuple[list[list[float]], list[int]]:
        """Raw or normalized scores (one list per output, all groups' pairs in order) and each pair's token count."""
        try:
            scores, tokens = self._run(model, groups, options)
        except RuntimeError as error:
            if not is_mps_dtype_error(error, model.family.device) or model.family.dtype == torch.float32:
                raise
            # The cached half-precision model stays as it is for others; this reranker moves to a float32 copy.
            logger.warning("MPS refused %s for this model (%s): falling back to float32.", model.family.dtype, error)
            self.dtype = torch.float32
            self._model = get_model(self._path, model.family.name, self.device, torch.float32)
            scores, tokens = self._run(self._model, groups, options)
        nan = int(torch.isnan(scores).sum())
        if nan:
            logger.warning(
                "%d of %d scores are NaN: the model's weights or its precision are broken (try float32).", nan, scores.numel()
            )
        if options.normalize:
            scores = torch.sigmoid(scores.double())
        return scores.tolist(), tokens

    def _run(
        self, model: CachedModel, groups: list[list[tuple[str, str]]], options: ScoreOptions
    ) -> tuple[torch.Tensor, list[int]]:
        family = model.family
        total = sum(len(pairs) for pairs in groups)
        progress = _progress_bar(total) if self.show_progress else None
        try:
            with model.lock, torch.inference_mode():
                encoded = [item for pairs in groups if pairs for item in self._encode(family, pairs, options)]
                lengths = [len(item) for item in encoded]
                scores = run_batches(
                    encoded,
                    lengths,
                    options.batch_size,
                    lambda batch: family.forward(batch, options),
                    progress.update if progress is not None else None,
                    max_padding=CPU_MAX_PADDING if family.device.type == "cpu" else None,
                    max_tokens=CPU_MAX_BATCH_TOKENS if family.device.type == "cpu" else None,
                )
                return scores, lengths
        finally:
            if progress is not None:
                progress.close()

    def _encode(self, family: RerankerFamily, pairs: list[tuple[str, str]], options: ScoreOptions) -> list:
        texts = [_apply_instructions(family, query, passage, options) for query, passage in pairs]
        return family.encode(texts, options)


@dataclass(frozen=True)
class GroupScores:
    """One list of pairs scored by ``score_groups``: its scores and the tokens the model read for each pair."""

    scores: list[float] | list[list[float]]
    tokens: list[int]


def _merge(base: ScoreOptions, overrides: dict[str, Any], constructor_query_max_length: int | None) -> ScoreOptions:
    """Apply per-call ``overrides`` (``None`` means "keep") to ``base`` and check every value."""
    given = checked_options(overrides)
    if "query_max_length" not in given and constructor_query_max_length is None:
        given["query_max_length"] = given.get("max_length", base.max_length) * 3 // 4
    return dataclasses.replace(base, **given)


def checked_options(overrides: dict[str, Any]) -> dict[str, Any]:
    """The scoring options set in ``overrides`` (not ``None``), each checked; layer lists become tuples.

    >>> checked_options({"normalize": True, "cutoff_layers": 28, "prompt": None})
    {'normalize': True, 'cutoff_layers': (28,)}
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ScoreOptions)}
    if unknown:
        raise TypeError(f"Unknown scoring option(s) {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(ScoreOptions)]}.")
    given = {name: value for name, value in overrides.items() if value is not None}
    if "normalize" in given and not isinstance(given["normalize"], bool):
        raise ValueError(f"normalize must be True or False, got {given['normalize']!r}.")
    for name in ("max_length", "query_max_length", "batch_size", "compress_ratio"):
        if name in given:
            check_positive_int(given[name], name)
    for name in ("cutoff_layers", "compress_layers"):
        if name in given:
            given[name] = check_layers(given[name], name)
    for name in ("query_instruction_for_rerank", "passage_instruction_for_rerank", "prompt"):
        if name in given and not isinstance(given[name], str):
            raise TypeError(f"{name} must be a string, got {type(given[name]).__name__}.")
    for name in ("query_instruction_format", "passage_instruction_format"):
        if name in given:
            check_instruction_format(given[name], name)
    return given


def _check_family_options(family: type[RerankerFamily] | RerankerFamily, options: ScoreOptions) -> None:
    """Reject options that the family does not have."""
    unsupported = sorted(
        name for name in FAMILY_SPECIFIC_OPTIONS - family.extra_options if getattr(options, name) is not None
    )
    if unsupported:
        raise ValueError(
            f"{', '.join(unsupported)} do(es) not apply to the {family.name} family; "
            f"it takes {sorted(family.extra_options) or 'no family-specific options'}."
        )


def _check_against_model(family: RerankerFamily, options: ScoreOptions) -> None:
    """Reject options the family does not have and lengths the model cannot take."""
    _check_family_options(family, options)
    if options.max_length > family.max_positions:
        raise ValueError(
            f"max_length={options.max_length} is beyond what this model can take ({family.max_positions} tokens); "
            f"pass max_length <= {family.max_positions}."
        )
    family.check_options(options)


def _apply_instructions(family: RerankerFamily, query: str, passage: str, options: ScoreOptions) -> tuple[str, str]:
    query_instruction = options.query_instruction_for_rerank
    if query_instruction is None:
        query_instruction = family.default_query_instruction
    passage_instruction = options.passage_instruction_for_rerank
    if passage_instruction is None:
        passage_instruction = family.default_passage_instruction
    if query_instruction is not None:
        query = _instruction_format(options.query_instruction_format).format(query_instruction, query)
    if passage_instruction is not None:
        passage = _instruction_format(options.passage_instruction_format).format(passage_instruction, passage)
    return query, passage


def _instruction_format(template: str) -> str:
    """As in the reference, a written ``\\n`` in an instruction format stands for a newline."""
    return template.replace("\\n", "\n")


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Scoring pairs", unit="pair")
