"""Memory plans: will a config fit on the accelerator, before any weights are downloaded (torch-free)."""

from simpletuner_core.memory.config import NoPlan, fit_warning, knobs, plan_for
from simpletuner_core.memory.plan import Bucket, MemoryPlan, estimate

__all__ = ["Bucket", "MemoryPlan", "NoPlan", "estimate", "fit_warning", "knobs", "plan_for"]
