"""The training config: wire format, typed model, rules, migrations, environments on disk."""

from simpletuner_core.config.errors import ConfigError, ConfigInvalid
from simpletuner_core.config.model import field_docs, structure, to_wire, unstructure
from simpletuner_core.config.rules import check, validate, warnings_for

__all__ = ["ConfigError", "ConfigInvalid", "check", "field_docs", "structure", "to_wire", "unstructure",
           "validate", "warnings_for"]
