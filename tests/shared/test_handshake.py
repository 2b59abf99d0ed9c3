"""The link's handshake module: the transition table, illegal events, close codes, HELLO checks."""

from __future__ import annotations

import pytest

from shared.protocol.handshake import (
    FATAL_CLOSE_CODES,
    TRANSITIONS,
    CloseCode,
    HandshakeError,
    IllegalTransition,
    LinkEvent,
    LinkState,
    LinkStateMachine,
    check_hello,
)
from shared.protocol.messages import PROTOCOL_VERSION, Hello, ProtocolError

S, E = LinkState, LinkEvent

# The table as the shells need it, written out again: the module's table must say exactly this.
EXPECTED = {
    (S.IDLE, E.DIAL): S.CONNECTING,
    (S.IDLE, E.ACCEPT): S.HANDSHAKING,
    (S.CONNECTING, E.HELLO_SENT): S.HANDSHAKING,
    (S.CONNECTING, E.BRIDGED): S.STREAMING,
    (S.CONNECTING, E.RETRY): S.CONNECTING,
    (S.CONNECTING, E.CLOSE): S.CLOSED,
    (S.HANDSHAKING, E.HELLO_RECEIVED): S.HANDSHAKING,
    (S.HANDSHAKING, E.HELLO_ACCEPTED): S.STREAMING,
    (S.HANDSHAKING, E.RETRY): S.CONNECTING,
    (S.HANDSHAKING, E.HANG_UP): S.IDLE,
    (S.HANDSHAKING, E.CLOSE): S.CLOSED,
    (S.STREAMING, E.DIVERGED): S.RESYNCING,
    (S.STREAMING, E.CONVERGED): S.STREAMING,
    (S.STREAMING, E.BYE): S.CLOSED,
    (S.STREAMING, E.RETRY): S.CONNECTING,
    (S.STREAMING, E.HANG_UP): S.IDLE,
    (S.STREAMING, E.CLOSE): S.CLOSED,
    (S.RESYNCING, E.DIVERGED): S.RESYNCING,
    (S.RESYNCING, E.CONVERGED): S.STREAMING,
    (S.RESYNCING, E.BYE): S.CLOSED,
    (S.RESYNCING, E.RETRY): S.CONNECTING,
    (S.RESYNCING, E.HANG_UP): S.IDLE,
    (S.RESYNCING, E.CLOSE): S.CLOSED,
}
ILLEGAL = [(s, e) for s in LinkState for e in LinkEvent if (s, e) not in EXPECTED]


def test_the_table_is_exactly_the_expected_one():
    assert set(TRANSITIONS) == set(LinkState)  # every state has a row (CLOSED's is empty)
    table = {(s, e): n for s, row in TRANSITIONS.items() for e, n in row.items()}
    assert table == EXPECTED
    assert TRANSITIONS[S.CLOSED] == {}  # terminal


def test_state_values_are_what_stats_and_the_dashboard_read():
    assert [s.value for s in LinkState] == [
        "idle",
        "connecting",
        "handshaking",
        "streaming",
        "resyncing",
        "closed",
    ]


@pytest.mark.parametrize(("state", "event"), list(EXPECTED), ids=lambda x: x.value)
def test_legal_event_moves_to_the_tabled_state(state, event):
    machine = LinkStateMachine(state)
    assert machine.can(event)
    assert machine.handle(event) is EXPECTED[state, event]
    assert machine.state is EXPECTED[state, event]
    assert machine.illegal == 0


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda x: x.value)
def test_illegal_event_raises_counts_and_keeps_the_state(state, event):
    machine = LinkStateMachine(state)
    assert not machine.can(event)
    with pytest.raises(IllegalTransition) as raised:
        machine.handle(event)
    assert raised.value.state is state and raised.value.event is event
    assert state.value in str(raised.value) and event.value in str(raised.value)
    assert machine.state is state
    assert machine.illegal == 1
    with pytest.raises(IllegalTransition):
        machine.handle(event)
    assert machine.illegal == 2


def test_every_pair_is_either_legal_or_illegal():
    assert len(EXPECTED) + len(ILLEGAL) == len(LinkState) * len(LinkEvent)
    assert len(ILLEGAL) > len(EXPECTED)  # most events are illegal in most states


def test_illegal_transition_is_a_protocol_error_the_shells_already_answer():
    with pytest.raises(ProtocolError):
        LinkStateMachine(S.STREAMING).handle(E.HELLO_RECEIVED)


def test_close_for_an_illegal_event_is_a_protocol_error_naming_state_and_event():
    machine = LinkStateMachine(S.STREAMING)
    with pytest.raises(IllegalTransition) as raised:
        machine.handle(E.HELLO_RECEIVED)
    code, reason = machine.close_for(raised.value)
    assert code is CloseCode.PROTOCOL_ERROR and int(code) == 4000
    assert "streaming" in reason and "hello_received" in reason
    assert len(reason.encode()) <= 123  # fits a close frame (RFC 6455 §5.5)


def test_the_tx_life_dial_retry_handshake_stream_drop_and_bye():
    tx = LinkStateMachine()
    assert tx.state is S.IDLE
    visited = [
        tx.handle(e)
        for e in (
            E.DIAL,
            E.RETRY,  # the dial failed: back off
            E.HELLO_SENT,
            E.HELLO_RECEIVED,
            E.HELLO_ACCEPTED,
            E.RETRY,  # the link dropped mid-stream
            E.HELLO_SENT,
            E.HELLO_RECEIVED,
            E.HELLO_ACCEPTED,
            E.BYE,
        )
    ]
    assert visited == [
        S.CONNECTING,
        S.CONNECTING,
        S.HANDSHAKING,
        S.HANDSHAKING,
        S.STREAMING,
        S.CONNECTING,
        S.HANDSHAKING,
        S.HANDSHAKING,
        S.STREAMING,
        S.CLOSED,
    ]
    assert tx.illegal == 0


def test_the_rx_life_resyncs_while_the_memories_disagree_and_serves_the_next_link():
    rx = LinkStateMachine()
    for event, state in [
        (E.ACCEPT, S.HANDSHAKING),
        (E.HELLO_RECEIVED, S.HANDSHAKING),
        (E.HELLO_ACCEPTED, S.STREAMING),
        (E.DIVERGED, S.RESYNCING),  # a DIGEST disagrees
        (E.DIVERGED, S.RESYNCING),  # the next one still does
        (E.CONVERGED, S.STREAMING),  # refreshes repaired the memory
        (E.DIVERGED, S.RESYNCING),
        (E.HANG_UP, S.IDLE),  # the link dropped while resyncing
        (E.ACCEPT, S.HANDSHAKING),
        (E.HANG_UP, S.IDLE),  # a refused HELLO
    ]:
        assert rx.handle(event) is state
    with pytest.raises(IllegalTransition):
        rx.handle(E.HELLO_RECEIVED)  # no HELLO without a link
    assert rx.state is S.IDLE and rx.illegal == 1


def test_a_channel_link_dials_bridges_and_closes():
    link = LinkStateMachine()
    assert [link.handle(e) for e in (E.DIAL, E.BRIDGED, E.CLOSE)] == [
        S.CONNECTING,
        S.STREAMING,
        S.CLOSED,
    ]
    unreachable = LinkStateMachine()
    unreachable.handle(E.DIAL)
    assert unreachable.handle(E.CLOSE) is S.CLOSED


def test_a_second_hello_is_illegal_once_streaming_or_resyncing():
    for state in (S.STREAMING, S.RESYNCING):
        with pytest.raises(IllegalTransition, match="hello_received"):
            LinkStateMachine(state).handle(E.HELLO_RECEIVED)


# --- check_hello ---------------------------------------------------------------------------------

CONFIG, MODEL = "c" * 64, "m" * 64


def _hello(**fields) -> Hello:
    return Hello(**{"role": "tx", "config_digest": CONFIG, "model_digest": MODEL, **fields})


def test_a_matching_hello_passes():
    check_hello(_hello(), "tx", CONFIG, MODEL)
    check_hello(_hello(role="rx"), "rx", CONFIG, MODEL)


@pytest.mark.parametrize(
    ("fields", "code", "named"),
    [
        ({"version": PROTOCOL_VERSION + 1}, CloseCode.VERSION_MISMATCH, "version"),
        ({"role": "rx"}, CloseCode.PROTOCOL_ERROR, "role"),
        ({"role": "channel"}, CloseCode.PROTOCOL_ERROR, "role"),
        ({"config_digest": "d" * 64}, CloseCode.CONFIG_MISMATCH, "config digest"),
        ({"model_digest": "n" * 64}, CloseCode.MODEL_MISMATCH, "model digest"),
        # the version is checked first: an old peer hears about the version, not the digests
        (
            {"version": 0, "config_digest": "d" * 64, "model_digest": "n" * 64},
            CloseCode.VERSION_MISMATCH,
            "version",
        ),
        (  # then the config, then the model
            {"config_digest": "d" * 64, "model_digest": "n" * 64},
            CloseCode.CONFIG_MISMATCH,
            "config digest",
        ),
    ],
)
def test_a_mismatch_is_refused_with_its_close_code(fields, code, named):
    with pytest.raises(HandshakeError) as raised:
        check_hello(_hello(**fields), "tx", CONFIG, MODEL)
    error = raised.value
    assert error.code is code
    assert error.error_code == code.name.lower()
    assert named in error.reason
    assert len(error.reason) <= 123


def test_a_digest_mismatch_names_both_digests_in_full_in_the_detail():
    with pytest.raises(HandshakeError) as raised:
        check_hello(_hello(config_digest="d" * 64), "tx", CONFIG, MODEL)
    assert "d" * 64 in raised.value.detail and CONFIG in raised.value.detail
    assert "d" * 64 not in raised.value.reason  # the close frame gets a short prefix


def test_a_long_reason_is_cut_to_fit_a_close_frame():
    error = HandshakeError(CloseCode.PROTOCOL_ERROR, "x" * 500)
    assert error.reason == "x" * 123 and error.detail == "x" * 500


def test_only_disagreements_are_fatal():
    fatal = {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.VERSION_MISMATCH,
        CloseCode.CONFIG_MISMATCH,
        CloseCode.MODEL_MISMATCH,
        CloseCode.AUTH_FAILED,
    }
    assert fatal == FATAL_CLOSE_CODES
    for retryable in (CloseCode.LINK_BUSY, CloseCode.RX_UNREACHABLE, CloseCode.GOING_AWAY):
        assert retryable not in FATAL_CLOSE_CODES
