"""Hostile and broken checkpoints and inputs: checkpoint code never runs, nothing scores quietly wrong.

Broken checkpoints are copies of the small fixtures in ``tmp_path``, broken on purpose; each case
runs for every family it applies to and asserts the error type and a message naming the cause.
"""

from __future__ import annotations

import decimal
import io
import json
import logging
import math
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from bge_rerank_integrations import BGEReranker, CheckpointError, clear_model_cache, model_cache
from bge_rerank_integrations import reranker as reranker_module
from bge_rerank_integrations.cli import main, read_records

from .conftest import FAMILIES, checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUERY = "what is panda?"
PASSAGES = ["hi", "The giant panda is a bear species endemic to China."]
PAIRS = [(QUERY, passage) for passage in PASSAGES]
#: A weight of each family's model that the tests remove or reshape.
SOME_WEIGHT = {
    "encoder": "classifier.out_proj.bias",
    "llm": "model.norm.weight",
    "layerwise": "model.norm.weight",
    "lightweight": "model.norm.weight",
}


def copy_checkpoint(tmp_path: Path, family: str, name: str = "ckpt") -> Path:
    target = tmp_path / name
    shutil.copytree(checkpoint(family), target)
    return target


def edit_weights(path: Path, edit) -> None:
    state = load_file(path / "model.safetensors")
    edit(state)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})


def edit_json(file: Path, edit) -> None:
    data = json.loads(file.read_text(encoding="utf-8"))
    edit(data)
    file.write_text(json.dumps(data), encoding="utf-8")


def score(path, **kwargs):
    return BGEReranker(str(path), device="cpu", **kwargs).compute_score(PAIRS)


@pytest.fixture(scope="module")
def clean_scores():
    """Each family's scores on the untouched fixture."""
    return {family: score(checkpoint(family)) for family in FAMILIES}


# --- checkpoint code never runs -------------------------------------------------------------


def add_checkpoint_code(path: Path, marker: Path, model_type: str | None) -> None:
    """Give the checkpoint Python files (config, model, tokenizer) that write ``marker`` when imported."""
    code = f"open({str(marker)!r}, 'w').write('checkpoint code ran')\n"
    for module in ("configuration_evil", "modeling_evil", "tokenization_evil"):
        (path / f"{module}.py").write_text(code, encoding="utf-8")
    auto_map = {
        name: "modeling_evil.Model"
        for name in ("AutoModel", "AutoModelForSequenceClassification", "AutoModelForCausalLM")
    }

    def config(data):
        data["auto_map"] = {"AutoConfig": "configuration_evil.Config", **auto_map}
        if model_type is not None:
            data["model_type"] = model_type

    edit_json(path / "config.json", config)
    edit_json(
        path / "tokenizer_config.json",
        lambda data: data.update(auto_map={"AutoTokenizer": ["tokenization_evil.Tok", None]}),
    )


@pytest.mark.parametrize("family", ["encoder", "llm"])
def test_checkpoint_needing_its_own_code_fails_and_the_code_never_runs(tmp_path, family, monkeypatch):
    path = copy_checkpoint(tmp_path, family)
    marker = tmp_path / "marker"
    add_checkpoint_code(path, marker, model_type="evil")
    stdin = io.StringIO("y\n" * 5)  # anyone asking "run the custom code? [y/N]" would read yes
    monkeypatch.setattr(sys, "stdin", stdin)
    with pytest.raises(CheckpointError, match="model_type 'evil'.*never runs"):
        score(path, model_class=family)
    assert not marker.exists()
    assert stdin.read() == "y\n" * 5  # stdin was never read


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_code_is_ignored_where_the_architecture_is_known(tmp_path, family, clean_scores, monkeypatch):
    """Known model types (and our own layerwise/lightweight models) load without the checkpoint's code."""
    path = copy_checkpoint(tmp_path, family)
    marker = tmp_path / "marker"
    add_checkpoint_code(path, marker, model_type=None)
    stdin = io.StringIO("y\n")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert score(path) == pytest.approx(clean_scores[family], abs=1e-5)
    assert not marker.exists() and stdin.read() == "y\n"


def test_cli_with_yes_piped_in_never_runs_checkpoint_code(tmp_path, monkeypatch, capsys):
    path = copy_checkpoint(tmp_path, "encoder")
    marker = tmp_path / "marker"
    add_checkpoint_code(path, marker, model_type="evil")
    stdin = io.StringIO("y\n")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["-m", str(path), "-q", QUERY, "--device", "cpu", *PASSAGES]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "never runs" in err and "Traceback" not in err
    assert not marker.exists() and stdin.read() == "y\n"


def test_loading_one_checkpoint_does_not_block_loading_another(monkeypatch):
    release, started = threading.Event(), threading.Event()

    class FakeFamily:
        name = "encoder"

        @classmethod
        def load(cls, path, device, dtype):
            if path == checkpoint("llm"):
                started.set()
                assert release.wait(10)
            return cls()

    monkeypatch.setattr(model_cache, "family_class", lambda name: FakeFamily)
    slow = threading.Thread(
        target=model_cache.get_model, args=(Path(checkpoint("llm")), "fake", torch.device("cpu"), torch.float32)
    )
    slow.start()
    try:
        assert started.wait(10)
        loaded = []
        fast = threading.Thread(
            target=lambda: loaded.append(
                model_cache.get_model(Path(checkpoint("encoder")), "fake", torch.device("cpu"), torch.float32)
            )
        )
        fast.start()
        fast.join(5)
        assert loaded, "a second checkpoint waited for the first one's load"
    finally:
        release.set()
        slow.join(10)
        clear_model_cache()


# --- checkpoints that would score quietly wrong ---------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_no_tokenizer_files_is_an_error(tmp_path, family):
    path = copy_checkpoint(tmp_path, family)
    for file in path.glob("tokenizer*"):
        file.unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files.*tokenizer.json"):
        score(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_missing_weights_are_named(tmp_path, family):
    path = copy_checkpoint(tmp_path, family)
    edit_weights(path, lambda state: state.pop(SOME_WEIGHT[family]))
    with pytest.raises(
        CheckpointError, match=f"does not fit a {family} reranker: it lacks 1 weights.*{SOME_WEIGHT[family]}"
    ):
        score(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_mis_shaped_weights_are_named(tmp_path, family):
    path = copy_checkpoint(tmp_path, family)
    edit_weights(path, lambda state: state.update({SOME_WEIGHT[family]: torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=f"wrong shape, e.g. .*{SOME_WEIGHT[family]} \\(3,\\) instead of"):
        score(path)


@pytest.mark.parametrize("family", ["encoder", "llm"])
def test_unexpected_weights_are_named(tmp_path, family):
    path = copy_checkpoint(tmp_path, family)
    edit_weights(path, lambda state: state.update({"adapter.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="weights the model does not have.*adapter.extra.weight"):
        score(path)


@pytest.mark.parametrize(
    "family, extra",
    [
        ("encoder", "roberta.pooler.dense.bias"),  # the classification head reads the CLS state, not the pooler
        ("layerwise", "adapter.extra.weight"),  # our own models read only the weights they have
        ("lightweight", "lm_head.weight"),  # tied output embeddings; the score heads are lm_head.N
    ],
)
def test_weights_the_model_never_reads_are_logged_not_refused(tmp_path, family, extra, clean_scores, caplog):
    path = copy_checkpoint(tmp_path, family)
    edit_weights(path, lambda state: state.update({extra: torch.zeros(2)}))
    with caplog.at_level(logging.INFO, logger="bge_rerank_integrations"):
        assert score(path) == pytest.approx(clean_scores[family], abs=1e-5)
    assert f"Ignoring 1 weights in {path} that the {family} model does not read, e.g. ['{extra}']" in caplog.text


def test_llm_model_class_on_an_encoder_checkpoint_is_an_error(encoder_path):
    with pytest.raises(CheckpointError, match="does not fit a llm reranker: it lacks .*lm_head"):
        score(encoder_path, model_class="llm")


@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_checkpoints_own_weight_files_are_read(tmp_path, family, clean_scores):
    """A stray LoRA file and a fine-tune's pickled training_args.bin change nothing."""
    path = copy_checkpoint(tmp_path, family)
    stray = {name: torch.full_like(tensor, 7.0) for name, tensor in load_file(path / "model.safetensors").items()}
    save_file(stray, path / "pytorch_lora_weights.safetensors")
    torch.save({"args": _Pickled()}, path / "training_args.bin")
    assert score(path) == pytest.approx(clean_scores[family], abs=1e-5)


def test_sharded_weights_are_read_through_their_index(tmp_path, clean_scores):
    path = copy_checkpoint(tmp_path, "layerwise")
    state = load_file(path / "model.safetensors")
    (path / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({key: state[key] for key in keys}, path / shard, metadata={"format": "pt"})
    index = {"weight_map": {key: shard for shard, keys in shards.items() for key in keys}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    assert score(path) == pytest.approx(clean_scores["layerwise"], abs=1e-5)
    broken = shutil.copytree(path, tmp_path / "broken")
    (broken / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors.index.json.*not in the directory.*00002"):
        score(broken)


class _Pickled:
    """Stands for any pickled object (which could run code when unpickled)."""


def test_nan_scores_are_logged_and_the_cli_json_stays_json(tmp_path, caplog, capsys):
    path = copy_checkpoint(tmp_path, "encoder")
    edit_weights(path, lambda state: state["classifier.out_proj.bias"].fill_(float("nan")))
    with caplog.at_level(logging.WARNING, logger="bge_rerank_integrations"):
        scores = score(path)
    assert all(math.isnan(value) for value in scores)
    assert "2 of 2 scores are NaN" in caplog.text
    assert main(["-m", str(path), "-q", QUERY, "--device", "cpu", "--json", *PASSAGES]) == 0
    assert [row["score"] for row in json.loads(capsys.readouterr().out)] == [None, None]


# --- broken checkpoints: one clear error naming the file ------------------------------------


def _truncate(path: Path) -> None:
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:2000])


def _pickle_bin(path: Path) -> None:
    state = load_file(path / "model.safetensors")
    (path / "model.safetensors").unlink()
    torch.save({**state, "extra": _Pickled()}, path / "pytorch_model.bin")


BROKEN = {
    "config is a list": (
        lambda p: (p / "config.json").write_text("[1, 2]"),
        "config.json' must hold a JSON object, got a list",
    ),
    "config is not JSON": (
        lambda p: (p / "config.json").write_text("{'model_type': "),
        "config.json' is not valid JSON",
    ),
    "architectures not strings": (
        lambda p: edit_json(p / "config.json", lambda d: d.update(architectures=[None])),
        "config.json': architectures must be a list of class names",
    ),
    "truncated safetensors": (_truncate, "model.safetensors' is not a readable safetensors file"),
    "pickled bin": (_pickle_bin, "pytorch_model.bin' is not a plain tensor file: it holds pickled objects"),
    "no weights": (lambda p: (p / "model.safetensors").unlink(), "No weights in .*model.safetensors"),
}


@pytest.mark.parametrize("case", BROKEN)
@pytest.mark.parametrize("family", FAMILIES)
def test_broken_checkpoint_is_one_clear_error(tmp_path, family, case):
    path = copy_checkpoint(tmp_path, family)
    breaks, message = BROKEN[case]
    breaks(path)
    with pytest.raises(CheckpointError, match=message):
        score(path, model_class=family)


@pytest.mark.parametrize("case", ["config is a list", "truncated safetensors"])
def test_cli_reports_a_broken_checkpoint_in_one_line_with_status_1(tmp_path, case, capsys):
    path = copy_checkpoint(tmp_path, "encoder")
    BROKEN[case][0](path)
    assert main(["-m", str(path), "-q", QUERY, "--device", "cpu", *PASSAGES]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(path) in err and "Traceback" not in err


# --- argument and input checks ---------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    return BGEReranker(checkpoint("encoder"), device="cpu")


def test_score_threshold_takes_any_real_number_but_not_nan(encoder):
    expected = encoder.rerank(QUERY, PASSAGES, score_threshold=-1e9)
    for threshold in (np.float32(-1e9), np.float64(-1e9), -1000000000, decimal.Decimal("-1e9"), np.int64(-(10**9))):
        assert encoder.rerank(QUERY, PASSAGES, score_threshold=threshold) == expected
    with pytest.raises(ValueError, match="score_threshold is NaN"):
        encoder.rerank(QUERY, PASSAGES, score_threshold=float("nan"))
    with pytest.raises(ValueError, match="score_threshold must be a number"):
        encoder.rerank(QUERY, PASSAGES, score_threshold=True)


@pytest.mark.parametrize("adapter", ["langchain", "llama_index"])
def test_adapters_take_any_real_threshold_but_not_nan(adapter):
    pytest.importorskip({"langchain": "langchain_core", "llama_index": "llama_index.core"}[adapter])
    module = __import__(f"bge_rerank_integrations.{adapter}", fromlist=["BGERerank"])
    for threshold in (np.float32(0.5), 1, decimal.Decimal("0.25")):
        assert module.BGERerank(
            model=checkpoint("encoder"), device="cpu", score_threshold=threshold
        ).score_threshold == float(threshold)
    with pytest.raises(ValueError, match="score_threshold is NaN"):
        module.BGERerank(model=checkpoint("encoder"), device="cpu", score_threshold=float("nan"))


@pytest.mark.parametrize("template", ["{{}}{}", "{x}{}{}", "{}{}{:>9}", "{0}{1}", "{}", "{}{:{}}", "{}{"])
def test_instruction_formats_are_parsed(encoder, template):
    with pytest.raises(ValueError, match="query_instruction_format"):
        encoder.compute_score(PAIRS, query_instruction_for_rerank="Q: ", query_instruction_format=template)


def test_literal_braces_in_an_instruction_format_are_kept(encoder):
    scores = encoder.compute_score(PAIRS, query_instruction_for_rerank="Q: ", query_instruction_format="{}{} {{x}}")
    assert scores == encoder.compute_score([("Q: " + QUERY + " {x}", passage) for passage in PASSAGES])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"query_max_length": 2**64}, ValueError, "query_max_length must be a positive integer"),
        ({"device": "meta"}, ValueError, "device='meta' cannot run a reranker here"),
        ({"use_fp16": "no"}, TypeError, "use_fp16 must be True or False"),
        ({"cache_dir": 5}, TypeError, "cache_dir must be a directory path"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        BGEReranker(checkpoint("encoder"), **{"device": "cpu", **kwargs})


def test_huge_query_max_length_per_call_is_named(encoder):
    with pytest.raises(ValueError, match="query_max_length must be a positive integer"):
        encoder.compute_score(PAIRS, query_max_length=2**64)


def test_lone_surrogate_names_the_pair(encoder):
    with pytest.raises(ValueError, match="passage at index 1 holds a lone surrogate"):
        encoder.compute_score([PAIRS[0], (QUERY, "broken \ud800 text")])


def test_cpu_and_cpu0_share_one_cached_model():
    assert (
        BGEReranker(checkpoint("encoder"), device="cpu").load().family
        is BGEReranker(checkpoint("encoder"), device="cpu:0").load().family
    )


def test_mps_float32_fallback_leaves_the_shared_half_model_alone(monkeypatch, caplog, encoder):
    """Simulated on CPU: a half-precision model the device refuses; the reranker moves to a float32 copy."""
    from bge_rerank_integrations.families.encoder import EncoderFamily

    forward = EncoderFamily.forward

    def refuse_half(self, batch, options):
        if self.dtype != torch.float32:
            raise RuntimeError("'mps.add' op requires the same element type for all operands and results")
        return forward(self, batch, options)

    monkeypatch.setattr(EncoderFamily, "forward", refuse_half)
    monkeypatch.setattr(reranker_module, "is_mps_dtype_error", lambda error, device: "same element type" in str(error))
    half = BGEReranker(checkpoint("encoder"), device="cpu")
    half.dtype = torch.float16  # what use_fp16=True resolves to on MPS
    shared = half.load()
    with caplog.at_level(logging.WARNING):
        assert half.compute_score(PAIRS) == encoder.compute_score(PAIRS)
    assert "falling back to float32" in caplog.text
    assert shared.family.dtype == torch.float16 and next(shared.family.model.parameters()).dtype == torch.float16
    assert half.dtype == torch.float32 and half.load().family is encoder.load().family


def test_progress_bar_is_closed_when_scoring_raises(monkeypatch):
    closed = []

    class Bar:
        def update(self, count):
            raise RuntimeError("scoring failed")

        def close(self):
            closed.append(True)

    monkeypatch.setattr(reranker_module, "_progress_bar", lambda total: Bar())
    with pytest.raises(RuntimeError, match="scoring failed"):
        BGEReranker(checkpoint("encoder"), device="cpu", show_progress=True).compute_score(PAIRS)
    assert closed == [True]


# --- command line ----------------------------------------------------------------------------


def test_deeply_nested_jsonl_is_a_clear_error():
    with pytest.raises(ValueError, match="line 1 is nested too deeply"):
        read_records(io.StringIO('{"text": ' + "[" * 100000 + "]" * 100000 + "}\n"))


def test_table_output_escapes_control_characters(capsys):
    assert (
        main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "red \x1b[31mtext\x1b[0m", "x\u202ey"]) == 0
    )
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert "red \\x1b[31mtext\\x1b[0m" in out and "x\\u202ey" in out


def test_a_closed_pipe_ends_the_output_quietly(monkeypatch, capsys, tmp_path):
    """``bge-rerank ... | head -1``: the reader goes away; no BrokenPipeError traceback, status 0."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return write_end

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    try:
        assert main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", *PASSAGES]) == 0
        os.write(write_end, b"x")  # now /dev/null: the interpreter's last flush cannot fail
    finally:
        os.close(write_end)


# --- LlamaIndex --------------------------------------------------------------------------------


def test_llama_index_rejects_none_and_bare_nodes_before_any_event():
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import TextNode

    from bge_rerank_integrations.llama_index import BGERerank

    rerank = BGERerank(model=checkpoint("encoder"), device="cpu")
    with pytest.raises(TypeError, match="nodes must be a list of NodeWithScore, got NoneType"):
        rerank.postprocess_nodes(None, query_str=QUERY)
    with pytest.raises(TypeError, match=r"nodes\[0\] is a TextNode, not a NodeWithScore: wrap each node"):
        rerank.postprocess_nodes([TextNode(text="hi")], query_str=QUERY)
