"""What validation renders, and its output: PNGs on disk and ``validation.image`` events carrying the image inline.

Payloads follow SimpleTuner's webhook shape: ``title`` and ``body`` for chat-style receivers, ``images`` as
data URLs, and ``validation_type`` = ``final`` for a finished image or ``intermediary`` for a preview. Each
finished image also names its prompt (``prompt_name``): ``validation`` for ``validation_prompt``,
``unconditional`` for the empty prompt, or its name in a prompt library.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
from pathlib import Path
from typing import Any

import attrs

MAIN = "validation"
UNCONDITIONAL = "unconditional"

#: ``validation_prompt_library``: a few general prompts (subjects, materials, light, text, layout) that show
#: what a fine-tune did to the base model beyond the training captions.
BUILTIN_PROMPT_LIBRARY: dict[str, str] = {
    "portrait": "a close-up portrait of an elderly fisherman, soft window light, shallow depth of field",
    "landscape": "a wide valley with a winding river at sunrise, mist over pine forests",
    "still_life": "a glass bottle, two lemons and a folded linen cloth on a wooden table",
    "city_night": "a rainy city street at night, neon signs reflected in puddles",
    "animal": "a red fox sitting in fresh snow, looking at the camera",
    "text": "a chalkboard sign outside a cafe that says OPEN",
    "illustration": "a flat vector illustration of a lighthouse on a rocky island",
    "interior": "a sunlit kitchen with green tiles, copper pans and a bowl of oranges",
}


@attrs.frozen
class ValidationPrompt:
    name: str
    prompt: str


@attrs.frozen
class RenderedImage:
    """An image a validation method rendered, with the prompt it rendered (plain images mean validation_prompt)."""

    image: Any
    prompt: str
    name: str = MAIN


def load_prompt_library(path: str | Path) -> dict[str, str]:
    """``{"name": "prompt", ...}`` from a JSON file; ``ValueError`` says what is wrong with it."""
    file = Path(path).expanduser()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f'expected a JSON object {{"name": "prompt", ...}}, got {type(data).__name__}')
    if not data:
        raise ValueError("the library has no prompts")
    bad = [str(k) for k, v in data.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"every value must be a non-empty prompt string; not so for {', '.join(bad[:5])}")
    return dict(data)


def validation_prompts(cfg: Any) -> list[ValidationPrompt]:
    """Everything one validation renders, in order: validation_prompt, the built-in library, the user's library,
    then the unconditional (empty) prompt unless validation_disable_unconditional."""
    out = [ValidationPrompt(MAIN, cfg.validation_prompt)] if cfg.validation_prompt else []
    if getattr(cfg, "validation_prompt_library", False):
        out += [ValidationPrompt(n, p) for n, p in BUILTIN_PROMPT_LIBRARY.items()]
    if getattr(cfg, "user_prompt_library", None):
        out += [ValidationPrompt(n, p) for n, p in load_prompt_library(cfg.user_prompt_library).items()]
    if out and not getattr(cfg, "validation_disable_unconditional", False):
        out.append(ValidationPrompt(UNCONDITIONAL, ""))
    return out


def guidance_kwargs(pipe: Any, cfg: Any) -> dict[str, Any]:
    """``guidance_rescale`` for pipelines whose ``__call__`` takes it (the config rules warn for the others)."""
    rescale = getattr(cfg, "validation_guidance_rescale", 0.0)
    if rescale and "guidance_rescale" in inspect.signature(pipe.__call__).parameters:
        return {"guidance_rescale": float(rescale)}
    return {}


@attrs.define
class ValidationContext:
    """What a validation method may use besides the model: the job's hooks and the preview callback."""

    job_id: str
    step: int
    hooks: Any = None
    #: ``preview(index, total, timestep, latents)`` for families that report intermediate latents; or None.
    preview: Any = None


def png_data_url(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def short_prompt(prompt: str, limit: int = 40) -> str:
    prompt = " ".join(str(prompt).split())
    return prompt if len(prompt) <= limit else prompt[: limit - 1].rstrip() + "…"


def image_title(step: int, name: str, prompt: str) -> str:
    if name == MAIN:
        return f"Validation (step {step}): {short_prompt(prompt)}"
    if name == UNCONDITIONAL:
        return f"Validation (step {step}, unconditional)"
    return f"Validation (step {step}, {name}): {short_prompt(prompt)}"


def publish_images(emitter: Any, images: list[Any], output_dir: Path, *, step: int, prompt: str,
                   final: bool, forced: bool = False) -> list[Path]:
    """Save each image under ``output_dir/validation`` and emit one event per image.

    ``images`` holds :class:`RenderedImage` items or plain images (those were rendered from ``prompt``)."""
    out_dir = Path(output_dir) / "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    trigger = "end" if final else ("forced" if forced else "scheduled")
    written = []
    for index, item in enumerate(images):
        rendered = item if isinstance(item, RenderedImage) else RenderedImage(item, prompt)
        image = rendered.image
        path = out_dir / f"step-{step:06d}-{index}.png"
        image.save(path)
        written.append(path)
        emitter.emit("validation.image", title=image_title(step, rendered.name, rendered.prompt),
                     body=rendered.prompt, step=step, global_step=step, prompt=rendered.prompt,
                     prompt_name=rendered.name, path=str(path), validation_type="final", trigger=trigger,
                     resolution=list(image.size), images=[{"src": png_data_url(image), "mime_type": "image/png"}])
    return written
