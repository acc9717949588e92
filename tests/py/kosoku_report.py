"""Reads kosoku's report (argv[1]: its directory) for websocketd.rs (the
tests have no JSON parser): one line per case, `id behavior behaviorClose`
(tab-separated), from `index.json`; then, for each case id in argv[2:], what
its own report says happened.

    target/test-venv/bin/python tests/py/kosoku_report.py REPORT_DIR [CASE...]
"""

import json, os, sys
out, details = sys.argv[1], sys.argv[2:]
for agent, cases in json.load(open(os.path.join(out, "index.json"))).items():
    for case, r in cases.items():
        if not details:
            print(case, r["behavior"], r["behaviorClose"], sep="\t")
        elif case in details:
            d = json.load(open(os.path.join(out, r["reportfile"])))
            short = lambda v: json.dumps(v)[:300]
            print(f"{case}: {d['description'][:200]}\n  {d['result']} / {d['resultClose']}"
                  f"\n  expected {short(d['expected'])}\n  received {short(d['received'])}"
                  f"\n  remote close {d['remoteCloseCode']} {d['remoteCloseReason']!r}, "
                  f"clean {d['wasClean']} ({d['wasNotCleanReason']})")
