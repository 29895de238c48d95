"""Study tools for p2pfl: datasets and partitions, scenarios, attacks, a runner and reports.

Everything here uses p2pfl's public API only, like a user's own study would.
"""
