"""Reads a testssl.sh JSON file (argv[1]) and prints each finding on one
line: severity, id and finding, separated by tabs.

    target/test-venv/bin/python tests/py/testssl_findings.py FILE.json
"""

import json, sys
for f in json.load(open(sys.argv[1])):
    print("\t".join(" ".join(str(f.get(k, "")).split()) for k in ("severity", "id", "finding")))
