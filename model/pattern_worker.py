"""The process a server matches user patterns in (app/inference/pattern_pool.py starts, times and
stops it): `python -P <this file>`.

RE2 compiles a pattern holding the GIL; google-re2's binding releases it only while it
matches. Compiling "(?s)" + ".{0,999}" * 24 + "Z$" (198 characters, a legal pattern) took
1.3 to 6.6 s on the shared two-core machine, and meanwhile no other thread of the server
ran, the event loop included. Here it stalls this process only, which the server kills
when the time budget runs out, as it could not stop a thread.

Messages are frames: the body's length in 4 bytes (big-endian), then the body, JSON.
  in:  {"pattern": <RE2 syntax, patterns.to_re2's output>, "text": <the text>}
  out: {"ready": true} once started; then one answer per job, in order:
       {"spans": [start0, end0, start1, end1, ...]} (character offsets, as matches() gives)
       or {"error": <message>, "kind": <PatternError's kind>}.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import struct
import sys
from pathlib import Path
from typing import BinaryIO

if __package__:
    from .patterns import PatternError, compile_re2, matches
else:
    # Run as a script (app/inference/pattern_pool.py does): patterns.py alone, which needs only re and
    # re2. Importing the rnnscope package imports NumPy and the notebook library, 40 MB and
    # 0.3 s of CPU per worker for nothing, and ties the worker to every file of the package.
    _spec = importlib.util.spec_from_file_location("rnnscope_worker_patterns", Path(__file__).with_name("patterns.py"))
    _patterns = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_patterns)
    PatternError, compile_re2, matches = _patterns.PatternError, _patterns.compile_re2, _patterns.matches

HEADER = struct.Struct(">I")


def frame(message: dict) -> bytes:
    """One message as sent: header and JSON body. JSON's \\u escapes carry any str,
    lone surrogates included."""
    body = json.dumps(message, separators=(",", ":")).encode("ascii")
    return HEADER.pack(len(body)) + body


def answer(job: dict) -> dict:
    """The spans of every match of job's pattern in its text, or what went wrong."""
    try:
        pattern = compile_re2(job["pattern"])
        return {"spans": [offset for span in matches(pattern, job["text"]) for offset in span]}
    except PatternError as e:
        return {"error": str(e), "kind": e.kind}
    except UnicodeEncodeError:                       # RE2 reads UTF-8; a lone surrogate has none
        return {"error": "the text holds a lone surrogate (U+D800 to U+DFFF), which the regex engine "
                         "cannot read", "kind": "regex_error"}


def _read(inbox: BinaryIO, size: int) -> bytes | None:
    data = inbox.read(size)                          # a buffered read: all `size` bytes, or EOF
    return data if len(data) == size else None


def serve(inbox: BinaryIO, outbox: BinaryIO) -> None:
    """Answer jobs until the server closes the pipe (or dies: the pipe closes with it)."""
    outbox.write(frame({"ready": True}))
    outbox.flush()
    while (header := _read(inbox, HEADER.size)) is not None:
        body = _read(inbox, HEADER.unpack(header)[0])
        if body is None:
            return
        outbox.write(frame(answer(json.loads(body))))
        outbox.flush()


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                                    # a stray print must not corrupt the frames
    try:
        serve(sys.stdin.buffer, outbox)
    except BrokenPipeError:                          # the server went away mid-answer
        pass
    os._exit(0)                                      # no flush of a pipe nobody reads any more


if __name__ == "__main__":
    main()
