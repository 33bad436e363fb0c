#!/usr/bin/env python
"""Our training engine vs a hand-written diffusers + accelerate loop, interleaved in one process.

Both sides train the same random-init PixArt Sigma transformer on the same demo images, with latents and T5
embeddings computed before anything is timed, AdamW, fp32, batch 2, on the CPU:

* ``small``: 64 px images, the ``tiny`` flavour (4 heads x 16, 2 layers).
* ``big``: 128 px images, 8 heads x 32, 4 layers (about 4.8 M transformer parameters).

Per-step time of the engine is the median gap between consecutive ``training.status`` events (after a warm-up),
read from the job's ``events.jsonl``; the hand loop times each step with ``time.perf_counter``. Runs alternate
(ours, hand, ours, hand) so drift in the machine's speed hits both sides alike.

It also measures, in fresh subprocesses, the wall time from ``Popen`` to the first optimizer step and the peak RSS
of ``simpletuner train --config FILE`` and of a hand-written script doing the same work.

Usage::

    python bench/train_loop.py            # full run, about a minute on two quiet cores
    python bench/train_loop.py --quick    # smoke run: small config only, few steps
    python bench/train_loop.py --json results.json

Only the standard library is imported at module level, so the hand-loop subprocess (``--hand-subprocess``) pays
for exactly the imports a hand-written script needs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("SIMPLETUNER_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGET_SPEED = 0.95  # ours must reach 95% of the hand loop's steps/s
MARKER = "BENCH_MARK"  # lines the hand subprocess prints: MARKER <stage> <time.time()>
SEED = 1234
BATCH = 2
LR = 1e-4
TEXT_LEN = 16
BUSY_LIMIT = 0.25  # CPU cores used by other processes during a timed run before it counts as disturbed

# Started with ``python -S -c``: forks the real command and writes its peak RSS (KiB) to argv[1]. Measuring the
# child of a small process matters: a child exec'd straight from this (big) process inherits our peak RSS as
# its ru_maxrss floor on Linux, so every subprocess would report at least this process's size.
RSS_LAUNCHER = """
import os, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as fh:
    fh.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass(frozen=True)
class BenchConfig:
    name: str
    pixels: int
    steps: int
    heads: int | None = None  # None: the tiny flavour's own transformer
    head_dim: int | None = None
    layers: int | None = None


@dataclass
class Prepared:
    config: BenchConfig
    model_dir: Path
    images_dir: Path
    dataloader: Path
    transformer_params: int


@dataclass
class SideResult:
    """Per-step seconds of every timed run of one side (ours or hand) of one config."""

    runs: list[list[float]] = field(default_factory=list)
    final_losses: list[float] = field(default_factory=list)
    other_load: list[float] = field(default_factory=list)  # cores used by other processes, per run

    def pooled(self) -> list[float]:
        return [t for run in self.runs for t in run]

    def median(self) -> float:
        return statistics.median(self.pooled())

    def per_run_medians(self) -> list[float]:
        return [statistics.median(run) for run in self.runs]


@dataclass
class StartupResult:
    label: str
    first_step_s: float
    exit_s: float
    peak_rss_mib: float
    stages: dict[str, float]
    other_load_cores: float


class OtherLoad:
    """CPU cores used by other processes over a time window (from /proc/stat minus our own CPU time).

    On a two-core box one busy neighbour is enough to make torch's two OpenMP threads crawl (tens of times
    slower), so every timed run records it and disturbed pairs are repeated.
    """

    def __init__(self) -> None:
        self.start = (time.monotonic(), self._busy(), self._own())

    @staticmethod
    def _busy() -> float:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return 0.0
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def cores(self) -> float:
        wall = time.monotonic() - self.start[0]
        other = (self._busy() - self.start[1]) - (self._own() - self.start[2])
        return max(0.0, other / wall) if wall > 0 else 0.0


# -- workspace -------------------------------------------------------------------------------------------------


def big_transformer(cfg: BenchConfig) -> Any:
    from diffusers import PixArtTransformer2DModel

    assert cfg.heads and cfg.head_dim and cfg.layers
    return PixArtTransformer2DModel(
        num_attention_heads=cfg.heads, attention_head_dim=cfg.head_dim, in_channels=4, out_channels=8,
        num_layers=cfg.layers, cross_attention_dim=cfg.heads * cfg.head_dim, attention_bias=True,
        sample_size=cfg.pixels // 8, patch_size=2, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None,
        use_additional_conditions=False, caption_channels=32)


def build_model_dir(cfg: BenchConfig, models: Path) -> Path:
    """The tiny pipeline; for a config with its own shape, the same pipeline with a bigger transformer."""
    from simpletuner_pixart.tiny import build_tiny_pipeline, ensure_tiny_pipeline

    if cfg.heads is None:
        return ensure_tiny_pipeline(models)
    import torch
    from diffusers import PixArtSigmaPipeline

    target = models / f"pixart-sigma-bench-{cfg.name}"
    if (target / "model_index.json").exists():
        return target
    base = build_tiny_pipeline()
    torch.manual_seed(0)
    pipe = PixArtSigmaPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                               transformer=big_transformer(cfg), scheduler=base.scheduler)
    pipe.save_pretrained(target)
    return target


def write_dataloader(home: Path, cfg: BenchConfig, images: Path) -> Path:
    path = home / "config" / f"bench-{cfg.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    image = {"id": f"bench-{cfg.name}", "type": "local", "dataset_type": "image", "instance_data_dir": str(images),
             "caption_strategy": "textfile", "resolution": cfg.pixels, "resolution_type": "pixel_area",
             "crop": True, "crop_style": "center", "crop_aspect": "square",
             "cache_dir_vae": str(home / "cache" / "vae" / cfg.name)}
    text = {"id": f"bench-{cfg.name}-text", "type": "local", "dataset_type": "text_embeds", "default": True,
            "cache_dir": str(home / "cache" / "text" / cfg.name)}
    path.write_text(json.dumps([image, text], indent=2))
    return path


def prepare(cfg: BenchConfig, root: Path, home: Path) -> Prepared:
    from diffusers import PixArtTransformer2DModel

    from simpletuner_core.demo_data import write_demo_dataset

    model_dir = build_model_dir(cfg, root / "models")
    images = root / "datasets" / f"demo-{cfg.pixels}"
    write_demo_dataset(images, count=16, size=cfg.pixels)
    model = PixArtTransformer2DModel.from_pretrained(str(model_dir), subfolder="transformer")
    params = sum(p.numel() for p in model.parameters())
    return Prepared(cfg, model_dir, images, write_dataloader(home, cfg, images), params)


def engine_config(prep: Prepared, output_dir: Path, steps: int) -> dict[str, Any]:
    """The engine's wire-format config matching the hand loop (AdamW, constant LR, fp32, batch 2)."""
    return {
        "--model_family": "pixart_sigma", "--model_flavour": "tiny", "--model_type": "full",
        "--pretrained_model_name_or_path": str(prep.model_dir), "--data_backend_config": str(prep.dataloader),
        "--output_dir": str(output_dir), "--train_batch_size": BATCH, "--gradient_accumulation_steps": 1,
        "--max_train_steps": steps, "--num_train_epochs": 0, "--learning_rate": LR, "--optimizer": "adamw",
        "--lr_scheduler": "constant", "--mixed_precision": "no", "--base_model_precision": "no_change",
        "--max_grad_norm": 1.0, "--grad_clip_method": "norm", "--seed": SEED, "--checkpoint_step_interval": 0, "--validation_disable": True,
        "--report_to": "none",
    }


def read_events(path: Path) -> list[dict[str, Any]]:
    """The mirror's envelopes as ``{type, timestamp, data}`` with our internal type and unix time."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            raw = json.loads(line)
        except ValueError:
            continue  # a torn last line while the writer is mid-append
        out.append({"type": raw.get("event_type", raw["type"]), "data": raw.get("data") or {},
                    "timestamp": raw.get("unix_timestamp", raw["timestamp"])})
    return out


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    gc.collect()


# -- ours ---------------------------------------------------------------------------------------------------------


def run_ours(prep: Prepared, home: Path, tag: str, steps: int, warmup: int) -> tuple[list[float], float]:
    """Train with our engine in this process; returns (per-step seconds after warm-up, last loss)."""
    from simpletuner_core.cli.jobs_local import run_job
    from simpletuner_core.config import validate
    from simpletuner_core.plugins import get_registry

    reset_accelerate()
    job_id = f"bench-{tag}"
    cfg = validate(engine_config(prep, home / "output" / job_id, steps))
    code, result = run_job(cfg, home, get_registry(), job_id=job_id)
    events = read_events(home / "jobs" / job_id / "events.jsonl")
    if code != 0 or result is None:
        failed = [e["data"] for e in events if e["type"] == "job.failed"]
        raise RuntimeError(f"engine run {tag} failed (exit {code}): {failed}")
    status = sorted((e for e in events if e["type"] == "training.status"), key=lambda e: e["data"]["step"])
    if len(status) != steps:
        raise RuntimeError(f"engine run {tag}: {len(status)} training.status events for {steps} steps")
    stamps = [float(e["timestamp"]) for e in status]
    gaps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:], strict=False)]
    shutil.rmtree(home / "output" / job_id, ignore_errors=True)
    return gaps, float(result.losses[-1])


# -- hand loop ---------------------------------------------------------------------------------------------------


@dataclass
class HandData:
    latents: Any  # (N, 4, h, w)
    embeds: Any  # (N, TEXT_LEN, C)
    masks: Any  # (N, TEXT_LEN)


def hand_encode(model_dir: Path, images: Path, pixels: int) -> HandData:
    """Latents (VAE mode x scaling factor) and T5 embeddings of every demo image, as a hand loop would cache them."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL
    from PIL import Image
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), subfolder="tokenizer")
    text_encoder = T5EncoderModel.from_pretrained(str(model_dir), subfolder="text_encoder").eval()
    vae = AutoencoderKL.from_pretrained(str(model_dir), subfolder="vae").eval()
    files = sorted(images.glob("*.png"))
    pixels_list, captions = [], []
    for path in files:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((pixels, pixels))
        array = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
        pixels_list.append(torch.from_numpy(array).permute(2, 0, 1))
        captions.append(path.with_suffix(".txt").read_text(encoding="utf-8").strip())
    with torch.no_grad():
        latents = vae.encode(torch.stack(pixels_list)).latent_dist.mode() * vae.config.scaling_factor
        tokens = tokenizer(captions, padding="max_length", max_length=TEXT_LEN, truncation=True,
                           return_tensors="pt")
        embeds = text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    return HandData(latents.float(), embeds.float(), tokens.attention_mask)


def hand_train(model_dir: Path, data: HandData, steps: int, on_step: Any = None) -> tuple[list[float], float]:
    """The plain diffusers + accelerate loop; returns (seconds of every step, last loss)."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDPMScheduler, PixArtTransformer2DModel
    from diffusers.optimization import get_scheduler

    accelerator = Accelerator(cpu=True, mixed_precision="no")
    model = PixArtTransformer2DModel.from_pretrained(str(model_dir), subfolder="transformer")
    noise_scheduler = DDPMScheduler.from_pretrained(str(model_dir), subfolder="scheduler")
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    lr_scheduler = get_scheduler("constant", optimizer)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    model.train()
    count = data.latents.shape[0]
    timesteps = noise_scheduler.config.num_train_timesteps
    times: list[float] = []
    loss_value = float("nan")
    for step in range(steps):
        start = time.perf_counter()
        torch.manual_seed(SEED + step)
        idx = torch.randperm(count)[:BATCH]
        latents, embeds, mask = data.latents[idx], data.embeds[idx], data.masks[idx]
        noise = torch.randn_like(latents)
        t = torch.randint(0, timesteps, (BATCH,))
        noisy = noise_scheduler.add_noise(latents, noise, t)
        pred = model(noisy, encoder_hidden_states=embeds, encoder_attention_mask=mask, timestep=t,
                     added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        pred = pred.chunk(2, dim=1)[0]  # learned sigma: the variance half is not trained
        loss = F.mse_loss(pred.float(), noise.float())
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        loss_value = loss.item()
        times.append(time.perf_counter() - start)
        if on_step is not None:
            on_step(step + 1)
    return times, loss_value


def run_hand(prep: Prepared, data: HandData, steps: int, warmup: int) -> tuple[list[float], float]:
    reset_accelerate()
    times, loss = hand_train(prep.model_dir, data, steps)
    return times[warmup:], loss


def hand_subprocess_main(args: argparse.Namespace) -> int:
    """What a user's own script does: import, load, encode, train; marks each stage on stdout."""

    def mark(stage: str) -> None:
        print(f"{MARKER} {stage} {time.time():.6f}", flush=True)

    mark("python_started")
    import accelerate  # noqa: F401 - counted as part of the start-up, like a real script's imports
    import diffusers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    mark("imported")
    data = hand_encode(Path(args.model_dir), Path(args.images), args.pixels)
    mark("encoded")

    def after(step: int) -> None:
        if step == 1:
            mark("first_step")

    hand_train(Path(args.model_dir), data, args.steps, on_step=after)
    mark("done")
    return 0


# -- start-up ----------------------------------------------------------------------------------------------------


def _launch(command: list[str], rss_file: Path, **popen: Any) -> subprocess.Popen[Any]:
    """Start ``command`` under :data:`RSS_LAUNCHER` (about 10 ms of extra start-up, the same for both sides)."""
    return subprocess.Popen([sys.executable, "-S", "-c", RSS_LAUNCHER, str(rss_file), *command], **popen)


def _peak_rss_mib(rss_file: Path) -> float:
    return int(rss_file.read_text()) / 1024


def startup_ours(prep: Prepared, home: Path, tag: str, root: Path) -> StartupResult:
    """``simpletuner train --config FILE`` in a subprocess: Popen -> first training.status event on disk."""
    config_file = root / f"startup-{tag}.json"
    config_file.write_text(json.dumps(engine_config(prep, home / "output" / f"startup-{tag}", 1), indent=2))
    exe = Path(sys.executable).parent / "simpletuner"
    found = str(exe) if exe.exists() else shutil.which("simpletuner")
    if found is None:
        raise RuntimeError("the `simpletuner` command is not installed next to this interpreter or on PATH")
    command = [found, "train", "--config", str(config_file), "--home", str(home)]
    env = {**os.environ, "SIMPLETUNER_HOME": str(home), "SIMPLETUNER_PROGRESS": "0"}
    jobs = home / "jobs"
    before = {p.name for p in jobs.iterdir()} if jobs.exists() else set()
    log, rss_file = root / f"startup-{tag}.log", root / f"startup-{tag}.rss"
    load = OtherLoad()
    first: float | None = None
    events_file: Path | None = None
    with open(log, "wb") as out:
        t0 = time.time()
        proc = _launch(command, rss_file, env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if first is None:
                if events_file is None and jobs.exists():
                    new = [p for p in jobs.iterdir() if p.name not in before]
                    events_file = new[0] / "events.jsonl" if new else None
                if events_file is not None and events_file.exists():
                    with open(events_file, encoding="utf-8") as fh:
                        if '"event_type":"training.status"' in fh.read():
                            first = time.time()
            time.sleep(0.005 if first is None else 0.02)
        ended = time.time()
    if proc.returncode != 0 or events_file is None:
        raise RuntimeError(f"simpletuner train exited {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
    events = read_events(events_file)
    stages = {"job.started": _first_stamp(events, "job.started") - t0}
    for e in events:
        if e["type"] == "job.stage":
            stages.setdefault(f"stage:{e['data']['stage']}", float(e["timestamp"]) - t0)
    stages["first training.status"] = _first_stamp(events, "training.status") - t0
    if first is None:  # finished between two polls: fall back to the event's own time stamp
        first = t0 + stages["first training.status"]
    shutil.rmtree(home / "output" / f"startup-{tag}", ignore_errors=True)
    return StartupResult(f"ours ({tag})", first - t0, ended - t0, _peak_rss_mib(rss_file), stages, load.cores())


def startup_ours_cold(prep: Prepared, root: Path, tag: str) -> StartupResult:
    """:func:`startup_ours` in a fresh SIMPLETUNER_HOME: preflight, VAE and T5 caches are built from nothing."""
    cold_home = root / f"cold-home-{tag}"
    cold_home.mkdir()
    cold = Prepared(prep.config, prep.model_dir, prep.images_dir,
                    write_dataloader(cold_home, prep.config, prep.images_dir), prep.transformer_params)
    return startup_ours(cold, cold_home, f"cold-{tag}", root)


def _first_stamp(events: list[dict[str, Any]], kind: str) -> float:
    return min(float(e["timestamp"]) for e in events if e["type"] == kind)


def startup_hand(prep: Prepared, root: Path, tag: str) -> StartupResult:
    """This file with ``--hand-subprocess``: Popen -> the marker printed after its first optimizer step."""
    command = [sys.executable, str(Path(__file__).resolve()), "--hand-subprocess", "--model-dir",
               str(prep.model_dir), "--images", str(prep.images_dir), "--pixels", str(prep.config.pixels),
               "--steps", "1"]
    rss_file = root / f"startup-hand-{tag}.rss"
    load = OtherLoad()
    t0 = time.time()
    proc = _launch(command, rss_file, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    stages: dict[str, float] = {}
    first: float | None = None
    tail: list[str] = []
    for line in proc.stdout:
        if line.startswith(MARKER):
            _, stage, stamp = line.split()
            stages[stage] = float(stamp) - t0
            if stage == "first_step":
                first = time.time()
        else:
            tail = [*tail[-40:], line]
    proc.wait()
    ended = time.time()
    if proc.returncode != 0 or first is None:
        raise RuntimeError(f"hand subprocess exited {proc.returncode}:\n{''.join(tail)}")
    return StartupResult("hand", first - t0, ended - t0, _peak_rss_mib(rss_file), stages, load.cores())


# -- report --------------------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import accelerate
    import diffusers
    import torch
    import transformers

    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__, "cpu": cpu,
            "cores": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads()), "commit": commit}


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    rows = [["config", "transformer params", "steps x runs", "ours s/step", "hand s/step", "ours/hand (time)",
             "hand/ours (speed)", f"speed >= {TARGET_SPEED}"]]
    for name, r in results["configs"].items():
        rows.append([name, f"{r['params'] / 1e6:.2f} M", f"{r['steps']} x {len(r['ours_run_medians'])}",
                     f"{r['ours_s_per_step'] * 1e3:.2f} ms", f"{r['hand_s_per_step'] * 1e3:.2f} ms",
                     f"{r['time_ratio']:.3f}", f"{r['speed_ratio']:.3f}", "yes" if r["meets_target"] else "NO"])
    parts = [table(rows)]
    runs = [["config", "ours per-run medians (ms)", "hand per-run medians (ms)", "last loss ours / hand",
             "other processes (max cores)"]]
    for name, r in results["configs"].items():
        runs.append([name, ", ".join(f"{m * 1e3:.2f}" for m in r["ours_run_medians"]),
                     ", ".join(f"{m * 1e3:.2f}" for m in r["hand_run_medians"]),
                     f"{r['ours_last_loss']:.3f} / {r['hand_last_loss']:.3f}", f"{r['other_load_cores']:.2f}"])
    parts.append(table(runs))
    if results.get("startup"):
        st = results["startup"]
        srows = [[f"start-up ({st['config']}, subprocess, median)", "Popen -> first step", "Popen -> exit",
                  "peak RSS (max)"]]
        for label, s in st["runs"].items():
            srows.append([label, f"{s['first_step_s']:.2f} s", f"{s['exit_s']:.2f} s",
                          f"{s['peak_rss_mib']:.0f} MiB"])
        for label, value in st["ratios"].items():
            srows.append([label, f"{value['first_step']:.2f}x", f"{value['exit']:.2f}x",
                          f"{value['peak_rss']:.2f}x"])
        parts.append(table(srows))
        stage_rows = [["side", "stages (s after Popen, median)"]]
        for label, stages in st["stages"].items():
            ordered = sorted(stages.items(), key=lambda kv: kv[1])
            stage_rows.append([label, ", ".join(f"{k} {v:.2f}" for k, v in ordered)])
        parts.append(table(stage_rows))
    disturbed = [n for n, r in results["configs"].items() if r["other_load_cores"] > BUSY_LIMIT]
    if results.get("startup") and results["startup"]["other_load_cores"] > BUSY_LIMIT:
        disturbed.append("start-up")
    if disturbed:
        parts.append(f"WARNING: other processes used more than {BUSY_LIMIT} cores during {', '.join(disturbed)}; "
                     "those numbers are not trustworthy on a small machine. Re-run on a quiet box.")
    return "\n\n".join(parts)


def _median_startups(items: list[StartupResult]) -> dict[str, Any]:
    stages: dict[str, float] = {}
    for key in {k for s in items for k in s.stages}:
        values = [s.stages[key] for s in items if key in s.stages]
        stages[key] = statistics.median(values)
    return {"first_step_s": statistics.median(s.first_step_s for s in items),
            "exit_s": statistics.median(s.exit_s for s in items),
            "peak_rss_mib": max(s.peak_rss_mib for s in items),
            "other_load_cores": max(s.other_load_cores for s in items),
            "samples": [asdict(s) for s in items], "stages": stages}


# -- main ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small config, one round, few steps")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--configs", default="small,big", help="comma-separated: small, big")
    p.add_argument("--rounds", type=int, default=3, help="[ours, hand] pairs per config")
    p.add_argument("--steps-small", type=int, default=100)
    p.add_argument("--steps-big", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="steps skipped at the start of every run")
    p.add_argument("--retries", type=int, default=2,
                   help="repeat an [ours, hand] pair up to N times when other processes were busy during it")
    p.add_argument("--startup-rounds", type=int, default=2, help="0 skips the subprocess start-up measurement")
    p.add_argument("--keep", action="store_true", help="keep the temporary SIMPLETUNER_HOME")
    # internal: the hand-written script for the start-up measurement
    p.add_argument("--hand-subprocess", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--images", help=argparse.SUPPRESS)
    p.add_argument("--pixels", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.configs, args.rounds, args.steps_small, args.startup_rounds = "small", 1, 25, 1
    return args


def bench_configs(args: argparse.Namespace) -> list[BenchConfig]:
    known = {
        "small": BenchConfig("small", pixels=64, steps=args.steps_small),
        "big": BenchConfig("big", pixels=128, steps=args.steps_big, heads=8, head_dim=32, layers=4),
    }
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; choose from {sorted(known)}")
    return [known[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.hand_subprocess:
        return hand_subprocess_main(args)
    configs = bench_configs(args)
    if any(c.steps <= args.warmup + 2 for c in configs):
        raise SystemExit("every config needs more steps than --warmup + 2")
    root = Path(tempfile.mkdtemp(prefix="simpletuner-bench-"))
    home = root / "home"
    home.mkdir()
    os.environ["SIMPLETUNER_HOME"] = str(home)
    os.environ["SIMPLETUNER_PROGRESS"] = "0"
    started = time.time()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "versions": versions(),
                               "args": {k: v for k, v in vars(args).items() if k in (
                                   "quick", "configs", "rounds", "steps_small", "steps_big", "warmup",
                                   "startup_rounds", "retries")},
                               "configs": {}}
    print(f"bench workspace: {root}", flush=True)
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()  # per-file load/save bars; nothing inside a timed step
    transformers.utils.logging.disable_progress_bar()
    try:
        prepared: dict[str, Prepared] = {}
        for cfg in configs:
            prep = prepare(cfg, root, home)
            prepared[cfg.name] = prep
            data = hand_encode(prep.model_dir, prep.images_dir, cfg.pixels)
            # fill the engine's caches once, untimed, so every timed run starts from warm caches
            run_ours(prep, home, f"{cfg.name}-fill", args.warmup + 3, args.warmup)
            ours, hand = SideResult(), SideResult()
            for rnd in range(args.rounds):
                for attempt in range(args.retries + 1):
                    load = OtherLoad()
                    gaps, ours_loss = run_ours(prep, home, f"{cfg.name}-{rnd}-{attempt}", cfg.steps, args.warmup)
                    ours_load, load = load.cores(), OtherLoad()
                    times, hand_loss = run_hand(prep, data, cfg.steps, args.warmup)
                    hand_load = load.cores()
                    print(f"  {cfg.name} round {rnd + 1}/{args.rounds}: ours {statistics.median(gaps) * 1e3:.2f} "
                          f"ms/step, hand {statistics.median(times) * 1e3:.2f} ms/step (other processes: "
                          f"{ours_load:.2f} / {hand_load:.2f} cores)", flush=True)
                    if max(ours_load, hand_load) <= BUSY_LIMIT:
                        break
                    if attempt < args.retries:
                        print(f"  other processes were busy (> {BUSY_LIMIT} cores): repeating the pair", flush=True)
                ours.runs.append(gaps)
                ours.final_losses.append(ours_loss)
                ours.other_load.append(ours_load)
                hand.runs.append(times)
                hand.final_losses.append(hand_loss)
                hand.other_load.append(hand_load)
            ratio = ours.median() / hand.median()
            results["configs"][cfg.name] = {
                "params": prep.transformer_params, "pixels": cfg.pixels, "steps": cfg.steps,
                "ours_s_per_step": ours.median(), "hand_s_per_step": hand.median(),
                "time_ratio": ratio, "speed_ratio": 1 / ratio, "meets_target": 1 / ratio >= TARGET_SPEED,
                "ours_run_medians": ours.per_run_medians(), "hand_run_medians": hand.per_run_medians(),
                "ours_last_loss": ours.final_losses[-1], "hand_last_loss": hand.final_losses[-1],
                "other_load_cores": max(ours.other_load + hand.other_load),
                "ours_step_s": ours.runs, "hand_step_s": hand.runs,
            }
        if args.startup_rounds > 0:
            prep = prepared.get("small") or next(iter(prepared.values()))
            samples: dict[str, list[StartupResult]] = {"ours (cold cache)": [], "ours (warm cache)": [],
                                                       "hand": []}
            for rnd in range(args.startup_rounds):
                measure = {
                    "ours (cold cache)": lambda tag: startup_ours_cold(prep, root, tag),
                    "hand": lambda tag: startup_hand(prep, root, tag),
                    "ours (warm cache)": lambda tag: startup_ours(prep, home, f"warm-{tag}", root),
                }
                for label, run in measure.items():
                    for attempt in range(args.retries + 1):
                        result = run(f"{rnd}-{attempt}")
                        if result.other_load_cores <= BUSY_LIMIT:
                            break
                        if attempt < args.retries:
                            print(f"  {label}: other processes used {result.other_load_cores:.2f} cores, "
                                  "measuring again", flush=True)
                    samples[label].append(result)
                print(f"  start-up round {rnd + 1}/{args.startup_rounds}: " + ", ".join(
                    f"{k} {v[-1].first_step_s:.2f} s" for k, v in samples.items()), flush=True)
            runs = {k: _median_startups(v) for k, v in samples.items()}
            hand_run = runs["hand"]
            results["startup"] = {
                "config": prep.config.name, "runs": runs,
                "other_load_cores": max(v["other_load_cores"] for v in runs.values()),
                "stages": {k: v["stages"] for k, v in runs.items()},
                "ratios": {f"{k} / hand": {"first_step": v["first_step_s"] / hand_run["first_step_s"],
                                           "exit": v["exit_s"] / hand_run["exit_s"],
                                           "peak_rss": v["peak_rss_mib"] / hand_run["peak_rss_mib"]}
                           for k, v in runs.items() if k != "hand"},
            }
        results["wall_s"] = time.time() - started
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    v = results["versions"]
    print(f"\ncommit {v['commit']}; {v['cpu']} ({v['cores']} cores, {v['torch_threads']} torch threads); "
          f"python {v['python']}, "
          f"torch {v['torch']}, diffusers {v['diffusers']}, transformers {v['transformers']}, "
          f"accelerate {v['accelerate']}; batch {BATCH}, fp32, AdamW, cached latents + text embeds\n")
    print(report(results))
    print(f"\ntotal wall time {results['wall_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
