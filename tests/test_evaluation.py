"""``bge-rerank eval`` and ``bge_rerank_integrations.evaluation`` on the shipped BEIR-format dataset.

The dataset is tests/fixtures/beir-mini (made by tools/make_beir_mini.py).

Metric values are checked against values computed by hand; the rankings against ``BGEReranker``
scores computed here; a real ``bge-rerank serve`` on 127.0.0.1 gives the in-process figures.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("ir_measures")
pytest.importorskip("bm25s")

from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations.cli import main
from bge_rerank_integrations.evaluation import (
    EvaluationError,
    configurations,
    evaluate,
    evaluate_run,
    first_stage,
    load_beir,
    markdown_table,
    pareto_front,
    parse_metrics,
    parse_sweep,
    read_run,
    trec_order,
    write_run,
)

from .conftest import FIXTURES, TOLERANCE, checkpoint

MINI = FIXTURES / "beir-mini"
ENCODER = checkpoint("encoder")
LAYERWISE = checkpoint("layerwise")
EVALUATED = ["q-panda", "q-coffee", "q-volcano", "q-python", "q-photo", "q-bike"]


@pytest.fixture(scope="module")
def mini():
    return load_beir(MINI)


# --- data ----------------------------------------------------------------------------------------


def test_the_split_is_read_and_queries_without_relevant_documents_are_counted(mini):
    assert list(mini.queries) == EVALUATED  # q-none: judged, none relevant; q-dev: another split
    assert mini.skipped == {"judged in test but no relevant document": 1}
    assert mini.qrels["q-panda"] == {"panda-2": 2, "panda-1": 1, "panda-4": 1, "panda-3": 0}
    assert mini.corpus["panda-1"].startswith("Giant panda The giant panda is a bear")  # title, space, text
    assert len(mini.corpus) == 30 and "q-dev" in mini.query_ids
    assert list(load_beir(MINI, split="dev").queries) == ["q-dev"]


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(MINI, target)
    return target


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


@pytest.mark.parametrize(
    ("breaks", "message"),
    [
        (lambda d: (d / "corpus.jsonl").unlink(), r"corpus\.jsonl does not exist"),
        (lambda d: _append(d / "corpus.jsonl", "{not json\n"), r"corpus\.jsonl line 31 is not valid JSON"),
        (
            lambda d: _append(d / "corpus.jsonl", '{"_id": "x", "title": "t"}\n'),
            r"corpus\.jsonl line 31: 'text' must be a string",
        ),
        (
            lambda d: _append(d / "corpus.jsonl", '{"_id": "panda-1", "text": "again"}\n'),
            r"corpus\.jsonl line 31: the id 'panda-1' appears twice",
        ),
        (
            lambda d: _append(d / "queries.jsonl", '{"_id": "a b", "text": "q"}\n'),
            r"queries\.jsonl line 9: '_id' must be a non-empty string without spaces",
        ),
        (
            lambda d: _append(d / "qrels" / "test.tsv", "q-unknown\tpanda-1\t1\n"),
            r"test\.tsv line 24: query id 'q-unknown' is not in queries\.jsonl",
        ),
        (
            lambda d: _append(d / "qrels" / "test.tsv", "q-panda\tnowhere\t1\n"),
            r"test\.tsv line 24: corpus id 'nowhere' is not in corpus\.jsonl",
        ),
        (
            lambda d: _append(d / "qrels" / "test.tsv", "q-panda\tpanda-5\thigh\n"),
            r"test\.tsv line 24: the score 'high' is not an integer",
        ),
        (
            lambda d: _append(d / "qrels" / "test.tsv", "q-panda panda-5 1\n"),
            r"test\.tsv line 24: expected 3 tab-separated fields",
        ),
        (
            lambda d: _append(d / "qrels" / "test.tsv", "q-panda\tpanda-1\t2\n"),
            r"test\.tsv line 24: \('q-panda', 'panda-1'\) is judged twice",
        ),
        (
            lambda d: (d / "qrels" / "test.tsv").write_text("q-panda\tpanda-1\t1\n"),
            r"test\.tsv line 1: expected the header",
        ),
        (
            lambda d: (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"),
            r"test\.tsv has no judgements: the split 'test' is empty",
        ),
        (
            lambda d: (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq-none\tphoto-5\t0\n"),
            r"no query has a relevant document",
        ),
        (
            lambda d: (d / "qrels" / "test.tsv").unlink(),
            r"test\.tsv does not exist: the split 'test' has no judgements \(splits here: dev\)",
        ),
        (lambda d: (d / "corpus.jsonl").write_bytes(b"\xff\xfe\n"), r"corpus\.jsonl line 1 is not UTF-8 text"),
    ],
)
def test_bad_data_is_an_error_naming_the_file_and_line(tmp_path, breaks, message):
    data = _copy(tmp_path)
    breaks(data)
    with pytest.raises(EvaluationError, match=message):
        load_beir(data)


def test_a_directory_that_is_not_there_is_an_error(tmp_path):
    with pytest.raises(EvaluationError, match="is not a directory"):
        load_beir(tmp_path / "nowhere")


# --- metrics: values computed by hand ------------------------------------------------------------


#: A fixed run for two of the six evaluated queries; the other four have no candidates (they score 0).
FIXED_RUN = {
    "q-panda": {"panda-3": 4.0, "panda-1": 3.0, "panda-5": 2.0, "panda-2": 1.0},
    "q-coffee": {"coffee-1": 1.0, "coffee-2": 1.0},  # a tie: trec_eval ranks it by id descending, coffee-2 first
}


def test_metric_values_match_the_ones_computed_by_hand(mini):
    # q-panda, judged panda-2: 2, panda-1: 1, panda-4: 1, panda-3: 0;
    # ranked panda-3, panda-1, panda-5 (unjudged), panda-2.
    #   DCG@10 (linear gain / log2(rank + 1)) = 0 + 1/log2(3) + 0 + 2/log2(5) = 0.63093 + 0.86135 = 1.49228
    #   ideal: 2, 1, 1 -> 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.63093 + 0.5 = 3.13093; nDCG@10 = 0.476626
    #   first relevant document at rank 2: RR@10 = 1/2; relevant found 2 of 3 (panda-4 missing): recall@100 = 2/3
    # q-coffee, judged coffee-2: 2 (coffee-1, coffee-4: 0); the tie puts coffee-2 first:
    #   nDCG@10 = 1, RR@10 = 1, recall@100 = 1/1
    # Four more evaluated queries have no candidates: 0 each. Means over six queries:
    #   ndcg@10 = (0.476626 + 1) / 6 = 0.246104; mrr@10 = (1/2 + 1) / 6 = 0.25; recall@100 = (2/3 + 1) / 6 = 0.277778
    ndcg_panda = (1 / math.log2(3) + 2 / math.log2(5)) / (2 + 1 / math.log2(3) + 0.5)
    values = evaluate_run(FIXED_RUN, mini.qrels, parse_metrics("ndcg@10,mrr@10,recall@100"))
    assert values == pytest.approx(
        {"ndcg@10": (ndcg_panda + 1) / 6, "mrr@10": 0.25, "recall@100": (2 / 3 + 1) / 6}, abs=1e-12
    )
    assert values["ndcg@10"] == pytest.approx(0.246104, abs=1e-6)
    # Cutoffs: in the top 1, q-panda has nothing relevant (0) and q-coffee its best (1); P@2 = (1/2 + 1/2) / 6.
    values = evaluate_run(FIXED_RUN, mini.qrels, parse_metrics(["nDCG@1", "RR@1", "P@2", "R@1"]))
    assert values == pytest.approx({"nDCG@1": 1 / 6, "RR@1": 1 / 6, "P@2": 1 / 6, "R@1": 1 / 6}, abs=1e-12)


def test_ties_are_ranked_as_trec_eval_ranks_them(mini):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    assert trec_order(FIXED_RUN["q-coffee"]) == ["coffee-2", "coffee-1"]
    run = {"q-coffee": {"coffee-1": 1.0, "coffee-2": 1.0, "coffee-4": 1.0}}
    reference = pytrec_eval.RelevanceEvaluator(
        {"q-coffee": mini.qrels["q-coffee"]}, {"recip_rank", "ndcg_cut_10"}
    ).evaluate(run)
    ours = evaluate_run(run, {"q-coffee": mini.qrels["q-coffee"]}, parse_metrics("mrr@10,ndcg@10"))
    assert ours == pytest.approx(
        {"mrr@10": reference["q-coffee"]["recip_rank"], "ndcg@10": reference["q-coffee"]["ndcg_cut_10"]}
    )
    assert ours["mrr@10"] == 0.5  # coffee-4, coffee-2, coffee-1: the relevant one second


def test_metric_names_are_kept_as_given_and_unknown_ones_are_errors():
    assert list(parse_metrics("nDCG@5,recall@10,map")) == ["nDCG@5", "recall@10", "map"]
    with pytest.raises(EvaluationError, match="unknown metric 'ndgc@10'"):
        parse_metrics("ndgc@10")
    with pytest.raises(EvaluationError, match="asked for twice"):
        parse_metrics("ndcg@10,ndcg@10")


# --- TREC runs -----------------------------------------------------------------------------------


def test_run_files_round_trip(tmp_path, mini):
    run = {
        "q-panda": {"panda-1": 0.1 + 0.2, "panda-2": -1e-300, "panda-3": 5e-324, "panda-4": 12345.678901234567},
        "q-coffee": {"coffee-1": 1.0, "coffee-2": 1.0},
    }
    write_run(tmp_path / "run.trec", run, tag="mine")
    assert read_run(tmp_path / "run.trec", mini.query_ids, mini.corpus) == run
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == f"q-panda Q0 panda-4 1 {12345.678901234567!r} mine"
    assert [line.split()[2] for line in lines[4:]] == ["coffee-2", "coffee-1"]  # ranks follow trec_eval's order
    assert [line.split()[3] for line in lines] == ["1", "2", "3", "4", "1", "2"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("q-panda Q0 panda-1 1 0.5\n", r"run\.trec line 2: expected 6 fields"),
        ("q-panda Q0 panda-1 one 0.5 t\n", r"run\.trec line 2: rank 'one' must be an integer"),
        ("q-panda Q0 panda-1 1 nan t\n", r"run\.trec line 2: the score 'nan' is not a finite number"),
        ("q-nobody Q0 panda-1 1 0.5 t\n", r"run\.trec line 2: query id 'q-nobody' is not in queries\.jsonl"),
        ("q-panda Q0 nowhere 1 0.5 t\n", r"run\.trec line 2: corpus id 'nowhere' is not in corpus\.jsonl"),
        ("q-panda Q0 panda-2 2 0.5 t\n", r"run\.trec line 2: \('q-panda', 'panda-2'\) appears twice"),
    ],
)
def test_bad_run_lines_are_errors_naming_the_file_and_line(tmp_path, mini, line, message):
    (tmp_path / "run.trec").write_text("q-panda Q0 panda-2 1 0.9 t\n" + line)
    with pytest.raises(EvaluationError, match=message):
        read_run(tmp_path / "run.trec", mini.query_ids, mini.corpus)


def test_a_run_file_is_the_first_stage_truncated_to_top_k(tmp_path, mini):
    lines = [f"q-panda Q0 panda-{i} {i} {10 - i} r\n" for i in range(1, 6)] + ["q-dev Q0 coffee-4 1 3.0 r\n"]
    (tmp_path / "run.trec").write_text("".join(lines))
    stage = first_stage(mini, run=tmp_path / "run.trec", top_k=3)
    assert stage.name == "run.trec"
    assert stage.candidates["q-panda"] == {"panda-1": 9.0, "panda-2": 8.0, "panda-3": 7.0}
    assert stage.candidates["q-coffee"] == {} and stage.pairs == 3
    assert stage.notes == {
        "named by the run but not evaluated in test: not reranked": 1,
        "evaluated with no candidate from the first stage: they score 0": 5,
    }


def test_bm25_is_the_default_first_stage(mini):
    stage = first_stage(mini, top_k=3)
    assert stage.name == "bm25" and list(stage.candidates) == EVALUATED
    assert all(0 < len(scores) <= 3 for scores in stage.candidates.values())
    assert next(iter(stage.candidates["q-panda"])) == "panda-2"  # "what do giant pandas eat": the diet passage
    assert (
        "bike-2" in stage.candidates["q-bike"]
    )  # "how to repair a punctured bicycle tyre": stemmed, "puncture" matches
    assert stage.candidates == first_stage(mini, top_k=3).candidates  # deterministic


# --- configurations ------------------------------------------------------------------------------


def test_sweeps_parse_by_the_options_type():
    assert parse_sweep("cutoff_layers=20,28") == ("cutoff_layers", [20, 28])
    assert parse_sweep("compress_layers=[8],[24,40]") == ("compress_layers", [[8], [24, 40]])
    assert parse_sweep("use_fp16=true,no") == ("use_fp16", [True, False])
    assert parse_sweep("query_max_length=none,64") == ("query_max_length", [None, 64])
    for spec, message in [
        ("max_length=long", "'long' is not an integer"),
        ("use_fp16=maybe", "'maybe' is not true or false"),
        ("colour=red", "not an option; sweepable options:"),
        ("max_length", "write NAME=V1,V2"),
        ("max_length=64,64", "a value is given twice"),
    ]:
        with pytest.raises(EvaluationError, match=spec.split("=")[0] if "=" not in message else "NAME"):
            parse_sweep(spec)
        with pytest.raises(EvaluationError, match=message):
            parse_sweep(spec)


def test_a_sweep_is_the_grid_of_all_combinations():
    grid = configurations(
        [ENCODER, "http://127.0.0.1:9/"], {"max_length": [32, 64], "batch_size": [2, 4, 8]}, device="cpu"
    )
    assert len(grid) == 12
    assert grid[0].options == {"device": "cpu", "max_length": 32, "batch_size": 2}
    assert grid[0].name == "encoder+max_length=32+batch_size=2"
    assert (
        grid[6].options == {"max_length": 32, "batch_size": 2}
        and grid[6].name == "127.0.0.1-9+max_length=32+batch_size=2"
    )
    assert len({c.name for c in grid}) == 12


def test_options_a_family_lacks_are_an_error_before_anything_runs(tmp_path):
    output = tmp_path / "out"
    with pytest.raises(EvaluationError, match="compress_ratio do\\(es\\) not apply to the encoder family"):
        evaluate(
            MINI, [checkpoint("lightweight"), ENCODER], sweep={"compress_ratio": [2]}, output=output, progress=False
        )
    with pytest.raises(EvaluationError, match="use_fp16 choose how a model is loaded"):
        evaluate(MINI, ["http://127.0.0.1:9"], sweep={"use_fp16": [False]}, output=output, progress=False)
    with pytest.raises(EvaluationError, match="scores at several layers"):
        evaluate(MINI, [LAYERWISE], sweep={"cutoff_layers": [[1, 2]]}, output=output, progress=False)
    assert not output.exists()


# --- a whole evaluation --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory, one_torch_thread):
    output = tmp_path_factory.mktemp("eval") / "out"
    results = evaluate(
        MINI,
        [ENCODER],
        sweep={"max_length": [48, 96], "batch_size": [4, 32]},
        top_k=10,
        output=output,
        device="cpu",
        progress=False,
    )
    return results, output


def test_a_sweep_gives_one_row_per_grid_point(swept):
    results, output = swept
    rows = results.configurations
    assert [row["options"] for row in rows] == [
        {"device": "cpu", "max_length": 48, "batch_size": 4},
        {"device": "cpu", "max_length": 48, "batch_size": 32},
        {"device": "cpu", "max_length": 96, "batch_size": 4},
        {"device": "cpu", "max_length": 96, "batch_size": 32},
    ]
    assert all(
        row["run"]
        == f"runs/encoder+max_length={row['options']['max_length']}+batch_size={row['options']['batch_size']}.trec"
        for row in rows
    )
    assert json.loads((output / "results.json").read_text()) == results.data


def test_results_json_has_exactly_the_contracts_keys(swept):
    results, _ = swept
    assert set(results.data) == {"first_stage", "configurations"}
    assert set(results.data["first_stage"]) == {"name", "metrics"}
    assert list(results.data["first_stage"]["metrics"]) == ["ndcg@10", "mrr@10", "recall@100"]
    for row in results.configurations:
        assert set(row) == {"model", "options", "metrics", "latency", "peak_rss_mb", "load_s", "run"}
        assert list(row["metrics"]) == ["ndcg@10", "mrr@10", "recall@100"]
        assert set(row["latency"]) == {"p50_ms", "p95_ms", "pairs_per_s"}
        assert row["latency"]["p50_ms"] <= row["latency"]["p95_ms"] and row["latency"]["pairs_per_s"] > 0
        assert row["peak_rss_mb"] > 0 and row["load_s"] >= 0 and row["model"] == ENCODER


def test_each_run_file_holds_every_candidate_ranked_by_the_rerankers_score(swept, mini):
    results, output = swept
    stage = first_stage(mini, top_k=10)
    reranker = BGEReranker(ENCODER, device="cpu", max_length=48)
    for row in results.configurations[:1] + results.configurations[2:3]:
        run = read_run(output / row["run"], mini.query_ids, mini.corpus)
        assert {q: set(docs) for q, docs in run.items()} == {q: set(docs) for q, docs in stage.candidates.items()}
        lines = (output / row["run"]).read_text().splitlines()
        assert len(lines) == stage.pairs
        for query_id, candidates in stage.candidates.items():
            expected = reranker.compute_score(
                [(mini.queries[query_id], mini.corpus[d]) for d in candidates], max_length=row["options"]["max_length"]
            )
            assert [run[query_id][d] for d in candidates] == pytest.approx(expected, abs=TOLERANCE)
            ranked = [line.split()[2] for line in lines if line.split()[0] == query_id]
            assert ranked == trec_order(run[query_id])
        assert row["metrics"] == evaluate_run(run, mini.qrels, parse_metrics("ndcg@10,mrr@10,recall@100"))
    assert results.data["first_stage"]["metrics"] == evaluate_run(
        stage.candidates, mini.qrels, parse_metrics("ndcg@10,mrr@10,recall@100")
    )


def test_results_md_is_best_first_with_the_change_against_the_first_stage(swept):
    results, output = swept
    table = (output / "results.md").read_text()
    assert table == markdown_table(results.data) == results.table()
    body = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    scores = [float(line.split("|")[3].split()[0]) for line in body]
    assert scores == sorted(scores, reverse=True) and len(body) == 4
    best = max(results.configurations, key=lambda row: row["metrics"]["ndcg@10"])
    change = best["metrics"]["ndcg@10"] - results.data["first_stage"]["metrics"]["ndcg@10"]
    assert f"{best['metrics']['ndcg@10']:.4f} ({change:+.4f})" in body[0]
    assert (output / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_pareto_frontier_keeps_the_points_nothing_beats():
    assert pareto_front([(10.0, 0.5), (20.0, 0.4), (30.0, 0.7), (5.0, 0.2)]) == [3, 0, 2]
    assert pareto_front([(10.0, 0.5), (10.0, 0.6), (12.0, 0.6)]) == [1]


def test_resume_skips_the_configurations_already_in_the_output(tmp_path, one_torch_thread):
    output = tmp_path / "out"
    first = evaluate(MINI, [ENCODER], sweep={"max_length": [48]}, top_k=5, output=output, device="cpu", progress=False)
    again = evaluate(
        MINI,
        [ENCODER],
        sweep={"max_length": [48, 64]},
        top_k=5,
        output=output,
        device="cpu",
        resume=True,
        progress=False,
    )
    assert again.configurations[0] == first.configurations[0]  # kept as it was, timings included: not run again
    assert [row["options"]["max_length"] for row in again.configurations] == [48, 64]
    assert sorted(p.name for p in (output / "runs").iterdir()) == [
        "encoder+max_length=48.trec",
        "encoder+max_length=64.trec",
    ]
    with pytest.raises(EvaluationError, match=r"another setup \(top_k differ\)"):
        evaluate(MINI, [ENCODER], top_k=6, output=output, device="cpu", resume=True, progress=False)


@pytest.mark.server
def test_the_server_url_path_gives_the_in_process_figures(tmp_path, one_torch_thread):
    pytest.importorskip("fastapi")
    from .serve_support import ServerProcess

    in_process = evaluate(MINI, [ENCODER], top_k=8, output=tmp_path / "local", device="cpu", progress=False)
    server = ServerProcess(ENCODER)
    try:
        remote = evaluate(MINI, [server.url], top_k=8, output=tmp_path / "remote", progress=False)
    finally:
        server.close()
    (local_row,), (remote_row,) = in_process.configurations, remote.configurations
    assert remote_row["model"] == server.url and remote_row["options"] == {}
    assert remote_row["metrics"] == pytest.approx(local_row["metrics"], abs=1e-12)
    assert remote_row["peak_rss_mb"] is None and remote_row["load_s"] is None  # the server's own: not seen from here
    data = load_beir(MINI)
    local_run = read_run(tmp_path / "local" / local_row["run"], data.query_ids, data.corpus)
    remote_run = read_run(tmp_path / "remote" / remote_row["run"], data.query_ids, data.corpus)
    for query_id, scores in local_run.items():
        assert remote_run[query_id] == pytest.approx(scores, abs=TOLERANCE)


# --- the command line ----------------------------------------------------------------------------


def test_the_eval_subcommand_writes_the_output_and_prints_the_table(tmp_path, capsys, one_torch_thread):
    status = main(
        [
            "eval",
            str(MINI),
            "--model",
            ENCODER,
            "--top-k",
            "5",
            "--metrics",
            "nDCG@5,recall@5",
            "--device",
            "cpu",
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "note: 1 query judged in test but no relevant document." in captured.err
    assert "6 queries evaluated" in captured.out and "| 1 | `encoder` |" in captured.out
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(saved["configurations"][0]["metrics"]) == ["nDCG@5", "recall@5"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "pareto.png",
        "results.json",
        "results.md",
        "runs",
        "setup.json",
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nowhere", "--model", ENCODER], "'nowhere' is not a directory"),
        (
            [str(MINI), "--model", ENCODER, "--split", "train"],
            "the split 'train' has no judgements (splits here: dev, test)",
        ),
        (
            [str(MINI), "--model", ENCODER, "--sweep", "cutoff_layers=28"],
            "cutoff_layers do(es) not apply to the encoder family",
        ),
        (
            [str(MINI), "--model", ENCODER, "--sweep", "max_length=1", "--sweep", "max_length=2"],
            "--sweep max_length is given twice",
        ),
        ([str(MINI), "--model", ENCODER, "--metrics", "ndgc@10"], "unknown metric 'ndgc@10'"),
        ([str(MINI), "--model", ENCODER, "--run", "missing.trec"], "missing.trec does not exist"),
        ([str(MINI), "--model", ENCODER, "--top-k", "0"], "top_k must be a positive number"),
        ([str(MINI), "--model", ENCODER, "--model", ENCODER], "is given twice"),
        ([str(MINI), "--model", LAYERWISE, "--sweep", "cutoff_layers=99"], "layerwise+cutoff_layers=99: "),
    ],
)
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, arguments, message):
    status = main(["eval", *arguments, "--output", str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("bge-rerank eval: ") and message in captured.err
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1


def test_a_model_that_is_not_there_is_status_1(tmp_path, capsys):
    status = main(
        ["eval", str(MINI), "--model", "./no-such-checkpoint", "--output", str(tmp_path / "out"), "--no-progress"]
    )
    captured = capsys.readouterr()
    assert status == 1 and "does not exist" in captured.err and "Traceback" not in captured.err


def test_the_readme_example_shows_what_the_command_gives(tmp_path, capsys, one_torch_thread):
    """The README's worked example: its quality columns (not its timings) are what the command prints."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    command = re.search(r"^bge-rerank eval tests/fixtures/beir-mini (.*?)\n```", readme, re.S | re.M).group(1)
    arguments = shlex.split(command.replace("\\\n", " "))
    arguments[arguments.index("--output") + 1] = str(tmp_path / "eval-out")
    root = Path(__file__).resolve().parents[1]
    assert main(["eval", str(root / "tests/fixtures/beir-mini"), *arguments, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    shown = readme[readme.index("```text\nnote: 1 query judged") :]
    shown = shown[: shown.index("```\n", 8)]

    def quality(text: str) -> list[list[str]]:
        rows = [line.split("|") for line in text.splitlines() if re.match(r"^\| \d+ \|", line)]
        return [cells[1:6] for cells in rows]

    assert quality(printed) == quality(shown) and len(quality(shown)) == 3
    assert "First stage: **bm25**: ndcg@10 0.9181, mrr@10 0.9167, recall@100 1.0000" in printed


def test_configurations_of_one_model_and_load_options_share_one_load(tmp_path, one_torch_thread):
    from bge_rerank_integrations.evaluation.runner import _by_load

    grid = configurations([ENCODER], {"max_length": [32, 64], "model_class": ["encoder", None]}, device="cpu")
    groups = _by_load(grid)
    assert [[c.name for c in group] for group in groups] == [
        ["encoder+max_length=32+model_class=encoder", "encoder+max_length=64+model_class=encoder"],
        ["encoder+max_length=32", "encoder+max_length=64"],
    ]
    results = evaluate(
        MINI,
        [ENCODER],
        sweep={"max_length": [32, 64], "model_class": ["encoder", None]},
        top_k=3,
        device="cpu",
        progress=False,
    )
    load_times = [row["load_s"] for row in results.configurations]
    assert load_times[0] == load_times[1] and load_times[2] == load_times[3]  # one load per group, each row shows it
    assert [row["options"].get("model_class") for row in results.configurations] == ["encoder", "encoder", None, None]


def test_an_output_that_cannot_be_written_is_status_1(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    status = main(["eval", str(MINI), "--model", ENCODER, "--output", str(tmp_path / "taken"), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 1 and "taken" in captured.err and "Traceback" not in captured.err
