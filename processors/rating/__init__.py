"""Rating and online charging (CONTRACT §4 "Rating and online charging").

``rules`` holds the pure pricing/charging logic (no Kafka, no Faust, no wall clock);
``agent`` is the thin Faust shell around it; ``audit`` re-rates a subscriber's period
from the log and diffs it against ``bss.cdr.rated``.
"""
