"""Memory store figures at 100,000 memories.

    .venv/bin/python bench/memory_bench.py [--memories 100000] [--sample 2000] [--queries 200] [--no-hnsw]

1. Embedding throughput of all-MiniLM-L6-v2 on this machine, on a sample of real sentences.
2. Insert throughput: the bulk (``--memories``) with precomputed vectors (embedding excluded; the
   near-duplicate check off, as for a bulk load), then ``--sample`` more through the ordinary path
   (embedding and near-duplicate check included) and with precomputed vectors but the check on.
   Embedding 100k texts here would take many minutes, so the bulk's vectors are synthetic (random
   unit vectors): search cost does not depend on what the vectors mean.
3. Hybrid search latency (query embedding + FTS5 BM25 + FAISS + fusion + rows), p50/p95, with its
   parts measured alone.
4. The store's vector search (FAISS over 8-bit codes) against a FAISS float32 flat index and a
   brute-force numpy scan of the same matrix (and, unless ``--no-hnsw``, an HNSW index: build
   time, latency, recall@10), all in this run.
5. Index rebuild from SQLite (FAISS file deleted), index load from its file, and disk size.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# every contender on one thread, as the store runs FAISS and query embedding; numpy's BLAS pool
# of two threads on these shared cores made a 3k-row scan take 8 ms instead of a fraction of one
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from store.embed import SentenceTransformerEmbedder  # noqa: E402
from store.memory import MemoryInput, MemoryStore  # noqa: E402

SUBJECTS = ["the build", "the test suite", "the deploy script", "the staging database", "the API client",
            "the cache layer", "the worker queue", "the login page", "the CSV importer", "the search index",
            "the billing job", "the mobile app", "the docs site", "the metrics exporter", "the backup task"]
VERBS = ["fails when", "is slow because", "needs", "breaks if", "works only after", "must run before",
         "logs an error when", "times out unless", "should be restarted after", "uses"]
OBJECTS = ["the VPN is down", "Redis is not running", "the disk is full", "a migration is pending",
           "the token has expired", "DEBUG is set", "two workers share a lock", "the proxy rewrites headers",
           "pandas reads semicolons", "the clock drifts", "the cert is renewed", "uvicorn reloads"]
QUERIES = ["why does the build fail", "what slows down the test suite", "deploy problems with the VPN",
           "database migration pending", "cache layer and redis", "worker queue timeouts",
           "login page token expired", "how to import CSV files", "search index is slow", "backup task disk full"]


class KnownQueries:
    """The real embedder, except that the benchmark's queries come with their vectors computed."""

    def __init__(self, embedder: SentenceTransformerEmbedder, known: dict[str, np.ndarray]) -> None:
        self.inner, self.known = embedder, known
        self.name, self.dim = embedder.name, embedder.dim

    def embed(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1 and texts[0] in self.known:
            return self.known[texts[0]]
        return self.inner.embed(texts)


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


def sentences(n: int, rng: random.Random) -> list[str]:
    return [f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
            f"(note {i}, code E{rng.randrange(10**6):06d})" for i in range(n)]


def synthetic_texts(n: int, rng: random.Random) -> list[str]:
    """Text with a Zipf-like vocabulary, so FTS5 sees common and rare words like in real notes."""
    vocab = [f"w{i}" for i in range(20000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    words = rng.choices(vocab, weights=weights, k=n * 12)
    return [" ".join(words[i * 12:(i + 1) * 12]) + f" id{i}" for i in range(n)]


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memories", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-hnsw", action="store_true")
    args = ap.parse_args()
    load_at_start = os.getloadavg()
    rng = random.Random(7)
    rows: list[tuple[str, str, str]] = []
    embedder = SentenceTransformerEmbedder()
    embedder.embed(["warm up"])

    sample = sentences(args.sample, rng)
    t = time.perf_counter()
    sample_vectors = embedder.embed(sample)
    embed_rate = args.sample / (time.perf_counter() - t)
    rows.append(("embedding throughput (MiniLM, batches of 64)", f"{embed_rate:,.0f} texts/s",
                 f"{args.sample} real sentences; 100k would take {args.memories / embed_rate / 60:.1f} min"))

    folder = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    db = folder / "memory.db"
    store = MemoryStore(db, embedder, progress=False)
    bulk = synthetic_texts(args.memories, rng)
    vectors = unit_vectors(args.memories, embedder.dim, seed=1)
    t = time.perf_counter()
    store.add_many([MemoryInput(text, "fact") for text in bulk], vectors=vectors, batch_size=1000,
                   near_duplicates=False)
    bulk_s = time.perf_counter() - t
    rows.append((f"bulk insert of {args.memories:,}, precomputed vectors, no near-dup check",
                 f"{args.memories / bulk_s:,.0f} memories/s", f"{bulk_s:.1f} s, batches of 1000"))

    t = time.perf_counter()
    store.warm()
    rebuild_flat_s = time.perf_counter() - t  # no file yet: built from SQLite
    half = args.sample // 2
    t = time.perf_counter()
    store.add_many([MemoryInput(text, "lesson") for text in sample[:half]])
    full_rate = half / (time.perf_counter() - t)
    t = time.perf_counter()
    store.add_many([MemoryInput(text, "lesson") for text in sample[half:]], vectors=sample_vectors[half:])
    check_rate = (args.sample - half) / (time.perf_counter() - t)
    rows.append((f"insert, embedding + near-dup check included (into {args.memories // 1000}k)",
                 f"{full_rate:,.0f} memories/s", f"{half} real sentences, batches of 256"))
    rows.append(("insert, precomputed vectors, near-dup check on", f"{check_rate:,.0f} memories/s",
                 f"×{check_rate / full_rate:.1f} the row above: embedding is the cost"))

    queries = [rng.choice(QUERIES) + f" {rng.choice(SUBJECTS)}" for _ in range(args.queries)]
    for q in queries[:5]:
        store.search(q, k=5)
    lat = [timed(lambda q=q: store.search(q, k=5), 1)[0] for q in queries]
    embed_ms = [timed(lambda q=q: embedder.embed([q]), 1)[0] for q in queries]
    rows.append(("hybrid search, k=5 (query embedding included)",
                 f"p50 {percentile(lat, 50):.1f} ms, p95 {percentile(lat, 95):.1f} ms",
                 f"{args.queries} queries; target p50 < 20 ms"))
    rows.append(("  of which: query embedding alone", f"p50 {percentile(embed_ms, 50):.1f} ms",
                 f"p95 {percentile(embed_ms, 95):.1f} ms"))
    known = {q: embedder.embed([q]) for q in queries}
    store.embedder = KnownQueries(embedder, known)
    rest = [timed(lambda q=q: store.search(q, k=5), 1)[0] for q in queries]
    store.embedder = embedder
    rows.append(("  hybrid search with the query's vector ready", f"p50 {percentile(rest, 50):.1f} ms",
                 f"p95 {percentile(rest, 95):.1f} ms: FTS5, FAISS, exact re-scoring, fusion, rows"))
    fts_ms = []
    for q in queries:
        from store.memory import fts_query

        match = fts_query(q)
        t = time.perf_counter()
        store._db.execute("SELECT m.id FROM memories_fts JOIN memories m ON m.id = memories_fts.rowid WHERE "
                          "memories_fts MATCH ? AND m.deleted = 0 ORDER BY memories_fts.rank LIMIT 40",
                          (match,)).fetchall()
        fts_ms.append((time.perf_counter() - t) * 1000)
    rows.append(("  of which: FTS5 BM25 top 40 alone", f"p50 {percentile(fts_ms, 50):.1f} ms",
                 f"p95 {percentile(fts_ms, 95):.1f} ms"))
    word_q = [f"w{rng.randrange(5, 2000)} w{rng.randrange(5, 2000)}" for _ in range(args.queries)]
    word_lat = [timed(lambda q=q: store.search(q, k=5), 1)[0] for q in word_q]
    rows.append(("hybrid search, queries of the bulk's own words", f"p50 {percentile(word_lat, 50):.1f} ms, "
                 f"p95 {percentile(word_lat, 95):.1f} ms", "FTS5 has thousands of matches to rank"))

    import faiss

    index = store._vectors()
    matrix = np.ascontiguousarray(np.concatenate([vectors, sample_vectors]))
    qv = unit_vectors(args.queries, embedder.dim, seed=2)
    faiss_ms = [timed(lambda i=i: index.search(qv[i], 40), 1)[0] for i in range(args.queries)]
    flat = faiss.IndexFlatIP(embedder.dim)
    flat.add(matrix)
    flat_ms = [timed(lambda i=i: flat.search(qv[i:i + 1], 40), 1)[0] for i in range(args.queries)]

    def numpy_scan(q: np.ndarray) -> np.ndarray:
        scores = matrix @ q
        top = np.argpartition(-scores, 40)[:40]
        return top[np.argsort(-scores[top])]

    numpy_ms = [timed(lambda i=i: numpy_scan(qv[i]), 1)[0] for i in range(args.queries)]
    ids_of_row = np.concatenate([np.arange(1, args.memories + 1), np.zeros(len(sample_vectors), dtype=np.int64)])
    recall_sq = np.mean([len(set(index.search(qv[i], 10)[0].tolist()) & set(ids_of_row[numpy_scan(qv[i])[:10]].tolist())) / 10
                         for i in range(args.queries)])
    np_p50 = percentile(numpy_ms, 50)
    rows.append((f"vector search, FAISS 8-bit codes (the store's), top 40 of {len(index):,}",
                 f"p50 {percentile(faiss_ms, 50):.1f} ms", f"×{np_p50 / percentile(faiss_ms, 50):.1f} faster than "
                 f"numpy; recall@10 {recall_sq:.2f} before the exact re-scoring"))
    rows.append(("vector search, FAISS flat float32", f"p50 {percentile(flat_ms, 50):.1f} ms",
                 f"×{np_p50 / percentile(flat_ms, 50):.1f} faster than numpy"))
    rows.append(("vector search, numpy brute-force scan (float32 matrix @ q, argpartition)", f"p50 {np_p50:.1f} ms",
                 "the peer"))
    if not args.no_hnsw:
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # give the build every core
        hnsw = faiss.IndexHNSWFlat(embedder.dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efSearch = 64  # the default (16) finds almost nothing on random vectors
        t = time.perf_counter()
        hnsw.add(matrix)
        build_s = time.perf_counter() - t
        faiss.omp_set_num_threads(1)  # as the store runs FAISS
        hnsw_ms = [timed(lambda i=i: hnsw.search(qv[i:i + 1], 10), 1)[0] for i in range(args.queries)]
        recall = np.mean([len(set(hnsw.search(qv[i:i + 1], 10)[1][0]) & set(numpy_scan(qv[i])[:10].tolist())) / 10
                          for i in range(args.queries)])
        rows.append(("HNSW32 (not used): build / search / recall@10", f"{build_s:.0f} s / p50 "
                     f"{percentile(hnsw_ms, 50):.2f} ms / {recall:.2f}",
                     f"random vectors are its worst case; no removal; build ×{build_s / max(rebuild_flat_s, 1e-3):.0f} "
                     "the store's rebuild"))

    store.close()
    index_path = db.with_suffix(".faiss")
    t = time.perf_counter()
    with MemoryStore(db, embedder, progress=False) as again:
        open_n = again.warm()
    load_s = time.perf_counter() - t
    index_path.unlink()
    t = time.perf_counter()
    with MemoryStore(db, embedder, progress=False) as again:
        again.warm()
    rebuild_s = time.perf_counter() - t
    rows.append((f"open store + load FAISS file ({open_n:,} vectors, checksum verified)", f"{load_s * 1000:.0f} ms", ""))
    rows.append(("open store + rebuild index from SQLite (file deleted) + save", f"{rebuild_s:.2f} s",
                 f"×{rebuild_s / load_s:.1f} the load"))
    db_mb = sum(p.stat().st_size for p in folder.glob("memory.db*")) / 2**20
    rows.append(("disk: SQLite (text, FTS5, history, float32 vectors)", f"{db_mb:,.0f} MiB",
                 f"FAISS file (8-bit codes): {index_path.stat().st_size / 2**20:,.0f} MiB; float32 vectors alone: "
                 f"{matrix.nbytes / 2**20:,.0f} MiB"))

    load = os.getloadavg()
    shutil.rmtree(folder, ignore_errors=True)
    print(f"Memory store, {args.memories:,} memories, {os.cpu_count()} CPU cores, load average at the start "
          f"{load_at_start[0]:.1f}, at the end {load[0]:.1f}\n")
    print("| figure | value | notes / peer in the same run |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
