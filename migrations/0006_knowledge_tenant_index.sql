-- Knowledge search for small tenants (issue #5). With only the HNSW indexes, a tenant owning a
-- few hundred of the table's passages is searched by walking the shared graph past everyone
-- else's rows: measured over 200,000 passages, p99 near 85 ms, and the scan can stop at
-- hnsw.max_scan_tuples with fewer hits than asked. With this index the planner reads such a
-- tenant's own passages and ranks them exactly (about 1 ms); large tenants keep the HNSW scan.
-- See benches/knowledge_search.rs.
CREATE INDEX knowledge_chunk_tenant_dims_idx ON knowledge_chunk (tenant_id, dims);
