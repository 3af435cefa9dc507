"""Beam preprocessing: RecFlow logs → TFRecords of per-request training lists.

    days ─► request shards (ceil(rows / rows_per_shard) per day, by a hash of request_id)
    each shard: its all_stage rows ───────────┬─► bad rows ─► dead_letter/ (row, reason)
                its request_id_dict entries ──┤
                its seq_effective_50_dict ────┴─► join + assemble (no shuffle)
                    (duplicates, missing or inconsistent sources, no ground truth ─► dead_letter/)
                    ─► the shard's records (raw ids) in OUT/.records/, ids of train records
    ids ─► vocabularies (train) ─┐
    record files ────────────────┴─► index ids ─► train/part-*.tfrecord.gz,
                                                  eval/part-*.tfrecord.gz (+160 negatives)
    ─► vocab/<feature>.txt, metadata.json (with the fingerprint), schema.json, stats.json

A request's rows and entries all fall in one shard, so a shard is joined on its own: the memory
a worker needs is bounded by one shard (and one record batch of its day's file), whatever the
number of days; records cross to the indexing step as files, not as in-memory elements. The
eval days are read once more to draw their negative pools.

Every input row is counted exactly once: ``input_rows = used_rows + dead_letter_rows``, where
input rows are the all_stage rows plus the items only request_id_dict lists
(``tfcascade.data.assemble``; Beam counters in namespace ``tfcascade.preprocess`` and
``stats.json``). Runs in process (Beam's FnApiRunner) unless ``--runner`` is given;
``--runner DaskRunner`` runs on ``tfcascade.beam.dask_runner.DaskRunner`` (Beam 2.77's own Dask
runner runs only one branch of this pipeline); every other Beam pipeline option (``--project``,
``--dask_workers``, …) passes through unchanged. A local output is written to
a temporary folder and renamed when complete, so a failed run leaves no partial output.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import shutil
import uuid
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from tfcascade import features as F
from tfcascade.data.assemble import assemble_requests, check_rows
from tfcascade.data.examples import index_record, schema_dict, to_example
from tfcascade.data.fingerprint import vocabulary_fingerprint
from tfcascade.data.organise import negative_pool_key
from tfcascade.data.recflow import NEGATIVE_POOL_SIZE, negative_pool, parse_pickle
from tfcascade.data.shards import all_stage_rows, read_all_stage, request_shards
from tfcascade.data.tfdata import EmptySplitError
from tfcascade.data.vocabulary import VOCAB_FEATURES, record_ids

NAMESPACE = "tfcascade.preprocess"
SOURCES = ("all_stage", "request_id_dict", "seq_effective_50_dict")
log = logging.getLogger(__name__)


def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


def find_days(input_dir: str) -> list[tuple[str, dict[str, str]]]:
    """(day, {source: path}) of every ``all_stage/<day>.feather`` (any Beam filesystem); each
    day's request_id_dict and seq_effective_50_dict files must exist."""
    pattern = FileSystems.join(input_dir, "all_stage", "*.feather")
    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no all_stage/<day>.feather files under input_dir={input_dir!r}")
    out = []
    for day in sorted(os.path.basename(m.path)[: -len(".feather")] for m in matches):
        paths = {"all_stage": FileSystems.join(input_dir, "all_stage", f"{day}.feather")}
        for sub in SOURCES[1:]:
            paths[sub] = FileSystems.join(input_dir, sub, f"{day}.pkl")
            if not FileSystems.exists(paths[sub]):
                raise FileNotFoundError(f"missing file {paths[sub]} (every all_stage day needs its {sub} file)")
        out.append((day, paths))
    return out


def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return fh.read()


@contextlib.contextmanager
def _all_stage(path: str):
    """A local path as it is (memory-mapped by the reader); any other file opened through Beam's
    filesystems (seekable: the reader fetches the footer and the record batches it needs)."""
    if "://" not in path:
        yield path
        return
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        yield fh


@dataclasses.dataclass(frozen=True)
class Shard:
    """One request shard of one day (``tfcascade.data.shards``): the unit of work."""

    day: str
    paths: dict
    index: int
    count: int
    rows: int  # the day's all_stage rows (in the file, all shards together)

    @property
    def name(self) -> str:
        return f"{self.day}-{self.index:05d}-of-{self.count:05d}"


def plan_shards(days: Sequence[tuple[str, dict]], rows_per_shard: int) -> list[Shard]:
    """Splits every day into ceil(rows / rows_per_shard) request shards (at least one)."""
    out = []
    for day, paths in days:
        with _all_stage(paths["all_stage"]) as data:
            rows = all_stage_rows(data, paths["all_stage"])
        count = max(1, math.ceil(rows / rows_per_shard))
        out += [Shard(day, paths, k, count, rows) for k in range(count)]
    return out


def _shard_table(shard: Shard, source: str) -> dict:
    """The entries of ``shard``'s requests in one day's request_id_dict or seq_effective_50_dict."""
    path = shard.paths[source]
    table = parse_pickle(_read_bytes(path), path)
    keys = list(table)
    try:
        ids = np.asarray(keys, np.int64)
    except OverflowError:  # a key outside int64: its requests' rows are dead-lettered in shard 0
        ids = np.asarray(keys, object)
    mine = request_shards(ids, shard.count) == shard.index
    _counter(f"{source}_entries_read").inc(int(mine.sum()))
    if shard.index == 0:
        _counter(f"{source}_entries_in_files").inc(len(keys))
    return {k: table[k] for k, m in zip(keys, mine) if m}


def _shard_rows(shard: Shard) -> tuple[list[dict], list[tuple[dict, str]]]:
    path = shard.paths["all_stage"]
    with _all_stage(path) as data:
        frame = read_all_stage(data, path, shard.index, shard.count)
    return check_rows(frame)


def _pool_rows(shard: Shard):
    """(day, row) of a shard's usable rows: candidates for its day's negative pool."""
    for row in _shard_rows(shard)[0]:
        yield shard.day, row


class JoinShard(beam.DoFn):
    """Joins one shard's three sources and organises its requests, with no shuffle.

    Outputs: the main output is the name of the file holding the shard's records (raw ids;
    ``records_dir/<shard>.pkl``, written whole and renamed into place, so a retried bundle
    rewrites the same file); ``ids``: ``(vocabulary, sorted distinct raw ids)`` of its
    train records, one element per vocabulary; ``dead``: dead-letter lines.
    """

    def __init__(self, stages: int, eval_days: set, num_negatives: int, records_dir: str):
        self.stages = stages
        self.eval_days = eval_days
        self.num_negatives = num_negatives
        self.records_dir = records_dir

    def process(self, shard: Shard, pools):
        path = shard.paths["all_stage"]
        rows, bad = _shard_rows(shard)
        _counter("input_rows_all_stage").inc(len(rows) + len(bad))
        if shard.index == 0:
            _counter("all_stage_rows_in_files").inc(shard.rows)
        for raw, problem in bad:
            yield beam.pvalue.TaggedOutput("dead", _dead(raw, problem, path))
        entries = _shard_table(shard, "request_id_dict")
        histories = _shard_table(shard, "seq_effective_50_dict")
        is_eval = shard.day in self.eval_days
        split = "eval" if is_eval else "train"
        records, ids = [], {}
        for _, result in assemble_requests(rows, entries, histories, self.stages,
                                           pools.get(shard.day, []) if is_eval else (),
                                           self.num_negatives if is_eval else 0):
            _counter("input_rows_request_id_dict").inc(result.dict_only)
            for row, reason in result.dead:
                yield beam.pvalue.TaggedOutput("dead", _dead(row, reason, f"day {shard.day}"))
            if result.record is not None:
                _counter("used_rows").inc(len(result.used))
                records.append((split, result.record))
                if not is_eval:
                    for feature, raw_id in record_ids(result.record):
                        ids.setdefault(feature, set()).add(raw_id)
        _counter(f"requests_assembled_{split}").inc(len(records))
        _counter("shards_joined").inc()
        log.info("joined shard %s (%s): %d rows, %d requests kept", shard.name, split, len(rows) + len(bad),
                 len(records))
        for feature in sorted(ids):
            yield beam.pvalue.TaggedOutput("ids", (feature, sorted(ids[feature])))
        target = FileSystems.join(self.records_dir, f"{shard.name}.pkl")
        partial = f"{target}.partial-{uuid.uuid4().hex[:8]}"
        with FileSystems.create(partial, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            fh.write(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
        if FileSystems.exists(target):
            FileSystems.delete([target])
        FileSystems.rename([partial], [target])
        yield target


def _read_records(path: str):
    yield from pickle.loads(_read_bytes(path))


def _json_safe(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


def _dead(raw: dict, reason: str, source: str) -> str:
    _counter("dead_letter_rows").inc()
    clean = {k: _json_safe(v) for k, v in raw.items()}
    return json.dumps({"reason": reason, "source": source, "row": clean}, default=str, sort_keys=True)


class WriteSidecars(beam.DoFn):
    """Writes vocab/<feature>.txt, metadata.json and schema.json once the vocabularies are known."""

    def __init__(self, output_dir: str, meta: dict):
        self.output_dir = output_dir
        self.meta = meta

    def process(self, vocabularies):
        for feature in VOCAB_FEATURES:
            ids = vocabularies.get(feature, [])
            with FileSystems.create(FileSystems.join(self.output_dir, "vocab", f"{feature}.txt")) as fh:
                fh.write("".join(f"{v}\n" for v in ids).encode())
        meta = dict(self.meta, vocab_sizes={f: len(vocabularies.get(f, [])) + 1 for f in VOCAB_FEATURES})
        meta["fingerprint"] = vocabulary_fingerprint({f: vocabularies.get(f, []) for f in VOCAB_FEATURES}, meta)
        for name, payload in (("metadata.json", meta),
                              ("schema.json", schema_dict({"train": meta["train_list_size"],
                                                           "eval": meta["eval_list_size"]}))):
            with FileSystems.create(FileSystems.join(self.output_dir, name)) as fh:
                fh.write((json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
        yield meta


def _index(split_record, vocabularies):
    split, record = split_record
    lookup = vocabularies["lookup"]
    _counter(f"requests_written_{split}").inc()
    return split, to_example(index_record(record, lookup)).SerializeToString(deterministic=True)


ROWS_PER_SHARD = 200_000
RECORDS_DIR = ".records"  # the shards' unindexed records, under the output folder while it runs


def build_pipeline(p: beam.Pipeline, input_dir: str, output_dir: str, stages: int = 2,
                   eval_days: int = 1, num_negatives: int = F.EVAL_EXTRA_NEGATIVES,
                   num_shards: int = 0, rows_per_shard: int = ROWS_PER_SHARD) -> list[Shard]:
    """Adds the preprocessing transforms to ``p``.

    Returns:
      The planned shards (``_run`` checks after the run that every one of them was joined).
    """
    days = find_days(input_dir)
    if eval_days < 0 or eval_days >= len(days):
        raise ValueError(f"eval_days must be in [0, {len(days) - 1}] for {len(days)} days, got eval_days={eval_days}")
    eval_set = {d for d, _ in days[len(days) - eval_days:]} if eval_days else set()
    shards = plan_shards(days, rows_per_shard)
    records_dir = FileSystems.join(output_dir, RECORDS_DIR)
    work = p | "Shards" >> beam.Create(shards, reshuffle=True)
    pools = (work
             | "EvalShards" >> beam.Filter(lambda shard: shard.day in eval_set)
             | "PoolRows" >> beam.FlatMap(_pool_rows)
             | "PoolCandidates" >> beam.combiners.Top.PerKey(NEGATIVE_POOL_SIZE * 4, key=negative_pool_key, reverse=True)
             | "Pool" >> beam.MapTuple(lambda day, rows: (day, negative_pool(rows))))
    joined = work | "JoinShards" >> beam.ParDo(
        JoinShard(stages, eval_set, num_negatives, records_dir),
        pools=beam.pvalue.AsDict(pools)).with_outputs("dead", "ids", main="files")
    vocab = (joined.ids
             | "IdsPerFeature" >> beam.GroupByKey()
             | "Sorted" >> beam.MapTuple(lambda f, parts: (f, sorted(set().union(*parts))))
             | "AllVocabs" >> beam.combiners.ToDict()
             | "Lookups" >> beam.Map(lambda v: {"ids": v, "lookup": {f: {raw: i + 1 for i, raw in enumerate(ids)}
                                                                      for f, ids in v.items()}}))
    plan = sum((F.TWO_STAGE_LAYOUT if stages == 2 else F.THREE_STAGE_LAYOUT).values())
    meta = {"stages": stages, "train_list_size": plan, "eval_list_size": plan + num_negatives,
            "history_length": F.HISTORY_LENGTH, "train_days": [d for d, _ in days if d not in eval_set],
            "eval_days": sorted(eval_set), "ground_truth_size": 10, "id_padding": 0,
            "vocab_file_format": "one raw id per line; line i (0-based) is index i + 1; 0 = padding/unknown"}
    _ = (vocab | "VocabIds" >> beam.Map(lambda v: v["ids"])
         | "WriteSidecars" >> beam.ParDo(WriteSidecars(output_dir, meta)))
    examples = (joined.files
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadRecords" >> beam.FlatMap(_read_records)
                | "Index" >> beam.Map(_index, vocabularies=beam.pvalue.AsSingleton(vocab)))
    for split in ("train", "eval"):
        _ = (examples
             | f"Only{split}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
             | f"Bytes{split}" >> beam.Map(lambda kv: kv[1])
             | f"Write{split}" >> beam.io.WriteToTFRecord(
                 FileSystems.join(output_dir, split, "part"), file_name_suffix=".tfrecord.gz",
                 num_shards=num_shards, compression_type=CompressionTypes.GZIP))
    _ = joined.dead | "WriteDead" >> beam.io.WriteToText(FileSystems.join(output_dir, "dead_letter", "part"),
                                                         file_name_suffix=".jsonl")
    return shards


def run_preprocess(input_dir: str, output_dir: str, stages: int = 2, eval_days: int = 1,
                   beam_args: Sequence[str] | None = None,
                   num_negatives: int = F.EVAL_EXTRA_NEGATIVES, overwrite: bool = False,
                   rows_per_shard: int = ROWS_PER_SHARD) -> dict:
    """Runs the pipeline and writes ``OUT/stats.json``.

    Args:
      input_dir: RecFlow folder (local path or any filesystem Beam supports).
      output_dir: where train/, eval/, vocab/, dead_letter/ and the JSON files go. It must be
        absent or empty unless ``overwrite``; a local one is written to a temporary sibling
        folder and renamed into place only when complete.
      stages: 2 or 3 (list layout and graded labels).
      eval_days: how many of the last days form the eval split.
      beam_args: Beam pipeline options, passed through unchanged; with no ``--runner`` the
        pipeline runs in process on Beam's FnApiRunner (the DirectRunner's batch engine,
        without its attempt to download the Prism runner); ``--runner DaskRunner`` runs it on
        ``tfcascade.beam.dask_runner.DaskRunner`` (needs the ``dask`` extra).
      num_negatives: extra negatives sampled from other requests per eval request.
      overwrite: replace a non-empty ``output_dir``.
      rows_per_shard: a day of R all_stage rows is split into ceil(R / rows_per_shard) request
        shards, each joined and organised on its own: the memory a worker needs is about one
        shard's rows, whatever the number of days.

    Returns:
      The stats: ``input_rows`` (and ``input_rows_by_source``), ``used_rows``,
      ``dead_letter_rows``, ``requests_written`` {train, eval}; the dead-letter reasons are in
      ``dead_letter/``.

    Raises:
      FileExistsError: ``output_dir`` is not empty and ``overwrite`` is False.
      RuntimeError: the runner lost work: a shard not joined, input rows not read, requests
        assembled but not written, or rows not accounted for (nothing is written then).
      EmptySplitError: the train split, or the eval split when ``eval_days > 0``, has no request.
    """
    if stages not in (2, 3):
        raise ValueError(f"stages must be 2 or 3, got stages={stages!r}")
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got num_negatives={num_negatives}")
    if int(rows_per_shard) < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got rows_per_shard={rows_per_shard}")
    if not FileSystems.exists(input_dir):
        raise FileNotFoundError(f"input_dir={input_dir!r} does not exist")
    if _non_empty(output_dir) and not overwrite:
        raise FileExistsError(f"output_dir={output_dir!r} is not empty: choose a new folder or pass "
                              "--overwrite to replace it")
    beam_args = list(beam_args or [])
    local = "://" not in output_dir
    work = f"{os.path.normpath(output_dir)}.tmp-{uuid.uuid4().hex[:8]}" if local else output_dir
    if not local and overwrite and FileSystems.exists(output_dir):
        FileSystems.delete([output_dir])
    try:
        stats = _run(input_dir, work, stages, eval_days, beam_args, num_negatives, rows_per_shard)
        if local:
            _replace_folder(work, output_dir)
    finally:
        if local and os.path.exists(work):
            shutil.rmtree(work, ignore_errors=True)
    log.info("preprocess done: %s", stats)
    return stats


def _run(input_dir: str, output_dir: str, stages: int, eval_days: int, beam_args: Sequence[str],
         num_negatives: int, rows_per_shard: int) -> dict:
    runner, beam_args = _resolve_runner(beam_args)
    p = beam.Pipeline(runner=runner, options=PipelineOptions(list(beam_args)))
    shards = build_pipeline(p, input_dir, output_dir, stages, eval_days, num_negatives,
                            rows_per_shard=rows_per_shard)
    result = p.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for r in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        # One result per step that increments the counter (dead letters come from two steps).
        counters[r.key.metric.name] = counters.get(r.key.metric.name, 0) + r.committed
    by_source = {s: int(counters.get(f"input_rows_{s}", 0)) for s in ("all_stage", "request_id_dict")}
    stats = {
        "input_rows": sum(by_source.values()),
        "input_rows_by_source": by_source,
        "used_rows": int(counters.get("used_rows", 0)),
        "dead_letter_rows": int(counters.get("dead_letter_rows", 0)),
        "requests_written": {"train": int(counters.get("requests_written_train", 0)),
                             "eval": int(counters.get("requests_written_eval", 0))},
        "stages": stages, "eval_days": eval_days,
    }
    _check_nothing_lost(counters, stats, shards)
    _delete_folder(FileSystems.join(output_dir, RECORDS_DIR))
    stats["shards"] = len(shards)
    days = [d for d, _ in find_days(input_dir)]
    for split, split_days in (("train", days[: len(days) - eval_days]), ("eval", days[len(days) - eval_days:])):
        if split_days and stats["requests_written"][split] == 0:
            raise EmptySplitError(
                f"the {split} split (days {', '.join(split_days)}) has no usable request: "
                f"{stats['dead_letter_rows']} of {stats['input_rows']} input rows were dead-lettered, "
                f"e.g. {_first_reason(output_dir)!r}")
    with FileSystems.create(FileSystems.join(output_dir, "stats.json")) as fh:
        fh.write((json.dumps(stats, indent=2, sort_keys=True) + "\n").encode())
    return stats


def _check_nothing_lost(counters: dict, stats: dict, shards: Sequence[Shard]) -> None:
    """Raises RuntimeError when the runner's counters show lost work.

    Checked against what the driver planned and what each day's first shard counted of the
    whole files, not only against each other: every shard joined, every all_stage row and
    every request_id_dict / seq_effective_50_dict entry read by some shard, every assembled
    request written, and input = used + dead-letter rows.
    """
    def n(name):
        return int(counters.get(name, 0))

    problems = []
    if n("shards_joined") != len(shards):
        problems.append(f"{n('shards_joined')} of {len(shards)} planned shards were joined")
    file_rows = sum(s.rows for s in shards if s.index == 0)
    if n("all_stage_rows_in_files") != file_rows or n("input_rows_all_stage") != file_rows:
        problems.append(f"{n('input_rows_all_stage')} all_stage rows were read of the {file_rows} "
                        "the files hold")
    for source in SOURCES[1:]:
        if n(f"{source}_entries_read") != n(f"{source}_entries_in_files"):
            problems.append(f"{n(f'{source}_entries_read')} {source} entries were read of the "
                            f"{n(f'{source}_entries_in_files')} the files hold")
    for split in ("train", "eval"):
        if n(f"requests_assembled_{split}") != n(f"requests_written_{split}"):
            problems.append(f"{n(f'requests_written_{split}')} of {n(f'requests_assembled_{split}')} "
                            f"assembled {split} requests were written")
    if stats["input_rows"] != stats["used_rows"] + stats["dead_letter_rows"]:
        problems.append(f"input rows {stats['input_rows']} != used {stats['used_rows']} + dead-letter "
                        f"{stats['dead_letter_rows']}")
    if problems:
        raise RuntimeError("the runner lost work, nothing is published: " + "; ".join(problems))


DASK_RUNNER_NAMES = ("dask", "daskrunner", "apache_beam.runners.dask.dask_runner.daskrunner",
                     "tfcascade.beam.dask_runner.daskrunner")


def _resolve_runner(beam_args: Sequence[str]):
    """The runner to give ``beam.Pipeline`` and the Beam options left to parse.

    Args:
      beam_args: Beam pipeline options as given.

    Returns:
      ``(runner, args)``: with no ``--runner``, Beam's in-process FnApiRunner (the DirectRunner
      first tries to download the Prism runner; this is the engine it falls back to, so nothing
      is fetched); with ``--runner DaskRunner`` (or Beam's own DaskRunner's class path),
      ``tfcascade.beam.dask_runner.DaskRunner``, whose translation runs every branch of this
      pipeline (Beam 2.77's does not); any other runner is left to Beam (``runner`` None).

    Raises:
      ValueError: ``--runner`` is given without a value.
    """
    args, name, rest, i = list(beam_args), None, [], 0
    while i < len(args):  # drops --runner X / --runner=X, keeps every other argument in order
        if args[i] == "--runner":
            if i + 1 == len(args) or args[i + 1].startswith("--"):
                raise ValueError("--runner needs a value, e.g. --runner=DaskRunner")
            name, i = args[i + 1], i + 2
            continue
        if args[i].startswith("--runner="):
            name = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    if name is None:
        return FnApiRunner(), args
    if name.lower() in DASK_RUNNER_NAMES:
        from tfcascade.beam.dask_runner import DaskRunner

        return DaskRunner(), rest
    return None, args


def _non_empty(folder: str) -> bool:
    if "://" not in folder:
        return os.path.isdir(folder) and any(os.scandir(folder)) or os.path.isfile(folder)
    return bool(FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list)


def _replace_folder(new: str, target: str) -> None:
    """Moves the finished ``new`` folder to ``target`` (replacing what is there)."""
    old = None
    if os.path.lexists(target):
        old = f"{os.path.normpath(target)}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(new, target)
    if old and os.path.isdir(old):
        shutil.rmtree(old, ignore_errors=True)
    elif old:
        os.remove(old)


def _delete_folder(folder: str) -> None:
    files = [m.path for m in FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    if "://" not in folder and os.path.isdir(folder):
        os.rmdir(folder)


def _first_reason(output_dir: str) -> str:
    for match in FileSystems.match([FileSystems.join(output_dir, "dead_letter", "*")])[0].metadata_list:
        with FileSystems.open(match.path) as fh:
            line = fh.readline()
        if line.strip():
            return json.loads(line)["reason"]
    return "no dead letter"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--stages", type=int, default=2, choices=(2, 3))
    parser.add_argument("--eval-days", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(json.dumps(run_preprocess(args.input, args.output, args.stages, args.eval_days, beam_args,
                                    overwrite=args.overwrite), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
