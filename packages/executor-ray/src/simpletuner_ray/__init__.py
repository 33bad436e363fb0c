"""A Ray executor for simpletuner-core: jobs run on the nodes of an existing Ray cluster.

Importing this package does not import Ray; the executor connects on first use, and only in a process that
enabled it (``simpletuner server --ray-address``), never in trainers or CLI processes that inherit the env.
"""

NAMESPACE = "simpletuner"
