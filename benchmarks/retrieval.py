"""Retrieval cost per query against the memory-bandwidth floor and a FAISS flat index."""

from __future__ import annotations

import numpy as np

from benchmarks.timing import best_time, copy_bandwidth
from shared.coding.quantizer import normalize
from shared.memory.adaptive import load_adaptive
from shared.memory.store import hopfield_retrieve, vq_retrieve

SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
ADAPTIVE_MAX = 10_000  # the footprint sorts d values per pattern: O(M·d·log d), kept small


def run(sizes=SIZES, dim: int = 64, batches=(1, 32), seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for m in sizes:
        patterns = normalize(rng.standard_normal((m, dim)))
        floor = m * dim * 4 / copy_bandwidth(m * dim * 4)
        faiss_index = _faiss_index(patterns)
        for batch in batches:
            queries = normalize(rng.standard_normal((batch, dim)))
            methods = {
                "vq": lambda q=queries, p=patterns: vq_retrieve(q, p),
                "hopfield": lambda q=queries, p=patterns: hopfield_retrieve(q, p, 20.0),
            }
            if m <= ADAPTIVE_MAX:
                sim = load_adaptive(dim).scores
                methods["adaptive"] = lambda q=queries, p=patterns, s=sim: hopfield_retrieve(
                    q, p, 20.0, similarity=s
                )
            if faiss_index is not None:
                methods["faiss_flat_ip"] = lambda q=queries, i=faiss_index: i.search(q, 1)
            for name, fn in methods.items():
                per_call = best_time(fn, repeats=3)
                rows.append(
                    {
                        "M": m,
                        "batch": batch,
                        "method": name,
                        "us_per_query": per_call / batch * 1e6,
                        "us_per_call": per_call * 1e6,
                        "floor_us": floor * 1e6,
                        "x_floor": per_call / floor,
                    }
                )
    return rows


def _faiss_index(patterns: np.ndarray):
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(patterns.shape[1])
    index.add(patterns)
    return index
