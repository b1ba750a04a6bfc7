"""``BGEReranker``: the one entry point that scores (query, passage) pairs with any BGE reranker."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from .batching import run_batches
from .contract import Reranker, Scores
from .device import is_mps_dtype_error, resolve_device, resolve_dtype
from .families import KNOWN_MODELS, RerankerFamily, ScoreOptions, canonical_family, detect_family, family_class
from .inputs import MAX_INT, as_pairs, check_bool, check_cache_dir
from .loading import cached_config, check_not_a_bare_official_name, read_config, resolve_checkpoint
from .model_cache import CachedModel, get_model
from .options import (
    BY_NAME,
    DEFAULT_OPTIONS,
    LOAD_OPTIONS,
    check_defaults,
    check_family_options,
    describe_options,
    parse_score_options,
    signature_with_options,
)
from .quantization import check_quantization
from .ranking import RerankResult  # noqa: F401 - RerankResult: also importable from here, as before

logger = logging.getLogger(__name__)

#: On CPU a padded position costs as much as a real one: batches end before padding exceeds this share.
CPU_MAX_PADDING = 0.2
#: On CPU a batch holds at most this many padded tokens: it bounds the forward's activations (the
#: peak memory of the decoders, whose MLPs are 8x wider than the model) and costs no speed there.
CPU_MAX_BATCH_TOKENS = 1024


class BGEReranker(Reranker):
    """Score (query, passage) pairs with a BGE reranker, as FlagEmbedding does, on CUDA, MPS or CPU.

    The model family (encoder, llm, layerwise, lightweight) is decided from the six official
    ids, else from the checkpoint's ``config.json``; ``model_class`` overrides it. The model is
    loaded on first use (or by ``load()``) and shared with every reranker that asks for the same
    checkpoint, device, dtype and quantization. Every scoring option can be overridden per call.

    The keyword options are those of ``options.OPTIONS`` (listed with their help in the
    constructor's docstring): load options choose how the model is loaded; scoring options are the
    defaults of every call.

    >>> reranker = BGEReranker("tests/fixtures/checkpoints/encoder", device="cpu")  # a tiny random-weight fixture
    >>> reranker.compute_score(["what is panda?", "hi"])
    1.73...
    >>> reranker.rerank("what is panda?", ["hi", "The giant panda is a bear."], top_n=1)
    [RerankResult(index=1, score=2.26..., text='The giant panda is a bear.')]
    """

    def __init__(self, model_name_or_path: str, **options: Any) -> None:
        """Check every option now; the options are listed below, from ``options.OPTIONS``.

        Options are checked against the checkpoint's ``config.json`` whenever it can be read without
        downloading anything (a local directory, or a Hub id already in the cache): an option the
        family lacks or a layer the model does not have fails here, not in the first call. Nothing
        is loaded unless ``load_on_init=True``, which loads the model here as well, so that every
        error (a missing or broken checkpoint, a length the model cannot take) comes up front.
        """
        unknown = sorted(set(options) - set(BY_NAME))
        if unknown:
            raise TypeError(f"Unknown option(s) {unknown} for BGEReranker; known: {[*LOAD_OPTIONS, *DEFAULT_OPTIONS]}.")
        check_defaults(options)
        if not isinstance(model_name_or_path, (str, Path)) or not str(model_name_or_path).strip():
            raise ValueError(f"model_name_or_path must be a Hub id or a local directory, got {model_name_or_path!r}.")
        load = {name: options.get(name, BY_NAME[name].default) for name in LOAD_OPTIONS}
        self._model_name_or_path = str(model_name_or_path)
        self.model_class = canonical_family(load["model_class"]) if load["model_class"] is not None else None
        device = load["device"]
        self._requested_device = None if device is None else str(device)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(
            self.device,
            check_bool(load["use_fp16"], "use_fp16"),
            check_bool(load["use_bf16"], "use_bf16"),
            model=_model_key(self._model_name_or_path),
        )
        self.quantization = check_quantization(load["quantization"], self.device)
        if self.quantization and (load["use_fp16"] or load["use_bf16"]):
            raise ValueError(f"quantization={load['quantization']!r} and use_fp16/use_bf16 are both set; choose one.")
        load["quantization"] = self.quantization
        self.cache_dir = check_cache_dir(load["cache_dir"])
        self.local_files_only = check_bool(load["local_files_only"], "local_files_only")
        self.show_progress = check_bool(load["show_progress"], "show_progress")
        self._load_settings = {
            **load,
            "model_class": self.model_class,
            "device": self._requested_device,
            "cache_dir": self.cache_dir,
        }
        self._given = parse_score_options({name: options[name] for name in DEFAULT_OPTIONS if name in options})
        self._defaults = ScoreOptions(**self._given)
        self._model: CachedModel | None = None
        self._path: Path | None = None
        self._config = config_without_loading(self._model_name_or_path, self.cache_dir)
        self._family_name = self._family_without_loading()
        self.check_options()
        if check_bool(load["load_on_init"], "load_on_init"):
            self.load()

    def __repr__(self) -> str:
        quantized = f", quantization={self.quantization!r}" if self.quantization else ""
        return (
            f"BGEReranker({self.model_name_or_path!r}, family={self.family_name!r}, "
            f"device={str(self.device)!r}, dtype={self.dtype}{quantized})"
        )

    @property
    def model_name_or_path(self) -> str:
        """The Hub id or local directory given."""
        return self._model_name_or_path

    @property
    def load_settings(self) -> dict[str, Any]:
        """The constructor's load settings as given (not as resolved): what rebuilds an equivalent reranker elsewhere.

        An unset ``device`` stays ``None`` and ``use_fp16`` stays as asked, so a configuration saved
        on a CPU machine does not pin CPU or float32 on a GPU one.

        >>> BGEReranker("tests/fixtures/checkpoints/encoder").load_settings["device"] is None
        True
        """
        return dict(self._load_settings)

    def settings(self) -> dict[str, Any]:
        """``model_name_or_path``, the load settings as given and the scoring defaults set to other than the table's.

        ``BGEReranker(**settings)`` rebuilds an equivalent reranker (sharing the cached model).
        """
        scoring = {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in self._given.items()
            if value != BY_NAME[name].default
        }
        return {"model_name_or_path": self.model_name_or_path, **self._load_settings, **scoring}

    @property
    def family_name(self) -> str | None:
        """The family in use: ``model_class``'s, the official id's, the config's or the loaded model's; ``None`` until known."""
        return self._model.family.name if self._model is not None else self._family_name

    @property
    def options(self) -> ScoreOptions:
        """The scoring options calls start from."""
        return self._defaults

    def check_options(self, **options: Any) -> ScoreOptions:
        """Check per-call ``options`` now, without scoring, and return the merged options.

        Values are always checked; options that do not apply to the family are checked as soon as
        the family is known (an official id, a local checkpoint or ``model_class``), and lengths
        and layers against the model once it is loaded. Adapters call this at construction.
        """
        merged = self._merged(options)
        if self._model is not None:
            _check_against_model(self._model.family, merged)
        elif self._family_name is not None:
            check_family_options(self._family_name, merged)
            if self._config is not None and self._config_family() == self._family_name:
                family_class(self._family_name).check_config(self._config, merged)
        return merged

    def _merged(self, options: dict[str, Any]) -> ScoreOptions:
        """The constructor's scoring options overridden by a call's (``None`` keeps), each checked."""
        return ScoreOptions(**{**self._given, **parse_score_options(options)})

    def _config_family(self) -> str | None:
        """The family the config says (``None`` if it does not tell): config checks apply only to the family in use."""
        try:
            return detect_family(self.model_name_or_path, self._config)
        except ValueError:
            return None

    def score_layers(self) -> list[int] | None:
        """The layers with a score head (the valid ``cutoff_layers``) of a layerwise or lightweight model.

        Known from the loaded model, or before loading from a local checkpoint's (or a cached Hub
        id's) ``config.json``; ``None`` for the other families or when the checkpoint is not at hand.
        """
        family = family_class(self._family_name) if self._family_name is not None else None
        if family is None or not hasattr(family, "score_layers"):
            return None
        config = self._config if self._config is not None or self._path is None else read_config(self._path)
        if config is None or (self._config is not None and self._config_family() != self._family_name):
            return None
        return family.score_layers(config)

    def _family_without_loading(self) -> str | None:
        """The family when it is known without fetching anything (override, official id, local or cached config)."""
        if self.model_class is not None:
            return self.model_class
        if self.model_name_or_path.strip().lower() in KNOWN_MODELS:
            return detect_family(self.model_name_or_path, None)
        if self._config is not None:
            return detect_family(self.model_name_or_path, self._config)
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

        Keyword options (the scoring options of ``options.OPTIONS``: ``normalize``, ``max_length``,
        ``batch_size``, instructions, ``prompt``, ``cutoff_layers``...) override the constructor's
        for this call only. Several ``cutoff_layers`` give one list
        of scores per layer, in ascending layer order.
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
        layers = cast("list[list[float]]", scores)  # the check above: one score list per cutoff layer
        return [layer[0] for layer in layers] if single else layers

    async def acompute_score(self, sentence_pairs: Any, **options: Any) -> Scores:
        """``compute_score`` in a worker thread, so the running event loop is not blocked."""
        return await asyncio.to_thread(self.compute_score, sentence_pairs, **options)

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
        merged = self._merged(options)
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
            results.append(
                GroupScores(layers[0] if one else layers, tokens[start:end], layer_spans[0] if one else layer_spans)
            )
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
            assert self._path is not None  # set by load(), which gave us model
            self._model = get_model(self._path, model.family.name, self.device, torch.float32)
            scores, encoded = self._run(self._model, groups, options)
        nan = int(torch.isnan(scores).sum())
        if nan:
            logger.warning(
                "%d of %d scores are NaN: the model's weights or its precision are broken (try float32).",
                nan,
                scores.numel(),
            )
        scores, tokens, spans = best_windows(scores, encoded)
        if options.normalize:
            scores = torch.sigmoid(scores.double())
        return scores.tolist(), tokens, spans

    def _run(
        self, model: CachedModel, groups: list[list[tuple[str, str]]], options: ScoreOptions
    ) -> tuple[torch.Tensor, list]:
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
                    max_tokens=CPU_MAX_BATCH_TOKENS if family.device.type == "cpu" else None,
                )
                return scores, encoded
        finally:
            if progress is not None:
                progress.close()

    def _scores_and_spans(self, pairs: list[tuple[str, str]], **options: Any) -> tuple[list[Any], list[Any] | None]:
        """``rerank``'s scores with each passage's best window (``contract.Reranker``)."""
        (scored,) = self.score_groups([pairs], **options)
        return cast(list, scored.scores), cast(list, scored.spans)

    async def _ascores_and_spans(
        self, pairs: list[tuple[str, str]], **options: Any
    ) -> tuple[list[Any], list[Any] | None]:
        """``_scores_and_spans`` in a worker thread."""
        return await asyncio.to_thread(self._scores_and_spans, pairs, **options)

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


def best_windows(
    scores: torch.Tensor, encoded: Sequence[Any]
) -> tuple[torch.Tensor, list[int], list[list[tuple[int, int] | None]]]:
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
        return (
            scores,
            [len(item) for item in encoded],
            [[item.span for item in encoded] for _ in range(scores.shape[0])],
        )
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


def config_without_loading(
    model_name_or_path: str, cache_dir: str | os.PathLike | None = None
) -> dict[str, Any] | None:
    """The checkpoint's ``config.json`` when it is there without fetching anything (a local directory, a cached Hub id).

    A bare official name (``bge-reranker-v2-m3``) that is no local directory is an error here.
    """
    local = Path(model_name_or_path).expanduser()
    if (local / "config.json").is_file():
        return read_config(local)
    check_not_a_bare_official_name(model_name_or_path)
    if local.exists():
        return None
    return cached_config(model_name_or_path, cache_dir)


def _model_key(model_name_or_path: str) -> str:
    """One name per model: a local directory's resolved path, else the Hub id in lower case."""
    local = Path(model_name_or_path).expanduser()
    return str(local.resolve()) if local.is_dir() else model_name_or_path.strip().lower()


def _check_against_model(family: RerankerFamily, options: ScoreOptions) -> None:
    """Reject options the family does not have and lengths the model cannot take."""
    check_family_options(family.name, options)
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
        raise ValueError(
            "max_tokens_per_passage needs a fast tokenizer (a tokenizer.json) for the cut's character offset."
        )
    encoded = tokenizer(
        [passage for _, passage in pairs],
        add_special_tokens=False,
        truncation=True,
        max_length=min(limit + 1, MAX_INT),
        return_offsets_mapping=True,
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


#: The constructor's keyword options, in the table's order: every load option and every scoring default.
_CONSTRUCTOR_OPTIONS = [name for name in BY_NAME if name in LOAD_OPTIONS or name in DEFAULT_OPTIONS]
BGEReranker.__init__.__signature__ = signature_with_options(BGEReranker.__init__, _CONSTRUCTOR_OPTIONS)  # type: ignore[attr-defined]
BGEReranker.__init__.__doc__ = f"{BGEReranker.__init__.__doc__}\n\n{describe_options(_CONSTRUCTOR_OPTIONS)}"
