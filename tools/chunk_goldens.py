"""Reference scores of long-passage windows (``max_chunks_per_passage``), for every fixture checkpoint.

Usage (reference environment: FlagEmbedding 1.4.2, transformers 4.46.3, torch CPU)::

    .venv-ref/bin/python tools/chunk_goldens.py write [--family NAME]   # (re)write tests/fixtures/goldens/chunks/*.json
    .venv-ref/bin/python tools/chunk_goldens.py check [--family NAME]   # recompute everything, compare

The reference has no windows: it truncates. This oracle makes each window a pair the reference
scores, with its own pipeline, from nothing but its tokenizer and its truncation:

* **Window 0** is the real passage: the reference truncates it itself. How many passage tokens
  it keeps (``kept``) is read off the ids the reference feeds its model: the pair's row minus the
  row of the same query with an empty passage (captured with a forward pre-hook).
* **Later windows** are exact token windows: the oracle cuts the reference tokenizer's ids of the
  passage (instruction included, e.g. ``"B: " + passage``, no truncation) as the issue defines it,
  independently of the package: the instruction's tokens (those ending inside it) head every
  window; each window holds ``W = kept - len(head)`` passage tokens; window k starts at
  ``k * (W - overlap)``; windows stop at the passage's end or after N; ``overlap`` defaults to
  ``W // 8``. The passage text handed to the reference is then a marker that a thin wrapper around
  the reference's tokenizer (in this process only) maps to the window's ids; everything after
  tokenization (pair truncation, special tokens, prompt, padding, batching, compression, heads)
  is the reference's own.
* **Scores**: one reference call per case with every window as its own pair, in order (pair 0's
  windows, then pair 1's, ...), with the case's options: the reference's batching of exactly those
  windows. A passage's score is its best window's (per cutoff layer).
* Each window also records the ids the reference fed its model for it (a single-pair call), and its
  character span from the reference tokenizer's offsets.

Cases pin, for every family: several window counts (2, 3, a passage cut at N windows), the default
and explicit overlaps, a window boundary inside a word (asserted), a passage that ends exactly on a
window boundary (found by search, asserted), a passage that fits (scored whole, span ``None``),
instructions, several cutoff layers, compression (lightweight), and the NFKC tokenizers' offsets.
Tolerance as ``tools/goldens.py`` (1e-4); ids and spans must match exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goldens import (
    ATOL,
    CKPT_DIR,
    FIXTURES,
    GOLDEN_DIR,
    INSTR_DECODER,
    INSTR_ENCODER,
    SENTENCES,
    _as_floats,
    _dump,
    _max_abs_diff,
    _quiet_reference,
    _reference_classes,
    reference_tokenizer,
    reference_versions,
)

CHUNK_DIR = GOLDEN_DIR / "chunks"
#: The package's options this oracle implements around the reference (which has none of them).
CHUNK_OPTIONS = ("max_chunks_per_passage", "chunk_overlap")
MARKER = "\x00window{}\x00"
_MARKER_RE = re.compile("\x00window(\\d+)\x00")

#: A long passage of long words: the fixtures' small vocabularies cut them into several pieces,
#: so window boundaries fall inside words.
LONG_WORDS = (
    "The giant panda Ailuropoda melanoleuca lives in temperate broadleaf forests of central China. "
    "Photosynthesis converts electromagnetic radiation into chemical energy. "
    "Paris is the capital and largest city of France, on the river Seine. "
    "Berlin is the capital of Germany, and Madrid is the capital of Spain. "
    "Extraordinarily, Shakespeare wrote Hamlet around the year sixteen hundred."
)
LONG = " ".join(SENTENCES[i % len(SENTENCES)] for i in range(3, 11))
NFKC_LONG = (
    "Ｔｈｅ ｇｉａｎｔ ｐａｎｄａ is a ﬁne bear ① ② ③ that eats bamboo. About 14,000,000 people live in "
    "Tokyo\u00a0(2024 report, ½ of them…). Paris is the capital of France. “Yes”: the passage answers it. "
    "Ｗｈａｔ ｉｓ ｔｈｅ ｃａｐｉｔａｌ ｏｆ Ｆｒａｎｃｅ？ Paris is."
)
Q_CAPITAL = "What is the capital of France?"
Q_PANDA = "what is panda?"


def _case(cid, pairs, init=None, call=None, note=None, ends_on_boundary=None):
    case = {"id": cid, "init": dict(init or {}), "call": dict(call or {})}
    if note:
        case["note"] = note
    if ends_on_boundary:
        case["ends_on_boundary"] = ends_on_boundary  # {"pair": i, "windows": k}: built by search
    case["pairs"] = [list(p) for p in pairs]
    return case


def build_cases() -> dict[str, list[dict]]:
    """Case definitions per fixture (``ends_on_boundary`` cases get their passage in :func:`resolve_cases`)."""
    short = [Q_PANDA, "hi"]
    common = [
        _case(
            "two_windows_default_overlap",
            [[Q_CAPITAL, LONG_WORDS], short, [Q_PANDA, LONG]],
            call={"max_length": 48, "max_chunks_per_passage": 2},
            note="passages longer than two windows: the rest is dropped; 'hi' fits (span None)",
        ),
        _case(
            "three_windows_overlap_5_inside_words",
            [[Q_CAPITAL, LONG_WORDS], [Q_PANDA, LONG_WORDS[:160]], short],
            call={"max_length": 40, "max_chunks_per_passage": 3, "chunk_overlap": 5},
            note="boundaries fall inside words (asserted)",
        ),
        _case(
            "ends_on_window_boundary",
            [[Q_CAPITAL, None], [Q_PANDA, LONG]],
            call={"max_length": 44, "max_chunks_per_passage": 4, "chunk_overlap": 3},
            ends_on_boundary={"pair": 0, "windows": 3},
            note="pair 0's passage ends exactly where its third full window ends (no fourth window)",
        ),
        _case(
            "six_windows_overlap_0_batch_3",
            [[Q_CAPITAL, LONG_WORDS], [Q_PANDA, LONG], short, [Q_CAPITAL, LONG_WORDS[:90]]],
            call={"max_length": 32, "max_chunks_per_passage": 6, "chunk_overlap": 0, "batch_size": 3},
        ),
    ]
    encoder = [
        *common,
        _case(
            "instructions",
            [[Q_CAPITAL, LONG_WORDS], [Q_PANDA, LONG]],
            init=INSTR_ENCODER,
            call={"max_length": 64, "max_chunks_per_passage": 3},
            note="the passage instruction heads every window",
        ),
    ]
    llm = [
        *common,
        _case(
            "instructions_prompt",
            [[Q_CAPITAL, LONG_WORDS], [Q_PANDA, LONG]],
            init=INSTR_DECODER,
            call={"max_length": 40, "max_chunks_per_passage": 3, "prompt": "Relevant?"},
        ),
    ]
    layerwise = [
        *common,
        _case(
            "several_cutoff_layers",
            [[Q_CAPITAL, LONG_WORDS], [Q_PANDA, LONG], short],
            call={"max_length": 40, "max_chunks_per_passage": 3, "cutoff_layers": [3, 6]},
            note="each layer's score is that layer's best window",
        ),
    ]
    lightweight = [
        *common,
        _case(
            "compressed_several_cutoff_layers",
            [[Q_CAPITAL, LONG_WORDS], [Q_PANDA, LONG], short],
            call={
                "max_length": 40,
                "max_chunks_per_passage": 3,
                "compress_ratio": 2,
                "compress_layers": [4],
                "cutoff_layers": [6, 10],
            },
            note="compression per window",
        ),
    ]
    nfkc = [
        _case(
            "nfkc_three_windows",
            [[Q_CAPITAL, NFKC_LONG], [Q_PANDA, NFKC_LONG[40:]]],
            call={"max_length": 36, "max_chunks_per_passage": 3, "chunk_overlap": 4},
            note="offsets through the NFKC normalizer refer to the original text",
        )
    ]
    return {
        "encoder": encoder,
        "llm": llm,
        "layerwise": layerwise,
        "lightweight": lightweight,
        **{f"{family}-nfkc": common + nfkc for family in ("encoder", "llm", "layerwise", "lightweight")},
    }


# ----------------------------------------------------------------------------------------------
# The reference, wrapped
# ----------------------------------------------------------------------------------------------
class WindowTokenizer:
    """The reference's tokenizer, except that a text holding a marker tokenizes to that window's ids."""

    def __init__(self, real):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "windows", [])

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)

    def __call__(self, text, *args, **kwargs):
        texts = text if isinstance(text, list) else [text]
        hits = [_MARKER_RE.search(t) if isinstance(t, str) else None for t in texts]
        if not any(hits):
            return self._real(text, *args, **kwargs)
        cleaned = ["" if hit else t for t, hit in zip(texts, hits)]
        out = self._real(cleaned if isinstance(text, list) else cleaned[0], *args, **kwargs)
        limit = kwargs.get("max_length") if kwargs.get("truncation") else None
        for i, hit in enumerate(hits):
            if not hit:
                continue
            ids = list(self.windows[int(hit.group(1))])
            ids = ids[:limit] if limit else ids
            for key in list(out.keys()):
                value = ids if key == "input_ids" else [1] * len(ids) if key == "attention_mask" else [0] * len(ids)
                if isinstance(text, list):
                    out[key][i] = value
                else:
                    out[key] = value
        return out


class Reference:
    """One reference reranker for a case, with the wrapped tokenizer and the ids it feeds its model."""

    def __init__(self, name: str, init: dict):
        cls = _reference_classes()[FIXTURES[name]]
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            self.reranker = cls(str(CKPT_DIR / name), devices="cpu", **init)
        self.tokenizer = WindowTokenizer(self.reranker.tokenizer)
        self.reranker.tokenizer = self.tokenizer
        self.rows: list[list[int]] = []
        self.reranker.model.register_forward_pre_hook(self._capture, with_kwargs=True)

    def _capture(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        self.rows = [[int(t) for t, m in zip(row, mrow) if m] for row, mrow in zip(ids.tolist(), mask.tolist())]

    def window(self, ids: list[int]) -> str:
        """A passage text that the wrapped tokenizer maps to ``ids``."""
        self.tokenizer.windows.append(list(ids))
        return MARKER.format(len(self.tokenizer.windows) - 1)

    def score(self, pairs: list[list[str]], call: dict):
        call = {
            k: v for k, v in call.items() if k not in CHUNK_OPTIONS
        }  # the reference passes unknown kwargs to its tokenizer
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return _as_floats(self.reranker.compute_score(pairs, **call))

    def row(self, query: str, passage: str, call: dict) -> list[int]:
        """The ids the reference feeds its model for the single pair (query, passage)."""
        self.score([query, passage], call)
        (row,) = self.rows
        return row


def _instruction(name: str, init: dict) -> str:
    default = None if FIXTURES[name] == "encoder" else "B: "
    instruction = init.get("passage_instruction_for_rerank", default)
    return instruction or ""


def oracle_windows(name: str, ref: Reference, case: dict, query: str, passage: str) -> list[dict]:
    """The windows of one passage (ids fed to the model, passage-segment ids, span), as defined in the docstring."""
    call = case["call"]
    instruction = _instruction(name, case["init"])
    tok = ref.tokenizer._real
    real_row = ref.row(query, passage, call)
    kept = len(real_row) - len(ref.row(query, ref.window([]), call))
    text = instruction + passage
    encoded = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if len(ids) <= kept:
        return [{"row": real_row, "ids": None, "span": None}]
    start = len(instruction)
    head = 0
    if start:
        while offsets[head][1] <= start:
            head += 1
    width = kept - head
    overlap = call.get("chunk_overlap", width // 8)
    assert width > overlap, (name, case["id"], width, overlap)
    stride = width - overlap
    content = len(ids) - head
    count = min(call["max_chunks_per_passage"], 1 + math.ceil(max(content - width, 0) / stride))
    windows = []
    for k in range(count):
        lo, hi = k * stride, min(k * stride + width, content)
        window_ids = ids[:head] + ids[head + lo : head + hi]
        span = [max(offsets[head + lo][0] - start, 0), min(offsets[head + hi - 1][1] - start, len(passage))]
        row = real_row if k == 0 else ref.row(query, ref.window(window_ids), call)
        windows.append({"row": row, "ids": window_ids, "span": span})
    return windows


def resolve_cases(name: str, cases: list[dict]) -> list[dict]:
    """Fill in the passages found by search (``ends_on_boundary``): deterministic, from the reference tokenizer."""
    tok = reference_tokenizer(name)
    resolved = []
    for case in cases:
        case = json.loads(json.dumps(case))
        target = case.get("ends_on_boundary")
        if target:
            ref = Reference(name, case["init"])
            i, k = target["pair"], target["windows"]
            query = case["pairs"][i][0]
            probe = ref.row(query, LONG_WORDS + " " + LONG, case["call"])
            kept = len(probe) - len(ref.row(query, ref.window([]), case["call"]))
            case["pairs"][i][1] = _passage_ending_on_boundary(
                tok, _instruction(name, case["init"]), kept, case["call"], k
            )
        resolved.append(case)
    return resolved


def _passage_ending_on_boundary(tok, instruction: str, kept: int, call: dict, windows: int) -> str:
    """A prefix of LONG_WORDS + LONG (cut after a word, then a few ' a') whose tokens fill exactly ``windows`` windows."""
    words = (LONG_WORDS + " " + LONG).split(" ")
    for n in range(1, len(words) + 1):
        for extra in [" a" * k for k in range(12)]:
            text = " ".join(words[:n]) + extra
            encoded = tok(instruction + text, add_special_tokens=False, return_offsets_mapping=True)
            head = sum(1 for _, end in encoded["offset_mapping"] if end <= len(instruction)) if instruction else 0
            width = kept - head
            overlap = call.get("chunk_overlap", width // 8)
            if len(encoded["input_ids"]) - head == width + (windows - 1) * (width - overlap):
                return text
    raise RuntimeError("no prefix of the texts fills the windows exactly; change the case")


def run_case(name: str, case: dict) -> dict:
    ref = Reference(name, case["init"])
    windows = [oracle_windows(name, ref, case, q, p) for q, p in case["pairs"]]
    pairs = []
    for (query, passage), passage_windows in zip(case["pairs"], windows):
        for k, window in enumerate(passage_windows):
            pairs.append([query, passage if k == 0 else ref.window(window["ids"])])
    scores = ref.score(pairs, case["call"])
    layered = isinstance(scores[0], list)
    per_layer = scores if layered else [scores]
    best, start = [[] for _ in per_layer], 0
    for passage_windows in windows:
        for layer, layer_scores in enumerate(per_layer):
            best[layer].append(max(layer_scores[start : start + len(passage_windows)]))
        start += len(passage_windows)
    flat = 0
    for passage_windows in windows:
        for window in passage_windows:
            window["score"] = [layer[flat] for layer in per_layer] if layered else per_layer[0][flat]
            flat += 1
    return {"windows": windows, "scores": best if layered else best[0]}


def _check_properties(name: str, case: dict, result: dict) -> list[str]:
    """What a case is meant to pin actually happens (inside-word boundary, ends on a boundary)."""
    problems = []
    if "inside_words" in case["id"]:
        inside = [
            w["span"]
            for (q, p), ws in zip(case["pairs"], result["windows"])
            for w in ws
            if w["span"] and w["span"][1] < len(p) and p[w["span"][1] - 1].isalnum() and p[w["span"][1]].isalnum()
        ]
        if not inside:
            problems.append("no window boundary falls inside a word")
    target = case.get("ends_on_boundary")
    if target:
        ws = result["windows"][target["pair"]]
        passage = case["pairs"][target["pair"]][1]
        if (
            len(ws) != target["windows"]
            or ws[-1]["span"][1] != len(passage.rstrip())
            or len(ws[-1]["ids"]) != len(ws[0]["ids"])
        ):
            problems.append("the passage does not end exactly on its last full window")
    return problems


def cmd_write(names: list[str]) -> int:
    _quiet_reference()
    versions = reference_versions()
    all_cases = build_cases()
    for name in names:
        t0 = time.time()
        cases = resolve_cases(name, all_cases[name])
        out = []
        for case in cases:
            result = run_case(name, case)
            problems = _check_properties(name, case, result)
            assert not problems, (name, case["id"], problems)
            out.append({**case, **result})
        doc = {
            "family": FIXTURES[name],
            "checkpoint": f"tests/fixtures/checkpoints/{name}",
            "reference": versions,
            "tolerance": ATOL,
            "cases": out,
        }
        _dump(CHUNK_DIR / f"{name}.json", doc)
        count = sum(len(ws) for c in out for ws in c["windows"])
        print(f"{name:16s} wrote {len(out)} cases, {count} windows in {time.time() - t0:.1f}s")
    return 0


def cmd_check(names: list[str]) -> int:
    _quiet_reference()
    all_cases = build_cases()
    failed = False
    for name in names:
        t0 = time.time()
        stored = {c["id"]: c for c in json.loads((CHUNK_DIR / f"{name}.json").read_text(encoding="utf-8"))["cases"]}
        cases = resolve_cases(name, all_cases[name])
        problems, worst, count = [], 0.0, 0
        if set(stored) != {c["id"] for c in cases}:
            problems.append("case ids differ from the committed JSON (run `write`)")
        for case in cases:
            expected = stored.get(case["id"])
            if expected is None:
                continue
            if {k: v for k, v in expected.items() if k not in ("windows", "scores")} != case:
                problems.append(f"case {case['id']!r}: definition differs from the committed JSON (run `write`)")
            got = run_case(name, case)
            problems += [f"case {case['id']!r}: {p}" for p in _check_properties(name, case, got)]
            for ws_expected, ws_got in zip(expected["windows"], got["windows"]):
                if [(w["row"], w["ids"], w["span"]) for w in ws_expected] != [
                    (w["row"], w["ids"], w["span"]) for w in ws_got
                ]:
                    problems.append(f"case {case['id']!r}: windows (ids or spans) differ")
                for a, b in zip(ws_expected, ws_got):
                    worst = max(worst, _max_abs_diff(a["score"], b["score"]))
                    count += 1
            worst = max(worst, _max_abs_diff(expected["scores"], got["scores"]))
        if not worst <= ATOL:
            problems.append(f"max abs diff {worst:.3g} > {ATOL}")
        print(
            f"{name:16s} {'OK' if not problems else 'DRIFT'}: {len(cases)} cases, {count} windows, "
            f"max abs diff {worst:.2e} ({time.time() - t0:.1f}s)"
        )
        for problem in problems:
            print(f"    - {problem}")
        failed |= bool(problems)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Reference scores of long-passage windows for the fixture checkpoints.")
    ap.add_argument("command", choices=("write", "check"))
    ap.add_argument("--family", choices=FIXTURES, action="append", help="limit to this fixture (repeatable)")
    args = ap.parse_args(argv)
    names = args.family or list(FIXTURES)
    import torch

    torch.set_num_threads(1)  # as tools/goldens.py: deterministic reductions, fast on a shared machine
    t0 = time.time()
    rc = {"write": cmd_write, "check": cmd_check}[args.command](names)
    print(f"{args.command}: {'ok' if rc == 0 else 'FAILED'} in {time.time() - t0:.1f}s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
