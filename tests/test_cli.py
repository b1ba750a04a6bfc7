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
    assert (
        main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", "--normalize", "-f", str(path)])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert [p["index"] for p in printed] == [r.index for r in _expected(normalize=True)]
    assert all(0 < p["score"] < 1 for p in printed)


def test_passages_from_jsonl_on_stdin(monkeypatch, capsys):
    lines = "".join(json.dumps({"id": i, "body": text}) + "\n" for i, text in enumerate(PASSAGES))
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    assert (
        main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", "-f", "-", "--text-field", "body"])
        == 0
    )
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
    assert "cutoff_layers does not apply to the encoder family" in capsys.readouterr().err


def test_missing_model_exits_1(tmp_path, capsys):
    assert main(["-m", str(tmp_path / "nope"), "-q", QUERY, "--device", "cpu", "x"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_blank_passages_and_query_given_as_arguments_are_scored(capsys):
    assert main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", "", "   "]) == 0
    printed = {p["text"]: p["score"] for p in json.loads(capsys.readouterr().out)}
    assert printed == {
        text: pytest.approx(reference_score("encoder", "blank_texts", QUERY, text), abs=TOLERANCE)
        for text in ("", "   ")
    }
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
    assert printed == {
        i: pytest.approx(reference_score("encoder", "blank_texts", QUERY, text), abs=TOLERANCE)
        for i, text in enumerate(["", "   "])
    }


@pytest.mark.slow
def test_console_script_runs():
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bge_rerank_integrations.cli",
            "-m",
            checkpoint("encoder"),
            "-q",
            QUERY,
            "--device",
            "cpu",
            "--json",
            "hi",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)[0]["text"] == "hi"


# --- scoring options, JSONL fields, argument errors, startup without torch ---------------------------


@pytest.mark.parametrize(
    "flags, options",
    [
        (["--score-threshold", "1.0"], {"score_threshold": 1.0}),
        (["--normalize", "--score-threshold", "0.6"], {"normalize": True, "score_threshold": 0.6}),
        (["--query-max-length", "3"], {"query_max_length": 3}),
        (
            ["--query-instruction", "Q:", "--query-instruction-format", "{}\\n{}", "--passage-instruction", "P: "],
            {
                "query_instruction_for_rerank": "Q:",
                "query_instruction_format": "{}\\n{}",
                "passage_instruction_for_rerank": "P: ",
            },
        ),
        (
            ["--passage-instruction", "P", "--passage-instruction-format", "{} {}"],
            {"passage_instruction_for_rerank": "P", "passage_instruction_format": "{} {}"},
        ),
    ],
)
def test_scoring_options_reach_the_core(flags, options, capsys):
    assert main(["-m", checkpoint("encoder"), "-q", QUERY, "--device", "cpu", "--json", *flags, *PASSAGES]) == 0
    printed = [(p["index"], p["score"]) for p in json.loads(capsys.readouterr().out)]
    assert printed == [(r.index, r.score) for r in _expected(**options)]
    assert printed != [(r.index, r.score) for r in _expected()]  # the option changed something


def test_cache_dir_and_local_files_only_never_reach_the_hub(tmp_path, capsys):
    code = main(
        [
            "-m",
            "BAAI/bge-reranker-v2-m3",
            "-q",
            QUERY,
            "--device",
            "cpu",
            "--cache-dir",
            str(tmp_path),
            "--local-files-only",
            "x",
        ]
    )
    assert code == 1
    assert "BAAI/bge-reranker-v2-m3" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing fetched into the cache


def test_jsonl_json_output_keeps_each_records_other_fields(tmp_path, capsys):
    records = [
        {"id": f"doc-{i}", "body": text, "meta": {"n": i}, **({"score": 0.5} if i == 1 else {})}
        for i, text in enumerate(PASSAGES)
    ]
    path = tmp_path / "p.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in records[:2]) + "\n\n" + json.dumps(records[2]) + "\n", encoding="utf-8"
    )
    assert (
        main(
            [
                "-m",
                checkpoint("encoder"),
                "-q",
                QUERY,
                "--device",
                "cpu",
                "--json",
                "-f",
                str(path),
                "--text-field",
                "body",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    want = []
    for result in _expected():
        extra = {key: value for key, value in records[result.index].items() if key != "body"}
        if "score" in extra:
            extra["input_score"] = extra.pop("score")  # the input's own score is kept, under another name
        want.append({"index": result.index, "score": result.score, "text": result.text, **extra})
    assert printed == want
    assert [list(p)[:3] for p in printed] == [["index", "score", "text"]] * len(PASSAGES)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-q", QUERY, "x"], "give a local model with --model, or a rerank server with --url (one of them)"),
        (["-m", "m", "-q", QUERY, "--top-n", "three", "x"], "argument --top-n: invalid int value: 'three'"),
        (["-m", "m", "-q", QUERY, "--no-such-flag", "x"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_argument_errors_are_one_line_with_a_hint(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err
    assert err.startswith(f"bge-rerank: error: {message}") and "bge-rerank --help" in err


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_do_not_import_torch(flag):
    script = (
        "import sys\n"
        "from bge_rerank_integrations.cli import main\n"
        "try:\n"
        f"    main([{flag!r}])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "TORCH False" in completed.stderr
    if flag == "--version":
        from bge_rerank_integrations import __version__

        assert completed.stdout.strip() == f"bge-rerank {__version__}"
    else:
        assert "--score-threshold" in completed.stdout and "--local-files-only" in completed.stdout
