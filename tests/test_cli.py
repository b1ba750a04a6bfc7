"""The ``bge-rerank`` command line: inputs, output formats, errors and exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations.cli import main

from .conftest import TOLERANCE, checkpoint, reference_score

QUERY = "what is panda?"
PASSAGES = ["hi", "The giant panda is a bear species endemic to China.", "Paris is the capital of France."]


def _expected(**options):
    return BGEReranker(checkpoint("encoder"), device="cpu").rerank(QUERY, PASSAGES, **options)


def test_json_output_is_ranked_with_exact_scores(capsys):
    assert main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", *PASSAGES]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == [{"index": r.index, "score": r.score, "text": r.text} for r in _expected()]


def test_table_output(capsys):
    assert main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--top-n", "2", *PASSAGES]) == 0
    lines = capsys.readouterr().out.splitlines()
    best = _expected(top_n=2)
    assert lines[0].split() == ["rank", "index", "score", "text"]
    assert len(lines) == 3
    assert lines[1].split()[:3] == ["1", str(best[0].index), f"{best[0].score:.4f}"]


def test_passages_from_a_file_one_per_line(tmp_path, capsys):
    path = tmp_path / "passages.txt"
    path.write_text("\n".join(PASSAGES) + "\n\n", encoding="utf-8")
    assert main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", "--normalize", "-f", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["index"] for p in printed] == [r.index for r in _expected(normalize=True)]
    assert all(0 < p["score"] < 1 for p in printed)


def test_passages_from_jsonl_on_stdin(monkeypatch, capsys):
    lines = "".join(json.dumps({"id": i, "body": text}) + "\n" for i, text in enumerate(PASSAGES))
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    assert main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", "-f", "-", "--text-field", "body"]) == 0
    assert [p["text"] for p in json.loads(capsys.readouterr().out)] == [r.text for r in _expected()]


def test_jsonl_without_the_field_is_an_error(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["-m", checkpoint("encoder"), "-q", QUERY, "-f", str(path)])
    assert exit_info.value.code == 2
    assert "no string field 'text'" in capsys.readouterr().err


def test_option_that_does_not_apply_exits_2(capsys):
    code = main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--cutoff-layers", "3", *PASSAGES])
    assert code == 2
    assert "cutoff_layers do(es) not apply to the encoder family" in capsys.readouterr().err


def test_missing_model_exits_1(tmp_path, capsys):
    assert main(["-m", str(tmp_path / "nope"), "-q", QUERY, "--device", "cpu", "x"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_blank_passages_and_query_given_as_arguments_are_scored(capsys):
    assert main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", "", "   "]) == 0
    printed = {p["text"]: p["score"] for p in json.loads(capsys.readouterr().out)}
    assert printed == {text: pytest.approx(reference_score("encoder", "blank_texts", QUERY, text), abs=TOLERANCE) for text in ("", "   ")}
    assert main(["-m", checkpoint("encoder"), "-q", "", "--device", "cpu", "--json", "hi"]) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    assert printed["score"] == pytest.approx(reference_score("encoder", "blank_texts", "", "hi"), abs=TOLERANCE)


def test_blank_lines_are_skipped_but_blank_jsonl_records_are_scored(tmp_path, capsys):
    lines = tmp_path / "passages.txt"
    lines.write_text("hi\n\n   \nParis\n", encoding="utf-8")
    assert main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", "-f", str(lines)]) == 0
    assert sorted(p["text"] for p in json.loads(capsys.readouterr().out)) == ["Paris", "hi"]
    records = tmp_path / "passages.jsonl"
    records.write_text('{"text": ""}\n\n{"text": "   "}\n', encoding="utf-8")
    assert main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", "-f", str(records)]) == 0
    printed = {p["index"]: p["score"] for p in json.loads(capsys.readouterr().out)}
    assert printed == {i: pytest.approx(reference_score("encoder", "blank_texts", QUERY, text), abs=TOLERANCE) for i, text in enumerate(["", "   "])}


def test_console_script_runs():
    completed = subprocess.run(
        [sys.executable, "-m", "bge_rerank_integrations.cli", "-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", "hi"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)[0]["text"] == "hi"
