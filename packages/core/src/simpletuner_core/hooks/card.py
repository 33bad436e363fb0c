"""The model card (``README.md``) uploaded with the final model: what was trained, how, and what it renders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Config keys that may hold credentials, private URLs or local paths: never published (model card, checkpoint
#: manifests). A key matches when it equals an entry or one of its ``_``-separated words does
#: (``webhook_secret``, ``hub_token``; not ``tokenizer_max_length``).
REDACT = ("webhook_config", "hub_token", "token", "secret", "password", "post_checkpoint_script",
          "post_upload_script", "validation_external_script", "publish_local_dir")
REDACTED = "<redacted>"
MAX_IMAGES = 8


def is_redacted_key(key: str) -> bool:
    return key in REDACT or any(word in REDACT for word in key.split("_"))


def redact_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (sorted) with every set value under a :data:`REDACT` key replaced by ``"<redacted>"``."""
    return {k: (REDACTED if v and is_redacted_key(k) else v) for k, v in sorted(config.items())}


def model_card(config: dict[str, Any], output_dir: Path, *, job_id: str, step: int) -> str:
    """Markdown with a YAML header the hub understands, ``model_card_note`` right below it, the training config and
    the latest validation images."""
    base = config.get("pretrained_model_name_or_path") or config.get("model_flavour") or ""
    tags = ["simpletuner", "diffusers", "text-to-image", str(config.get("model_family") or "")]
    if config.get("model_type") == "lora":
        tags.append("lora")
    header = ["---", "library_name: diffusers", "tags:", *[f"- {t}" for t in tags if t]]
    if base and "/" in str(base) and not Path(str(base)).exists():
        header.append(f"base_model: {base}")
    header.append("---")
    images = sorted((Path(output_dir) / "validation").glob("*.png"))[-MAX_IMAGES:]
    note = str(config.get("model_card_note") or "").strip()
    lines = [*header, "", *([note, ""] if note else []), f"# {Path(output_dir).name}", "",
             f"Trained with simpletuner-core (job `{job_id}`): {config.get('model_family')} "
             f"{config.get('model_type')} fine-tune, {step} optimizer steps.", ""]
    if config.get("validation_prompt"):
        lines += [f"Validation prompt: `{config['validation_prompt']}`", ""]
    if images:
        lines += ["## Validation images", ""]
        lines += [f"![{p.stem}](validation/{p.name})" for p in images]
        lines.append("")
    lines += ["## Training configuration", "", "```json", json.dumps(redact_config(config), indent=2, default=str),
              "```", ""]
    return "\n".join(lines)
