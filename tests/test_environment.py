"""The versions a job's report lists: read without importing the packages, equal to what importing them says."""

import json
import subprocess
import sys

_PROBE = """
import importlib, importlib.util, json, sys
from personalive.environment import versions
listed = versions()
imported_by_listing = sorted(n for n in ("onnx", "onnxruntime", "tensorrt", "diffusers", "transformers", "av")
                             if n in sys.modules)
actual = {}
for name in listed:
    if name in ("python", "personalive"):
        continue
    if importlib.util.find_spec(name) is None:
        actual[name] = None
    else:
        actual[name] = getattr(importlib.import_module(name), "__version__", None)
print(json.dumps({"listed": listed, "actual": actual, "imported_by_listing": imported_by_listing}))
"""


def test_versions_are_read_without_importing_and_match_the_modules():
    # a fresh interpreter: in this one the test suite has imported most of them already
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, check=True)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["imported_by_listing"] == []
    for name, version in data["actual"].items():
        assert data["listed"][name] == version, name
    assert data["listed"]["torch"] and data["listed"]["numpy"] and data["listed"]["av"]  # installed here
