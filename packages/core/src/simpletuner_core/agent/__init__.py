"""``simpletuner worker``: the agent on a GPU machine that runs an orchestrator's jobs.

It only dials out (register, an SSE dispatch stream, JSON posts), so it works behind NAT. One code path with
local jobs: the agent keeps its own SimpleTuner home, store and :class:`~simpletuner_core.jobs.runner.Runner`,
runs each dispatched job there as a local job under the orchestrator's job id, and forwards that job's events
(local event ids as sequence numbers) and final state. While the orchestrator is away the events wait in the
local store. torch is imported only by the trainer process the local runner spawns.
"""
