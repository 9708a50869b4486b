#!/usr/bin/env python3
"""Sums the JUnit/xUnit files of every test tier and prints one line per tier, named by its
file (host-debug, host-release, kernel, ...), then one closing line:
'N passed, N failed, N skipped'. The host tier runs twice (debug and release), so its tests
are counted once per configuration. Exits 1 when anything failed or a tier left no results
(a missing file, or one with no test cases: a tier that ran nothing has checked nothing)."""
import os
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    tier = os.path.basename(path).removesuffix(".xml").removesuffix("-swift-testing")
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"summarize: {tier}: no results from {path}: {e}")
        failed += 1
        continue
    p = f = s = 0
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            f += 1
        elif case.find("skipped") is not None:
            s += 1
        else:
            p += 1
    if p + f + s == 0:
        print(f"summarize: {tier}: no test cases in {path}")
        failed += 1
        continue
    print(f"summarize: {tier}: {p} passed, {f} failed, {s} skipped")
    passed, failed, skipped = passed + p, failed + f, skipped + s
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
