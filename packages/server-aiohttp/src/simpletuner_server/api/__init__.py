"""The JSON API, one module (or subpackage) per area; the URL table is ``simpletuner_server.routes``."""
