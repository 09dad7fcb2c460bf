"""Subscription sync: order state machine, SubscriptionState, downstream views, export.

Pure logic: orders.py, state.py, sync.py (both combined per subscriber), views.py,
export.py.  The Faust shell (agent.py) only moves bytes and calls these.
"""
