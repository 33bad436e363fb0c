"""From a validated config to a preflight plan and filled caches (the engine's first stages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simpletuner_core.config.environments import resolve_dataloader_path
from simpletuner_core.config.errors import ConfigInvalid


class PreflightRejected(ValueError):
    """The dataset plan cannot train; ``plan`` has the full report."""

    def __init__(self, plan: Any) -> None:
        self.plan = plan
        super().__init__("; ".join(str(e) for e in plan.errors))


def make_plan(cfg: Any, home: Path, registry: Any, size_multiple: int, seed: int, processes: int = 1
              ) -> tuple[list[Any], Any]:
    """Load the dataloader JSON and compute the plan; raise on config errors or an impossible plan."""
    from simpletuner_core.data.config import load_dataloader
    from simpletuner_core.data.preflight import build_plan

    path = resolve_dataloader_path(cfg.data_backend_config, home)
    datasets = load_dataloader(path, registry, {"caption_strategy": cfg.caption_strategy,
                                                "instance_prompt": cfg.instance_prompt})
    plan = build_plan(datasets, base_dir=path.parent, train_batch_size=cfg.train_batch_size,
                      gradient_accumulation_steps=cfg.gradient_accumulation_steps, processes=processes, seed=seed,
                      size_multiple=size_multiple, default_resolution=cfg.resolution,
                      default_resolution_type=cfg.resolution_type, minimum_image_size=cfg.minimum_image_size,
                      aspect_bucket_rounding=cfg.aspect_bucket_rounding,
                      disable_bucket_pruning=cfg.disable_bucket_pruning, registry=registry)
    if not plan.ok:
        raise PreflightRejected(plan)
    plan.eval_samples = select_eval_samples(cfg, datasets, plan.eval_samples)
    if cfg.conditioning_multidataset_sampling != "random" and not plan.references:
        plan.warnings.append(f"conditioning_multidataset_sampling={cfg.conditioning_multidataset_sampling} has no "
                             "effect: no dataset has conditioning_data")
    return datasets, plan


def select_eval_samples(cfg: Any, datasets: list[Any], samples: list[Any]) -> list[Any]:
    """The eval samples the eval loss uses: those of ``eval_dataset_id`` (default: every eval dataset), at most
    ``num_eval_images``; none with ``eval_loss_disable``. Raises when ``eval_dataset_id`` names no eval dataset."""
    eval_ids = [d.id for d in datasets if d.dataset_type == "eval" and not d.disabled]
    if cfg.eval_dataset_id is not None:
        require(cfg.eval_dataset_id in eval_ids, "eval_dataset_id",
                f"no enabled dataset with dataset_type 'eval' has id {cfg.eval_dataset_id!r} "
                f"(eval datasets: {', '.join(eval_ids) or 'none'})")
        samples = [s for s in samples if s.dataset_id == cfg.eval_dataset_id]
    if cfg.eval_loss_disable:
        return []
    return samples[: max(0, cfg.num_eval_images)]


def vae_cache_dir(cfg: Any, dataset: Any, home: Path) -> Path:
    """One dataset's latent cache dir (targets and references alike): the dataset's ``cache_dir_vae``, else
    ``<config cache_dir_vae>/<id>``, else ``<home>/cache/vae/<id>``."""
    base = dataset.cache_dir_vae or (str(Path(cfg.cache_dir_vae) / dataset.id) if cfg.cache_dir_vae else None)
    return Path(base) if base else home / "cache" / "vae" / dataset.id


def cache_dirs(cfg: Any, datasets: list[Any], home: Path) -> tuple[dict[str, Path], Path]:
    """VAE cache dir per image dataset and the text-embed cache dir (dataset value, then config, then home)."""
    vae = {ds.id: vae_cache_dir(cfg, ds, home) for ds in datasets
           if ds.dataset_type in ("image", "eval") and not ds.disabled}
    text_ds = [d for d in datasets if d.dataset_type == "text_embeds" and not d.disabled]
    default = next((d for d in text_ds if d.default), text_ds[0] if text_ds else None)
    text = default.cache_dir if default is not None and default.cache_dir else cfg.cache_dir_text
    return vae, Path(text) if text else home / "cache" / "text"


def require(condition: bool, path: str, message: str) -> None:
    if not condition:
        from simpletuner_core.config.errors import ConfigError

        raise ConfigInvalid([ConfigError(path, message)])
