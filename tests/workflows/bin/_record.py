"""Shared by the stand-in tools: append this call's argv to $GITML_RECORDINGS/<tool>.jsonl."""

import json
import os
import sys
from pathlib import Path


def record(tool: str) -> Path:
    recordings = Path(os.environ["GITML_RECORDINGS"])
    with open(recordings / f"{tool}.jsonl", "a") as log:
        log.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}) + "\n")
    return recordings
