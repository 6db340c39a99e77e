"""Gap detection on the document bus: what 0MQ dropped, and filling it from the store.

0MQ's PUB/SUB sockets drop messages when a subscriber falls behind (a full queue)
or is not connected yet, without telling anyone (bluesky issue 1177).
:class:`BusRunTracker` sits between the bus and a document callback (the
:class:`~bluesky_twin.callbacks.TwinTrainer`) and checks every run it forwards:

* **missing sequence numbers**: the events of one descriptor are numbered
  ``seq_num = 1, 2, ...``; a jump means events were lost on the way;
* **a stop without all its events**: the stop document's ``num_events`` counts the
  events of each stream; fewer seen (lost at the end, or a lost descriptor) is a gap;
* **a stop without a start**: the run's start document (or the whole head of the
  run) never arrived;
* **a start without a stop**: a run that stays silent for ``stop_timeout`` seconds
  is looked up in the store; if the store holds its stop document, the stop was lost.

A run with a gap is filled from the store before its stop document is forwarded:
``fetch(run_uid)`` returns the stored documents of the run (or ``None`` while the
store does not hold all of them yet), and only what the callback has not seen is
forwarded (the lost descriptors and events, or the whole run when its start was
lost).  Event rows are keyed by ``(descriptor, seq_num)``, so the callback takes a
filled event as if it had arrived in order.  Every gap is counted
(:attr:`BusRunTracker.gaps`, a :class:`GapCounts`).

The tracker also de-duplicates runs: a run the callback already saw (replayed from
the store when the service started, or seen on the bus) is dropped, with all its
documents, when it arrives again.

Memory is bounded by the open runs: per descriptor the next expected ``seq_num`` and
the set of missing ones; a finished run leaves only its uid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["BusRunTracker", "GapCounts"]

#: Run uids kept in the lists of :class:`GapCounts` (the counts themselves are exact).
MAX_LISTED_RUNS = 100

Document = tuple[str, dict]
Fetch = Callable[[str], "list[Document] | None"]
Sink = Callable[[str, dict], Any]


@dataclass
class GapCounts:
    """What the tracker found and filled (JSON-friendly through :meth:`as_dict`).

    Attributes
    ----------
    runs_with_gaps
        Runs in which at least one document was missing.
    filled
        Of those, runs completed from the store.
    unfilled
        Runs whose gap could not be filled (no store, or the store did not hold the
        run within the fill timeout); they were forwarded as they arrived.
    missing_events
        Events detected missing (sequence-number jumps and short stops).
    events_filled
        Event rows forwarded from the store.
    stops_without_start
        Runs whose start document never arrived.
    stops_short
        Stop documents whose ``num_events`` exceeded the events seen.
    runs_without_stop
        Runs whose stop document never arrived (found by a later start or silence).
    orphan_documents
        Documents of no known run (their descriptor or start was lost) that were
        dropped; the run they belong to is filled at its stop.
    duplicate_runs
        Runs that arrived again (from the store and the bus) and were dropped.
    """

    runs_with_gaps: int = 0
    filled: int = 0
    unfilled: int = 0
    missing_events: int = 0
    events_filled: int = 0
    stops_without_start: int = 0
    stops_short: int = 0
    runs_without_stop: int = 0
    orphan_documents: int = 0
    duplicate_runs: int = 0
    filled_runs: list[str] = field(default_factory=list)
    unfilled_runs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The counts and the (bounded) run lists as a plain dict."""
        out = dict(vars(self))
        out["filled_runs"] = list(self.filled_runs)
        out["unfilled_runs"] = list(self.unfilled_runs)
        return out


class _Seq:
    """Sequence numbers of one descriptor: the next expected one and the missing ones."""

    __slots__ = ("next", "missing", "stream")

    def __init__(self, stream: str) -> None:
        self.next = 1
        self.missing: set[int] = set()
        self.stream = stream

    def see(self, seq: int) -> None:
        """Record *seq* (a jump past the next expected number marks the ones between missing)."""
        if seq == self.next:
            self.next += 1
        elif seq > self.next:
            self.missing.update(range(self.next, seq))
            self.next = seq + 1
        else:
            self.missing.discard(seq)  # a late event, or a re-emitted one after a rewind

    def seen(self, seq: int) -> bool:
        return seq < self.next and seq not in self.missing


class _Run:
    """What arrived of one run."""

    def __init__(self, uid: str, start_seen: bool) -> None:
        self.uid = uid
        self.start_seen = start_seen
        self.seqs: dict[str, _Seq] = {}  # descriptor uid -> sequence numbers
        self.last_seen = time.monotonic()


class BusRunTracker:
    """Forward bus documents to *sink*, detect gaps per run and fill them with *fetch*.

    Parameters
    ----------
    sink
        The document callback (e.g. a ``TwinTrainer``); called on the caller's thread.
    fetch
        ``fetch(run_uid)`` returns the stored documents of a run, in emission order,
        once the store holds its stop document (``None`` otherwise, or when the run is
        not stored); ``None`` when there is no store.
    fill_timeout
        Seconds to keep asking the store for a run with a gap before it counts as
        unfilled.
    stop_timeout
        Seconds of silence after which an open run is checked against the store for a
        lost stop document (and again every ``stop_timeout`` seconds).

    Notes
    -----
    Not thread-safe: call :meth:`feed`, :meth:`feed_stored` and :meth:`check_open`
    from one thread (the service's processing thread).
    """

    def __init__(
        self,
        sink: Sink,
        fetch: Fetch | None = None,
        *,
        fill_timeout: float = 10.0,
        stop_timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sink = sink
        self._fetch = fetch
        self.fill_timeout = float(fill_timeout)
        self.stop_timeout = float(stop_timeout)
        self._sleep = sleep
        self._runs: dict[str, _Run] = {}  # open runs (and headless ones: start lost)
        self._desc_run: dict[str, str] = {}  # descriptor uid -> run uid, for open runs
        self._done: set[str] = set()  # runs forwarded to the end (bus or store)
        self._dup_runs: dict[str, list[str]] = {}  # runs arriving again -> their descriptors (dropped)
        self._dup_descs: set[str] = set()
        self.gaps = GapCounts()
        self.documents = 0  # bus documents received
        self.events = 0  # bus event rows received (pages unpacked)

    # ------------------------------------------------------------------ feeding
    @property
    def done_runs(self) -> set[str]:
        """Uids of the runs forwarded to the end."""
        return set(self._done)

    @property
    def open_runs(self) -> list[str]:
        """Uids of the runs open on the bus (a stop is awaited)."""
        return [uid for uid, run in self._runs.items() if run.start_seen]

    def feed_stored(self, docs: Iterable[Document]) -> str | None:
        """Forward the documents of one stored run (the catch-up path); return its uid.

        A run already forwarded is skipped (and counted as a duplicate).
        """
        docs = list(docs)
        uid = next((doc.get("uid") for name, doc in docs if name == "start"), None)
        if uid is None:
            return None
        if uid in self._done or uid in self._runs:
            self.gaps.duplicate_runs += 1
            return uid
        for name, doc in docs:
            self._forward(name, doc)
        self._done.add(uid)
        return uid

    def feed(self, name: str, doc: dict) -> None:
        """Take one document from the bus."""
        self.documents += 1
        handler = getattr(self, f"_on_{name}", None)
        if handler is None:  # resource, datum, ...: the twin reads scalar data keys only
            self._forward(name, doc)
            return
        handler(doc)

    def _forward(self, name: str, doc: dict) -> None:
        self._sink(name, doc)

    def _on_start(self, doc: dict) -> None:
        uid = doc["uid"]
        if uid in self._done or (uid in self._runs and self._runs[uid].start_seen):
            self.gaps.duplicate_runs += 1
            self._dup_runs.setdefault(uid, [])
            return
        if uid in self._runs:  # pragma: no cover - a start after its own descriptors
            del self._runs[uid]
        self._runs[uid] = _Run(uid, start_seen=True)
        self._forward("start", doc)

    def _on_descriptor(self, doc: dict) -> None:
        run_uid = doc.get("run_start")
        if run_uid in self._dup_runs or run_uid in self._done:
            self._dup_runs.setdefault(run_uid, []).append(doc["uid"])
            self._dup_descs.add(doc["uid"])
            return
        run = self._runs.get(run_uid)
        if run is None:  # the start was lost: remember the run, forward nothing of it
            run = self._runs[run_uid] = _Run(run_uid, start_seen=False)
        run.last_seen = time.monotonic()
        run.seqs[doc["uid"]] = _Seq(str(doc.get("name", "")))
        self._desc_run[doc["uid"]] = run_uid
        if run.start_seen:
            self._forward("descriptor", doc)
        else:
            self.gaps.orphan_documents += 1

    def _events_of(self, doc: dict, seqs: list[Any], name: str) -> None:
        self.events += len(seqs)
        desc = doc.get("descriptor")
        if desc in self._dup_descs:
            return
        run_uid = self._desc_run.get(desc)
        run = self._runs.get(run_uid) if run_uid is not None else None
        if run is None:  # its descriptor was lost: the run is filled at its stop
            self.gaps.orphan_documents += 1
            return
        run.last_seen = time.monotonic()
        tracker = run.seqs[desc]
        for seq in seqs:
            try:
                tracker.see(int(seq))
            except (TypeError, ValueError):
                pass
        if run.start_seen:
            self._forward(name, doc)
        else:
            self.gaps.orphan_documents += 1

    def _on_event(self, doc: dict) -> None:
        self._events_of(doc, [doc.get("seq_num")], "event")

    def _on_event_page(self, doc: dict) -> None:
        self._events_of(doc, list(doc.get("seq_num") or []), "event_page")

    def _on_stop(self, doc: dict) -> None:
        run_uid = doc.get("run_start")
        if run_uid in self._dup_runs or run_uid in self._done:
            self._forget_dup(run_uid)
            return
        run = self._runs.get(run_uid)
        if run is None or not run.start_seen:
            self.gaps.stops_without_start += 1
            self._gap(run_uid, run, doc, kind="no start")
            return
        short = self._short_streams(run, doc)
        if short:
            self.gaps.stops_short += 1
        if short or any(seq.missing for seq in run.seqs.values()):
            self._gap(run_uid, run, doc, kind="short stop" if short else "missing seq_num")
            return
        self._finish(run_uid, doc)

    # ------------------------------------------------------------------ gaps
    @staticmethod
    def _short_streams(run: _Run, stop: Mapping[str, Any]) -> dict[str, int]:
        """Streams whose stop-document event count exceeds the highest ``seq_num`` seen.

        Returns ``{stream: events missing at the end}``: lost last events, or a lost
        descriptor with all its events (events missing in between are the
        descriptors' own ``missing`` sets).
        """
        seen: dict[str, int] = {}
        for seq in run.seqs.values():
            seen[seq.stream] = seen.get(seq.stream, 0) + seq.next - 1
        out = {}
        for stream, n in (stop.get("num_events") or {}).items():
            try:
                missing = int(n) - seen.get(stream, 0)
            except (TypeError, ValueError):
                continue
            if missing > 0:
                out[stream] = missing
        return out

    def _gap(self, run_uid: str, run: _Run | None, stop: dict | None, *, kind: str) -> None:
        """Fill run *run_uid* from the store (or count it unfilled), then forward its stop."""
        self.gaps.runs_with_gaps += 1
        headless = run is None or not run.start_seen
        stored = self._fetch_complete(run_uid, stop)
        stored_stop = next((d for name, d in stored if name == "stop"), None) if stored is not None else None
        if run is not None and not headless and (stop or stored_stop) is not None:
            short = self._short_streams(run, stop or stored_stop)
            self.gaps.missing_events += sum(len(s.missing) for s in run.seqs.values()) + sum(short.values())
        if stored is None:
            self.gaps.unfilled += 1
            _append(self.gaps.unfilled_runs, run_uid)
            logger.warning("bus: run %s has a gap (%s) that could not be filled from the store", run_uid, kind)
            if not headless and stop is not None:
                self._finish(run_uid, stop)
            else:
                self._drop(run_uid)
            return
        filled = 0
        if headless:
            self.gaps.missing_events += sum(_n_rows(name, d) for name, d in stored if name in ("event", "event_page"))
            for name, d in stored:
                if name == "stop":
                    continue
                self._forward(name, d)
                filled += _n_rows(name, d)
        else:
            assert run is not None
            for name, d in stored:
                if name == "descriptor" and d["uid"] not in run.seqs:
                    self._forward(name, d)
                elif name == "event":
                    tracker = run.seqs.get(d.get("descriptor"))
                    if tracker is None or not tracker.seen(int(d["seq_num"])):
                        self._forward(name, d)
                        filled += 1
                elif name == "event_page":
                    tracker = run.seqs.get(d.get("descriptor"))
                    for event in _unpack_page(d):
                        if tracker is None or not tracker.seen(int(event["seq_num"])):
                            self._forward("event", event)
                            filled += 1
        self.gaps.events_filled += filled
        self.gaps.filled += 1
        _append(self.gaps.filled_runs, run_uid)
        logger.info("bus: run %s had a gap (%s); filled %d event(s) from the store", run_uid, kind, filled)
        self._finish(run_uid, stop if stop is not None else stored_stop)

    def _fetch_complete(self, run_uid: str, stop: Mapping[str, Any] | None) -> list[Document] | None:
        """The stored documents of *run_uid* once the store holds them all (within ``fill_timeout``)."""
        if self._fetch is None or run_uid is None:
            return None
        deadline = time.monotonic() + self.fill_timeout
        delay = 0.05
        while True:
            try:
                docs = self._fetch(run_uid)
            except Exception as exc:  # a store that fails must not stop the service
                logger.warning("bus: reading run %s from the store failed: %s: %s", run_uid, type(exc).__name__, exc)
                docs = None
            if docs is not None and _complete(docs, stop):
                return docs
            if time.monotonic() >= deadline:
                return None
            self._sleep(delay)
            delay = min(delay * 2, 1.0)

    def check_open(self, *, now: float | None = None) -> int:
        """Look for runs whose stop was lost: open and silent for ``stop_timeout`` seconds.

        A run whose stored copy has its stop document is filled and finished; the others
        stay open (the store may not have them yet).  Returns the number of runs finished.
        """
        now = time.monotonic() if now is None else now
        finished = 0
        for uid, run in list(self._runs.items()):
            # a silent run (a long count, a paused plan) may still be running: the store
            # is asked at most every stop_timeout seconds, and only the store decides
            if self._fetch is None or now - run.last_seen < self.stop_timeout:
                continue
            try:
                docs = self._fetch(uid)
            except Exception as exc:
                logger.warning("bus: reading run %s from the store failed: %s: %s", uid, type(exc).__name__, exc)
                docs = None
            run.last_seen = now
            if docs is None or not _complete(docs, None):
                continue
            self.gaps.runs_without_stop += 1
            self._gap(uid, run, None, kind="no stop")
            finished += 1
        return finished

    # ------------------------------------------------------------------ bookkeeping
    def _finish(self, run_uid: str, stop: dict | None) -> None:
        if stop is not None:
            self._forward("stop", stop)
        self._drop(run_uid)
        self._done.add(run_uid)

    def _drop(self, run_uid: str) -> None:
        run = self._runs.pop(run_uid, None)
        if run is not None:
            for desc in run.seqs:
                self._desc_run.pop(desc, None)

    def _forget_dup(self, run_uid: str) -> None:
        # the descriptors of a duplicate run are kept until its stop (no event follows a stop)
        self._dup_descs.difference_update(self._dup_runs.pop(run_uid, []))


def _append(items: list[str], uid: str) -> None:
    if len(items) < MAX_LISTED_RUNS:
        items.append(uid)


def _n_rows(name: str, doc: Mapping[str, Any]) -> int:
    if name == "event":
        return 1
    if name == "event_page":
        return len(doc.get("seq_num") or [])
    return 0


def _unpack_page(page: Mapping[str, Any]) -> list[dict]:
    """The events of an event page (uids are regenerated when missing)."""
    n = len(page.get("seq_num") or [])
    uids = page.get("uid") or [f"event-{page.get('descriptor')}-{s}" for s in page["seq_num"]]
    out = []
    for i in range(n):
        out.append(
            {
                "descriptor": page["descriptor"],
                "uid": uids[i],
                "seq_num": page["seq_num"][i],
                "time": page["time"][i],
                "data": {k: v[i] for k, v in page["data"].items()},
                "timestamps": {k: v[i] for k, v in page.get("timestamps", {}).items()},
                "filled": {k: v[i] for k, v in (page.get("filled") or {}).items()},
            }
        )
    return out


def _complete(docs: list[Document], stop: Mapping[str, Any] | None) -> bool:
    """Whether stored *docs* hold a run with its stop and all the events its stop counts."""
    stored_stop = next((d for name, d in docs if name == "stop" and d), None)
    if stored_stop is None:
        return False
    expected = dict((stop or stored_stop).get("num_events") or {})
    streams: dict[str, str] = {d["uid"]: d.get("name", "") for name, d in docs if name == "descriptor"}
    counts: dict[str, int] = {}
    for name, d in docs:
        if name in ("event", "event_page"):
            stream = streams.get(d.get("descriptor"), "")
            counts[stream] = counts.get(stream, 0) + _n_rows(name, d)
    return all(counts.get(stream, 0) >= int(n) for stream, n in expected.items())
