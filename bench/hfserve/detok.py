"""Token ids to text, one token at a time, as a streaming server must send it.

A byte-level BPE token can end in the middle of a UTF-8 character (Chinese text split across tokens, or any token
of a random-weight model). Decoding the growing sequence and sending the difference would then send U+FFFD and
later a different character. As vLLM and TGI do, the text of the tokens since the last complete character is held
back (the token's delta is "") until a later token completes it:

    prefix = decode(ids[prefix_offset:read_offset]);  full = decode(ids[prefix_offset:])
    delta  = full[len(prefix):]  if full is longer and does not end in U+FFFD,  else ""  (held back)

Only a few tokens are decoded per step (the offsets move forward), so the cost does not grow with the text. The last
token of a sequence flushes whatever is held back, replacement characters included. Special tokens are skipped.
"""
from __future__ import annotations

REPLACEMENT = "\ufffd"


class IncrementalText:
    def __init__(self, tokenizer):
        self._decode = tokenizer.decode
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def add(self, token_id: int, last: bool = False) -> str:
        """The text this token adds ("" while held back); with `last`, everything not sent yet."""
        self._ids.append(token_id)
        prefix = self._text(self._prefix_offset, self._read_offset)
        full = self._text(self._prefix_offset, len(self._ids))
        if last or (len(full) > len(prefix) and not full.endswith(REPLACEMENT)):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return full[len(prefix):]
        return ""

    def _text(self, start: int, end: int) -> str:
        if start >= end:
            return ""
        return self._decode(self._ids[start:end], skip_special_tokens=True, clean_up_tokenization_spaces=False)
