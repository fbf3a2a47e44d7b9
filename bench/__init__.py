"""gpucap's load generator: drive OpenAI/Anthropic-compatible endpoints and measure them.

Public API: :func:`bench.api.run_benchmark` (one call = one ``bench run``), the simulated endpoint in
:mod:`bench.sim`, and the pure metric functions in :mod:`bench.metrics` / :mod:`bench.summary`.
"""
__version__ = "0.1.0"
