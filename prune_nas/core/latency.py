"""Measured inference latency of a genome's model, cached per machine.

FLOPs are what the paper counts; latency is what a deployment pays, and the two need not move together
(a pruned ResNet with many thin layers can save FLOPs and no time). :func:`measure` builds the genome, warms
it up, and times ``model(x)`` with ``torch.utils.benchmark.Timer`` in ``repeats`` blocks, each of enough calls
to last about 10 ms; the result is the median time per call and its spread (interquartile range), plus the
throughput at that batch size.

Results are cached in ``$PRUNE_NAS_HOME/latency/cache.json`` (else ``artifacts/latency/``) under a key of the
genome key, device name (the CPU model or GPU name, not just ``cpu``), torch version, batch size, dtype and
thread count, so a search never measures one architecture twice on one machine. Workers on one machine share
the file; it is rewritten atomically, and two workers that write at once can lose one entry (measured again
later), never corrupt the file.

A measurement is only as good as its noise: :func:`compare` says whether two latencies differ by more than
their spreads, and the CLI prints that instead of a difference the noise could explain. Sparse genomes run as
their dense model (masked weights are zeros, and dense kernels do not skip zeros), so sparsity saves no
measured time here.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prune_nas.core.errors import UserError

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome

DTYPES = ("float32", "float16", "bfloat16")
BLOCK_S = 0.01  # each timed block runs enough calls to last about this long (timer resolution)
CACHE_FORMAT = "prune-nas.latency-cache"


@dataclass(frozen=True)
class Latency:
    """One measurement: time per forward call of a batch, in milliseconds."""

    genome_key: str
    device: str  # "cpu", "cuda:0", ...
    device_name: str  # "AMD EPYC 7B13", "NVIDIA H200", ...
    torch: str
    batch: int
    dtype: str
    threads: int
    median_ms: float
    p25_ms: float
    p75_ms: float
    repeats: int  # timed blocks
    calls_per_block: int
    cached: bool = False

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms

    @property
    def spread(self) -> float:
        """Interquartile range as a fraction of the median: 0.05 means +-2.5% around it."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else math.inf

    @property
    def throughput(self) -> float:
        """Images per second at this batch size."""
        return self.batch * 1000.0 / self.median_ms if self.median_ms > 0 else math.inf

    @property
    def key(self) -> str:
        return cache_key(self.genome_key, self.device_name, self.torch, self.batch, self.dtype, self.threads)

    def to_dict(self) -> dict:
        return {**asdict(self), "iqr_ms": self.iqr_ms, "spread": self.spread, "throughput": self.throughput}

    def text(self) -> str:
        """``1.234 ms (IQR 0.020 ms, 1.6%), 810 img/s``."""
        return (f"{self.median_ms:.3f} ms (IQR {self.iqr_ms:.3f} ms, {self.spread:.1%} of the median; "
                f"{self.repeats} blocks of {self.calls_per_block}), {self.throughput:,.0f} img/s")


def cache_key(genome_key: str, device_name: str, torch_version: str, batch: int, dtype: str,
              threads: int) -> str:
    """SHA-256 of everything a latency depends on besides the machine's load."""
    parts = {"genome": genome_key, "device": device_name, "torch": torch_version, "batch": int(batch),
             "dtype": dtype, "threads": int(threads)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def device_name(device: str = "cpu") -> str:
    """What the device is, so that caches and reports name the hardware: the CPU model or the GPU's name."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine() or "cpu"
    return dev.type


def default_cache_path() -> Path:
    from prune_nas.core.paths import output_dir

    return output_dir("latency", "cache.json")


def read_cache(path: Path) -> dict[str, dict]:
    """The cache's entries; a missing or unreadable file is an empty cache (it only saves time)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return {}
    if not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def remember(path: Path, entry: Latency) -> None:
    """Add ``entry`` to the cache file at ``path`` (re-read first, written atomically)."""
    from prune_nas.core.atomic import atomic_write

    entries = read_cache(path)  # re-read: another worker may have added entries since
    entries[entry.key] = {k: v for k, v in asdict(entry).items() if k != "cached"}
    text = json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1, sort_keys=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _from_entry(entry: dict) -> Latency | None:
    try:
        return Latency(**{k: entry[k] for k in Latency.__dataclass_fields__ if k != "cached"}, cached=True)
    except (KeyError, TypeError):
        return None


def measure(genome: Genome, *, device: str = "cpu", batch: int = 1, dtype: str = "float32",
            threads: int | None = None, repeats: int = 20, warmup: int = 3, cache: bool = True,
            cache_path: str | Path | None = None) -> Latency:
    """Median forward latency of ``genome``'s model (eval mode, ``torch.inference_mode``) on ``device`` for an
    input batch of ``batch`` images, or the cached figure for the same key on this machine.

    ``threads``: torch's intra-op threads while timing (default: torch's current setting). ``repeats``: timed
    blocks (at least 3, for a spread).
    """
    import torch

    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch size must be an integer >= 1, got {batch!r}")
    if repeats < 3:
        raise UserError(f"repeats must be >= 3 (a spread needs several blocks), got {repeats}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r}: CUDA is not available on this machine")
    threads = int(threads) if threads is not None else torch.get_num_threads()
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    name = device_name(str(dev))
    key = cache_key(genome.key, name, torch.__version__, batch, dtype, threads)
    path = Path(cache_path) if cache_path is not None else default_cache_path()
    if cache:
        hit = read_cache(path).get(key)
        found = _from_entry(hit) if isinstance(hit, dict) else None
        if found is not None:
            return found
    result = _time(genome, dev, name, batch, dtype, threads, repeats, warmup)
    if cache:
        remember(path, result)
    return result


def _time(genome: Genome, dev, name: str, batch: int, dtype: str, threads: int, repeats: int,
          warmup: int) -> Latency:
    import logging

    import torch

    # torch.utils.benchmark imports cpp_extension, which warns about CUDA_HOME on machines without CUDA.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    from prune_nas.core.builder import build

    torch_dtype = getattr(torch, dtype)
    # Masks change no arithmetic at inference (masked weights are zeros in a dense kernel).
    model = build(genome, masks=False).eval().to(device=dev, dtype=torch_dtype)
    x = torch.randn(batch, genome.in_channels, genome.input_size, genome.input_size, device=dev,
                    dtype=torch_dtype)
    timer = Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads)
    before = torch.get_num_threads()
    try:
        with torch.inference_mode():
            torch.set_num_threads(threads)
            for _ in range(max(warmup, 1)):
                model(x)
            one = timer.timeit(1).median  # the calls per block follow from one call's time
            calls = max(1, math.ceil(BLOCK_S / max(one, 1e-9)))
            times = [timer.timeit(calls).median for _ in range(repeats)]
    finally:
        torch.set_num_threads(before)
    q1, med, q3 = statistics.quantiles(times, n=4, method="inclusive")
    ms = 1000.0
    return Latency(genome.key, str(dev), name, torch.__version__, batch, dtype, threads, med * ms, q1 * ms,
                   q3 * ms, repeats, calls)


@dataclass(frozen=True)
class Comparison:
    """``candidate`` against ``reference`` (same batch, device, dtype, threads)."""

    removed: float  # fraction of the reference's latency removed (negative: slower)
    difference_ms: float
    noise_ms: float  # the larger of the two interquartile ranges
    resolved: bool  # the difference is larger than the noise

    def text(self) -> str:
        if not self.resolved:
            return (f"not resolved: the difference ({self.difference_ms:+.3f} ms) is within the measurement "
                    f"noise ({self.noise_ms:.3f} ms IQR)")
        return f"{-self.removed:+.1%} ({self.difference_ms:+.3f} ms; noise {self.noise_ms:.3f} ms IQR)"


def compare(candidate: Latency, reference: Latency) -> Comparison:
    """Whether ``candidate`` is measurably faster or slower than ``reference``: the difference of the medians
    must exceed the larger interquartile range, else the ranking is noise."""
    same = ("device_name", "batch", "dtype", "threads", "torch")
    differ = [f for f in same if getattr(candidate, f) != getattr(reference, f)]
    if differ:
        raise ValueError(f"latencies measured under different settings ({', '.join(differ)}) do not compare")
    diff = candidate.median_ms - reference.median_ms
    noise = max(candidate.iqr_ms, reference.iqr_ms)
    return Comparison(-diff / reference.median_ms, diff, noise, abs(diff) > noise)


def profile(genome: Genome, reference: Genome | None = None, batches: tuple[int, ...] = (1, 64),
            **kw) -> dict:
    """What ``prune-nas genome info --latency`` prints, as plain data: ``genome``'s latency at each batch size
    (``measure``'s keyword arguments pass through) and, with a ``reference``, its latency there and whether
    the difference is larger than the noise."""
    out: dict = {"batches": [], "device_name": None}
    for b in batches:
        mine = measure(genome, batch=b, **kw)
        row = {"batch": b, "latency": mine.to_dict()}
        if reference is not None:
            ref = measure(reference, batch=b, **kw)
            c = compare(mine, ref)
            row["reference"] = ref.to_dict()
            row["vs_reference"] = {**asdict(c), "text": c.text()}
        out["device_name"] = mine.device_name
        out["batches"].append(row)
    return out
