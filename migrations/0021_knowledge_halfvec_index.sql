-- The HNSW graphs index half-precision copies of the vectors: half the size (the 384-dimension
-- graph of 100,000 passages: 391 MB as vector, 224 MB as halfvec), so more of it stays in
-- memory and each distance costs less. The copy is a stored column, so a small tenant's exact
-- sort reads it as it is instead of converting every vector on every search. The full-precision
-- vectors stay, and a hit's score is computed from them.
-- A half-precision value cannot exceed 65,504: vectors are kept at unit length (cosine distance
-- does not depend on length; the embedding paths normalise what they store from now on).
UPDATE knowledge_chunk SET embedding = l2_normalize(embedding)
WHERE abs(vector_norm(embedding) - 1) > 1e-6;

DROP INDEX knowledge_chunk_hnsw_384;
DROP INDEX knowledge_chunk_hnsw_768;
DROP INDEX knowledge_chunk_hnsw_1024;
DROP INDEX knowledge_chunk_hnsw_1536;
ALTER TABLE knowledge_chunk
    ADD COLUMN embedding_half halfvec GENERATED ALWAYS AS (embedding::halfvec) STORED;
CREATE INDEX knowledge_chunk_hnsw_384 ON knowledge_chunk
    USING hnsw ((embedding_half::halfvec(384)) halfvec_cosine_ops) WHERE dims = 384;
CREATE INDEX knowledge_chunk_hnsw_768 ON knowledge_chunk
    USING hnsw ((embedding_half::halfvec(768)) halfvec_cosine_ops) WHERE dims = 768;
CREATE INDEX knowledge_chunk_hnsw_1024 ON knowledge_chunk
    USING hnsw ((embedding_half::halfvec(1024)) halfvec_cosine_ops) WHERE dims = 1024;
CREATE INDEX knowledge_chunk_hnsw_1536 ON knowledge_chunk
    USING hnsw ((embedding_half::halfvec(1536)) halfvec_cosine_ops) WHERE dims = 1536;
