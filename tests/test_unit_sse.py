"""split_events: raw timestamped reads -> SSE events, each stamped with the read that completed it."""

from __future__ import annotations

import pytest

from bench.sse import split_events

# Three events as a vLLM-style server writes them (LF line endings).
STREAM_LF = (
    b'data: {"a": 1}\n\n'
    b": ping\n\n"  # a keep-alive comment: no event
    b"event: content_block_delta\n"
    b"data: line one\n"
    b"data: line two\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED_DATA = [b'{"a": 1}', b"line one\nline two", b"[DONE]"]
EXPECTED_NAMES = [None, "content_block_delta", None]


def _terminator_ends(stream: bytes, terminator: bytes) -> list[int]:
    """Index of the last byte of every event-terminating blank line that closes a real (non-comment) event."""
    ends, start = [], 0
    while (i := stream.find(terminator, start)) >= 0:
        ends.append(i + len(terminator) - 1)
        start = i + len(terminator)
    return ends


def test_single_read_gives_every_event_with_its_name_and_the_read_time():
    ev = split_events([7], [STREAM_LF])
    assert ev.data == EXPECTED_DATA
    assert ev.names == EXPECTED_NAMES
    assert ev.arrival_ns == [7, 7, 7]
    assert ev.complete_last is True
    assert len(ev) == 3


@pytest.mark.parametrize("cut", range(1, len(STREAM_LF)))
def test_lf_stream_split_in_two_at_every_byte(cut):
    # read 1 (t=100) holds bytes [0, cut), read 2 (t=200) the rest
    ev = split_events([100, 200], [STREAM_LF[:cut], STREAM_LF[cut:]])
    assert ev.data == EXPECTED_DATA
    assert ev.names == EXPECTED_NAMES
    # an event is complete when the last '\n' of its blank line has arrived
    ends = _terminator_ends(STREAM_LF, b"\n\n")
    real_ends = [ends[0], ends[2], ends[3]]  # ends[1] closes the ': ping' comment
    assert ev.arrival_ns == [100 if end < cut else 200 for end in real_ends]
    assert ev.complete_last is True


def test_lf_stream_one_byte_per_read():
    # read i arrives at t = 1000 + i: an event's time is the index of its blank line's last byte
    reads = [STREAM_LF[i:i + 1] for i in range(len(STREAM_LF))]
    ev = split_events([1000 + i for i in range(len(reads))], reads)
    ends = _terminator_ends(STREAM_LF, b"\n\n")
    assert ev.data == EXPECTED_DATA
    assert ev.arrival_ns == [1000 + ends[0], 1000 + ends[2], 1000 + ends[3]]


STREAM_CRLF = STREAM_LF.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("cut", range(1, len(STREAM_CRLF)))
def test_crlf_stream_split_in_two_at_every_byte(cut):
    ev = split_events([100, 200], [STREAM_CRLF[:cut], STREAM_CRLF[cut:]])
    assert ev.data == EXPECTED_DATA  # no stray '\r' in the data, no empty extra events
    assert ev.names == EXPECTED_NAMES
    assert ev.complete_last is True
    ends = _terminator_ends(STREAM_CRLF, b"\r\n\r\n")
    for t, end in zip(ev.arrival_ns, [ends[0], ends[2], ends[3]]):
        blank_cr = end - 1  # the blank line's '\r' already ends it; its '\n' may be held back
        if cut > end:
            assert t == 100  # the whole blank line was in read 1
        elif cut <= blank_cr:
            assert t == 200  # the blank line had not started to arrive in read 1
        else:
            assert t in (100, 200)  # cut between the blank line's '\r' and '\n'


def test_crlf_split_inside_a_data_line_ending():
    # '\r' | '\n' of the *data* line's ending: the event is only complete with read 2's blank line
    ev = split_events([1, 2], [b"data: a\r", b"\n\r\n"])
    assert ev.data == [b"a"]
    assert ev.arrival_ns == [2]
    assert ev.complete_last is True


def test_crlf_split_inside_the_blank_line_gives_one_event_without_carriage_returns():
    ev = split_events([1, 2], [b"data: a\r\n\r", b"\ndata: b\r\n\r\n"])
    assert ev.data == [b"a", b"b"]
    assert ev.arrival_ns[1] == 2
    assert ev.complete_last is True


def test_cr_only_line_endings_in_one_read():
    ev = split_events([5], [b"data: a\rdata: b\r\rdata: c\r\r"])
    assert ev.data == [b"a\nb", b"c"]


def test_cr_only_event_is_complete_at_the_read_holding_its_blank_line():
    ev = split_events([1, 2], [b"data: a\r\r", b"data: b\r\r"])
    assert ev.data == [b"a", b"b"]
    assert ev.arrival_ns == [1, 2]
    assert ev.complete_last is True


def test_mixed_line_endings():
    ev = split_events([1], [b"data: a\r\ndata: b\n\rdata: c\r\r\n"])
    # 'data: a' CRLF, 'data: b' LF, blank CR -> event 1; 'data: c' CR, blank CRLF -> event 2
    assert ev.data == [b"a\nb", b"c"]
    assert ev.complete_last is True


def test_multi_line_data_is_joined_with_newlines_and_empty_data_lines_count():
    ev = split_events([1], [b"data: x\ndata:\ndata: y\n\n"])
    assert ev.data == [b"x\n\ny"]


def test_only_one_space_after_the_colon_is_removed():
    ev = split_events([1], [b"data:no-space\n\ndata:  two spaces\n\n"])
    assert ev.data == [b"no-space", b" two spaces"]


def test_comments_and_keepalives_make_no_events():
    ev = split_events([1, 2, 3], [b": keep-alive\n\n", b":\n\n: ping\n\n", b'data: {"x": 1}\n\n'])
    assert ev.data == [b'{"x": 1}']
    assert ev.arrival_ns == [3]


def test_comment_inside_an_event_is_skipped():
    ev = split_events([1], [b": note\ndata: a\n: another\ndata: b\n\n"])
    assert ev.data == [b"a\nb"]


def test_id_retry_and_unknown_fields_are_ignored():
    ev = split_events([1], [b"id: 42\nretry: 1000\nfoo: bar\ndata: a\n\n"])
    assert ev.data == [b"a"]
    assert ev.names == [None]


def test_event_names_are_kept_per_event():
    ev = split_events([1], [b"event: message_start\ndata: {}\n\nevent: ping\ndata: {}\n\ndata: {}\n\n"])
    assert ev.names == ["message_start", "ping", None]


def test_done_marker_is_an_ordinary_event():
    ev = split_events([1, 2], [b"data: x\n\n", b"data: [DONE]\n\n"])
    assert ev.data == [b"x", b"[DONE]"]
    assert ev.arrival_ns == [1, 2]


def test_final_event_without_blank_line_is_kept_and_flagged():
    ev = split_events([10, 20], [b"data: a\n\n", b"data: b"])
    assert ev.data == [b"a", b"b"]
    assert ev.arrival_ns == [10, 20]
    assert ev.complete_last is False


def test_final_event_with_single_newline_is_incomplete():
    ev = split_events([10, 20], [b"data: a\n\ndata: b", b"\n"])
    assert ev.data == [b"a", b"b"]
    assert ev.arrival_ns == [10, 20]
    assert ev.complete_last is False


def test_final_unterminated_event_with_crlf():
    ev = split_events([10, 20], [b"data: a\r\n\r\n", b"data: b\r\n"])
    assert ev.data == [b"a", b"b"]
    assert ev.arrival_ns == [10, 20]
    assert ev.complete_last is False


def test_trailing_comment_does_not_make_the_stream_incomplete():
    ev = split_events([1, 2], [b"data: a\n\n", b": bye"])
    assert ev.data == [b"a"]
    assert ev.complete_last is True


def test_extra_blank_lines_between_events():
    ev = split_events([1, 2], [b"\n\ndata: a\n\n\n\n", b"data: b\n\n\n"])
    assert ev.data == [b"a", b"b"]
    assert ev.arrival_ns == [1, 2]


def test_event_arrival_is_the_read_that_completed_it_not_the_one_that_started_it():
    # 'data: he' at t=1, 'llo\n' at t=2, '\n' at t=3: only the last read completes the event
    ev = split_events([1, 2, 3], [b"data: he", b"llo\n", b"\n"])
    assert ev.data == [b"hello"]
    assert ev.arrival_ns == [3]


def test_several_events_in_one_read_share_its_time():
    ev = split_events([5, 9], [b"data: a\n\ndata: b\n\ndata: c", b"\n\n"])
    assert ev.arrival_ns == [5, 5, 9]


def test_empty_reads_are_harmless():
    ev = split_events([1, 2, 3], [b"", b"data: a\n\n", b""])
    assert ev.data == [b"a"]
    assert ev.arrival_ns == [2]


def test_event_name_without_data_dispatches_nothing():
    # SSE spec: a block with no data line leaves the data buffer empty, and an empty buffer is not dispatched
    ev = split_events([1], [b"event: ping\n\ndata: x\n\n"])
    assert ev.data == [b"x"] and ev.names == [None]


def test_leading_byte_order_mark_is_ignored():
    ev = split_events([1, 2], [b"\xef\xbb\xbfdata: a\n\n", b"data: b\n\n"])
    assert ev.data == [b"a", b"b"] and ev.arrival_ns == [1, 2]


@pytest.mark.parametrize("reads, sse", [
    ([b'data: {"a": 1}\n\n'], True),
    ([b"\r\n\nevent: ping\ndata: x\n\n"], True),  # blank lines first
    ([b"d", b"at", b"a:", b" x\n\n"], True),  # the field name split across reads
    ([b": keep-alive\n\n"], True),
    ([b"\xef\xbb\xbfid: 7\n"], True),  # after a byte-order mark
    ([b"\xef\xbb\xbfdat", b"a: x\n\n"], True),
    ([b"retry: 3000\n\n"], True),
    ([b" data: x\n\n"], False),  # a field name with a blank before it is another field
    ([b'{"choices": []}'], False),  # a JSON document
    ([b'{"a": 1}\n{"a": 2}\n'], False),  # NDJSON
    ([b"data"], False),
    ([b"\n\n"], False),
    ([], False),
])
def test_looks_like_sse_by_the_first_non_blank_line(reads, sse):
    from bench.sse import looks_like_sse
    assert looks_like_sse(reads) is sse
