#!/usr/bin/env python3
"""report.py on hand-written sample records (fixture/): the doc states missing suites instead of
inventing figures, tables what it has, and writes SVGs that parse as XML. The sample figures
are made up and appear only in this test's temporary output, never in docs/.

    python -m unittest discover -s Benchmarks/report -p 'test_*.py'   (with matplotlib)
"""
import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixture")


class ReportTest(unittest.TestCase):
    def test_fixture(self):
        with tempfile.TemporaryDirectory() as out:
            report.main(FIXTURE, out)
            with open(os.path.join(out, "benchmarks.md")) as f:
                md = f.read()
            # Suites with no records say so; there is no log in the fixture to quote.
            self.assertIn("### walk-hostile\n\n**Missing**: `WalkBenchmark` wrote no `BENCH_JSON` record", md)
            self.assertIn("### walk-2MiB\n\n**Missing**", md)
            self.assertNotIn("### WalkBenchmark", md)
            self.assertIn("### CallCost instructions\n\n**Missing**", md)
            self.assertIn("1 malformed lines were skipped", md)
            self.assertIn("**Quick mode**", md)
            # Tables and headlines from the records that are there.
            self.assertIn("| map 2 MiB, no domain, singly (4 areas) | 210.0 | ns/op | C floor (same ioctls) | 200.0 | 1.05x | vm |", md)
            self.assertIn("map 4 KiB, fixed IOVA, no domain (vm, one call at a time): Swift/C **1.010x**", md)
            self.assertIn("all 4 Swift/C pairs against the C floor (same ioctls): median **1.015x**, 3 of 4 within the goal", md)
            self.assertIn("1 GiB pages in the VM: **not available**", md)
            self.assertIn("### Fixture extra", md)
            # The walk and the engine: their sections, tables and headlines.
            for suite in ("walk", "engine-table", "churn", "engine-kernel", "engine-scaling"):
                self.assertIn(f"### {suite}\n\nFrom `", md)
            self.assertIn("| IOMMUFDModel: random, batches of 8 | 2,000 | ns/change | one-ioctl-per-change shadow | 500.0 | 4x | host |", md)
            self.assertIn("- engine, 1024 MiB contiguous guest, 4 KiB leaves, mock domain (vm): **1 ioctl** against 262,144 for the "
                          "per-leaf mirror; 50 ms against 1,000 ms (**0.05x** the time)", md)
            self.assertIn("contiguous guest table (1 null target) against the bare walk by runs: 1000 leaves **1.20x**", md)
            self.assertIn("two null targets against one (first sync): 1000 leaves, contiguous **1.10x**", md)
            self.assertIn("- walk by runs, GB/s of entries as a share of the read bandwidth measured in the same run (5.00 GB/s, host): "
                          "1 GiB tables 200 % over 1 formats", md)
            self.assertIn("1 thread **1.00x**, 2 threads **1.80x** (2 CPUs online, host)", md)
            self.assertIn("- skipped: 1 GiB areas, domain none: fixture reason", md)
            plots = sorted(p for p in os.listdir(os.path.join(out, "benchmarks")) if p.endswith(".svg"))
            self.assertEqual(plots, ["churn.svg", "engine-churn.svg", "engine-kernel-ioctls.svg", "engine-kernel-time.svg",
                                     "engine-scaling.svg", "engine-table.svg", "iommuctl-bench.svg", "pages.svg",
                                     "swift-vs-c-ratio.svg", "walk.svg"])
            with open(os.path.join(out, "benchmarks", "records.jsonl")) as f:
                self.assertEqual(len(f.readlines()), 21)
            for p in plots:
                root = ET.parse(os.path.join(out, "benchmarks", p)).getroot()
                self.assertTrue(root.tag.endswith("svg"), p)
                self.assertIn(f"benchmarks/{p}", md)


if __name__ == "__main__":
    unittest.main()
