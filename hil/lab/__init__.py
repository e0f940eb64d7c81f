"""Shared labs through labgrid: lab configuration, places (reserve, acquire, release), the work queue and the
virtual lab."""
