"""Run rarespot's batch work on a Ray cluster (``--ray [ADDRESS]``): the one home of the Ray glue.

Three commands use it:

- ``rarespot detect batch SOURCE --ray``: the scans go out in blocks to a pool of actors, each holding
  one model replica; the outcome of each scan (its CSV row, boxes and thumbnail) comes back to this
  process, the *driver*, in the order of the scans, and is written by the same code as a local run
  (:mod:`rarespot.detect.screen_batch`): the same CSV, JSONL, thumbnails, contact sheet and resume;
- ``rarespot screen score MODEL DATA --ray``: blocks of images go to actors holding the detector; the
  scores come back and the CSV is written here (:mod:`rarespot.screen.pipeline`);
- ``rarespot experiment PLAN --ray``: each (study, cell, seed) run is a Ray task with the plan's CPUs and
  GPUs; its row is appended to ``results.csv`` here as it finishes (:mod:`rarespot.experiment.runner`).

Workers need rarespot installed, at the driver's version (``pip install 'rarespot[ray]'``). Screening needs
no shared disk: the driver reads the scans and sends their bytes (unless ``shared_disk``), sends the model
file once as an object, and writes every output itself. A study's run folders are written where each run
runs (a shared disk keeps them together); its results CSV and report are written by the driver.

Ray is imported only inside these functions: without ``--ray``, nothing imports it.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from rarespot.errors import InputError, RarespotError

if TYPE_CHECKING:  # the CLI imports this module: no pydantic or numpy at import time
    from rarespot.detect.screen_batch import FlagRule
    from rarespot.detect.settings import InferenceSettings

INSTALL_HINT = "pip install 'rarespot[ray]'"
#: Scans per block sent to a screening worker (fewer when there are few scans per worker).
SCAN_BLOCK = 2
#: Images per block sent to a scoring worker: the autoencoder's batch, so the batches match a local run's.
IMAGE_BLOCK = 256
#: Blocks queued on each worker, so it never waits for the driver between two blocks.
DEPTH = 2
#: Seconds to wait for a TCP answer from a cluster address before saying it does not answer.
CONNECT_TIMEOUT = 5.0

RAY_HELP = (
    "Run on Ray: ADDRESS is auto (the cluster `ray start` made here), ray://HOST:10001 (Ray Client) or HOST:6379; "
    "bare --ray joins RAY_ADDRESS if set, else starts a local Ray on this machine. Outputs are written here. "
    "Needs " + INSTALL_HINT + "."
)
WORKERS_HELP = "With --ray: model replicas (default: as many as the cluster's CPUs hold, one CPU each)."

_ADDRESS = re.compile(r"^(auto|local|[a-z][a-z0-9+.-]*://\S+|[\w.\-\[\]:]+:\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide to run.

    address: None (``RAY_ADDRESS`` if set, else a new local Ray on this machine), ``"local"`` (always a new
        local Ray), ``"auto"`` (the cluster ``ray start`` made on this machine), ``"ray://host:10001"``
        (Ray Client) or ``"host:6379"`` (a cluster's GCS address, from one of its nodes).
    workers: model replicas (screening); default: as many as the cluster's CPUs (or GPUs) hold.
    cpus_per_worker / gpus_per_worker: what each replica reserves (GPUs default to 1 when the device is one).
    block_size: scans or images per block (default :data:`SCAN_BLOCK` / :data:`IMAGE_BLOCK`).
    shared_disk: workers read the scans at their own paths (a disk every node mounts at the same place)
        instead of the driver sending their bytes.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    block_size: int | None = None
    shared_disk: bool = False

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise RarespotError(f"--workers must be at least 1, got {self.workers}")
        if self.block_size is not None and self.block_size < 1:
            raise RarespotError(f"the block size must be at least 1, got {self.block_size}")
        if self.cpus_per_worker <= 0:
            raise RarespotError(f"CPUs per worker must be positive, got {self.cpus_per_worker}")


def settings_from_cli(ray: str | None, workers: int | None = None, **more) -> RaySettings | None:
    """The ``--ray [ADDRESS]`` option's value (``""`` when given bare) as settings; None without ``--ray``."""
    if ray is None:
        if workers is not None:
            raise RarespotError("--workers applies to --ray runs; add --ray (and a cluster address, if any)")
        return None
    return RaySettings(address=ray.strip() or None, workers=workers, **more)


def expand_bare_ray_option(args: list[str]) -> list[str]:
    """``--ray`` takes an optional ADDRESS: given bare (last, or followed by something that is not an
    address), it becomes ``--ray=`` so the option parser sees an empty value."""
    out = []
    for i, arg in enumerate(args):
        if arg == "--ray" and (i + 1 == len(args) or not _ADDRESS.match(args[i + 1])):
            out.append("--ray=")
        else:
            out.append(arg)
    return out


def require_ray():
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise RarespotError(f"--ray needs Ray, which is not installed here: {INSTALL_HINT} "
                            "(the same rarespot and Ray versions on every node of the cluster)") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    text = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def check_answers(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail within ``timeout`` seconds, naming the address, when nothing listens there
    (Ray itself retries a dead address for a minute or more)."""
    if address.lower() == "auto":
        return  # Ray finds it (and says so at once when there is none)
    target = _host_port(address)
    if target is None:
        raise RarespotError(f"--ray {address!r}: not a cluster address; use auto, ray://HOST:PORT or HOST:PORT")
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        raise RarespotError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); check the address and that the "
            "cluster's head node is up (`ray status` on it)"
        ) from None


def _token_auth_like_ray_start() -> None:
    """Send this machine's Ray token when joining a cluster, by the rule `ray start` uses for a head.

    Ray 2.5x turns token authentication on for `ray start` whenever a token is saved (~/.ray/auth_token,
    written by any earlier local ``ray.init``), but a driver joining by address sends it only when
    RAY_AUTH_MODE=token: a head started on this machine then refuses this machine's own commands with
    "Failed to connect". An explicit RAY_AUTH_MODE is left as it is.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


@contextmanager
def connected(settings: RaySettings):
    """Ray, connected as ``settings`` say; a Ray this call started or joined is left again at the end.
    An already initialised Ray (e.g. a test's ``ray.init``) is used as it is."""
    import logging

    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    address = settings.address or os.environ.get("RAY_ADDRESS") or None
    if address in (None, "local"):
        kwargs: dict[str, Any] = {"address": "local", "include_dashboard": False, "log_to_driver": False}
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a Ray of our own, for one command: no usage report
        if settings.workers:
            from rarespot.cpu import available_cores

            kwargs["num_cpus"] = max(available_cores(), math.ceil(settings.workers * settings.cpus_per_worker))
        where = "a local Ray"
    else:
        check_answers(address)
        kwargs = {"address": address} if "://" in address else {"address": address, "log_to_driver": False}
        where = f"the Ray cluster at {address}"
        _token_auth_like_ray_start()
    try:
        ray.init(logging_level=logging.WARNING, **kwargs)
    except Exception as exc:
        hint = ""
        if address not in (None, "local"):
            hint = ("; if the cluster uses token authentication, give this machine its token "
                    "(RAY_AUTH_MODE=token with RAY_AUTH_TOKEN, or the token in ~/.ray/auth_token)")
        raise RarespotError(f"cannot start or join {where}: {type(exc).__name__}: {exc}{hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _fit(ray, cpus: float, gpus: float) -> int:
    """How many workers of (cpus, gpus) the cluster holds at once."""
    total = ray.cluster_resources()
    fit = int(total.get("CPU", 0) // cpus) if cpus else 1 << 30
    if gpus:
        fit = min(fit, int(total.get("GPU", 0) // gpus))
    if fit < 1:
        raise RarespotError(
            f"the Ray cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs: not enough for one "
            f"worker of {cpus:g} CPUs and {gpus:g} GPUs"
        )
    return fit


def _pool_size(ray, settings: RaySettings, cpus: float, gpus: float, n_items: int) -> int:
    """Workers: ``--workers`` or what the cluster holds, never more than it holds (more would wait
    for room forever) nor than there are items."""
    fit = _fit(ray, cpus, gpus)
    return max(1, min(settings.workers or fit, fit, n_items))


def _retriable_errors(ray) -> tuple[type[BaseException], ...]:
    """Failures of the worker, not of the work: its block is done again elsewhere."""
    exc = ray.exceptions
    return tuple(getattr(exc, name) for name in ("RayActorError", "WorkerCrashedError", "ObjectLostError",
                                                  "NodeDiedError", "OwnerDiedError") if hasattr(exc, name))


class WorkerPool:
    """Ray actors of one class, each set up once (e.g. one model replica), mapped over blocks.

    ``worker_cls(spec, shipped)`` is a plain class with ``setup() -> dict`` (``{"error": exc}`` when it
    cannot start, ``{"pin": {...}}`` to settle the spec of all workers, e.g. the back-end it timed as the
    faster) and ``run(block) -> result``. ``shipped`` is sent once (ray.put) and
    shared by all workers. :meth:`map` gives the results in block order, as they come; a block whose
    worker died (a lost node, an out-of-memory kill) is given to a fresh worker and done again, so no
    result is lost or doubled.
    """

    def __init__(self, ray, worker_cls, spec: dict, shipped: Any = None, size: int = 1, cpus: float = 1.0,
                 gpus: float = 0.0, max_deaths: int | None = None):
        self.ray, self.spec, self.size = ray, dict(spec), max(1, int(size))
        self.remote_cls = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0)(worker_cls)
        try:
            self.shipped = ray.put(shipped)
        except Exception as exc:
            raise RarespotError(f"cannot send the model to the Ray workers ({type(exc).__name__}: {exc}); "
                                "give a model file") from None
        self.max_deaths = max_deaths if max_deaths is not None else 2 * self.size + 2
        self.deaths = 0
        self.actors: list = []
        self.retriable = _retriable_errors(ray)

    def __enter__(self) -> "WorkerPool":
        try:
            self._start(self.size)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        self.actors = []

    def _start(self, n: int) -> list:
        """Start ``n`` workers at once. The first pin (a setting one of them settled, e.g. the back-end it
        timed as faster) holds for all: a worker that settled otherwise is started again with it."""
        actors = [self.remote_cls.remote(self.spec, self.shipped) for _ in range(n)]
        self.actors.extend(actors)
        answers = self.ray.get([a.setup.remote() for a in actors])
        for answer in answers:
            if answer.get("error") is not None:
                raise answer["error"]
        pins = [a.get("pin") or {} for a in answers]
        first = next((pin for pin in pins if pin), {})
        self.spec.update(first)
        redo = [i for i, pin in enumerate(pins) if pin and pin != first]
        if redo:
            for i in redo:
                self.ray.kill(actors[i])
            self.actors = [a for a in self.actors if not any(a is actors[i] for i in redo)]
            fresh = [self.remote_cls.remote(self.spec, self.shipped) for _ in redo]
            self.actors.extend(fresh)
            for answer in self.ray.get([a.setup.remote() for a in fresh]):
                if answer.get("error") is not None:
                    raise answer["error"]
            for i, actor in zip(redo, fresh):
                actors[i] = actor
        return actors

    def _replace(self, dead, why: BaseException):
        self.deaths += 1
        if self.deaths > self.max_deaths:
            raise RarespotError(f"Ray workers died {self.deaths} times (last: {type(why).__name__}: {why}); stopping. "
                                "Every finished row is kept: run the same command again to resume") from None
        self.actors = [a for a in self.actors if a is not dead]
        return self._start(1)[0]

    def map(self, blocks: Iterable) -> Iterator:
        """Results of ``run(block)`` for each block, in block order."""
        ray = self.ray
        slots: deque = deque(a for a in self.actors for _ in range(DEPTH))
        running: dict = {}  # ObjectRef -> (index, actor, block ref)
        redo: deque = deque()  # (index, block ref) of blocks whose worker died
        results: dict[int, Any] = {}
        source = enumerate(blocks)
        exhausted, next_out, dead = False, 0, set()
        while True:
            while slots and (redo or not exhausted) and len(results) < 4 * self.size * DEPTH:
                if redo:
                    index, block_ref = redo.popleft()
                else:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        continue
                    index, block_ref = item[0], ray.put(item[1])
                actor = slots.popleft()
                running[actor.run.remote(block_ref)] = (index, actor, block_ref)
            while next_out in results:
                yield results.pop(next_out)
                next_out += 1
            if not running:
                if exhausted and not redo:
                    return
                continue
            (ref,), _ = ray.wait(list(running), num_returns=1)
            index, actor, block_ref = running.pop(ref)
            try:
                results[index] = ray.get(ref)
            except self.retriable as exc:
                redo.append((index, block_ref))
                if id(actor) not in dead:
                    dead.add(id(actor))
                    slots = deque(a for a in slots if a is not actor)
                    slots.extend([self._replace(actor, exc)] * DEPTH)
                continue
            slots.append(actor)


# ------------------------------------------------------------------------------------------ batch screening


def _scan_payload(path: Path, shared_disk: bool) -> tuple:
    """What a worker needs to read one scan: its path (shared disk), its bytes, or the error reading it gave."""
    if shared_disk:
        return ("path", str(path))
    try:
        return ("bytes", path.name, path.read_bytes())
    except OSError:
        from rarespot.io.images import read_image

        try:
            read_image(path)  # the message a local run gives for it (not found, not a file, ...)
        except InputError as exc:
            return ("error", exc.problem)
        return ("bytes", path.name, path.read_bytes())


def _as_driver_file(exc: Exception, scratch: Path, model_path: str | None) -> Exception:
    """An error about the worker's copy of the model file, told about the file the user gave."""
    if isinstance(exc, InputError) and model_path and exc.path is not None and exc.path.parent == scratch:
        return InputError(model_path, exc.problem)
    return exc


class ScanWorker:
    """One detection model replica on a Ray worker: screens blocks of scans with the local code."""

    def __init__(self, spec: dict, model):
        self.spec, self.model = spec, model

    def setup(self) -> dict:
        import tempfile

        from rarespot.detect.screen_batch import _load_predictor

        try:
            self.scratch = Path(tempfile.mkdtemp(prefix="rarespot-ray-"))
            model = self.model
            if isinstance(model, tuple) and model and model[0] == "file":  # ("file", name, bytes)
                model = self.scratch / model[1]
                model.write_bytes(self.model[2])
            inference = self.spec["inference"]
            if inference.threads is None:
                inference = inference.replace(threads=max(1, int(self.spec["cpus"])))
            self.predictor = _load_predictor(model, inference)
            self.class_names = list(self.predictor.class_names)
            self.spec["flag"].check(self.class_names, self.spec.get("model_path"))
        except Exception as exc:
            return {"error": _as_driver_file(exc, self.scratch, self.spec.get("model_path"))}
        chosen = getattr(getattr(self.predictor, "backend", None), "runtime", None)
        if inference.backend == "auto" and chosen in ("openvino", "onnxruntime"):
            # `auto` times OpenVINO against onnxruntime on each machine: the first worker's choice is
            # every worker's, so a scan gets the same boxes whichever worker screens it.
            return {"pin": {"inference": self.spec["inference"].replace(backend=chosen)}}
        return {}

    def run(self, block: list[tuple[str, tuple]]) -> list[tuple]:
        from rarespot.detect.screen_batch import _load_scan, _screen_one
        from rarespot.io.images import decoder_messages, read_image

        prepare = getattr(self.predictor, "prepare", None)
        out = []
        for name, payload in block:
            def load(payload=payload):
                if payload[0] == "error":
                    raise InputError(None, payload[1])
                if payload[0] == "path":
                    return _load_scan(Path(payload[1]), prepare, read_image, decoder_messages)
                path = self.scratch / payload[1]
                path.write_bytes(payload[2])
                try:
                    return _load_scan(path, prepare, read_image, decoder_messages)
                finally:
                    path.unlink(missing_ok=True)

            out.append(_screen_one(name, load, self.predictor, self.class_names, self.spec["conf"],
                                   self.spec["flag"], self.spec["thumb_px"]))
        return out


def gpus_of_device(device: str | None) -> float:
    """GPUs a device string names: cpu (or none) 0, ``0`` or ``cuda:0`` 1, ``0,1`` 2."""
    text = str(device or "cpu").lower()
    if text.startswith("cpu") or text in ("mps", "none", ""):
        return 0.0
    return float(len([d for d in text.replace("cuda:", "").split(",") if d.strip()]) or 1)


@contextmanager
def screen_on_ray(todo: list[tuple[Path, str]], model, settings: RaySettings, *, conf: float, flag: FlagRule,
                  thumb_px: int, inference: InferenceSettings):
    """Yields ``(outcomes, label)``: the outcome of each scan of ``todo``, in its order, screened on Ray
    (see :func:`rarespot.detect.screen_batch._screen_one`), and a progress label."""
    from rarespot.detect.backends import runnable_model_file

    if isinstance(model, (str, Path)):
        path = runnable_model_file(model, inference)  # a .pt is exported to ONNX here, once, not on each worker
        shipped: Any = ("file", path.name, path.read_bytes())
    else:
        shipped = model  # a predictor object: sent as it is (it must pickle)
    cpus = settings.cpus_per_worker
    gpus = settings.gpus_per_worker if settings.gpus_per_worker is not None else min(
        1.0, gpus_of_device(inference.device))
    spec = {"inference": inference, "conf": conf, "flag": flag,
            "thumb_px": thumb_px, "cpus": cpus, "model_path": str(model) if isinstance(model, (str, Path)) else None}
    with connected(settings) as ray:
        size = _pool_size(ray, settings, cpus, gpus, len(todo))
        block = settings.block_size or max(1, min(SCAN_BLOCK, math.ceil(len(todo) / size)))
        blocks = ([(name, _scan_payload(path, settings.shared_disk)) for path, name in todo[i: i + block]]
                  for i in range(0, len(todo), block))
        with WorkerPool(ray, ScanWorker, spec, shipped, size=size, cpus=cpus, gpus=gpus) as pool:
            outcomes = (outcome for done in pool.map(blocks) for outcome in done)
            yield outcomes, f"screening on Ray ({pool.size} workers)"


# ------------------------------------------------------------------------------------------ anomaly scoring


class ScoreWorker:
    """One screening detector (autoencoder or patch features) on a Ray worker: scores blocks of images."""

    def __init__(self, spec: dict, model_bytes: bytes):
        self.spec, self.model_bytes = spec, model_bytes

    def setup(self) -> dict:
        import tempfile

        from rarespot.screen.detectors import load_detector

        scratch = Path(tempfile.mkdtemp(prefix="rarespot-ray-"))
        try:
            path = scratch / self.spec["name"]
            path.write_bytes(self.model_bytes)
            self.detector = load_detector(path)
            self.detector.config_.train.threads = max(1, int(self.spec["cpus"]))  # its share of the node
        except Exception as exc:
            return {"error": _as_driver_file(exc, scratch, self.spec.get("model_path"))}
        return {}

    def run(self, images):
        import warnings

        from rarespot.screen.data import MixedInputWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MixedInputWarning)  # the driver has said it, for all the images
            return self.detector.analyze(images)


def _concat_scores(parts: list):
    """Per-image score dataclasses (ScreenScores, PatchScores) of consecutive blocks as one."""
    import numpy as np

    merged = {}
    for f in fields(parts[0]):
        values = [getattr(p, f.name) for p in parts]
        merged[f.name] = None if any(v is None for v in values) else np.concatenate(values)
    return replace(parts[0], **merged)


def analyze_on_ray(model: str | Path, images, settings: RaySettings, progress: bool = True):
    """``detector.analyze(images)`` of the screening model in ``model`` (its file or folder), on Ray."""
    import sys

    from rarespot.progress import ProgressBar
    from rarespot.screen.detectors import MODEL_FILE

    path = Path(model)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise InputError(path, "model file not found")
    n = len(images)
    cpus = settings.cpus_per_worker
    gpus = settings.gpus_per_worker or 0.0
    spec = {"name": path.name, "cpus": cpus, "model_path": str(path)}
    with connected(settings) as ray:
        size = _pool_size(ray, settings, cpus, gpus, n)
        block = settings.block_size or max(1, min(IMAGE_BLOCK, math.ceil(n / size)))
        starts = range(0, n, block)
        # A bar on a terminal that goes when done, and no lines in a log: the output stays the local run's.
        with WorkerPool(ray, ScoreWorker, spec, path.read_bytes(), size=size, cpus=cpus, gpus=gpus) as pool, ProgressBar(
            n, f"scoring on Ray ({pool.size} workers)", progress, transient=True, stream=sys.stderr, log_every=None,
        ) as bar:
            parts = []
            for start, part in zip(starts, pool.map(images[i: i + block] for i in starts)):
                parts.append(part)
                bar.update(completed=min(n, start + block))
    return _concat_scores(parts)


# ------------------------------------------------------------------------------------------ studies


def resources_for(plan, cell, seed: int) -> tuple[float, float]:
    """(CPUs, GPUs) one run of ``cell`` reserves: the cell's ``resources``, else the plan's, else its
    ``threads`` (1 if unset) and one GPU per device its ``device`` names (``0,1`` is 2; cpu is 0)."""
    wanted = plan.resources.model_dump()
    if cell.resources is not None:
        wanted.update({k: v for k, v in cell.resources.model_dump().items() if v is not None})
    config = plan.config_for(cell, seed)
    cpus = wanted["cpus"] if wanted["cpus"] is not None else float(config.get("threads") or 1)
    gpus = wanted["gpus"] if wanted["gpus"] is not None else gpus_of_device(config.get("device"))
    return float(cpus), float(gpus)


def _study_task(run_fn, job):
    """One (study, cell, seed) run on a Ray worker; returns its row and the node it ran on."""
    import ray

    from rarespot.experiment.runner import run_one

    return run_one(job, run_fn), ray.get_runtime_context().get_node_id()


def run_plan_on_ray(plan, out_dir: str | Path, run_fn, settings: RaySettings, retry_failed: bool = False,
                    studies=None) -> Path:
    """:func:`rarespot.experiment.runner.run_plan` with each run a Ray task.

    A run reserves the CPUs and GPUs of :func:`resources_for`. Runs that read
    another run's output (``model_from``, a ``score:@`` remap) are sent once that run is done, to the node it
    ran on (its folder is there even without a shared disk); if it failed they fail with the reason, as
    locally. Each row is appended to ``results.csv`` here, under its file lock, as the run finishes.
    """
    from rarespot.experiment import runner
    from rarespot.progress import ProgressBar

    out_dir = Path(out_dir).resolve()  # the workers' working folders differ from ours
    results_path, todo, planned = runner.pending_runs(plan, out_dir, retry_failed, studies)
    if not todo:
        return results_path
    runs = {runner.run_key(s.name, c.slug, seed): (s, c, seed) for s, c, seed in todo}

    def sources(key) -> list:
        _, cell, seed = runs[key]
        return [runner.run_key(s.name, c.slug, seed) for s, c in runner.run_sources(plan, cell)]

    with connected(settings) as ray, ProgressBar(
        len(planned), f"plan {plan.name} on Ray", unit="runs", completed=len(planned) - len(todo), elapsed=True,
        time_left=False,
    ) as bar:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task_fn = ray.remote(_study_task)
        running: dict = {}  # ObjectRef -> run key
        waiting: dict = {}  # run key -> keys of the runs it waits for
        outcome: dict = {}  # run key -> (done?, node) of the runs finished by this call

        def describe() -> None:
            bar.update(label=f"{plan.name} on Ray: {len(running)} running, {len(waiting)} waiting")

        def record(key, row) -> None:
            runner.append_result(results_path, row)
            bar.advance()
            if row["status"] != "done":
                study, cell, seed = runs[key]
                bar.print(f"[red]failed[/] {study.name}/{cell.label} seed {seed}: {row['error']}")

        def submit(key, node=None) -> None:
            study, cell, seed = runs[key]
            job = runner.job_for(plan, out_dir, study, cell, seed)
            cpus, gpus = resources_for(plan, cell, seed)
            if not gpus and job.config.get("threads") is None:
                job.config["threads"] = max(1, int(cpus))  # its share of the node, not every core
            options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 1}
            if node is not None:
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
            running[task_fn.options(**options).remote(run_fn, job)] = key

        def finished(key, ok: bool, node) -> None:
            outcome[key] = (ok, node)
            for other in [k for k, wait in waiting.items() if key in wait]:
                waiting[other].discard(key)
                if not ok:
                    del waiting[other]
                    blocked(other, key)
                elif not waiting[other]:
                    del waiting[other]
                    submit(other, node)

        def blocked(key, source_key) -> None:
            study, cell, seed = runs[key]
            job = runner.job_for(plan, out_dir, study, cell, seed)
            record(key, runner.run_one(job, run_fn, blocked=runner.blocked_message(plan, cell, seed, source_key)))
            finished(key, False, None)

        try:
            done_before = runner.finished_keys(results_path)
            for key in runs:
                if key in outcome:
                    continue  # already failed with a source
                wait, node, failed = set(), None, None
                for source in sources(key):
                    if source in outcome:
                        ok, where = outcome[source]
                        failed, node = (failed if ok else source), (where or node)
                    elif source in runs:
                        wait.add(source)
                    elif source not in done_before:
                        failed = source
                if failed is not None:
                    blocked(key, failed)
                elif wait:
                    waiting[key] = wait
                else:
                    submit(key, node)
            describe()
            while running:
                (ref,), _ = ray.wait(list(running), num_returns=1)
                key = running.pop(ref)
                try:
                    row, node = ray.get(ref)
                except Exception as exc:  # the task itself died (its node was lost, twice): a failed run
                    study, cell, seed = runs[key]
                    row, node = {"study": study.name, "cell": cell.slug, "seed": seed, "status": "failed",
                                 "run_dir": str(runner.study_relative_run_dir(study, cell, seed)),
                                 "error": f"the Ray task failed: {type(exc).__name__}: {exc}"}, None
                record(key, row)
                finished(key, row["status"] == "done", node)
                if not running and waiting:  # what still waits can never start (runs that wait for each other)
                    for other in list(waiting):
                        if other in waiting:
                            source = next(iter(waiting.pop(other)))
                            blocked(other, source)
                describe()
        finally:
            for ref in running:  # Ctrl-C: stop the runs still going; they start afresh on the next call
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
    return results_path
