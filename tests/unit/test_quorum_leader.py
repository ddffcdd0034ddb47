"""The fault suite reads the controller quorum's leader from the nodes' quorum-state files, even mid-election."""

import json

import pytest

from tests import cluster_control


def _nodes(tmp_path, monkeypatch, *states: dict) -> None:
    monkeypatch.setattr(cluster_control, "CLUSTER_HOME", tmp_path)
    for n, state in enumerate(states, start=1):
        folder = tmp_path / f"node-{n}" / "data" / "__cluster_metadata-0"
        folder.mkdir(parents=True)
        (folder / "quorum-state").write_text(json.dumps(state))


def test_the_leader_is_the_one_the_newest_epoch_names(tmp_path, monkeypatch):
    _nodes(tmp_path, monkeypatch, {"leaderId": 1, "leaderEpoch": 4}, {"leaderId": 3, "leaderEpoch": 5},
           {"leaderId": -1, "leaderEpoch": 5})
    assert cluster_control.quorum_leader() == 3


def test_mid_election_there_is_no_leader_yet_rather_than_an_error(tmp_path, monkeypatch):
    """Regression (make faults, controller killed): voters had recorded the new epoch, no winner yet."""
    _nodes(tmp_path, monkeypatch, {"leaderId": 1, "leaderEpoch": 4}, {"leaderId": -1, "leaderEpoch": 5},
           {"leaderId": -1, "leaderEpoch": 5})
    assert cluster_control.quorum_leader() is None


def test_no_quorum_state_at_all_says_the_cluster_is_not_running(tmp_path, monkeypatch):
    _nodes(tmp_path, monkeypatch)
    with pytest.raises(cluster_control.StackFailed, match="is the cluster running"):
        cluster_control.quorum_leader()
