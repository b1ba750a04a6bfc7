"""``BGEReranker``: the one entry point that scores (query, passage) pairs with any BGE reranker."""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import torch

from .batching import run_batches
from .device import is_mps_dtype_error, resolve_device, resolve_dtype
from .families.base import FAMILY_SPECIFIC_OPTIONS
from .families import KNOWN_MODELS, RerankerFamily, ScoreOptions, canonical_family, detect_family, family_class
from .inputs import MAX_INT, as_pairs, check_bool, check_cache_dir, check_instruction_format, check_layers, check_positive_int
from .loading import read_config, resolve_checkpoint
from .model_cache import CachedModel, get_model
from .ranking import Ranking, RerankResult  # noqa: F401 - RerankResult: also importable from here, as before

logger = logging.getLogger(__name__)

Scores = Union[float, list[float], list[list[float]]]

#: On CPU a padded position costs as much as a real one: batches end before padding exceeds this share.
CPU_MAX_PADDING = 0.2


class BGEReranker(Ranking):
    """Score (query, passage) pairs with a BGE reranker, as FlagEmbedding does, on CUDA, MPS or CPU.

    The model family (encoder, llm, layerwise, lightweight) is decided from the six official
    ids, else from the checkpoint's ``config.json``; ``model_class`` overrides it. The model is
    loaded on first use (or by ``load()``) and shared with every reranker that asks for the same
    checkpoint, device and dtype. Every scoring option can be overridden per call.

    >>> reranker = BGEReranker("tests/fixtures/checkpoints/encoder", device="cpu")  # a tiny random-weight fixture
    >>> reranker.compute_score(["what is panda?", "hi"])
    1.73...
    >>> reranker.rerank("what is panda?", ["hi", "The giant panda is a bear."], top_n=1)
    [RerankResult(index=1, score=2.26..., text='The giant panda is a bear.')]
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        model_class: str | None = None,
        device: str | torch.device | None = None,
        use_fp16: bool = False,
        use_bf16: bool = False,
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
        max_chunks_per_passage: int = 1,
        chunk_overlap: int | None = None,
        max_tokens_per_passage: int | None = None,
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
                max_chunks_per_passage=max_chunks_per_passage,
                chunk_overlap=chunk_overlap,
                max_tokens_per_passage=max_tokens_per_passage,
            ),
            constructor_query_max_length=query_max_length,
        )
        self._model: CachedModel | None = None
        self._path: Path | None = None
        self._family_name = self._family_without_loading()
        self.check_options()

    def __repr__(self) -> str:
        return f"BGEReranker({self.model_name_or_path!r}, device={str(self.device)!r}, dtype={self.dtype})"

    @property
    def load_settings(self) -> dict[str, Any]:
        """The constructor's load settings as given (not as resolved): what rebuilds an equivalent reranker elsewhere.

        An unset ``device`` stays ``None`` and ``use_fp16`` stays as asked, so a configuration saved
        on a CPU machine does not pin CPU or float32 on a GPU one.

        >>> BGEReranker("tests/fixtures/checkpoints/encoder").load_settings["device"] is None
        True
        """
        return {
            "model_class": self.model_class,
            "device": self._requested_device,
            "use_fp16": self._requested_dtype[0],
            "use_bf16": self._requested_dtype[1],
            "cache_dir": None if self.cache_dir is None else os.fspath(self.cache_dir),
            "local_files_only": self.local_files_only,
            "show_progress": self.show_progress,
        }

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
            model = get_model(path, family, self.device, self.dtype)
            _check_against_model(model.family, self._defaults)
            self._model, self._path = model, path
        return self._model

    def compute_score(self, sentence_pairs: Any, **options: Any) -> Scores:
        """Score one ``[query, passage]`` pair (-> float) or a list of pairs (-> list of floats).

        Keyword options (``normalize``, ``max_length``, ``query_max_length``, ``batch_size``,
        instructions, ``prompt``, ``cutoff_layers``, ``compress_ratio``, ``compress_layers``,
        ``max_chunks_per_passage``, ``chunk_overlap``, ``max_tokens_per_passage``) override the
        constructor's for this call only. Several ``cutoff_layers`` give one list of scores per
        layer, in ascending layer order.
        With ``max_chunks_per_passage=N > 1`` a passage longer than its pair's room is scored as up
        to N overlapping windows and gets its best window's score (still one score per pair).

        >>> reranker = BGEReranker("tests/fixtures/checkpoints/encoder", device="cpu")
        >>> reranker.compute_score([["what is panda?", "hi"], ["what is panda?", "The giant panda is a bear."]])
        [1.73..., 2.26...]
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
        several are asked for), the number of tokens the model read for each pair (every window
        of a long passage counted) and where each pair's best window lies (``GroupScores.spans``).

        >>> reranker = BGEReranker("tests/fixtures/checkpoints/encoder", device="cpu")
        >>> reranker.score_groups([[("what is panda?", "hi")], [("q", "a"), ("q", "b")]])
        [GroupScores(scores=[1.73...], tokens=[12], spans=[None]), GroupScores(scores=[1.08..., 0.89...], tokens=[7, 7], spans=[None, None])]
        """
        checked = [as_pairs(group)[0] for group in groups]
        merged = _merge(self._defaults, options, constructor_query_max_length=self._query_max_length)
        if not any(checked):
            return [GroupScores([], [], []) for _ in checked]
        model = self.load()
        if options:
            _check_against_model(model.family, merged)
        scores, tokens, spans = self._score(model, checked, merged)
        results, start = [], 0
        for pairs in checked:
            end = start + len(pairs)
            layers = [layer[start:end] for layer in scores]
            layer_spans = [layer[start:end] for layer in spans]
            one = len(layers) == 1
            results.append(GroupScores(layers[0] if one else layers, tokens[start:end], layer_spans[0] if one else layer_spans))
            start = end
        return results

    def _score(
        self, model: CachedModel, groups: list[list[tuple[str, str]]], options: ScoreOptions
    ) -> tuple[list[list[float]], list[int], list[list[tuple[int, int] | None]]]:
        """Raw or normalized scores (one list per output, all groups' pairs in order), each pair's token count,
        and each pair's best window per output (see :func:`best_windows`)."""
        try:
            scores, encoded = self._run(model, groups, options)
        except RuntimeError as error:
            if not is_mps_dtype_error(error, model.family.device) or model.family.dtype == torch.float32:
                raise
            # The cached half-precision model stays as it is for others; this reranker moves to a float32 copy.
            logger.warning("MPS refused %s for this model (%s): falling back to float32.", model.family.dtype, error)
            self.dtype = torch.float32
            self._model = get_model(self._path, model.family.name, self.device, torch.float32)
            scores, encoded = self._run(self._model, groups, options)
        nan = int(torch.isnan(scores).sum())
        if nan:
            logger.warning(
                "%d of %d scores are NaN: the model's weights or its precision are broken (try float32).", nan, scores.numel()
            )
        scores, tokens, spans = best_windows(scores, encoded)
        if options.normalize:
            scores = torch.sigmoid(scores.double())
        return scores.tolist(), tokens, spans

    def _run(self, model: CachedModel, groups: list[list[tuple[str, str]]], options: ScoreOptions) -> tuple[torch.Tensor, list]:
        """Raw scores of every window (one row per output) and the windows (``Encoded``), all groups in order."""
        family = model.family
        encoded: list = []
        progress = None
        try:
            with model.lock, torch.inference_mode():
                encoded = [item for pairs in groups if pairs for item in self._encode(family, pairs, options)]
                if self.show_progress:
                    progress = _progress_bar(len(encoded))
                lengths = [len(item) for item in encoded]
                scores = run_batches(
                    encoded,
                    lengths,
                    options.batch_size,
                    lambda batch: family.forward(batch, options),
                    progress.update if progress is not None else None,
                    max_padding=CPU_MAX_PADDING if family.device.type == "cpu" else None,
                )
                return scores, encoded
        finally:
            if progress is not None:
                progress.close()

    def _scores_and_spans(self, pairs: list[tuple[str, str]], **options: Any) -> tuple[list[Any], list[Any] | None]:
        """``rerank``'s scores with each passage's best window (``Ranking``)."""
        (scored,) = self.score_groups([pairs], **options)
        return scored.scores, scored.spans

    def _encode(self, family: RerankerFamily, pairs: list[tuple[str, str]], options: ScoreOptions) -> list:
        if options.max_tokens_per_passage is not None:
            pairs = cut_passages(family.tokenizer, pairs, options.max_tokens_per_passage)
        texts = [_apply_instructions(family, query, passage, options) for query, passage in pairs]
        if options.max_chunks_per_passage == 1:
            return family.encode(texts, options)
        starts = [_passage_start(family, passage, text, options) for (_, passage), (_, text) in zip(pairs, texts)]
        return family.encode(texts, options, passage_starts=starts)


@dataclass(frozen=True)
class GroupScores:
    """One list of pairs scored by ``score_groups``: its scores, the tokens the model read for each pair, and spans.

    ``spans`` has the shape of ``scores``: for each pair the ``(start, end)`` characters of its best
    window in the passage, ``None`` when the passage was scored whole (always, with
    ``max_chunks_per_passage=1``). With several cutoff layers each layer's score is that layer's
    best window, so each layer has its own list of spans.
    """

    scores: list[float] | list[list[float]]
    tokens: list[int]
    spans: list[tuple[int, int] | None] | list[list[tuple[int, int] | None]] | None = None


def best_windows(scores: torch.Tensor, encoded: Sequence[Any]) -> tuple[torch.Tensor, list[int], list[list[tuple[int, int] | None]]]:
    """Per pair (a run of windows starting at ``window == 0``): the best window's score and span per output,
    and the tokens of all its windows.

    Ties go to the earliest window; a NaN window makes the pair NaN (a broken model, logged by the caller).

    >>> from bge_rerank_integrations.families import Encoded
    >>> windows = [Encoded([1, 2]), Encoded([1, 2, 3], span=(0, 9)), Encoded([1, 4], window=1, span=(7, 12))]
    >>> best_windows(torch.tensor([[0.5, 1.0, 2.0]]), windows)
    (tensor([[0.5000, 2.0000]]), [2, 5], [[None, (7, 12)]])
    """
    starts = [index for index, item in enumerate(encoded) if item.window == 0]
    if len(starts) == len(encoded):
        return scores, [len(item) for item in encoded], [[item.span for item in encoded] for _ in range(scores.shape[0])]
    ends = [*starts[1:], len(encoded)]
    best = torch.empty(scores.shape[0], len(starts), dtype=scores.dtype)
    spans: list[list[tuple[int, int] | None]] = [[] for _ in range(scores.shape[0])]
    for pair, (start, end) in enumerate(zip(starts, ends)):
        windows = scores[:, start:end]
        for output in range(scores.shape[0]):
            row = windows[output]
            index = 0 if bool(torch.isnan(row).any()) else int(torch.argmax(row))  # argmax: the first of equal maxima
            best[output, pair] = row.max()  # NaN when any window is NaN
            spans[output].append(encoded[start + index].span)
    tokens = [sum(len(item) for item in encoded[start:end]) for start, end in zip(starts, ends)]
    return best, tokens, spans


def _merge(base: ScoreOptions, overrides: dict[str, Any], constructor_query_max_length: int | None) -> ScoreOptions:
    """Apply per-call ``overrides`` (``None`` means "keep") to ``base`` and check every value."""
    given = checked_options(overrides)
    if "query_max_length" not in given and constructor_query_max_length is None:
        given["query_max_length"] = given.get("max_length", base.max_length) * 3 // 4
    merged = dataclasses.replace(base, **given)
    if merged.chunk_overlap is not None and merged.chunk_overlap >= merged.max_length:
        raise ValueError(
            f"chunk_overlap={merged.chunk_overlap} leaves a window no room: windows hold fewer than max_length="
            f"{merged.max_length} passage tokens; pass a smaller chunk_overlap (or none: an eighth of a window)."
        )
    return merged


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
    for name in ("max_length", "query_max_length", "batch_size", "compress_ratio", "max_chunks_per_passage", "max_tokens_per_passage"):
        if name in given:
            check_positive_int(given[name], name)
    if "chunk_overlap" in given:
        overlap = given["chunk_overlap"]
        if isinstance(overlap, bool) or not isinstance(overlap, numbers.Integral) or not 0 <= overlap <= MAX_INT:
            raise ValueError(f"chunk_overlap must be a non-negative integer (tokens shared by consecutive windows), got {overlap!r:.60}.")
        given["chunk_overlap"] = int(overlap)
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


def cut_passages(tokenizer: Any, pairs: list[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
    """``pairs`` with each passage cut after its ``limit``-th token (of the passage alone, no instruction).

    The cut is at the character where that token ends, so spans and texts stay those of the passage.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("max_tokens_per_passage needs a fast tokenizer (a tokenizer.json) for the cut's character offset.")
    encoded = tokenizer(
        [passage for _, passage in pairs], add_special_tokens=False, truncation=True,
        max_length=min(limit + 1, MAX_INT), return_offsets_mapping=True,
    )
    cut = []
    for (query, passage), offsets in zip(pairs, encoded["offset_mapping"]):
        cut.append((query, passage[: offsets[limit - 1][1]] if len(offsets) > limit else passage))
    return cut


def _passage_start(family: RerankerFamily, passage: str, text: str, options: ScoreOptions) -> int:
    """Where ``passage`` starts in ``text``, the passage with its instruction applied (windows need it).

    A window is the instruction followed by part of the passage, so the instruction format must put
    the passage last, once (the default ``"{}{}"`` does).
    """
    instruction = options.passage_instruction_for_rerank
    if instruction is None:
        instruction = family.default_passage_instruction
    if instruction is None:
        return 0
    marker = "\x00passage\x00"
    parts = _instruction_format(options.passage_instruction_format).format(instruction, marker).split(marker)
    if len(parts) != 2 or parts[1] or text != parts[0] + passage:
        raise ValueError(
            f"max_chunks_per_passage > 1 needs a passage_instruction_format that ends with the passage, once "
            f"(such as '{{}}{{}}'), got {options.passage_instruction_format!r}: each window is the instruction "
            "followed by part of the passage."
        )
    return len(parts[0])


def _instruction_format(template: str) -> str:
    """As in the reference, a written ``\\n`` in an instruction format stands for a newline."""
    return template.replace("\\n", "\n")


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Scoring pairs", unit="pair")
