"""A job's hooks in one object the engine calls at checkpoints and at the end: scripts, plot, publishing.

Only the main process of a run calls these. Everything slow happens in background threads (uploads,
``post_checkpoint_script``); the end of a run waits for them, bounded by the script timeout and by
``publish_timeout`` per upload (a cancelled run waits only briefly for the upload in flight).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simpletuner_core.config.model import unstructure
from simpletuner_core.hooks.card import model_card
from simpletuner_core.hooks.publish import Publishing
from simpletuner_core.hooks.scripts import HookScripts, context_values
from simpletuner_core.plot import plot_path, write_plot


class JobHooks:
    def __init__(self, cfg: Any, job_id: str, emitter: Any, registry: Any) -> None:
        self.cfg = cfg
        self.job_id = job_id
        self.emitter = emitter
        self.scripts = HookScripts(emitter, cfg.hook_script_timeout, fatal=cfg.hook_script_fatal)
        self.publishing = Publishing(list(registry.publishers.values()), cfg, job_id, emitter, self.scripts,
                                     self.values)
        self.last_checkpoint = ""
        self.eval_losses: list[tuple[int, float]] = []  # (step, eval loss), set by the trainer

    def values(self, step: int, local: str = "", remote: str = "") -> dict[str, str]:
        return context_values(self.cfg, global_step=step, job_id=self.job_id, local_checkpoint_path=local,
                              remote_checkpoint_path=remote)

    def write_plot(self, output_dir: Path, losses: list[float], lrs: list[float]) -> None:
        try:
            write_plot(plot_path(output_dir), losses, lrs, eval_losses=self.eval_losses)
        except Exception as exc:  # a plot is a convenience; it never fails a run
            self.emitter.log(f"could not write the loss plot: {exc}", level="warning")

    def checkpoint_saved(self, path: Path, step: int, losses: list[float], lrs: list[float]) -> None:
        self.last_checkpoint = str(path)
        self.write_plot(path.parent, losses, lrs)
        if self.cfg.post_checkpoint_script:
            self.scripts.run("post_checkpoint", self.cfg.post_checkpoint_script, self.values(step, str(path)),
                             background=True)
        self.publishing.submit(path, "checkpoint", step)

    def finished(self, output_dir: Path, step: int, losses: list[float], lrs: list[float]) -> list[dict[str, Any]]:
        """Plot, model card, final upload; waits for every upload queued so far."""
        self.write_plot(output_dir, losses, lrs)
        if self.publishing.wanted("final"):
            card = model_card(unstructure(self.cfg), output_dir, job_id=self.job_id, step=step)
            (Path(output_dir) / "README.md").write_text(card, encoding="utf-8")
            self.publishing.submit(output_dir, "final", step)
        results = self.publishing.drain()
        self.scripts.wait()
        return results

    def close(self, abandon: bool = False) -> None:
        """End of the run however it ended: pending uploads finish (or are skipped), background scripts end."""
        self.publishing.drain(abandon=abandon)
        self.scripts.wait()
