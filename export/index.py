"""The retrieval index stored in the SavedModel: ScaNN tuned to a recall target, or brute force.

Why it exists: ScaNN's speed comes from parameters (partitioning, leaves searched, reordering) that depend on the
catalogue and on the vectors' width; picked by hand they either waste time or lose recall. ``tune_scann`` finds,
for each partitioning it tries, the smallest reordering pool whose recall@K against exact brute force, on a sample
of real query vectors, reaches the target, and ships the one whose one-query search it measured fastest; the
measured figures go into the model card. Brute force (a matmul and top-k) uses core ops
only, so stock TF Serving loads it; it is also the fallback below ScaNN's minimum catalogue size (asymmetric
hashing needs at least 16 items).

Both indexes answer ``index(queries, k) -> (scores [B, k], positions [B, k])``, positions being rows of the
vectors they index (the served catalogue's rows). Both keep their state in variables of open shape, so that
``twotower index add`` can grow a *loaded* SavedModel and save it again: brute force reads the catalogue's vector
variable itself, and ScaNN keeps the searcher's serialised tensors (scann's own ``ScannState`` pins their shapes
when saved, hence this module holds them itself) and rebuilds its searcher from them on each call, as scann's
TensorFlow ops do.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np
import tensorflow as tf

from twotower.native_logs import native_stderr_to_debug

log = logging.getLogger("twotower.export")
INDEX_TYPES = ("scann", "brute-force")
SCANN_MIN_ITEMS = 16
TUNE_MARGIN = 0.02   # ScaNN is tuned a little above the target, so that queries it was not tuned on still see it
# ScaNN's own advice (scann/docs/algorithms.md): below ~100k points, score every item with asymmetric hashing and
# rescore, without partitioning. Below this size the tuner tries that too, beside the trees, and measures which is
# faster (the demo's 832-number vectors: no tree 121 us a query at recall 0.98, the best tree 250 us).
NO_TREE_MAX_ITEMS = 100_000
LATENCY_QUERIES = 100   # one-query searches timed per configuration that reaches the target
# scann_to_tensors' outputs in order; tensors_to_scann takes the last one (the dataset) first.
SCANN_TENSORS = ("scann_config", "serialized_partitioner", "datapoint_to_token", "ah_codebook", "hashed_dataset",
                 "int8_dataset", "int8_multipliers", "dp_norms", "dataset")


@dataclasses.dataclass
class IndexReport:
    """What the model card records about the index."""

    type: str
    k: int
    items: int
    recall_at_k: float | None = None     # vs brute force on sample queries (1.0 for brute force)
    queries: int = 0
    params: dict = dataclasses.field(default_factory=dict)
    tried: list = dataclasses.field(default_factory=list)
    build_seconds: float = 0.0


def exact_top_k(queries: np.ndarray, items: np.ndarray, k: int, chunk_elements: int = 1 << 26) -> np.ndarray:
    """Rows of the exact top-``k`` items per query, best first; queries go in chunks of at most ``chunk_elements``
    scores (a 1M-item catalogue would otherwise need a queries × items score matrix and its argpartition)."""
    step = max(1, chunk_elements // max(items.shape[0], 1))
    if len(queries) > step:
        return np.concatenate([exact_top_k(queries[i:i + step], items, k, chunk_elements)
                               for i in range(0, len(queries), step)])
    scores = queries @ items.T
    k = min(k, items.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def recall_against_exact(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-K rows that the approximate top-K found."""
    hits = [len(set(a.tolist()) & set(e.tolist())) / max(len(e), 1) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) if hits else 1.0


def growable(value: np.ndarray, name: str) -> tf.Variable:
    """A non-trainable variable whose leading dimension stays open in the SavedModel (so it can grow later)."""
    value = np.asarray(value)
    shape = tf.TensorShape([None, *value.shape[1:]])
    return tf.Variable(value, shape=shape, trainable=False, name=name)


class BruteForceIndex(tf.Module):
    """Exact top-k over a [N, D] vector variable: one matmul and ``tf.math.top_k`` (core ops only)."""

    def __init__(self, vectors: tf.Variable, name: str = "brute_force_index"):
        super().__init__(name=name)
        self.vectors = vectors

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0] if self.vectors.shape[0] is not None else tf.shape(self.vectors)[0])

    def __call__(self, queries: tf.Tensor, k) -> tuple[tf.Tensor, tf.Tensor]:
        scores = tf.linalg.matmul(queries, self.vectors, transpose_b=True)
        return tf.math.top_k(scores, k=k)


def scann_tensors(items: np.ndarray, k: int, num_leaves: int, leaves_to_search: int, reorder: int | None,
                  training_iterations: int = 12, dims_per_block: int = 2) -> dict[str, tf.Tensor]:
    """Builds a ScaNN searcher over ``items`` (dot product; a tree unless ``num_leaves`` is 0, asymmetric hashing,
    ``dims_per_block`` numbers to a hashing block, optional reordering: the configuration TFRS's ScaNN layer uses)
    and returns its serialised tensors."""
    from scann.scann_ops.py import scann_ops

    builder = scann_ops.builder(tf.constant(items), k, "dot_product")
    if num_leaves:     # 0: no partitioning, every item scored
        builder = builder.tree(num_leaves=num_leaves, num_leaves_to_search=leaves_to_search,
                               training_iterations=training_iterations)
    builder = builder.score_ah(dims_per_block)
    if reorder is not None:
        builder = builder.reorder(reorder)
    with native_stderr_to_debug():     # ScaNN's partitioner logs a dozen C++ lines per build
        searcher = builder.build()
    return dict(zip(SCANN_TENSORS, scann_ops.scann_to_tensors(searcher.searcher_handle)))


class ScannIndex(tf.Module):
    """A ScaNN searcher kept as its serialised tensors (open-shaped variables), searched in the graph."""

    def __init__(self, tensors: dict[str, tf.Tensor], reorder: int | None, size: int, name: str = "scann_index"):
        super().__init__(name=name)
        for key in SCANN_TENSORS:
            setattr(self, key, tf.Variable(tensors[key], shape=tf.TensorShape(None), trainable=False, name=key))
        # The reordering pool must be at least as large as the neighbours asked (a diversity pool can be larger).
        self.reorder = tf.Variable(-1 if reorder is None else int(reorder), trainable=False, name="reorder")
        self.size = int(size)

    @tf.function(input_signature=[])
    def handle(self) -> tf.Tensor:
        """The searcher rebuilt from the tensors. In a tf.function, as scann's own ScannState does it: called
        eagerly, the searcher came out corrupted (recall 0.5 instead of 1.0 in our trials)."""
        from scann.scann_ops.py import scann_ops

        return scann_ops.tensors_to_scann(self.dataset, *(getattr(self, key) for key in SCANN_TENSORS[:-1]))

    def __call__(self, queries: tf.Tensor, k) -> tuple[tf.Tensor, tf.Tensor]:
        from scann.scann_ops.py import scann_ops

        k = tf.cast(k, tf.int32)
        pre = tf.where(self.reorder < 0, -1, tf.maximum(self.reorder, k))
        result = scann_ops.ScannSearcher(self.handle()).search_batched_parallel(queries, final_num_neighbors=k,
                                                                                pre_reorder_num_neighbors=pre)
        return result.distances, result.indices


def replace_scann_state(index, tensors: dict[str, tf.Tensor], reorder: int | None) -> None:
    """Swaps a (possibly loaded) ScannIndex's searcher for another one built over a grown catalogue."""
    for key in SCANN_TENSORS:
        getattr(index, key).assign(tensors[key])
    index.reorder.assign(-1 if reorder is None else int(reorder))


def brute_force(items: np.ndarray) -> BruteForceIndex:
    return BruteForceIndex(growable(items.astype(np.float32), "vectors"))


def scann(items: np.ndarray, k: int, num_leaves: int, leaves_to_search: int, reorder: int | None,
          dims_per_block: int = 2) -> ScannIndex:
    return ScannIndex(scann_tensors(items, k, num_leaves, leaves_to_search, reorder, dims_per_block=dims_per_block),
                      reorder, len(items))


def describe(config: dict) -> str:
    """A tuned ScaNN configuration in words, e.g. ``no tree, 4 numbers a block, reordering 120``."""
    tree = f"{config['leaves_to_search']} of {config['num_leaves']} leaves" if config["num_leaves"] else "no tree"
    return f"{tree}, {config.get('dims_per_block', 2)} numbers a block, reordering {config['reorder']}"


def reorder_pools(n_items: int, k: int) -> list[int]:
    """Reordering pools (candidates rescored exactly) from small to large: 1.5, 2, 4, 8 and 16 times ``k`` (the
    4x at least 100), capped at the catalogue. The 8x step: on Amazon Scientific's 704-number vectors (K 30) 4x
    reached recall 0.935 and 16x 0.989 in ~335 us; 8x reaches the tuning target 0.97 in ~245 us."""
    return sorted({min(n_items, max(k, pool)) for pool in (k + k // 2, 2 * k, max(4 * k, 100), 8 * k, 16 * k)})


def scann_candidates(n_items: int, k: int) -> list[dict]:
    """Configurations in families, one partitioning and hashing each (``num_leaves`` 0: none), each family's
    reordering pools from small to large: below ``NO_TREE_MAX_ITEMS`` no partitioning first, hashing 4 and then
    2 numbers to a block; then a tree of about sqrt(n) leaves, 2 numbers to a block (ScaNN's advice), searching
    from few of its leaves to all. Scoring every item costs in proportion to the blocks: for wide vectors (the
    channels make the demo's 832 numbers) 4 to a block halves it and a larger pool recovers the recall (no tree,
    recall@30 0.99 in 70 us a query against 107 us with 2 to a block)."""
    leaves = max(2, min(n_items // 8, int(round(math.sqrt(n_items)))))
    families = [(0, 0, 4), (0, 0, 2)] if n_items < NO_TREE_MAX_ITEMS else []
    for fraction in (0.02, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0):
        family = (leaves, max(1, min(leaves, int(math.ceil(leaves * fraction)))), 2)
        if family not in families:
            families.append(family)
    return [{"num_leaves": tree, "leaves_to_search": search, "dims_per_block": block, "reorder": pool}
            for tree, search, block in families for pool in reorder_pools(n_items, k)]


def search_positions(index, queries: np.ndarray, k: int) -> np.ndarray:
    """Positions of the index's top-``k`` for each query, as numpy."""
    return index(tf.constant(queries), k=min(k, index.size))[1].numpy().astype(np.int64)


def search_latency(index, queries: np.ndarray, k: int, repeats: int = 5) -> float:
    """Seconds one query takes through ``index``: each of ``queries`` searched alone, as a served request asks,
    in one graph loop (so Python's call overhead is not counted); the best of ``repeats`` passes, the least noisy
    figure on a shared machine."""
    batch = tf.constant(queries)

    @tf.function
    def one_at_a_time(batch):
        return tf.map_fn(lambda query: tf.reduce_sum(tf.cast(index(query[None], k)[1], tf.int32)), batch,
                         fn_output_signature=tf.int32, parallel_iterations=1)
    one_at_a_time(batch).numpy()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        one_at_a_time(batch).numpy()
        best = min(best, time.perf_counter() - started)
    return best / max(len(queries), 1)


def tune_scann(items: np.ndarray, queries: np.ndarray, k: int, target: float = 0.95,
               candidates: list[dict] | None = None):
    """The configuration whose one-query search is fastest among those whose recall@k vs brute force on
    ``queries`` reaches ``target``.

    Each family of ``candidates`` (default ``scann_candidates(len(items), k)``; a caller may pass fewer) is built
    once, the reordering pool being a search-time setting, and stops at its first pool that reaches the target.
    The tree families go from the fewest leaves searched and stop at the first that reaches it (more leaves only
    cost more); the families without a tree compete with that one on measured latency. Returns (configuration, its
    recall, every try, the index that was measured). ScaNN's clustering is random, so a rebuild of the same
    configuration can land a few points lower: ship the measured index, not a rebuild.
    """
    exact = exact_top_k(queries, items, k)
    families: list[tuple[dict, list[int]]] = []     # (configuration less the pool, its pools), in order
    for config in scann_candidates(len(items), k) if candidates is None else candidates:
        family = {key: value for key, value in config.items() if key != "reorder"}
        if not families or families[-1][0] != family:
            families.append((family, []))
        families[-1][1].append(config["reorder"])
    tried, best, reached = [], None, []
    for family, pools in families:
        if family["num_leaves"] and any(config["num_leaves"] for config, *_ in reached):
            break
        index = scann(items, k, reorder=max(pools), **family)
        # the largest pool first: when it misses the target, so do the smaller ones (they rescore a subset of it)
        widest = _pool_recall(index, family, max(pools), queries, exact, k, tried)
        if best is None or widest[1] > best[1]:
            best = (*widest[:2], index)
        if widest[1] < target:
            continue
        smaller = (_pool_recall(index, family, pool, queries, exact, k, tried)
                   for pool in sorted(pools) if pool < max(pools))
        config, recall, entry = next((hit for hit in smaller if hit[1] >= target), widest)
        index.reorder.assign(config["reorder"])
        seconds = search_latency(index, queries[:LATENCY_QUERIES], k)
        entry["latency_us"] = round(seconds * 1e6, 1)
        log.info("ScaNN %s: %.0f us a query", config, seconds * 1e6)
        reached.append((config, recall, index, seconds))
    if not reached:
        best[2].reorder.assign(best[0]["reorder"])   # the pool it was measured with
        return best[0], best[1], tried, best[2]
    config, recall, index, _ = min(reached, key=lambda entry: entry[3])
    index.reorder.assign(config["reorder"])
    return config, recall, tried, index


def _pool_recall(index, family: dict, pool: int, queries: np.ndarray, exact: np.ndarray, k: int,
                 tried: list) -> tuple[dict, float, dict]:
    """(configuration, recall@k, its record) of ``index`` (built as ``family``) searched with a reordering pool of
    ``pool``; the record (the configuration and its recall) is appended to ``tried``."""
    index.reorder.assign(pool)
    config = {**family, "reorder": pool}
    recall = recall_against_exact(search_positions(index, queries, k), exact)
    tried.append({**config, "recall": recall})
    log.info("ScaNN %s: recall@%d %.4f", config, k, recall)
    return config, recall, tried[-1]


def check_target_recall(target: float) -> float:
    """``target`` when it is a recall ScaNN can be asked for, in (0, 1]; ExportError naming --target-recall if not."""
    if not 0.0 < target <= 1.0:
        from export.trained import ExportError  # here: the index itself needs none of the run's modules

        raise ExportError(f"--target-recall must be in (0, 1], got {target}")
    return target


def tuning_target(target: float, margin: float) -> float:
    """The recall ScaNN is tuned to on the sample queries for a ``target`` on real ones: ``target + margin``
    below 1, and 1.0 itself (no margin possible, nothing short of exact accepted) for a target of 1.0."""
    return 1.0 if check_target_recall(target) >= 1.0 else min(target + margin, 0.999)


def tuned_scann(items: np.ndarray, queries: np.ndarray, k: int, target: float, served_k: int | None = None,
                margin: float = TUNE_MARGIN) -> tuple[ScannIndex, IndexReport]:
    """ScaNN over ``items`` for ``k`` neighbours, tuned to ``target + margin`` on ``queries`` (a warning when no
    configuration reaches ``target``), and its report. The report's recall is measured at ``served_k`` (the K
    clients get; default ``k``): the index is tuned for more neighbours (K + history) than a client receives."""
    started = time.time()
    config, recall, tried, index = tune_scann(items, queries, k, tuning_target(target, margin))
    if recall < target:
        log.warning("no ScaNN configuration reached recall@%d %.2f (best %.4f)", k, target, recall)
    if served_k is not None and served_k != k:
        recall = recall_at(index, items, queries, served_k)
    return index, IndexReport("scann", k, len(items), recall, len(queries), config, tried, time.time() - started)


def build_index(kind: str, items: np.ndarray, queries: np.ndarray, k: int, target: float = 0.95,
                served_k: int | None = None, vectors: tf.Variable | None = None):
    """(index, report). ``k`` is how many neighbours the index is tuned for and ``served_k`` how many a client
    gets (the report's recall is measured there); ``vectors`` is the variable a brute-force index searches (the
    served catalogue's), made from ``items`` when not given.

    ScaNN is tuned a margin above ``target`` on the sample queries, so that queries it was not tuned on (every
    real request) still see about ``target``; the report keeps the recall measured on the sample.
    """
    if kind not in INDEX_TYPES:
        raise ValueError(f"--index must be one of {', '.join(INDEX_TYPES)}, got {kind!r}")
    started = time.time()
    k = min(k, len(items))
    if kind == "scann" and len(items) < SCANN_MIN_ITEMS:
        log.warning("catalogue has %d items (< %d, ScaNN's minimum): using brute force", len(items),
                    SCANN_MIN_ITEMS)
        kind = "brute-force"
    if kind == "brute-force":
        index = BruteForceIndex(vectors) if vectors is not None else brute_force(items)
        report = IndexReport("brute-force", k, len(items), 1.0, len(queries))
    else:
        index, report = tuned_scann(items, queries, k, target, served_k)
    report.build_seconds = time.time() - started
    return index, report


def recall_at(index, items: np.ndarray, queries: np.ndarray, k: int) -> float:
    """The index's recall@k against exact search on ``queries`` (what a client asking for k items sees)."""
    k = min(k, len(items))
    return recall_against_exact(search_positions(index, queries, k), exact_top_k(queries, items, k))
