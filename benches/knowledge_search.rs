//! Tenant-filtered knowledge search over 100,000 chunks (issue #5: p99 < 10 ms).
//!
//! Creates a scratch database on the server named by `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), migrates it, loads a synthetic knowledge base
//! and times `custodian::knowledge::search` inside a tenant transaction, as the agent runtime
//! calls it. The scratch database is dropped at the end (keep it with `--keep`).
//!
//! ```sh
//! cargo bench --bench knowledge_search
//! cargo bench --bench knowledge_search -- --chunks 100000 --others 100000 --searches 2000 --explain
//! ```
//!
//! The corpus: one searched tenant with `--chunks` passages, four neighbours sharing `--others`,
//! and a small tenant with `--small` passages hidden among them (the case where an HNSW scan
//! that filters after the fact finds too few rows). Articles are markdown built from a
//! vocabulary of about 3,300 words in 80 topics (Zipf-weighted within a topic), split with the
//! app's own chunker and embedded with the built-in 384-dimension embedder, so vectors cluster
//! by topic the way real articles do. Questions are fresh sentences from each tenant's topics.
//!
//! Correctness is checked on every timed search (every hit is the tenant's, `limit` hits come
//! back) and recall@limit is measured against an exact scan (indexes disabled).

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use custodian::db::{set_tenant, Db, APP_ROLE};
use custodian::knowledge::{self, chunk, embed::embed_local, embed::LOCAL_MODEL, Hit};
use pgvector::Vector;
use rand::distributions::WeightedIndex;
use rand::prelude::Distribution;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use uuid::Uuid;

#[derive(Clone)]
struct Args {
    chunks: usize,
    others: usize,
    small: usize,
    searches: usize,
    small_searches: usize,
    warmup: usize,
    recall: usize,
    limit: i64,
    seed: u64,
    batch: usize,
    keep: bool,
    explain: bool,
    sweep: bool,
}

fn args() -> Args {
    let mut args = Args {
        chunks: 100_000,
        others: 100_000,
        small: 300,
        searches: 2_000,
        small_searches: 300,
        warmup: 200,
        recall: 50,
        limit: 5,
        seed: 5,
        batch: 2_000,
        keep: false,
        explain: false,
        sweep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--chunks" => args.chunks = value().parse().expect("--chunks"),
            "--others" => args.others = value().parse().expect("--others"),
            "--small" => args.small = value().parse().expect("--small"),
            "--searches" => args.searches = value().parse().expect("--searches"),
            "--small-searches" => args.small_searches = value().parse().expect("--small-searches"),
            "--warmup" => args.warmup = value().parse().expect("--warmup"),
            "--recall" => args.recall = value().parse().expect("--recall"),
            "--limit" => args.limit = value().parse().expect("--limit"),
            "--seed" => args.seed = value().parse().expect("--seed"),
            "--batch" => args.batch = value().parse().expect("--batch"),
            "--keep" => args.keep = true,
            "--explain" => args.explain = true,
            "--sweep" => args.sweep = true,
            // cargo bench passes --bench; nothing else is ours.
            _ => {}
        }
    }
    args
}

// ---------------------------------------------------------------------------------------------
// Synthetic corpus

const TOPICS: usize = 80;
const WORDS_PER_TOPIC: usize = 40;

/// Content words every topic uses (whitespace-separated).
const COMMON: &str =
    "order account payment refund customer service update settings invoice delivery shipping \
     return subscription plan billing card address email password login profile support team \
     request ticket status change cancel renew upgrade downgrade export import report \
     dashboard page button menu option field form link code number date time day week month \
     year price fee charge discount coupon tax receipt message notification alert app mobile \
     desktop browser device phone open close select click enter save delete add remove edit \
     view find search check confirm verify send receive contact wait try again first next \
     last new old available required optional automatic manual default custom main other each \
     every only also still already usually after before within between during until because \
     when where which then";

/// Function words: ignored by the embedder, there so the text reads like text.
const FILLER: &[&str] = &[
    "the", "and", "to", "of", "a", "in", "for", "with", "on", "is", "you", "can", "it", "we", "do",
    "or", "be", "an",
];

struct Vocab {
    common: Vec<&'static str>,
    topics: Vec<Vec<String>>,
    /// Zipf-like weights over a topic's words: a few words dominate, as in real articles.
    zipf: WeightedIndex<f64>,
}

impl Vocab {
    fn new(rng: &mut StdRng) -> Self {
        const ONSETS: &[&str] = &[
            "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br",
            "cl", "dr", "fl", "gr", "pl", "st", "tr", "sh", "ch", "qu", "w",
        ];
        const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"];
        const CODAS: &[&str] = &["", "", "", "n", "r", "s", "l", "t", "nd", "st", "ck", "m"];
        const SUFFIXES: &[&str] = &["", "", "", "", "s", "ing", "er", "ion", "ment", "ly"];
        let mut seen: HashSet<String> = COMMON
            .split_whitespace()
            .chain(FILLER.iter().copied())
            .map(|w| w.to_string())
            .collect();
        let mut topics = Vec::with_capacity(TOPICS);
        for _ in 0..TOPICS {
            let mut words = Vec::with_capacity(WORDS_PER_TOPIC);
            while words.len() < WORDS_PER_TOPIC {
                let mut w = String::new();
                for _ in 0..rng.gen_range(2..=3) {
                    w.push_str(ONSETS.choose(rng).unwrap());
                    w.push_str(VOWELS.choose(rng).unwrap());
                    w.push_str(CODAS.choose(rng).unwrap());
                }
                w.push_str(SUFFIXES.choose(rng).unwrap());
                if seen.insert(w.clone()) {
                    words.push(w);
                }
            }
            topics.push(words);
        }
        let zipf =
            WeightedIndex::new((0..WORDS_PER_TOPIC).map(|r| 1.0 / (r as f64 + 1.0).powf(0.9)))
                .unwrap();
        Vocab {
            common: COMMON.split_whitespace().collect(),
            topics,
            zipf,
        }
    }

    fn word(&self, rng: &mut StdRng, primary: usize, secondary: usize) -> &str {
        let roll: f64 = rng.gen();
        if roll < 0.50 {
            &self.topics[primary][self.zipf.sample(rng)]
        } else if roll < 0.62 {
            &self.topics[secondary][self.zipf.sample(rng)]
        } else if roll < 0.82 {
            self.common.choose(rng).unwrap()
        } else {
            FILLER.choose(rng).unwrap()
        }
    }

    fn words(&self, rng: &mut StdRng, primary: usize, secondary: usize, n: usize) -> String {
        let mut out = String::new();
        for i in 0..n {
            let w = self.word(rng, primary, secondary);
            if i == 0 {
                let mut c = w.chars();
                out.extend(c.next().map(|c| c.to_ascii_uppercase()));
                out.push_str(c.as_str());
            } else {
                out.push(' ');
                out.push_str(w);
            }
        }
        out
    }

    /// A markdown article: title, then 2-5 sections of 1-3 paragraphs of 3-6 sentences.
    fn article(&self, rng: &mut StdRng, topics: &[usize]) -> (String, String) {
        let primary = *topics.choose(rng).unwrap();
        let secondary = *topics.choose(rng).unwrap();
        let n = rng.gen_range(3..=6);
        let title = self.words(rng, primary, secondary, n);
        let mut body = String::new();
        for _ in 0..rng.gen_range(2..=5) {
            let n = rng.gen_range(2..=4);
            let heading = self.words(rng, primary, secondary, n);
            body.push_str(&format!("## {heading}\n\n"));
            for _ in 0..rng.gen_range(1..=3) {
                for s in 0..rng.gen_range(3..=6) {
                    if s > 0 {
                        body.push(' ');
                    }
                    let n = rng.gen_range(8..=18);
                    body.push_str(&self.words(rng, primary, secondary, n));
                    body.push('.');
                }
                body.push_str("\n\n");
            }
        }
        (title, body)
    }

    /// A customer's question about one of the tenant's topics.
    fn question(&self, rng: &mut StdRng, topics: &[usize]) -> String {
        let primary = *topics.choose(rng).unwrap();
        let secondary = *topics.choose(rng).unwrap();
        let opening = [
            "How do I",
            "Why can't I",
            "What happens when I",
            "Can you help me",
        ]
        .choose(rng)
        .unwrap();
        let n = rng.gen_range(4..=9);
        let rest = self.words(rng, primary, secondary, n).to_lowercase();
        format!("{opening} {rest}?")
    }
}

struct Tenant {
    id: Uuid,
    slug: String,
    chunks: usize,
    topics: Vec<usize>,
}

// ---------------------------------------------------------------------------------------------
// Measurement helpers

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Stats {
    label: String,
    n: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

fn stats(label: &str, mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    Stats {
        label: label.into(),
        n: samples.len(),
        p50: ms(pct(&samples, 0.50)),
        p95: ms(pct(&samples, 0.95)),
        p99: ms(pct(&samples, 0.99)),
        max: ms(*samples.last().unwrap()),
        mean,
    }
}

fn embed_parallel(texts: &[String]) -> Vec<Vec<f32>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let per = texts.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = texts
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(|t| embed_local(t)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Loading

struct Loaded {
    generate: Duration,
    embed: Duration,
    insert: Duration,
    /// Chunk ids of the tenant, to check every hit against.
    ids: HashSet<Uuid>,
}

/// Generates, embeds and inserts one tenant's articles and chunks, in batches, as the owner
/// with the tenant pinned (so row-level security's WITH CHECK holds as in the app).
async fn load_tenant(
    db: &Db,
    vocab: &Vocab,
    rng: &mut StdRng,
    tenant: &Tenant,
    batch: usize,
) -> anyhow::Result<Loaded> {
    let t = Instant::now();
    let mut articles: Vec<(Uuid, String, String)> = Vec::new();
    let mut chunks: Vec<(Uuid, Uuid, i32, String)> = Vec::with_capacity(tenant.chunks);
    while chunks.len() < tenant.chunks {
        let (title, body) = vocab.article(rng, &tenant.topics);
        let id = Uuid::now_v7();
        for (ordinal, passage) in chunk::chunk(&title, &body).into_iter().enumerate() {
            if chunks.len() < tenant.chunks {
                chunks.push((Uuid::now_v7(), id, ordinal as i32, passage));
            }
        }
        articles.push((id, title, body));
    }
    let generate = t.elapsed();

    let t = Instant::now();
    let texts: Vec<String> = chunks.iter().map(|c| c.3.clone()).collect();
    let vectors = embed_parallel(&texts);
    drop(texts);
    let embed = t.elapsed();

    let t = Instant::now();
    let mut tx = db.system.begin().await?;
    set_tenant(&mut tx, tenant.id).await?;
    sqlx::query("INSERT INTO tenant (id, slug, name) VALUES ($1, $2, $3)")
        .bind(tenant.id)
        .bind(&tenant.slug)
        .bind(format!("Bench {}", tenant.slug))
        .execute(&mut *tx)
        .await?;
    for part in articles.chunks(batch) {
        sqlx::query(
            "INSERT INTO knowledge_article (id, tenant_id, title, body, embedding_status)
             SELECT id, $1, title, body, 'ready'
             FROM UNNEST($2::uuid[], $3::text[], $4::text[]) AS u (id, title, body)",
        )
        .bind(tenant.id)
        .bind(part.iter().map(|a| a.0).collect::<Vec<_>>())
        .bind(part.iter().map(|a| a.1.as_str()).collect::<Vec<_>>())
        .bind(part.iter().map(|a| a.2.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    for (part, vecs) in chunks.chunks(batch).zip(vectors.chunks(batch)) {
        sqlx::query(
            "INSERT INTO knowledge_chunk (id, tenant_id, article_id, ordinal, content, dims, embedding, model)
             SELECT id, $1, article_id, ordinal, content, 384, embedding, $2
             FROM UNNEST($3::uuid[], $4::uuid[], $5::int4[], $6::text[], $7::vector[])
                  AS u (id, article_id, ordinal, content, embedding)",
        )
        .bind(tenant.id)
        .bind(knowledge::embed::LOCAL_MODEL)
        .bind(part.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(part.iter().map(|c| c.1).collect::<Vec<_>>())
        .bind(part.iter().map(|c| c.2).collect::<Vec<_>>())
        .bind(part.iter().map(|c| c.3.as_str()).collect::<Vec<_>>())
        .bind(vecs.iter().map(|v| Vector::from(v.clone())).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let insert = t.elapsed();
    Ok(Loaded {
        generate,
        embed,
        insert,
        ids: chunks.iter().map(|c| c.0).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Searching

#[derive(Default)]
struct Checks {
    searches: usize,
    short: usize,
    foreign: usize,
    unordered: usize,
}

impl Checks {
    fn check(&mut self, hits: &[Hit], ids: &HashSet<Uuid>, expected: usize) {
        self.searches += 1;
        if hits.len() != expected {
            self.short += 1;
        }
        self.foreign += hits.iter().filter(|h| !ids.contains(&h.chunk_id)).count();
        if hits.windows(2).any(|w| w[0].score < w[1].score) {
            self.unordered += 1;
        }
    }
    fn ok(&self) -> bool {
        self.short == 0 && self.foreign == 0 && self.unordered == 0
    }
}

/// One search as the runtime does it: a tenant transaction on the app role, then `search`.
/// Returns (search only, whole transaction including BEGIN/tenant pin/COMMIT, hits).
async fn timed_search(
    db: &Db,
    tenant: Uuid,
    query: Vec<f32>,
    limit: i64,
) -> anyhow::Result<(Duration, Duration, Vec<Hit>)> {
    let t0 = Instant::now();
    let mut tx = knowledge::SearchTx::begin(db, tenant)
        .await
        .map_err(|e| anyhow::anyhow!("begin failed: {e}"))?;
    let t1 = Instant::now();
    let hits = knowledge::search(&mut tx, tenant, query, limit)
        .await
        .map_err(|e| anyhow::anyhow!("search failed: {e}"))?;
    let search = t1.elapsed();
    tx.0.commit().await?;
    Ok((search, t0.elapsed(), hits))
}

/// The exact answer: the same `search` with index scans disabled, so PostgreSQL scans every
/// row of the tenant and sorts.
async fn exact_search(
    db: &Db,
    tenant: Uuid,
    query: Vec<f32>,
    limit: i64,
) -> anyhow::Result<Vec<Hit>> {
    let mut tx = knowledge::SearchTx::begin(db, tenant)
        .await
        .map_err(|e| anyhow::anyhow!("begin failed: {e}"))?;
    for setting in [
        "SET LOCAL enable_indexscan = off",
        "SET LOCAL enable_indexonlyscan = off",
        "SET LOCAL enable_bitmapscan = off",
    ] {
        sqlx::query(setting).execute(&mut *tx.0).await?;
    }
    let hits = knowledge::search(&mut tx, tenant, query, limit)
        .await
        .map_err(|e| anyhow::anyhow!("exact search failed: {e}"))?;
    tx.0.rollback().await?;
    Ok(hits)
}

/// `search`'s query under other settings (ef_search, iterative scan), for `--sweep`.
async fn search_with(
    db: &Db,
    tenant: Uuid,
    query: Vec<f32>,
    limit: i64,
    settings: &[String],
) -> anyhow::Result<(Duration, Vec<Hit>)> {
    let mut tx = db.tenant_tx(tenant).await?;
    let t = Instant::now();
    for setting in settings {
        sqlx::query(AssertSqlSafe(format!("SET LOCAL {setting}")))
            .execute(&mut *tx)
            .await?;
    }
    let hits = sqlx::query_as::<_, Hit>(AssertSqlSafe(knowledge::search_sql(384)))
        .bind(Vector::from(query))
        .bind(tenant)
        .bind(limit)
        .bind(LOCAL_MODEL)
        .fetch_all(&mut *tx)
        .await?;
    let elapsed = t.elapsed();
    tx.rollback().await?;
    Ok((elapsed, hits))
}

/// Recall and latency of `search`'s query under several settings, against exact answers.
async fn sweep(
    db: &Db,
    label: &str,
    tenant: Uuid,
    queries: &[(Vec<f32>, Vec<Hit>)],
    limit: i64,
) -> anyhow::Result<()> {
    let variants: Vec<Vec<String>> = [
        vec!["hnsw.iterative_scan = off", "hnsw.ef_search = 100"],
        vec!["hnsw.iterative_scan = relaxed_order", "hnsw.ef_search = 40"],
        vec![
            "hnsw.iterative_scan = relaxed_order",
            "hnsw.ef_search = 100",
        ],
        vec!["hnsw.iterative_scan = strict_order", "hnsw.ef_search = 100"],
        vec![
            "hnsw.iterative_scan = relaxed_order",
            "hnsw.ef_search = 200",
        ],
        vec![
            "hnsw.iterative_scan = relaxed_order",
            "hnsw.ef_search = 400",
        ],
        vec![
            "hnsw.iterative_scan = relaxed_order",
            "hnsw.ef_search = 1000",
        ],
        vec!["enable_indexscan = off", "enable_bitmapscan = off"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    for settings in variants {
        let mut times = Vec::new();
        let (mut sum, mut short) = (0.0, 0);
        for (q, exact) in queries {
            let (t, hits) = search_with(db, tenant, q.clone(), limit, &settings).await?;
            times.push(t);
            sum += recall(&hits, exact);
            short += usize::from(hits.len() < exact.len());
        }
        let s = stats("", times);
        println!(
            "  {label:<6} {:<60} recall {:.3}  short {short:>3}  p50 {:>6.2} ms  p99 {:>6.2} ms",
            settings.join(", "),
            sum / queries.len() as f64,
            s.p50,
            s.p99
        );
    }
    Ok(())
}

/// Prints the plan of `search`'s query, with the same settings.
async fn explain(db: &Db, tenant: Uuid, query: Vec<f32>, limit: i64) -> anyhow::Result<()> {
    let mut tx = db.tenant_tx(tenant).await?;
    sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL hnsw.ef_search = 100")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS) {}",
        knowledge::search_sql(384)
    )))
    .bind(Vector::from(query))
    .bind(tenant)
    .bind(limit)
    .bind(LOCAL_MODEL)
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    for mut row in rows {
        // Vector literals are 384 numbers long: elide them.
        while let Some(start) = row.find("'[") {
            let Some(len) = row[start..].find("]'") else {
                break;
            };
            row.replace_range(start..start + len + 2, "$vector");
        }
        println!("    {row}");
    }
    Ok(())
}

/// recall@k of `approx` against `exact`; a hit tied with the exact k-th score counts (equal
/// passages embed to equal vectors).
fn recall(approx: &[Hit], exact: &[Hit]) -> f64 {
    if exact.is_empty() {
        return 1.0;
    }
    let ids: HashSet<Uuid> = exact.iter().map(|h| h.chunk_id).collect();
    let kth = exact.iter().map(|h| h.score).fold(f64::INFINITY, f64::min);
    let found = approx
        .iter()
        .filter(|h| ids.contains(&h.chunk_id) || h.score >= kth - 1e-6)
        .count();
    found.min(exact.len()) as f64 / exact.len() as f64
}

// ---------------------------------------------------------------------------------------------

struct Report {
    lines: Vec<String>,
    ok: bool,
}

async fn run(db: Db, args: &Args) -> anyhow::Result<Report> {
    let mut out = Vec::new();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let vocab = Vocab::new(&mut rng);
    let mut all_topics: Vec<usize> = (0..TOPICS).collect();
    let mut tenant = |name: &str, chunks: usize, topics: usize, rng: &mut StdRng| {
        all_topics.shuffle(rng);
        Tenant {
            id: Uuid::now_v7(),
            slug: format!("bench-{name}"),
            chunks,
            topics: all_topics[..topics].to_vec(),
        }
    };
    let big = tenant("big", args.chunks, 40, &mut rng);
    let neighbours: Vec<Tenant> = (0..4)
        .map(|i| tenant(&format!("other-{i}"), args.others / 4, 40, &mut rng))
        .collect();
    let small = tenant("small", args.small, 8, &mut rng);

    // The HNSW index is built faster over loaded rows than row by row: drop it around the
    // load and recreate it from its own definition.
    let mut admin = db.system.acquire().await?;
    let index_def: String =
        sqlx::query_scalar("SELECT pg_get_indexdef('knowledge_chunk_hnsw_384'::regclass)")
            .fetch_one(&mut *admin)
            .await?;
    sqlx::query("DROP INDEX knowledge_chunk_hnsw_384")
        .execute(&mut *admin)
        .await?;

    let (mut generate, mut embed, mut insert) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut big_ids = HashSet::new();
    let mut small_ids = HashSet::new();
    let load_started = Instant::now();
    for t in std::iter::once(&big).chain(&neighbours).chain([&small]) {
        let loaded = load_tenant(&db, &vocab, &mut rng, t, args.batch).await?;
        eprintln!(
            "loaded {:>7} chunks for {:<14} generate {:.1} s, embed {:.1} s, insert {:.1} s",
            t.chunks,
            t.slug,
            loaded.generate.as_secs_f64(),
            loaded.embed.as_secs_f64(),
            loaded.insert.as_secs_f64()
        );
        generate += loaded.generate;
        embed += loaded.embed;
        insert += loaded.insert;
        if t.id == big.id {
            big_ids = loaded.ids;
        } else if t.id == small.id {
            small_ids = loaded.ids;
        }
    }
    let load = load_started.elapsed();

    let t = Instant::now();
    sqlx::query("SET maintenance_work_mem = '1GB'")
        .execute(&mut *admin)
        .await?;
    sqlx::query(AssertSqlSafe(index_def.clone()))
        .execute(&mut *admin)
        .await?;
    sqlx::query("RESET maintenance_work_mem")
        .execute(&mut *admin)
        .await?;
    let index_build = t.elapsed();
    let recreated: String =
        sqlx::query_scalar("SELECT pg_get_indexdef('knowledge_chunk_hnsw_384'::regclass)")
            .fetch_one(&mut *admin)
            .await?;
    anyhow::ensure!(
        recreated == index_def,
        "index differs: {recreated} vs {index_def}"
    );
    let t = Instant::now();
    sqlx::query("VACUUM ANALYZE knowledge_article, knowledge_chunk")
        .execute(&mut *admin)
        .await?;
    let vacuum = t.elapsed();
    let (total_chunks, table_mb, index_mb): (i64, f64, f64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM knowledge_chunk),
                pg_total_relation_size('knowledge_chunk') / 1048576.0::float8,
                pg_relation_size('knowledge_chunk_hnsw_384') / 1048576.0::float8",
    )
    .fetch_one(&mut *admin)
    .await?;
    let parallel: String = sqlx::query_scalar("SHOW max_parallel_maintenance_workers")
        .fetch_one(&mut *admin)
        .await?;
    let shared_buffers: String = sqlx::query_scalar("SHOW shared_buffers")
        .fetch_one(&mut *admin)
        .await?;
    drop(admin);
    eprintln!(
        "index built in {:.1} s, vacuum analyze {:.1} s",
        index_build.as_secs_f64(),
        vacuum.as_secs_f64()
    );

    // Fresh questions from their own generator, so no query is a stored passage.
    let mut qrng = StdRng::seed_from_u64(args.seed ^ 0x0005_eed0_9e57);
    let mut questions = |t: &Tenant, n: usize| -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| embed_local(&vocab.question(&mut qrng, &t.topics)))
            .collect()
    };
    let big_q = questions(&big, args.warmup + args.searches);
    let small_q = questions(&small, args.warmup.min(50) + args.small_searches);
    let big_recall_q = questions(&big, args.recall);
    let small_recall_q = questions(&small, args.recall);

    let limit = args.limit;
    let expected = |n: usize| (limit as usize).min(n);
    let mut checks_big = Checks::default();
    let mut checks_small = Checks::default();

    // Warm-up: caches, the connection's prepared statements.
    for q in &big_q[..args.warmup] {
        timed_search(&db, big.id, q.clone(), limit).await?;
    }
    for q in &small_q[..args.warmup.min(50)] {
        timed_search(&db, small.id, q.clone(), limit).await?;
    }
    let (mut big_search, mut big_tx) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for q in &big_q[args.warmup..] {
        let (s, t, hits) = timed_search(&db, big.id, q.clone(), limit).await?;
        checks_big.check(&hits, &big_ids, expected(args.chunks));
        big_search.push(s);
        big_tx.push(t);
    }
    let big_elapsed = started.elapsed();
    let (mut small_search, mut small_tx) = (Vec::new(), Vec::new());
    for q in &small_q[args.warmup.min(50)..] {
        let (s, t, hits) = timed_search(&db, small.id, q.clone(), limit).await?;
        checks_small.check(&hits, &small_ids, expected(args.small));
        small_search.push(s);
        small_tx.push(t);
    }

    // Recall against the exact scan.
    let recall_of = |tenant: Uuid, qs: &[Vec<f32>]| {
        let db = db.clone();
        let qs = qs.to_vec();
        async move {
            let mut sum = 0.0;
            let mut min = 1.0f64;
            let mut answers = Vec::new();
            let mut similarity = (0.0, 0.0);
            for q in qs {
                let (_, _, approx) = timed_search(&db, tenant, q.clone(), limit).await?;
                let exact = exact_search(&db, tenant, q.clone(), limit).await?;
                let r = recall(&approx, &exact);
                sum += r;
                min = min.min(r);
                let mean = |hits: &[Hit]| {
                    hits.iter().map(|h| h.score).sum::<f64>() / hits.len().max(1) as f64
                };
                similarity.0 += mean(&approx);
                similarity.1 += mean(&exact);
                answers.push((q, exact));
            }
            let n = answers.len().max(1) as f64;
            anyhow::Ok((sum / n, min, (similarity.0 / n, similarity.1 / n), answers))
        }
    };
    let (big_recall, big_recall_min, big_sim, big_exact) = recall_of(big.id, &big_recall_q).await?;
    let (small_recall, small_recall_min, small_sim, small_exact) =
        recall_of(small.id, &small_recall_q).await?;

    if args.sweep {
        println!(
            "
settings sweep on the recall queries (search's SQL, other settings):"
        );
        sweep(&db, "big", big.id, &big_exact, limit).await?;
        sweep(&db, "small", small.id, &small_exact, limit).await?;
    }

    if args.explain {
        println!("\nplan, big tenant:");
        explain(&db, big.id, big_q[0].clone(), limit).await?;
        println!("\nplan, small tenant:");
        explain(&db, small.id, small_q[0].clone(), limit).await?;
    }

    let rows = [
        stats(
            &format!("big tenant ({} chunks), search", args.chunks),
            big_search,
        ),
        stats(
            &format!("big tenant ({} chunks), whole tx", args.chunks),
            big_tx,
        ),
        stats(
            &format!("small tenant ({} chunks), search", args.small),
            small_search,
        ),
        stats(
            &format!("small tenant ({} chunks), whole tx", args.small),
            small_tx,
        ),
    ];
    let p99 = rows[0].p99;
    out.push(format!(
        "corpus: {total_chunks} chunks of 384 dims in 6 tenants (searched: {}, 4 neighbours: {} in all, small: {}); knowledge_chunk {table_mb:.0} MB with indexes, HNSW index {index_mb:.0} MB; shared_buffers {shared_buffers}",
        args.chunks, args.others, args.small
    ));
    out.push(format!(
        "load: generate {:.1} s, embed {:.1} s, insert {:.1} s (total {:.1} s, batches of {}); HNSW build {:.1} s (maintenance_work_mem 1GB, max_parallel_maintenance_workers {parallel}); VACUUM ANALYZE {:.1} s",
        generate.as_secs_f64(),
        embed.as_secs_f64(),
        insert.as_secs_f64(),
        load.as_secs_f64(),
        args.batch,
        index_build.as_secs_f64(),
        vacuum.as_secs_f64()
    ));
    out.push(format!(
        "searches: limit {limit}, {} warm-up, one client, {:.0} searches/s on the big tenant",
        args.warmup,
        args.searches as f64 / big_elapsed.as_secs_f64()
    ));
    out.push(String::new());
    out.push("| measure | n | p50 ms | p95 ms | p99 ms | max ms | mean ms |".into());
    out.push("|---|---:|---:|---:|---:|---:|---:|".into());
    for r in &rows {
        out.push(format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.label, r.n, r.p50, r.p95, r.p99, r.max, r.mean
        ));
    }
    out.push(String::new());
    for (name, c) in [("big", &checks_big), ("small", &checks_small)] {
        out.push(format!(
            "checks, {name} tenant: {} searches, {} with fewer than {limit} hits, {} foreign hits, {} out of order",
            c.searches, c.short, c.foreign, c.unordered
        ));
    }
    out.push(format!(
        "recall@{limit} vs exact scan: big tenant {big_recall:.3} (min {big_recall_min:.2}, {} queries), small tenant {small_recall:.3} (min {small_recall_min:.2}, {} queries)",
        args.recall, args.recall
    ));
    out.push(format!(
        "mean cosine similarity of the {limit} hits, search vs exact: big tenant {:.4} vs {:.4}, small tenant {:.4} vs {:.4}",
        big_sim.0, big_sim.1, small_sim.0, small_sim.1
    ));
    out.push(format!(
        "target p99 < 10 ms on the big tenant's search: {} ({p99:.2} ms)",
        if p99 < 10.0 { "met" } else { "NOT met" }
    ));
    Ok(Report {
        lines: out,
        ok: checks_big.ok() && checks_small.ok(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let started = Instant::now();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let server = PgConnectOptions::from_str(&url)?;
    let name = format!("custodian_kbench_{}", Uuid::new_v4().simple());
    let mut maintenance = PgConnection::connect_with(&server).await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut maintenance)
        .await?;
    eprintln!("scratch database {name}");

    let admin = server.clone().database(&name);
    let app = match std::env::var("APP_DATABASE_URL") {
        Ok(app_url) => PgConnectOptions::from_str(&app_url)?.database(&name),
        Err(_) => admin.clone().username(APP_ROLE),
    };
    let result = match Db::connect(admin, app).await {
        Ok(db) => {
            // A panic in the run still drops the scratch database.
            let task = {
                let db = db.clone();
                let args = args.clone();
                tokio::spawn(async move { run(db, &args).await })
            };
            let result = task.await;
            db.app.close().await;
            db.system.close().await;
            result
        }
        Err(e) => Ok(Err(e)),
    };
    if args.keep {
        eprintln!("kept scratch database {name}");
    } else {
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut maintenance)
        .await?;
    }
    let report = match result {
        Ok(report) => report?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    println!("\nknowledge search benchmark");
    for line in &report.lines {
        println!("{line}");
    }
    let cmd: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    println!(
        "\ncommand: cargo bench --bench knowledge_search -- {}   (total {:.0} s)",
        cmd.join(" "),
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(report.ok, "correctness checks failed (see above)");
    Ok(())
}
