"""When a sync is due (``walship.ship.sync_due``): the rule of the single shipper and of the fleet."""

from walship.ship import budget_window, sync_due


def test_commits_wait_only_for_the_window() -> None:
    assert not sync_due(0.1, True, window=0.35, interval=1.0)  # they share the next segment
    assert sync_due(0.35, True, window=0.35, interval=1.0)  # a steady writer: one capture per window
    assert sync_due(5.0, True, window=0.35, interval=1.0)  # a lone commit after a quiet spell: at once


def test_without_commits_a_sync_comes_every_interval() -> None:
    assert not sync_due(0.9, False, window=0.35, interval=1.0)
    assert sync_due(1.0, False, window=0.35, interval=1.0)


def test_an_interval_shorter_than_the_window_wins() -> None:
    assert sync_due(0.2, True, window=0.35, interval=0.2)


def test_the_fleets_window_keeps_a_commit_within_about_an_interval() -> None:
    assert 0 < budget_window(1.0) < 1.0
    assert budget_window(10.0) > 9.0  # a long interval keeps its few requests
    assert budget_window(0.01) == 0.0
