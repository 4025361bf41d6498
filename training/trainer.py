"""Training and evaluating a run: epochs under Keras' ``fit``, checkpoints, resume, early stopping, metrics.

Why it exists: a training job must survive being killed (``train`` on an existing RUN resumes after the last
finished epoch, with the same data order and dropout masks it would have had), stop when validation Recall@K
stops improving, and leave RUN/metrics.json from the best epoch's weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time

import numpy as np
import tensorflow as tf
import tf_keras

from ingest.schema import DataError
from towers.text_encoder import TextEncoder
from training import artifacts as artifacts_io
from training import evaluate as ev
from training import search_queries
from training.calibrate import calibrate, fit_item_item_weight, fit_repeat_offset, fit_search_weight
from training.config import ConfigError, check, dump_config
from training.distributed import Cluster, replica_rows
from training.examples import Examples, evaluation_cases, training_examples, training_sequences
from training.model import TwoTowerModel, build_model
from training.prepare import Prepared, prepare
from training.run import BEST, RunDir, RunDirError, epoch_checkpoint
from training.shard_reader import ShardStream
from training.warm_start import adopt_encoder, source_run, warm_start
from twotower.layout import write_atomic
from twotower.native_logs import native_stderr_to_debug

log = logging.getLogger("twotower.train")
KEEP_EPOCH_CHECKPOINTS = 2


class RunConflict(ConfigError):
    """``train --config`` names a config different from the one an existing RUN was started with."""


def _tower_encoder(config: dict, prepared: Prepared) -> TextEncoder | None:
    model = config["model"]
    if model["encoder_mode"] == "frozen":
        return None
    return TextEncoder(prepared.source, max_length=model["max_seq_len"], mode=model["encoder_mode"],
                       top_n=model["finetune_top_n"])


def _cases(config: dict, prepared: Prepared, split: str) -> Examples:
    if prepared.stream is not None:
        return prepared.stream.cases(split)
    novel_only = config["data"]["split"]["type"] == "temporal"
    cases, _ = evaluation_cases(prepared.dataset.interactions, prepared.labels, split,
                                config["model"]["history_len"], novel_only)
    cases.chinese, cases.cross_lingual = _script_groups(prepared, cases)
    return cases


def _script_groups(prepared: Prepared, cases: Examples) -> tuple[np.ndarray, np.ndarray]:
    """Cases whose user's own text or whose target item's text is mostly Chinese (the ``chinese`` block), and
    cases of a user with non-Chinese text whose target item is Chinese (``cross_lingual``)."""
    catalog, users = prepared.artifacts.catalog, prepared.artifacts.users
    item_chinese = dict(zip(catalog["item_id"], map(ev.mostly_chinese, catalog["text"].astype(str))))
    user_text = dict(zip(users["user_id"], users["text"].astype(str))) if len(users) else {}
    target = np.array([item_chinese.get(t, False) for t in cases.target], bool)
    user = np.array([ev.mostly_chinese(user_text.get(u, "")) for u in cases.user_id], bool)
    other_script = np.array([bool(user_text.get(u, "").strip()) for u in cases.user_id], bool) & ~user
    return target | user, target & other_script


def _dataset(examples: Examples | ShardStream, batch_size: int, seed: int, epoch: int,
             cluster: Cluster | None = None) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """The epoch's seeded order in batches. In a multi-worker job ``batch_size`` is each worker's batch and every
    replica reads its slice of the global batch a single worker with the whole batch would read (in memory), or
    its own shard files (streamed from ``prepare`` shards)."""
    if isinstance(examples, ShardStream):
        if cluster is None:
            return examples.dataset(batch_size, seed, epoch)
        return cluster.strategy.distribute_datasets_from_function(lambda context: examples.dataset(
            batch_size, seed, epoch, context.num_input_pipelines, context.input_pipeline_id))
    tensors = {"user_id": examples.user_id.astype(str), "history": examples.history.astype(str),
               "target": examples.target.astype(str), "weight": examples.weight}
    order = np.random.default_rng([seed, epoch]).permutation(len(examples))
    if cluster is None:
        tensors = {k: v[order] for k, v in tensors.items()}
        return tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def replica_dataset(context: tf.distribute.InputContext) -> tf.data.Dataset:
        rows = replica_rows(order, batch_size * context.num_replicas_in_sync, context.num_replicas_in_sync,
                            context.input_pipeline_id)
        return tf.data.Dataset.from_tensor_slices({k: v[rows] for k, v in tensors.items()}).batch(batch_size)

    return cluster.strategy.distribute_datasets_from_function(replica_dataset)


class EpochLoss(tf_keras.callbacks.Callback):
    """Makes an epoch's ``loss`` the mean over its steps, the number Keras' progress bar ends the epoch on.

    Keras hands the callbacks the last step's value at the end of an epoch, while its progress bar averages every
    step; without this the bar and the epoch's log line disagreed.
    """

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.losses.append(float(logs["loss"]))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and self.losses:
            logs["loss"] = float(np.mean(self.losses))


def _steps_per_epoch(prepared: Prepared, count: int, batch_size: int, workers: int) -> int:
    """Every batch for one process; the full global batches every worker has for several."""
    if prepared.stream:
        steps = prepared.stream.steps_per_epoch(batch_size, workers)
    else:
        steps = int(np.ceil(count / batch_size)) if workers == 1 else count // (batch_size * workers)
    if steps == 0:
        raise ConfigError(f"{count} training examples do not fill one global batch of {workers} x {batch_size} "
                          f"(training.batch_size)")
    return steps


def _optimizer(config: dict, total_steps: int) -> tf_keras.optimizers.Optimizer:
    train = config["training"]
    warmup = min(int(train["warmup_steps"]), max(total_steps - 1, 0))
    schedule = tf_keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else train["learning_rate"], decay_steps=max(total_steps - warmup, 1),
        alpha=0.05, warmup_target=train["learning_rate"] if warmup else None, warmup_steps=warmup)
    return tf_keras.optimizers.AdamW(learning_rate=schedule, weight_decay=train["weight_decay"])


def _create_variables(model: TwoTowerModel, optimizer: tf_keras.optimizers.Optimizer) -> None:
    """Creates every variable of the model and the optimizer before the first step.

    A ``tf.function`` that creates variables on its first call is traced twice (once allowed to create them, once
    guaranteed not to), and Keras' train function would create the towers' weights and the optimizer's slots there:
    the second trace of a BERT tower's training step cost as much as the first (about half of a short run's time).
    One eager call of each tower on a one-row request builds the weights (no random draw, no counter moves); the
    optimizer's slots follow from them.
    """
    model.create_weights()
    optimizer.build(model.trainable_variables)


def _checkpoint(model: TwoTowerModel, optimizer=None) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(model=model, **({"optimizer": optimizer} if optimizer is not None else {}))


def evaluate_model(model: TwoTowerModel, prepared: Prepared, cases: Examples, config: dict,
                   progress: bool = False, history_kept: bool = False) -> dict:
    """The metrics block of ``cases``; ``history_kept`` adds the protocol with history items left among the
    candidates (one scoring pass for both)."""
    catalog_ids = prepared.artifacts.catalog["item_id"].tolist()
    batch = config["evaluation"]["batch_size"]
    return _block(ev.model_scorer(model, catalog_ids, batch), prepared, cases, config, progress, history_kept,
                  model.user_tower.repeat.value())


def evaluate_popularity(prepared: Prepared, cases: Examples, config: dict, history_kept: bool = False) -> dict:
    scorer = ev.popularity_scorer(prepared.artifacts.item_counts)
    return _block(scorer, prepared, cases, config, False, history_kept)


def _block(scorer: ev.Scorer, prepared: Prepared, cases: Examples, config: dict, progress: bool,
           history_kept: bool, repeat_offset: float = 0.0) -> dict:
    index = {item: row for row, item in enumerate(prepared.artifacts.catalog["item_id"].tolist())}
    excluded, kept = ev.both_ranks(scorer, cases, index, config["evaluation"]["batch_size"], progress,
                                   keep=history_kept, repeat_offset=repeat_offset)
    return ev.report(excluded, cases, config["evaluation"]["ks"], kept)


def start_or_resume(config: dict | None, run: RunDir) -> tuple[dict, bool]:
    """The config to train with (checked, in the schema's canonical form), and whether this is a resume. A RUN
    keeps the config it started with."""
    config = check(config) if config is not None else None
    if run.exists():
        stored = run.read_config()
        if config is not None and config != stored:
            changed = sorted(f"{s}.{k}" for s in stored for k in stored[s] if config[s][k] != stored[s][k])
            raise RunConflict(f"{run.path} was started with a different config (differs in: "
                              f"{', '.join(changed)}); to resume, run `twotower train --run-dir "
                              f"{run.path}` without --config/--set, or train into a new --run-dir")
        return stored, True
    if config is None:
        raise RunConflict(f"{run.path} holds no run to resume; give --config")
    return config, False


def _prepare_fresh(config: dict, run: RunDir, progress: bool) -> tuple[Prepared, RunDir | None]:
    """A new run's first step (and the run it warm-starts from, if any): data, artifacts and text vectors."""
    source = source_run(config)
    if source is not None:
        adopt_encoder(config, run, source)
    return prepare(config, run, progress=progress), source


@contextlib.contextmanager
def _removed_on_failure(run: RunDir, created: bool, keep: tuple[str, ...] | None = None):
    """Whatever fails inside leaves nothing behind: a directory made for this run (``created``) is removed. In
    one that existed before, what appeared in it meanwhile is removed and nothing else, or, with ``keep``,
    everything but ``keep`` (a job's run directory, made for the job)."""
    before = set(os.listdir(run.path)) if run.path.is_dir() and keep is None else set()
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(run.path, ignore_errors=True)
        elif run.path.is_dir():
            for name in sorted(set(os.listdir(run.path)) - before - set(keep or ())):
                path = run.path / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise


def prepare_run(config: dict, run: RunDir, progress: bool = True) -> None:
    """A new run's data, artifacts and config.yaml, written once: a multi-worker job's chief calls it before its
    workers train on the shared run directory. The model is built once too (its settings must hold for this
    data) before config.yaml is written. A failure removes what it wrote, as a first ``train`` does, but keeps
    RUN/logs/ (the job's worker logs, which say why)."""
    config = check(config)
    with _removed_on_failure(run, created=False, keep=("logs",)):
        prepared, _ = _prepare_fresh(config, run, progress)
        _build(config, prepared)
        write_atomic(run.config, dump_config(config))


def _build(config: dict, prepared: Prepared) -> TwoTowerModel:
    """The run's model, its initial weights drawn from ``training.seed`` alone: whatever was built before (a
    tiny encoder made on a fresh run but only loaded on a resume, the fine-tune encoder) draws from the global
    random state too, and must not decide them."""
    encoder = _tower_encoder(config, prepared)
    tf_keras.utils.set_random_seed(int(config["training"]["seed"]))
    return build_model(config, prepared.artifacts, encoder)


def train(config: dict | None, run: RunDir, progress: bool = True, created: bool | None = None,
          cluster: Cluster | None = None) -> dict:
    """Trains a new run (``config``) or resumes the one in ``run``. ``created``: the caller made run.path for
    this call (default: it did not exist before). ``cluster``: this worker's place in a multi-worker job
    (jobs/); its run directory must already be prepared (``prepare_run``), and only the chief writes to it."""
    created = not run.path.exists() if created is None else created
    config, resumed = start_or_resume(config, run)
    train_cfg = config["training"]
    seed = int(train_cfg["seed"])
    tf_keras.utils.set_random_seed(seed)
    if train_cfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    state = run.read_json(run.state, {"epochs_done": 0, "history": [], "best_epoch": 0,
                                      "best_value": None, "bad_epochs": 0, "finished": False})
    if resumed and (state["epochs_done"] or cluster is None):
        log.info("resuming %s after epoch %d", run.path, state["epochs_done"])
    workers = cluster.workers if cluster is not None else 1
    chief = cluster is None or cluster.is_chief
    with contextlib.nullcontext() if resumed else _removed_on_failure(run, created):
        if resumed:
            prepared = prepare(config, run, progress=progress)
            source = source_run(config) if not state["epochs_done"] else None
        else:
            prepared, source = _prepare_fresh(config, run, progress)
        sequences = config["model"]["history_encoder"] == "causal"   # windows of next-item steps, every step taught
        build = training_sequences if sequences else training_examples
        examples = prepared.stream or build(prepared.dataset.interactions, prepared.labels,
                                            config["model"]["history_len"])
        count = examples.examples if prepared.stream else examples.steps()
        if count == 0:
            raise DataError("no training examples: every interaction fell outside the training split")
        valid = _cases(config, prepared, "valid")
        log.info("%d training examples%s, %d validation users", count,
                 f" in {len(examples)} sequence windows" if sequences else "", len(valid))
        with cluster.strategy.scope() if cluster is not None else contextlib.nullcontext():
            model = _build(config, prepared)
            rows = count if prepared.stream else len(examples)
            steps_per_epoch = _steps_per_epoch(prepared, rows, train_cfg["batch_size"], workers)
            optimizer = _optimizer(config, steps_per_epoch * train_cfg["epochs"])
            model.compile(optimizer=optimizer, steps_per_execution=train_cfg["steps_per_execution"])
            _create_variables(model, optimizer)
        if not resumed:  # written last: a run directory with config.yaml is one that can train
            write_atomic(run.config, dump_config(config))
    checkpoint = _checkpoint(model, optimizer)
    writable = cluster.writable if cluster is not None else (lambda path: path)
    if state["epochs_done"]:
        checkpoint.read(str(run.checkpoints / epoch_checkpoint(state["epochs_done"]))).expect_partial()
    elif source is not None:
        warm_start(model, prepared.artifacts, source)
    metric = train_cfg["early_stopping_metric"]
    writer = tf.summary.create_file_writer(str(writable(run.tensorboard) / "validation"))
    tensorboard = tf_keras.callbacks.TensorBoard(log_dir=str(writable(run.tensorboard)), update_freq="epoch")

    epoch = state["epochs_done"]
    while not state["finished"] and epoch < train_cfg["epochs"]:
        started = time.time()
        with native_stderr_to_debug():   # the graph optimiser's C++ warnings as a function first runs
            fit = model.fit(_dataset(examples, train_cfg["batch_size"], seed, epoch, cluster), epochs=epoch + 1,
                            initial_epoch=epoch, steps_per_epoch=steps_per_epoch if cluster else None,
                            verbose=1 if progress else 2, callbacks=[EpochLoss(), tensorboard])
            seconds = time.time() - started
            scores = evaluate_model(model, prepared, valid, config) if len(valid) else {metric: 0.0}
        epoch += 1
        value = scores[metric]
        with writer.as_default():
            for key, number in scores.items():
                if isinstance(number, float):
                    tf.summary.scalar(f"valid/{key}", number, step=epoch)
        improved = state["best_value"] is None or value > state["best_value"]
        checkpoint.write(str(writable(run.checkpoints) / epoch_checkpoint(epoch)))
        if improved:
            checkpoint.write(str(writable(run.checkpoints) / BEST))
            state.update(best_epoch=epoch, best_value=value, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        state["history"].append({"epoch": epoch, "loss": float(fit.history["loss"][-1]),
                                 "examples_per_second": count / seconds, "valid": scores})
        state["epochs_done"] = epoch
        stop = state["bad_epochs"] >= train_cfg["early_stopping_patience"]
        state["finished"] = stop or epoch >= train_cfg["epochs"]
        state["stopped_early"] = stop
        if chief:
            run.write_json(run.state, state)
            _prune(run, epoch)
        log.info("epoch %d/%d: loss %.4f, valid %s %.4f%s (%.1fs)", epoch, train_cfg["epochs"],
                 fit.history["loss"][-1], metric, value, " (best)" if improved else "", seconds)
        if stop:
            log.info("early stopping: no %s improvement for %d epoch(s)", metric, state["bad_epochs"])
    if not chief:
        cluster.close()
        return {}
    fit_semantic = fits_semantic_weights(config, model, state) and len(valid)
    fit_item_item = model.user_tower.item_item is not None and "item_item_weight" not in state
    fit_repeat = "repeat_offset" not in state and len(valid)
    if fit_semantic or fit_item_item or fit_repeat:
        checkpoint.read(str(run.best)).expect_partial()
        catalog_ids = prepared.artifacts.catalog["item_id"].tolist()
        with native_stderr_to_debug():
            if fit_semantic:
                state["semantic_weights"] = calibrate(model, valid, catalog_ids, metric,
                                                      config["evaluation"]["batch_size"])
                search = fit_search_weight(model, prepared, valid, config)
                if search is not None:
                    state["semantic_weights"]["search"] = search
            if fit_item_item:   # after the semantic weights: it is fitted against the rest of the score
                state["item_item_borrowed"] = model.borrow_item_item_blocks()
                log.info("item-to-item channel: %d catalogue item(s) without training interactions borrow the "
                         "blocks of their %d nearest items", state["item_item_borrowed"],
                         config["model"]["item_item_neighbours"])
                state["item_item_weight"] = fit_item_item_weight(model, valid, catalog_ids, metric,
                                                                 config["evaluation"]["batch_size"])
            if fit_repeat:   # last: it moves only the history's own items, against everything else in the score
                state["repeat_offset"] = fit_repeat_offset(model, valid, catalog_ids, metric,
                                                           config["evaluation"]["batch_size"])
        checkpoint.write(str(run.best))
        run.write_json(run.state, state)
    return finish(config, run, prepared, model, checkpoint, progress)


def fits_semantic_weights(config: dict, model: TwoTowerModel, state: dict) -> bool:
    """The run has a semantic channel whose weights are to be fitted on the validation split and are not yet."""
    return (model.user_tower.semantic is not None and config["training"]["fit_semantic_weights"]
            and "semantic_weights" not in state)


def _prune(run: RunDir, epoch: int) -> None:
    old = epoch - KEEP_EPOCH_CHECKPOINTS
    for path in run.checkpoints.glob(f"{epoch_checkpoint(old)}.*"):
        path.unlink()


def finish(config: dict, run: RunDir, prepared: Prepared, model: TwoTowerModel,
           checkpoint: tf.train.Checkpoint, progress: bool, splits: tuple[str, ...] = ("valid", "test")) -> dict:
    """Restores the best epoch, evaluates the splits with the popularity baseline beside (and, on a generated world,
    its search queries as text-only requests: training/search_queries.py), writes metrics.json."""
    checkpoint.read(str(run.best)).expect_partial()
    metrics = run.read_json(run.metrics, {})
    state = run.read_json(run.state, {})
    if model.user_tower.semantic is not None:
        weights = model.user_tower.semantic.describe()
        log.info("semantic channel, weights: %s", weights)
        metrics["semantic_channel"] = {"weights": weights, **({"fitted_on_valid": state["semantic_weights"]}
                                                              if "semantic_weights" in state else {})}
    if model.user_tower.item_item is not None:
        metrics["item_item"] = {**model.user_tower.item_item.describe(), "l2": config["model"]["item_item_l2"],
                                **({"fitted_on_valid": state["item_item_weight"]}
                                   if "item_item_weight" in state else {}),
                                **({"borrowed_blocks": state["item_item_borrowed"]}
                                   if "item_item_borrowed" in state else {})}
    metrics["repeat"] = {**model.user_tower.repeat.describe(),
                         **({"fitted_on_valid": state["repeat_offset"]} if "repeat_offset" in state else {})}
    for split in splits:
        cases = _cases(config, prepared, split)
        if split == "test":   # what export embeds to tune and measure its index (it does not re-read the data)
            artifacts_io.save_sample_queries(run.artifacts, cases.user_id, cases.history)
        if not len(cases):
            log.warning("split '%s' has no evaluation users", split)
            continue
        with native_stderr_to_debug():
            block = evaluate_model(model, prepared, cases, config, progress, history_kept=True)
        block["baselines"] = {"popularity": evaluate_popularity(prepared, cases, config, history_kept=True)}
        block["best_epoch"] = state.get("best_epoch")
        searches = search_queries.evaluate_split(model, prepared, cases, config)
        if searches is not None:
            block["search_queries"] = searches
        metrics[split] = block
        print(ev.format_table(split, block, config["evaluation"]["ks"]))
        if searches is not None:
            print(search_queries.format_table(split, searches))
    run.write_json(run.metrics, metrics)
    return metrics


def evaluated_model(run: RunDir, progress: bool = False) -> tuple[dict, Prepared, TwoTowerModel]:
    """The model ``evaluate`` scores: the run's towers rebuilt from its config and artifacts, with the best
    checkpoint loaded (the served-equals-evaluated checks compare an export against exactly this)."""
    config = run.read_config()
    if not run.trained():
        raise RunDirError(f"{run.path} has no trained checkpoint yet (checkpoints/best); train it first")
    prepared = prepare(config, run, progress=progress)
    model = _build(config, prepared)
    _checkpoint(model).read(str(run.best)).expect_partial()
    return config, prepared, model


def evaluation_split(config: dict, prepared: Prepared, split: str) -> Examples:
    """The cases ``evaluate`` ranks for ``split``."""
    return _cases(config, prepared, split)


def evaluate_run(run: RunDir, splits: tuple[str, ...], progress: bool = True) -> dict:
    """``twotower evaluate``: rebuilds the run's towers, loads its best checkpoint, ranks the full catalogue."""
    config, prepared, model = evaluated_model(run, progress)
    return finish(config, run, prepared, model, _checkpoint(model), progress, splits)
