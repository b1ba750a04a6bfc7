"""``BGEReranker``: the one entry point that scores (query, passage) pairs with any BGE reranker."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, cast

import torch

from .batching import run_batches
from .contract import Reranker, Scores
from .device import is_mps_dtype_error, resolve_device, resolve_dtype
from .quantization import check_quantization
from .families import KNOWN_MODELS, RerankerFamily, ScoreOptions, canonical_family, detect_family
from .inputs import as_pairs, check_bool, check_cache_dir
from .loading import read_config, resolve_checkpoint
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
        """Check every option now (nothing is loaded); the options are listed below, from ``options.OPTIONS``."""
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
            self.device, check_bool(load["use_fp16"], "use_fp16"), check_bool(load["use_bf16"], "use_bf16")
        )
        self.quantization = check_quantization(load["quantization"], self.device)
        if self.quantization and (load["use_fp16"] or load["use_bf16"]):
            raise ValueError(f"quantization={load['quantization']!r} and use_fp16/use_bf16 are both set; choose one.")
        load["quantization"] = self.quantization
        self.cache_dir = check_cache_dir(load["cache_dir"])
        self.local_files_only = check_bool(load["local_files_only"], "local_files_only")
        self.show_progress = check_bool(load["show_progress"], "show_progress")
        self._load_settings = {**load, "model_class": self.model_class, "device": self._requested_device, "cache_dir": self.cache_dir}
        self._given = parse_score_options({name: options[name] for name in DEFAULT_OPTIONS if name in options})
        self._defaults = ScoreOptions(**self._given)
        self._model: CachedModel | None = None
        self._path: Path | None = None
        self._family_name = self._family_without_loading()
        self.check_options()

    def __repr__(self) -> str:
        quantized = f", quantization={self.quantization!r}" if self.quantization else ""
        return f"BGEReranker({self.model_name_or_path!r}, device={str(self.device)!r}, dtype={self.dtype}{quantized})"

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
        return merged

    def _merged(self, options: dict[str, Any]) -> ScoreOptions:
        """The constructor's scoring options overridden by a call's (``None`` keeps), each checked."""
        return ScoreOptions(**{**self._given, **parse_score_options(options)})

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

        Keyword options (the scoring options of ``options.OPTIONS``: ``normalize``, ``max_length``,
        ``batch_size``, instructions, ``prompt``, ``cutoff_layers``...) override the constructor's
        for this call only. Several ``cutoff_layers`` give one list
        of scores per layer, in ascending layer order.

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
        several are asked for) and the number of tokens the model read for each pair.

        >>> reranker = BGEReranker("tests/fixtures/checkpoints/encoder", device="cpu")
        >>> reranker.score_groups([[("what is panda?", "hi")], [("q", "a"), ("q", "b")]])
        [GroupScores(scores=[1.73...], tokens=[12]), GroupScores(scores=[1.08..., 0.89...], tokens=[7, 7])]
        """
        checked = [as_pairs(group)[0] for group in groups]
        merged = self._merged(options)
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
            assert self._path is not None  # set by load(), which gave us model
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
