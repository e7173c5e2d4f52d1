"""What travels through Dask: a job on its way to a worker, its events and its end.

A job is encoded where it is submitted, as for a local daemon (``warmd.client.jobspec``:
the user's modules by value, references to installed code), except that its large
buffers are not put in memfds, which cannot leave the machine: they travel as Dask
carries buffers (out of band, uncopied where it can), and the Dask worker puts them in
a memfd for its own daemon. Its end comes back the same way: the result's pickle and
buffers, unpickled only by the client that asked, which has the user's modules.
"""
from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from typing import Any

from .. import oob
from ..client import events, jobspec, outcome
from ..client.events import Event, Finished
from ..errors import JobLost


@dataclass
class CarriedJob:
    """A ``JobRequest`` without descriptors: its buffers are memoryviews."""
    kind: str
    name: str
    payload: bytes
    fields: dict[str, Any]
    modules: list[jobspec.ModuleSource]
    buffers: list[memoryview] = field(default_factory=list)
    device: int | None = None

    @classmethod
    def call(cls, fn: Any, args: tuple, kwargs: dict, modules: jobspec.UserModules) -> "CarriedJob":
        needs: list[str] = []
        payload, kept = oob.pickle_out(jobspec.pickler(needs), (fn, tuple(args), dict(kwargs)))
        if needs:
            raise TypeError("warmd.ref() and futures of a local warmd.Client cannot be arguments "
                            "of a job on Dask: pass the value (future.result()) instead")
        return cls("call", jobspec.call_name(fn), payload, {"paths": modules.sys_path()},
                   modules.manifest(), kept)

    @classmethod
    def of(cls, request: jobspec.JobRequest) -> "CarriedJob":
        """A script, module or code job (they carry no buffers and no descriptors)."""
        if request.files:
            raise TypeError("a job on Dask cannot take descriptors (stdin= or memfd buffers)")
        return cls(request.kind, request.name, request.payload, dict(request.fields),
                   list(request.modules))

    def with_options(self, options: jobspec.JobOptions) -> "CarriedJob":
        if options.stdin is not None:
            raise TypeError("stdin= cannot reach a job on Dask: a descriptor does not leave its "
                            "machine (pass the data as an argument instead)")
        self.fields.update(options.fields())
        if options.name is not None:
            self.name = str(options.name)
        return self

    def request(self) -> jobspec.JobRequest:
        """The request for the Dask worker's own daemon: buffers copied once into a memfd."""
        pickled = oob.carry(self.payload, self.buffers)
        fields = dict(self.fields)
        if pickled.buffers:
            fields["buffers"] = pickled.buffers
        return jobspec.JobRequest(self.kind, self.name, pickled.payload, fields, self.modules,
                                  files=pickled.files, buffer_bytes=pickled.buffer_bytes)


@dataclass
class CarriedEnd:
    """A job's end as its Dask task returns it: the ``Finished`` record without
    descriptors, the result's buffers as memoryviews, and how many events it sent."""
    state: str
    exit_status: int
    error: dict[str, str] | None
    payload: bytes
    info: dict[str, Any]
    buffers: list[memoryview]
    events: int                 # how many it sent as they came
    worker: str = ""            # the Dask worker's address
    tail: list[dict] = field(default_factory=list)  # the events it had not sent yet


    @classmethod
    def of(cls, end: Finished, sent: int, worker: str, tail: list[dict]) -> "CarriedEnd":
        info = {k: v for k, v in end.info.items() if k != "buffers"}
        views = oob.mapped(end.info.get("buffers"), end.files) if end.state == "succeeded" else []
        return cls(end.state, end.exit_status, end.error, end.payload, info, views, sent, worker, tail)

    @classmethod
    def refused(cls, state: str, message: str, error_type: str, worker: str) -> "CarriedEnd":
        """An end the Dask task made itself, without running the job (cancelled before it
        started, or its worker's daemon could not take it)."""
        return cls(state, 0, {"type": error_type, "message": message}, b"", {}, [], 0, worker, [])

    def value(self, key: str) -> Any:
        """The return value; raises what the job raised, as ``warmd.Client`` would."""
        if self.state == "succeeded":
            if not self.payload:
                return None
            import cloudpickle
            return cloudpickle.loads(self.payload, buffers=self.buffers)
        if self.state == "lost":
            raise JobLost(key, (self.error or {}).get("message") or f"job {key} was lost")
        return outcome.result_of(Finished(key, self.state, self.exit_status, self.error,
                                          self.payload, self.info))


def _frames(carried: CarriedJob | CarriedEnd) -> tuple[dict, list]:
    # Dask's serializer family for these two: the fields pickled, the buffers as frames of
    # their own, which Dask sends as they are (its pickle path copies them in-band, read-only,
    # where it pickles with protocol 4).
    fields = {k: v for k, v in carried.__dict__.items() if k != "buffers"}
    return {}, [pickle.dumps(fields, protocol=5), *carried.buffers]


def _rebuild(cls: type, frames: list) -> Any:
    made = cls.__new__(cls)
    made.__dict__.update(pickle.loads(frames[0]),
                         buffers=[memoryview(f) if not memoryview(f).readonly else memoryview(bytearray(f))
                                  for f in frames[1:]])
    return made


def _register() -> None:
    from distributed.protocol import dask_deserialize, dask_serialize
    for cls in (CarriedJob, CarriedEnd):
        dask_serialize.register(cls)(_frames)
        dask_deserialize.register(cls)(lambda header, frames, cls=cls: _rebuild(cls, frames))


_register()


# -- events, as Dask's log_event carries them (msgpack: plain values only) ------------------

_KINDS = {cls.__name__: cls for cls in (events.Output, events.Log, events.Progress, events.ChildProgress,
                                         events.StateChange, events.Warming, events.Gap,
                                         events.Rerun)}


def event_message(key: str, event: Event) -> dict[str, Any]:
    fields = dataclasses.asdict(event)
    if "data" in fields:  # output arrives as a view of the frame it came in: msgpack wants bytes
        fields["data"] = bytes(fields["data"])
    return {"key": key, "type": type(event).__name__, **fields}


def event_of(message: dict[str, Any]) -> Event | None:
    """The event a message carries, its ``job`` the Dask key (None for an unknown type)."""
    kind = _KINDS.get(message.get("type", ""))
    if kind is None:
        return None
    names = {f.name for f in dataclasses.fields(kind)}
    values = {k: v for k, v in message.items() if k in names}
    values["job"] = message["key"]
    return kind(**values)
