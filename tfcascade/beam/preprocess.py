"""Beam preprocessing: RecFlow logs → TFRecords of per-request training lists.

    all_stage/<day>.feather ───────► read + check rows ─┬─► dead_letter/ (row, reason)
    request_id_dict/<day>.pkl ─────► entries ───────────┤
    seq_effective_50_dict/<day>.pkl ► histories ─────────┤
                                                         └─► group by request ─► assemble
                    (duplicates, missing or inconsistent sources, no ground truth ─► dead_letter/)
                    ─► vocabularies (train) ─► index ids
                    ─► train/part-*.tfrecord.gz, eval/part-*.tfrecord.gz (+160 negatives)
                    ─► vocab/<feature>.txt, metadata.json (with the fingerprint), schema.json, stats.json

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
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from tfcascade import features as F
from tfcascade.data.assemble import assemble_request
from tfcascade.data.examples import index_record, schema_dict, to_example
from tfcascade.data.fingerprint import vocabulary_fingerprint
from tfcascade.data.organise import negative_pool_key
from tfcascade.data.recflow import NEGATIVE_POOL_SIZE, negative_pool, parse_feather, parse_pickle
from tfcascade.data.schema import normalise_row, row_problem
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
    with FileSystems.open(path) as fh:
        return fh.read()


class ReadDay(beam.DoFn):
    """Reads one day's all_stage rows; emits ((day, request_id), row) and dead letters for bad rows."""

    DEAD = "dead"

    def process(self, element):
        day, paths = element
        path = paths["all_stage"]
        frame = parse_feather(_read_bytes(path), path)
        for raw in frame.to_dict("records"):
            _counter("input_rows_all_stage").inc()
            problem = row_problem(raw)
            if problem is not None:
                yield beam.pvalue.TaggedOutput(self.DEAD, _dead(raw, problem, path))
                continue
            row = normalise_row(raw)
            yield (day, row["request_id"]), row


def _read_table(element, source: str):
    """((day, request_id), value) of one day's request_id_dict or seq_effective_50_dict."""
    day, paths = element
    for request_id, value in parse_pickle(_read_bytes(paths[source]), paths[source]).items():
        yield (day, request_id), value


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


class Organise(beam.DoFn):
    """(key, {rows, entry, history}) → record, and every unusable row to the dead letter."""

    def __init__(self, stages: int, eval_days: set, num_negatives: int):
        self.stages = stages
        self.eval_days = eval_days
        self.num_negatives = num_negatives

    def process(self, element, pools):
        (day, request_id), grouped = element
        rows, entries, histories = (list(grouped[k]) for k in ("rows", "entry", "history"))
        is_eval = day in self.eval_days
        result = assemble_request(
            request_id, rows, entries[0] if entries else None, histories[0] if histories else None,
            self.stages, pools.get(day, []) if is_eval else (), self.num_negatives if is_eval else 0,
            has_entry=bool(entries), has_history=bool(histories))
        _counter("input_rows_request_id_dict").inc(result.dict_only)
        for row, reason in result.dead:
            yield beam.pvalue.TaggedOutput("dead", _dead(row, reason, f"day {day}"))
        if result.record is not None:
            _counter("used_rows").inc(len(result.used))
            yield ("eval" if is_eval else "train"), result.record


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


def build_pipeline(p: beam.Pipeline, input_dir: str, output_dir: str, stages: int = 2,
                   eval_days: int = 1, num_negatives: int = F.EVAL_EXTRA_NEGATIVES,
                   num_shards: int = 0) -> None:
    """Adds the preprocessing transforms to ``p``."""
    days = find_days(input_dir)
    if eval_days < 0 or eval_days >= len(days):
        raise ValueError(f"eval_days must be in [0, {len(days) - 1}] for {len(days)} days, got eval_days={eval_days}")
    eval_set = {d for d, _ in days[len(days) - eval_days:]} if eval_days else set()
    day_files = p | "Days" >> beam.Create(days)
    read = day_files | "ReadRows" >> beam.ParDo(ReadDay()).with_outputs(ReadDay.DEAD, main="rows")
    entries = day_files | "ReadRequestDicts" >> beam.FlatMap(_read_table, source="request_id_dict")
    histories = day_files | "ReadHistories" >> beam.FlatMap(_read_table, source="seq_effective_50_dict")
    pools = (read.rows
             | "EvalRows" >> beam.Filter(lambda kv: kv[0][0] in eval_set)
             | "KeyByDay" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
             | "PoolCandidates" >> beam.combiners.Top.PerKey(NEGATIVE_POOL_SIZE * 4, key=negative_pool_key, reverse=True)
             | "Pool" >> beam.MapTuple(lambda day, rows: (day, negative_pool(rows))))
    organised = ({"rows": read.rows, "entry": entries, "history": histories}
                 | "GroupByRequest" >> beam.CoGroupByKey()
                 | "Organise" >> beam.ParDo(Organise(stages, eval_set, num_negatives),
                                            pools=beam.pvalue.AsDict(pools)).with_outputs("dead", main="records"))
    vocab = (organised.records
             | "TrainOnly" >> beam.Filter(lambda kv: kv[0] == "train")
             | "Ids" >> beam.FlatMap(lambda kv: record_ids(kv[1]))
             | "DistinctIds" >> beam.Distinct()
             | "IdsPerFeature" >> beam.GroupByKey()
             | "Sorted" >> beam.MapTuple(lambda f, ids: (f, sorted(ids)))
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
    examples = organised.records | "Index" >> beam.Map(_index, vocabularies=beam.pvalue.AsSingleton(vocab))
    for split in ("train", "eval"):
        _ = (examples
             | f"Only{split}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
             | f"Bytes{split}" >> beam.Map(lambda kv: kv[1])
             | f"Write{split}" >> beam.io.WriteToTFRecord(
                 FileSystems.join(output_dir, split, "part"), file_name_suffix=".tfrecord.gz",
                 num_shards=num_shards, compression_type=beam.io.filesystem.CompressionTypes.GZIP))
    _ = ((read[ReadDay.DEAD], organised.dead)
         | "AllDead" >> beam.Flatten()
         | "WriteDead" >> beam.io.WriteToText(FileSystems.join(output_dir, "dead_letter", "part"),
                                               file_name_suffix=".jsonl"))


def run_preprocess(input_dir: str, output_dir: str, stages: int = 2, eval_days: int = 1,
                   beam_args: Sequence[str] | None = None,
                   num_negatives: int = F.EVAL_EXTRA_NEGATIVES, overwrite: bool = False) -> dict:
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

    Returns:
      The stats: ``input_rows`` (and ``input_rows_by_source``), ``used_rows``,
      ``dead_letter_rows``, ``requests_written`` {train, eval}; the dead-letter reasons are in
      ``dead_letter/``.

    Raises:
      FileExistsError: ``output_dir`` is not empty and ``overwrite`` is False.
      EmptySplitError: the train split, or the eval split when ``eval_days > 0``, has no request.
    """
    if stages not in (2, 3):
        raise ValueError(f"stages must be 2 or 3, got stages={stages!r}")
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got num_negatives={num_negatives}")
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
        stats = _run(input_dir, work, stages, eval_days, beam_args, num_negatives)
        if local:
            _replace_folder(work, output_dir)
    finally:
        if local and os.path.exists(work):
            shutil.rmtree(work, ignore_errors=True)
    log.info("preprocess done: %s", stats)
    return stats


def _run(input_dir: str, output_dir: str, stages: int, eval_days: int, beam_args: Sequence[str],
         num_negatives: int) -> dict:
    runner, beam_args = _resolve_runner(beam_args)
    p = beam.Pipeline(runner=runner, options=PipelineOptions(list(beam_args)))
    build_pipeline(p, input_dir, output_dir, stages, eval_days, num_negatives)
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
    if stats["input_rows"] != stats["used_rows"] + stats["dead_letter_rows"]:
        raise RuntimeError(f"row accounting broken: {stats}")
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
