"""`make bench`: stack tax, routing gain, simulator fidelity and autoscaling → ``bench/results/``.

Entry point: ``python -m bench.run`` (``--quick`` for a short smoke run). Each measurement runs its
processes as separate OS processes (engine, gateway/Ray, router, load client) so the CPU each
spends per request can be read from its own process tree.
"""
