"""Beam preprocessing: RecFlow-layout logs → TFRecords of per-request training lists.

    all_stage/<day>.feather ─► read + validate rows ─┬─► dead_letter/ (row, reason)
    seq_effective_50_dict/  ─► histories ────────────┤
                                                      └─► group by request ─► organise list
                    ─► (no ground truth ─► dead_letter/) ─► vocabularies (train) ─► index ids
                    ─► train/part-*.tfrecord.gz, eval/part-*.tfrecord.gz (+160 negatives)
                    ─► vocab/<feature>.txt, metadata.json, schema.json, stats.json

Every input row is counted exactly once: ``input_rows = used_rows + dead_letter_rows``
(Beam counters in namespace ``tfcascade.preprocess`` and ``stats.json``). Runs on the
DirectRunner by default; any Beam pipeline options (``--runner``, ``--project``, …) pass
through unchanged.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import pickle
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from tfcascade import features as F
from tfcascade.data.examples import index_record, schema_dict, to_example
from tfcascade.data.organise import RequestProblem, item_of, negative_pool_key, organise_request
from tfcascade.data.recflow import NEGATIVE_POOL_SIZE
from tfcascade.data.schema import COLUMNS, SchemaError, normalise_row, row_problem, validate_frame
from tfcascade.data.vocabulary import VOCAB_FEATURES, record_ids

NAMESPACE = "tfcascade.preprocess"
log = logging.getLogger(__name__)


def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


def find_days(input_dir: str) -> list[tuple[str, str]]:
    """(day, path) of every ``all_stage/<day>.feather`` (any Beam filesystem)."""
    pattern = FileSystems.join(input_dir, "all_stage", "*.feather")
    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no all_stage/<day>.feather files under input_dir={input_dir!r}")
    out = sorted((os.path.basename(m.path)[: -len(".feather")], m.path) for m in matches)
    return out


def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as fh:
        return fh.read()


class ReadDay(beam.DoFn):
    """Reads one day's rows; emits (request_id, row) and dead letters for bad rows."""

    DEAD = "dead"

    def process(self, element):
        day, path = element
        try:
            frame = pd.read_feather(io.BytesIO(_read_bytes(path)))
        except Exception as err:
            raise SchemaError(f"{path}: cannot be read as a feather file ({err})") from err
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            validate_frame(frame, path)  # raises with the missing columns named
        for raw in frame.to_dict("records"):
            _counter("input_rows").inc()
            problem = row_problem(raw)
            if problem is not None:
                yield beam.pvalue.TaggedOutput(self.DEAD, _dead(raw, problem, path))
                continue
            row = normalise_row(raw)
            yield (day, row["request_id"]), row


def _dead(raw: dict, reason: str, source: str) -> str:
    _counter("dead_letter_rows").inc()
    clean = {k: (None if isinstance(v, float) and np.isnan(v) else v.item() if hasattr(v, "item") else v)
             for k, v in raw.items()}
    return json.dumps({"reason": reason, "source": source, "row": clean}, default=str, sort_keys=True)


def _read_histories(element):
    day, path = element
    hist_path = path.replace("/all_stage/", "/seq_effective_50_dict/")
    hist_path = hist_path[: -len(".feather")] + ".pkl"
    if not FileSystems.exists(hist_path):
        return
    try:
        table = pickle.loads(_read_bytes(hist_path))
    except Exception as err:
        raise SchemaError(f"{hist_path}: cannot be read as a pickle ({err})") from err
    for request_id, seq in table.items():
        yield (day, int(request_id)), seq


class Organise(beam.DoFn):
    """(key, {rows, history}) → record, or every row to the dead letter with the reason."""

    def __init__(self, stages: int, eval_days: set, num_negatives: int):
        self.stages = stages
        self.eval_days = eval_days
        self.num_negatives = num_negatives

    def process(self, element, pools):
        (day, _), grouped = element
        rows = list(grouped["rows"])
        if not rows:
            return  # a history without logged rows: not an input row
        histories = list(grouped["history"])
        is_eval = day in self.eval_days
        try:
            record = organise_request(
                rows, histories[0] if histories else None, self.stages,
                pools.get(day, []) if is_eval else (), self.num_negatives if is_eval else 0)
        except RequestProblem as err:
            for row in rows:
                yield beam.pvalue.TaggedOutput("dead", _dead(row, str(err), f"day {day}"))
            return
        _counter("used_rows").inc(len(rows))
        yield ("eval" if is_eval else "train"), record


def _pool_for_day(rows: Sequence[dict]) -> list[dict]:
    seen, pool = set(), []
    for row in sorted(rows, key=negative_pool_key):
        if row["video_id"] not in seen:
            seen.add(row["video_id"])
            pool.append(item_of(row))
    return pool


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
    return split, to_example(index_record(record, lookup)).SerializeToString()


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
    histories = day_files | "ReadHistories" >> beam.FlatMap(_read_histories)
    pools = (read.rows
             | "EvalRows" >> beam.Filter(lambda kv: kv[0][0] in eval_set)
             | "KeyByDay" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
             | "PoolCandidates" >> beam.combiners.Top.PerKey(NEGATIVE_POOL_SIZE * 4, key=negative_pool_key, reverse=True)
             | "Pool" >> beam.MapTuple(lambda day, rows: (day, _pool_for_day(rows)[:NEGATIVE_POOL_SIZE])))
    organised = ({"rows": read.rows, "history": histories}
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
                   num_negatives: int = F.EVAL_EXTRA_NEGATIVES) -> dict:
    """Runs the pipeline and writes ``OUT/stats.json``.

    Args:
      input_dir: RecFlow-layout folder (local path or any filesystem Beam supports).
      output_dir: where train/, eval/, vocab/, dead_letter/ and the JSON files go.
      stages: 2 or 3 (list layout and graded labels).
      eval_days: how many of the last days form the eval split.
      beam_args: Beam pipeline options, passed through unchanged (default DirectRunner).
      num_negatives: extra negatives sampled from other requests per eval request.

    Returns:
      The stats: ``input_rows``, ``used_rows``, ``dead_letter_rows``,
      ``requests_written`` {train, eval} and the dead-letter reasons are in the files.
    """
    if stages not in (2, 3):
        raise ValueError(f"stages must be 2 or 3, got stages={stages!r}")
    if not FileSystems.exists(input_dir):
        raise FileNotFoundError(f"input_dir={input_dir!r} does not exist")
    options = PipelineOptions(list(beam_args or []))
    p = beam.Pipeline(options=options)
    build_pipeline(p, input_dir, output_dir, stages, eval_days, num_negatives)
    result = p.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for r in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        # One result per step that increments the counter (dead letters come from two steps).
        counters[r.key.metric.name] = counters.get(r.key.metric.name, 0) + r.committed
    stats = {
        "input_rows": int(counters.get("input_rows", 0)),
        "used_rows": int(counters.get("used_rows", 0)),
        "dead_letter_rows": int(counters.get("dead_letter_rows", 0)),
        "requests_written": {"train": int(counters.get("requests_written_train", 0)),
                             "eval": int(counters.get("requests_written_eval", 0))},
        "stages": stages, "eval_days": eval_days,
    }
    if stats["input_rows"] != stats["used_rows"] + stats["dead_letter_rows"]:
        raise RuntimeError(f"row accounting broken: {stats}")
    with FileSystems.create(FileSystems.join(output_dir, "stats.json")) as fh:
        fh.write((json.dumps(stats, indent=2, sort_keys=True) + "\n").encode())
    log.info("preprocess done: %s", stats)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--stages", type=int, default=2, choices=(2, 3))
    parser.add_argument("--eval-days", type=int, default=1)
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(json.dumps(run_preprocess(args.input, args.output, args.stages, args.eval_days, beam_args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
