"""The status state machine: forward moves only, terminal states stay terminal."""
from hypothesis import given, strategies as st

from router.lifecycle import TERMINAL, can_move, is_terminal
from router.messages import Status

S = Status


def test_the_happy_path_and_its_branches():
    assert can_move(S.QUEUED, S.ROUTED) and can_move(S.ROUTED, S.SENT) and can_move(S.SENT, S.DELIVERED)
    assert can_move(S.SENT, S.UNDELIVERED) and can_move(S.SENT, S.FAILED)
    assert can_move(S.QUEUED, S.REJECTED) and can_move(S.ROUTED, S.EXPIRED) and can_move(S.ROUTED, S.FAILED)
    assert can_move(S.SCHEDULED, S.QUEUED) and can_move(S.SCHEDULED, S.CANCELED)


def test_duplicates_backward_moves_and_late_outcomes_are_ignored():
    assert not can_move(S.SENT, S.SENT)
    assert not can_move(S.SENT, S.ROUTED)
    assert not can_move(S.DELIVERED, S.UNDELIVERED)
    assert not can_move(S.SENT, S.EXPIRED)  # a carrier has it: only a receipt decides
    assert not can_move(S.QUEUED, S.CANCELED)  # only a scheduled message can be canceled
    assert not can_move(S.SENT, S.DELIVERED, receipts_expected=False)  # sent was already final


def test_terminal_states():
    assert is_terminal(S.SENT, receipts_expected=False) and not is_terminal(S.SENT)
    assert {s for s in S if is_terminal(s)} == TERMINAL


@given(st.lists(st.sampled_from(list(S)), max_size=12), st.booleans())
def test_applying_any_sequence_never_leaves_a_terminal_state(proposals, receipts):
    status = S.QUEUED
    for proposed in proposals:
        before = status
        if can_move(status, proposed, receipts):
            status = proposed
        if is_terminal(before, receipts):
            assert status == before
