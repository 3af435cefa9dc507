"""A Beam runner on Dask that runs every branch of a pipeline, once, with Beam's semantics.

Beam 2.77 ships ``apache_beam.runners.dask.dask_runner.DaskRunner``, but its translation is
not correct for pipelines with more than one output (it is fine for a single chain):

* ``run_pipeline`` computes only the last bag it built, so of several leaves (two splits,
  dead letters, sidecars) only one branch runs;
* bags are keyed by the producing transform, not by the output PCollection, and the DoFn
  bundle drops the tags of ``TaggedOutput``: ``ParDo(...).with_outputs(...)`` hands main and
  tagged outputs, mixed, to every consumer;
* outputs of ``finish_bundle`` are dropped (``WriteToText``/``WriteToTFRecord`` emit their
  written files there), ``ParDo`` subclasses (``WindowInto``, ``_GroupAlsoByWindow``) and
  ``Read`` become silent no-ops;
* a side input is computed again inside every bundle that reads it (a nested compute of its
  whole upstream graph), so side effects upstream of a side input run more than once;
* ``metrics()`` raises ``NotImplementedError``.

:class:`DaskRunner` here subclasses Beam's and replaces the translation: one Dask bag per
output PCollection, every element a ``WindowedValue``; a ParDo bundle (one bag partition)
runs through Beam's own ``DoFnRunner`` and returns ``(tag, value)`` pairs, split per consumer
by tag, plus its metric updates; side inputs are whole-PCollection graph dependencies
(computed once, shipped to the bundles that read them); ``GroupByKey`` groups by the key's
encoded bytes (the key coder, as Beam's runners do); and one ``client.compute`` of every
ParDo's metric updates runs each transform exactly once, shared parents included. The
metrics of the bundles that succeeded are merged into ``result.metrics()``, so Beam counters
add up as they do on the DirectRunner.

Use it as ``--runner DaskRunner`` of ``tfcascade preprocess``, or
``beam.Pipeline(runner=tfcascade.beam.dask_runner.DaskRunner(), options=...)``. With no
``--dask_client_address`` / ``--dask_scheduler_file`` it starts a ``LocalCluster`` of
``--dask_workers`` worker processes on 127.0.0.1 and closes it when the run ends.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterable, Sequence

from tfcascade._extras import require_extra

require_extra("dask", "dask", "tfcascade.beam.dask_runner")
require_extra("distributed", "dask", "tfcascade.beam.dask_runner")

import apache_beam as beam  # noqa: E402
import dask  # noqa: E402
import dask.bag as db  # noqa: E402
import distributed  # noqa: E402
from apache_beam import coders, pvalue  # noqa: E402
from apache_beam.internal import pickler  # noqa: E402
from apache_beam.io.iobase import SourceBundle  # noqa: E402
from apache_beam.metrics.execution import MetricsContainer  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor  # noqa: E402
from apache_beam.runners.common import DoFnRunner, DoFnSignature, DoFnState, Receiver  # noqa: E402
from apache_beam.runners.dask import dask_runner as beam_dask  # noqa: E402
from apache_beam.runners.dask.overrides import (  # noqa: E402
    _Create,
    _Flatten,
    _GroupByKeyOnly,
    _Read,
    _Reshuffle,
    dask_overrides,
)
from apache_beam.runners.direct.direct_metrics import DirectMetrics  # noqa: E402
from apache_beam.runners.runner import PipelineResult, PipelineState  # noqa: E402
from apache_beam.runners.worker import statesampler  # noqa: E402
from apache_beam.transforms.sideinputs import SideInputMap  # noqa: E402
from apache_beam.transforms.window import GlobalWindow, GlobalWindows  # noqa: E402
from apache_beam.utils import counters  # noqa: E402
from apache_beam.utils.timestamp import MIN_TIMESTAMP  # noqa: E402
from apache_beam.utils.windowed_value import WindowedValue  # noqa: E402

_METRICS = "__tfcascade_dask_metrics__"  # the tag of a bundle's metric updates in its output
_READ_BUNDLE_BYTES = 64 << 20  # desired size of one Read split


class TfcascadeDaskOptions(PipelineOptions):
    """The options of the local cluster :class:`DaskRunner` starts when given no scheduler.

    Beam's own ``DaskOptions`` (``--dask_client_address``, ``--dask_scheduler_file``,
    ``--dask_connection_timeout``, ``--dask_client_name``, ``--dask_connection_limit``,
    ``--dask_npartitions``, ``--dask_partition_size``) apply as well.
    """

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dask_workers", type=int, default=None,
            help="worker processes of the LocalCluster started when no --dask_client_address or "
                 "--dask_scheduler_file is given (default: Dask's choice for this machine's cores)")
        parser.add_argument(
            "--dask_threads_per_worker", type=int, default=1,
            help="threads per worker process of that LocalCluster (default 1)")


def _global(value) -> WindowedValue:
    return WindowedValue(value, MIN_TIMESTAMP, (GlobalWindow(),))


class _BundleReceiver(Receiver):
    """Appends ``(tag, windowed value)`` to the bundle's output list."""

    def __init__(self, out: list, tag: str | None):
        self.out = out
        self.tag = tag

    def receive(self, windowed_value: WindowedValue) -> None:
        self.out.append((self.tag, windowed_value))


class _NullReceiver(Receiver):
    def receive(self, windowed_value: WindowedValue) -> None:
        pass


class _Receivers(dict):
    """The declared tags' receivers; an undeclared tag is dropped, as on the DirectRunner."""

    def __missing__(self, key):
        return _NullReceiver()


def _run_bundle(elements: Iterable[WindowedValue], payload: bytes, step: str, tags: Sequence,
                side_values: Sequence[list]) -> list:
    """Runs one ParDo bundle (one bag partition) through Beam's ``DoFnRunner``.

    Args:
      elements: the partition's windowed values.
      payload: ``pickler.dumps((dofn, args, kwargs, windowing, side_specs))``; deserialised
        here, so every bundle has its own DoFn instance.
      step: the transform's full label (the metrics' step name).
      tags: the ParDo's declared output tags (``None`` = main).
      side_values: per side input, its whole PCollection as windowed values.

    Returns:
      ``(tag, windowed value)`` for every output, then ``(_METRICS, MetricUpdates)``.
    """
    fn, args, kwargs, windowing, side_specs = pickler.loads(payload)
    side_inputs = [SideInputMap(view_class, view_options, values)
                   for (view_class, view_options), values in zip(side_specs, side_values)]
    out: list = []
    receivers = _Receivers({tag: _BundleReceiver(out, tag) for tag in tags})
    container = MetricsContainer(step)
    sampler = statesampler.StateSampler("", counters.CounterFactory())
    previous = statesampler.get_current_tracker()
    statesampler.set_current_tracker(sampler)
    try:
        with sampler.scoped_state(step, "process", metrics_container=container):
            runner = DoFnRunner(fn, args, kwargs, side_inputs, windowing, tagged_receivers=receivers,
                                step_name=step, state=DoFnState(counters.CounterFactory()))
            runner.setup()
            runner.start()
            for element in elements:
                runner.process(element)
            runner.finish()
            runner.teardown()
    finally:
        statesampler.set_current_tracker(previous)
    out.append((_METRICS, container.get_cumulative()))
    return out


def _select(pairs: Iterable[tuple], tag) -> list:
    """The values of one tag of a bundle's ``(tag, value)`` output."""
    return [value for t, value in pairs if t == tag]


def _concat(parts: Sequence[list]) -> list:
    return [x for part in parts for x in part]


def _key_bytes(element: WindowedValue, key_coder: coders.Coder) -> tuple[bytes, WindowedValue]:
    return key_coder.encode(element.value[0]), element


def _grouped(group: tuple[bytes, list], key_coder: coders.Coder) -> WindowedValue:
    encoded, pairs = group
    return _global((key_coder.decode(encoded), [wv.value[1] for _, wv in pairs]))


def _first(pair: tuple):
    return pair[0]


def _read_split(bundles: Iterable[SourceBundle]) -> list:
    out = []
    for bundle in bundles:
        tracker = bundle.source.get_range_tracker(bundle.start_position, bundle.stop_position)
        out.extend(_global(v) for v in bundle.source.read(tracker))
    return out


def _windowing(pcoll: pvalue.PCollection) -> beam.Windowing:
    """``pcoll.windowing``; global for the output of Beam's ``_Read`` override, which has none
    (its ``get_windowing`` would ask the ``PBegin`` it reads from)."""
    if isinstance(pcoll.producer.transform, _Read):
        return beam.Windowing(GlobalWindows())
    return pcoll.windowing


class _Translator(PipelineVisitor):
    """Builds one Dask bag per PCollection of the (overridden) pipeline's primitives."""

    def __init__(self, parallelism: int, npartitions: int | None, partition_size: int | None):
        self.parallelism = max(1, parallelism)
        self.npartitions = npartitions
        self.partition_size = partition_size
        self.bags: dict[pvalue.PCollection, db.Bag] = {}
        self.sides: dict[pvalue.PCollection, object] = {}
        self.metrics: list[db.Bag] = []

    def visit_transform(self, node: AppliedPTransform) -> None:
        transform = node.transform
        for out in node.outputs.values():
            if isinstance(out, pvalue.PCollection) and not out.is_bounded:
                raise NotImplementedError(f"DaskRunner runs bounded (batch) pipelines only; "
                                          f"transform {node.full_label!r} produces an unbounded PCollection")
        if isinstance(transform, _Create):
            self._set(node, self._from_values([_global(v) for v in transform.values]))
        elif isinstance(transform, beam.Impulse):
            self._set(node, db.from_sequence([_global(b"")], npartitions=1))
        elif isinstance(transform, _Read):
            self._set(node, self._read(transform.source))
        elif isinstance(transform, beam.ParDo):
            self._pardo(node)
        elif isinstance(transform, _GroupByKeyOnly):
            self._set(node, self._group(node))
        elif isinstance(transform, _Flatten):
            bags = [self.bags[p] for p in node.inputs]
            self._set(node, db.concat(bags) if bags else db.from_sequence([], npartitions=1))
        elif isinstance(transform, _Reshuffle):
            self._set(node, self.bags[node.inputs[0]])
        else:
            raise NotImplementedError(f"DaskRunner has no translation for transform {node.full_label!r} "
                                      f"({type(transform).__module__}.{type(transform).__name__})")

    def _set(self, node: AppliedPTransform, bag: db.Bag) -> None:
        (out,) = node.outputs.values()
        self.bags[out] = bag

    def _from_values(self, values: list) -> db.Bag:
        if not values:
            return db.from_sequence([], npartitions=1)
        if self.partition_size:
            return db.from_sequence(values, partition_size=self.partition_size)
        n = min(len(values), self.npartitions or 4 * self.parallelism)
        return db.from_sequence(values, npartitions=n)

    def _read(self, source) -> db.Bag:
        splits = list(source.split(desired_bundle_size=_READ_BUNDLE_BYTES))
        if not splits:
            return db.from_sequence([], npartitions=1)
        return db.from_sequence(splits, npartitions=len(splits)).map_partitions(_read_split)

    def _side(self, pcoll: pvalue.PCollection):
        """The whole of ``pcoll`` as one Delayed list (one graph key, computed once)."""
        if pcoll not in self.sides:
            parts = self.bags[pcoll].to_delayed(optimize_graph=False)
            self.sides[pcoll] = dask.delayed(_concat, pure=True)(parts)
        return self.sides[pcoll]

    def _pardo(self, node: AppliedPTransform) -> None:
        transform = node.transform
        signature = DoFnSignature(transform.fn)
        if signature.is_stateful_dofn() or signature.is_splittable_dofn():
            raise NotImplementedError(f"DaskRunner does not run stateful or splittable DoFns "
                                      f"(transform {node.full_label!r})")
        main = next(iter(node.main_inputs.values()))
        side_specs = [(type(si), si._view_options()) for si in node.side_inputs]
        payload = pickler.dumps((transform.fn, getattr(transform, "args", []),
                                 getattr(transform, "kwargs", {}), _windowing(main), side_specs))
        tags = list(node.outputs)
        sides = [self._side(si.pvalue) for si in node.side_inputs]
        pairs = self.bags[main].map_partitions(_run_bundle, payload, node.full_label, tags, sides)
        for tag, out in node.outputs.items():
            self.bags[out] = pairs.map_partitions(_select, tag)
        self.metrics.append(pairs.map_partitions(_select, _METRICS))

    def _group(self, node: AppliedPTransform) -> db.Bag:
        (pcoll,) = node.inputs
        kv = pcoll.element_type
        try:
            key_coder = coders.registry.get_coder(kv.tuple_types[0])
        except (AttributeError, IndexError, TypeError):
            key_coder = coders.registry.get_coder(typing.Any)
        n = self.npartitions or self.parallelism
        return (self.bags[pcoll].map(_key_bytes, key_coder)
                .groupby(_first, npartitions=n, shuffle="tasks")
                .map(_grouped, key_coder))


class DaskPipelineResult(PipelineResult):
    """The result of a :class:`DaskRunner` run: its state, and the Beam metrics once done."""

    def __init__(self, client: distributed.Client, cluster, futures: list):
        super().__init__(PipelineState.RUNNING)
        self._client = client
        self._cluster = cluster
        self._futures = futures
        self._metrics: DirectMetrics | None = None

    def wait_until_finish(self, duration: int | None = None) -> str:
        """Waits for the run and merges the metrics of every bundle.

        Args:
          duration: milliseconds to wait at most; ``None`` waits for the end.

        Returns:
          The final state (``DONE``), or ``RUNNING`` if ``duration`` passed first.

        Raises:
          Exception: the first error of a failed bundle (the run is then ``FAILED``).
        """
        if PipelineState.is_terminal(self._state):
            return self._state
        try:
            if duration is not None:
                done, pending = distributed.wait(self._futures, timeout=duration / 1000,
                                                 return_when="ALL_COMPLETED")
                if pending:
                    return self._state
            results = self._client.gather(self._futures)
            metrics = DirectMetrics()
            for per_bundle in results:
                for updates in per_bundle:
                    metrics.commit_logical(None, updates)
                    metrics.commit_physical(None, updates)
            self._metrics = metrics
            self._state = PipelineState.DONE
        except distributed.TimeoutError:
            return self._state
        except BaseException:
            self._state = PipelineState.FAILED
            self._close()
            raise
        self._close()
        return self._state

    def cancel(self) -> str:
        """Cancels the run and closes the client (and the cluster this runner started).

        Returns:
          ``CANCELLED``.
        """
        if not PipelineState.is_terminal(self._state):
            self._client.cancel(self._futures)
            self._state = PipelineState.CANCELLED
            self._close()
        return self._state

    def metrics(self) -> DirectMetrics:
        """The Beam metrics of every bundle that succeeded (committed = attempted).

        Returns:
          A ``MetricResults`` (``query(filter)`` as on every runner).

        Raises:
          RuntimeError: the run has not finished (call ``wait_until_finish()``).
        """
        if self._metrics is None:
            raise RuntimeError(f"the metrics are known once the run is DONE; its state is {self._state}: "
                               "call wait_until_finish() first")
        return self._metrics

    def _close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


class DaskRunner(beam_dask.DaskRunner):
    """Beam's DaskRunner with a translation that is correct for multi-output pipelines.

    See the module docstring for what differs from ``apache_beam.runners.dask``. Options:
    Beam's ``DaskOptions`` and :class:`TfcascadeDaskOptions`.
    """

    def run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions) -> DaskPipelineResult:
        """Translates ``pipeline`` to Dask bags and starts computing every ParDo.

        Args:
          pipeline: the pipeline (Beam calls this from ``pipeline.run()``).
          options: its options.

        Returns:
          A :class:`DaskPipelineResult` (``wait_until_finish()`` for the end and the metrics).

        Raises:
          ValueError: a local-cluster option out of range (named with its value).
          NotImplementedError: a transform this runner cannot run (named).
        """
        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(
            drop_default=True, current_only=True)
        npartitions = dask_options.pop("npartitions", None)
        partition_size = dask_options.pop("partition_size", None)
        for name, value in (("--dask_npartitions", npartitions), ("--dask_partition_size", partition_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {name}={value}")
        ours = options.view_as(TfcascadeDaskOptions)
        cluster = None
        if dask_options.get("address") or dask_options.get("scheduler_file"):
            client = distributed.Client(**dask_options)
        else:
            for name, value in (("--dask_workers", ours.dask_workers),
                                ("--dask_threads_per_worker", ours.dask_threads_per_worker)):
                if value is not None and value < 1:
                    raise ValueError(f"{name} must be >= 1, got {name}={value}")
            cluster = distributed.LocalCluster(
                n_workers=ours.dask_workers, threads_per_worker=ours.dask_threads_per_worker,
                processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0")
            try:
                client = distributed.Client(cluster, **{k: v for k, v in dask_options.items()
                                                        if k in ("name", "connection_limit", "timeout")})
            except BaseException:
                cluster.close()
                raise
        try:
            pipeline.replace_all(dask_overrides())
            translator = _Translator(sum(client.nthreads().values()), npartitions, partition_size)
            pipeline.visit(translator)
            futures = client.compute(translator.metrics) if translator.metrics else []
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise
        return DaskPipelineResult(client, cluster, futures)
