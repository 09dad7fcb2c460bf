"""The fault suite (``make chaos``): one private broker, a worker and a sink under a steady
demo load; each case injects one fault, lets the stack recover, and ends with an
accounting check over everything sent since the suite started.

Not a pytest package on purpose (no ``test_*.py``): it needs minutes and a broker that it
may kill, so ``make test`` must not collect it. Entry point: ``python -m tests.chaos``.
"""
