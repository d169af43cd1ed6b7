"""A seeded torture run: writers with a commit log, random faults around the shipper, then every check.

``python -m tests.torture --seed S --seconds N`` replays one schedule;
``--for SECONDS`` runs seed after seed (``make torture``). A seed's schedule
(which event, when, with what parameter) is a pure function of the seed, so
a failing seed replays the same faults; the interleavings around them are
real processes', which is the point.
"""
