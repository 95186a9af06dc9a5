"""The text frames ``api.server`` writes itself, read back by the websockets parser."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from api.server import text_frame_header


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_a_frame_of_any_length_parses_as_one_final_unmasked_text_frame(size: int) -> None:
    payload = b"x" * size
    reader = StreamReader()
    reader.feed_data(text_frame_header(size) + payload)
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, payload)
    assert frame == Frame(Opcode.TEXT, payload)
    assert text_frame_header(size) + payload == Frame(Opcode.TEXT, payload).serialize(
        mask=False
    )
