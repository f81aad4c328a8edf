"""Which adapter answers: the version an alias (@champion) points to now, followed.

The follower asks the registry where the alias points every `serving.poll_seconds` (the
pipeline, the CLI and a person in the MLflow UI all move it through the registry). When it moved,
the new version's adapter is downloaded and loaded, on the base that version was trained on
(its `base_model` tag: a rollback across a rebase brings its base back too), beside the one that
is answering; only once it loaded is it swapped in, by replacing one reference. A request holds
the `Loaded` it started with, so it finishes on that adapter; a version that fails to download
or load leaves the old one answering, and the failure is logged and retried at the next poll.

@champion deleted leaves its last version answering (a server with no model helps no one);
@challenger deleted (the canary rejected or promoted) stops its share of the traffic.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flows import workspace as wsp
from pipelines.common import params as params_mod

log = logging.getLogger("nightshift.serving")


class InFlight:
    """How many requests are answering with one version (vLLM's old adapter is unloaded at 0)."""

    def __init__(self):
        self.count, self._lock = 0, threading.Lock()

    def __enter__(self):
        with self._lock:
            self.count += 1

    def __exit__(self, *exc):
        with self._lock:
            self.count -= 1


@dataclass(frozen=True)
class Loaded:
    """One version, ready to answer: its base with its adapter, in this process (`model`,
    `tokenizer`) or in vLLM (`engine_name`, the adapter's name there)."""
    version: str
    base_model: str
    model: object = field(default=None, repr=False)
    tokenizer: object = field(default=None, repr=False)
    engine_name: str | None = None
    loaded_at: float = field(default_factory=time.time)
    # One answer at a time per model in this process: generation on a CPU uses every core already.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    in_flight: InFlight = field(default_factory=InFlight, repr=False)


class Follower:
    def __init__(self, ws: Path, p: params_mod.Params, scratch: Path, alias: str = "champion"):
        """`scratch`: a folder of the server's own for the downloaded adapters (outside the
        workspace, whose cycles commit what is in it)."""
        self.ws, self.p, self.scratch, self.alias = ws, p, scratch, alias
        self.current: Loaded | None = None
        self.last_error: str | None = None
        self._check = threading.Lock()   # one check (and load) at a time

    def adapter_dir(self, version: str) -> Path:
        """Where a version's adapter files go: the server's scratch folder, or with vLLM
        `serving.vllm_adapter_dir` when set (a folder the vLLM server reads)."""
        root = self.scratch
        if self.p.serving.engine == "vllm" and self.p.serving.vllm_adapter_dir:
            root = Path(self.p.serving.vllm_adapter_dir)
        return root / self.alias / version

    def load(self, version: str, source: str, tags: dict) -> Loaded:
        """Download and load one version beside the one answering."""
        from flows import rebase as rb
        from pipelines.common import modeling
        from registry import mlflow_registry as reg

        adapter = self.adapter_dir(version)
        reg.download_adapter(self.p.registry, source, adapter)
        named = rb.version_base(self.p, tags)
        if self.p.serving.engine == "vllm":
            from flows.serving import vllm_engine

            return Loaded(version=version, base_model=named,
                          engine_name=vllm_engine.load(self.p, version, adapter, named))
        base = wsp.model_path(self.ws, named)
        model = modeling.load_with_adapter(base, self.p.train.quantization, adapter, trainable=False)
        model.eval()
        return Loaded(version=version, base_model=named, model=model,
                      tokenizer=modeling.load_tokenizer(base))

    def retire(self, old: Loaded) -> None:
        """Free a version that no longer answers: its files now (its requests in flight hold the
        loaded model), or with vLLM its adapter there once those requests finished."""
        files = self.adapter_dir(old.version)
        if old.engine_name is None:
            shutil.rmtree(files, ignore_errors=True)
            return
        from flows.serving import vllm_engine

        vllm_engine.unload_when_idle(self.p, old.engine_name, lambda: old.in_flight.count > 0,
                                     then=lambda: shutil.rmtree(files, ignore_errors=True))

    def check(self) -> bool:
        """Follow the alias once: True when another version now answers."""
        from registry import mlflow_registry as reg

        with self._check:
            target = reg.resolve_alias(self.p.registry, self.alias)
            if target is None and self.current and self.alias != reg.CHAMPION:
                log.info("@%s is gone: version %s stops answering", self.alias, self.current.version)
                old, self.current = self.current, None
                self.retire(old)
                return True
            if target is None or (self.current and self.current.version == target.version):
                return False
            try:
                loaded = self.load(target.version, target.source, target.tags)
            except Exception as exc:   # a broken version never leaves the server without a model
                self.last_error = f"version {target.version} did not load: {type(exc).__name__}: {exc}"
                log.error("%s; version %s keeps answering", self.last_error,
                          self.current.version if self.current else "none")
                return False
            previous, self.current, self.last_error = self.current, loaded, None
            log.info("@%s is version %s (on %s): it answers from now on%s", self.alias,
                        loaded.version, loaded.base_model,
                        f", instead of version {previous.version}" if previous else "")
            if previous:
                self.retire(previous)
            return True

    def follow(self, stop: threading.Event) -> None:
        """Check every `serving.poll_seconds` until `stop` is set; a registry that does not
        answer is logged and asked again next time."""
        while not stop.wait(self.p.serving.poll_seconds):
            try:
                self.check()
            except Exception as exc:
                log.error("the registry did not answer (%s: %s); asking again in %s s",
                          type(exc).__name__, exc, self.p.serving.poll_seconds)
