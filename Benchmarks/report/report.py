#!/usr/bin/env python3
"""Writes docs/benchmarks.md and its SVG plots from one run of Benchmarks/report.sh.

    report.py RUN_DIR OUT_DIR

RUN_DIR holds what report.sh gathered: records.jsonl (one BENCH_JSON record a line, from every
benchmark binary, host and VM), facts.json (the machines, the commands, the mode), bench.json
(`iommuctl bench --json` in the VM) and the binaries' console logs (*.txt). OUT_DIR gets
benchmarks.md and benchmarks/*.svg. Nothing here measures: every figure comes from RUN_DIR.
"""
import json
import os
import re
import statistics
import sys
import xml.etree.ElementTree as ET

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams["svg.hashsalt"] = "swift-iommufd"  # stable ids: a rerun changes only what was measured
plt.rcParams["svg.fonttype"] = "none"

GOAL = 1.03
# The suites each binary writes; a suite with no record is reported missing.
EXPECTED = [
    ("walk", "WalkBenchmark", "host", "walk.txt"),
    ("walk-2MiB", "WalkBenchmark", "host", "walk.txt"),
    ("walk-hostile", "WalkBenchmark", "host", "walk.txt"),
    ("engine-table", "MirrorBenchmark table", "host", "mirror-table.txt"),
    ("churn", "MirrorBenchmark host (the kernel model) and MirrorBenchmark kernel (mock domain)", "host and vm",
     "mirror-host.txt vm/mirror-kernel.txt"),
    ("engine-kernel", "MirrorBenchmark kernel", "vm", "vm/mirror-kernel.txt"),
    ("engine-scaling", "MirrorBenchmark scaling", "host", "mirror-scaling.txt"),
    ("CallCost model", "CallCost", "host", "call-cost-host.txt"),
    ("CallCost instructions", "CallCost (callgrind, call-cost.sh)", "host", "call-cost-host.txt"),
    ("CallCost call", "CallCost kernel", "vm", "vm/callcost-kernel.txt"),
    ("CallCost pages", "CallCost suite", "vm", "vm/callcost-suite.txt"),
    ("CallCost churn", "CallCost suite", "vm", "vm/callcost-suite.txt"),
    ("CallCost copy", "CallCost suite", "vm", "vm/callcost-suite.txt"),
]
# What wrote each console log (report.sh's names).
LOGS = {
    "walk.txt": "host: WalkBenchmark",
    "mirror-host.txt": "host: MirrorBenchmark host, then MirrorBenchmark allocs",
    "mirror-table.txt": "host: MirrorBenchmark table",
    "mirror-scaling.txt": "host: MirrorBenchmark scaling",
    "vm/mirror-kernel.txt": "vm: MirrorBenchmark kernel",
}


def load_records(path):
    records, bad = [], 0
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if isinstance(r, dict) and {"suite", "case", "value", "unit", "where"} <= r.keys():
                    records.append(r)
                else:
                    bad += 1
    return records, bad


def num(v, digits=3):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.{digits}g}"


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def record_table(records):
    rows = []
    for r in records:
        rows.append([r["case"], num(r["value"]), r["unit"], r.get("baseline") or "-",
                     num(r.get("baselineValue")), (num(r["ratio"], 4) + "x") if r.get("ratio") is not None else "-", r["where"]])
    return table(["case", "value", "unit", "baseline", "baseline value", "ratio", "where"], rows)


def check_svg(path):
    ET.parse(path)  # raises on malformed XML
    return path


def save(fig, path):
    """Lays `fig` out, writes it to `path` and closes it; the path, once it parses as XML."""
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return check_svg(path)


def log_log_axes(ax, xlabel, ylabel, title, legend_size, xbase=10):
    """Log scales on both axes (`xbase` on x), their labels, the title and the legend."""
    ax.set_xscale("log", base=xbase)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=legend_size)


def ratio_plot(records, path, title):
    paired = [r for r in records if r.get("ratio") is not None]
    if not paired:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(paired) + 1.4))
    names = [f'{r["case"]} ({r["where"]})' for r in paired]
    ratios = [r["ratio"] for r in paired]
    colors = ["#3a7" if x <= GOAL else "#c54" for x in ratios]
    ax.barh(range(len(paired)), ratios, color=colors)
    ax.axvline(1.0, color="#444", lw=0.8)
    ax.axvline(GOAL, color="#c54", lw=0.8, ls="--", label=f"goal {GOAL}x")
    ax.set_yticks(range(len(paired)), names, fontsize=7)
    ax.invert_yaxis()
    lo, hi = min(ratios + [1.0]), max(ratios + [GOAL])
    ax.set_xlim(max(0, lo - 0.05), hi + 0.05)
    ax.set_xlabel("Swift / C (median time; below 1: Swift faster)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)


def grouped_plot(records, path, title, ylabel, labels=("Swift (IOMMUFD)", "C floor")):
    """Value and baseline side by side per case (Swift and C unless `labels` says), log scale."""
    paired = [r for r in records if r.get("baselineValue") is not None]
    if not paired:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.2))
    xs = range(len(paired))
    ax.bar([x - 0.2 for x in xs], [r["value"] for r in paired], 0.4, label=labels[0], color="#e8743b")
    ax.bar([x + 0.2 for x in xs], [r["baselineValue"] for r in paired], 0.4, label=labels[1], color="#4a7ab8")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), [r["case"] for r in paired], rotation=60, ha="right", fontsize=6)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, path)


def churn_plot(records, path):
    series = {}
    for r in records:
        # "churn, batches of 8, mock domain"
        parts = r["case"].split(", ")
        if len(parts) != 3 or not parts[1].startswith("batches of "):
            continue
        batch = int(parts[1].split()[-1])
        series.setdefault(parts[2], []).append((batch, r["value"], r.get("baselineValue")))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for domain, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"Swift, {domain}")
        ax.plot([p[0] for p in points], [p[2] for p in points], "s--", label=f"C, {domain}")
    log_log_axes(ax, "batch size (random map/unmap operations per batch)", "ns per operation (median over batches)",
                 "Random map/unmap churn, 512 one-page slots (VM)", 7, xbase=2)
    return save(fig, path)


def split_case(case):
    """"262144 leaves, contiguous: first sync, 1 target" -> ("262144 leaves, contiguous", "first sync, 1 target")."""
    head, _, tail = case.partition(": ")
    return head, tail


def walk_plot(records, path):
    """GB/s of entries per format and table size (runs, runs out of the caches, leaves) against the read bandwidth."""
    kinds = ["runs", "runs, out of the caches", "leaves"]
    rows, bw = {}, []
    for r in records:
        head, kind = split_case(r["case"])
        if kind in kinds:
            rows.setdefault(head, {})[kind] = r["value"]
            if r.get("baselineValue") is not None:
                bw.append(r["baselineValue"])
    if not rows:
        return None
    names = list(rows)
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(names) + 1.6))
    for i, (kind, color) in enumerate(zip(kinds, ["#e8743b", "#f2b134", "#4a7ab8"])):
        ax.barh([y + (i - 1) * 0.27 for y in range(len(names))], [rows[n].get(kind, 0) for n in names], 0.27,
                label=f"walk by {kind}", color=color)
    if bw:
        ax.axvline(statistics.median(bw), color="#444", ls="--", lw=1, label=f"read bandwidth, same run ({statistics.median(bw):.2f} GB/s)")
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("GB/s of page-table entries read")
    ax.set_title("Page-table walk (dense 4 KiB-leaf tables) against measured memory bandwidth (host)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)


def engine_table_plot(records, path):
    """Engine first sync (one null target) ns/leaf against the bare walks and the per-leaf mirror, per table size."""
    data = {}
    for r in records:
        head, what = split_case(r["case"])
        m = re.match(r"(\d+) leaves, (\w+)$", head)
        if not m:
            continue
        d = data.setdefault(m.group(2), {}).setdefault(int(m.group(1)), {})
        if what == "first sync, 1 target":
            d["engine, first sync"] = r["value"]
            d["bare walk by runs"] = r.get("baselineValue")
        elif what == "unchanged resync, 1 target":
            d["engine, unchanged resync"] = r["value"]
        elif what == "first sync, 1 target, vs per-leaf mirror":
            d["per-leaf mirror"] = r.get("baselineValue")
        elif what == "bare walk by leaves":
            d["bare walk by leaves"] = r["value"]
    if not data:
        return None
    layouts = [l for l in ("contiguous", "scattered") if l in data] + sorted(set(data) - {"contiguous", "scattered"})
    fig, axes = plt.subplots(1, len(layouts), figsize=(4.6 * len(layouts), 4), squeeze=False)
    styles = {"engine, first sync": "o-", "engine, unchanged resync": "o:", "bare walk by runs": "s--",
              "bare walk by leaves": "^--", "per-leaf mirror": "d-."}
    for ax, layout in zip(axes[0], layouts):
        sizes = sorted(data[layout])
        for name, style in styles.items():
            pts = [(n, data[layout][n][name]) for n in sizes if data[layout][n].get(name) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name)
        log_log_axes(ax, "guest leaves (4 KiB)", "ns per guest leaf (median)", f"{layout} guest table, 1 null target (host)", 6)
    return save(fig, path)


def mirror_churn_plot(records, path):
    """Engine against the one-ioctl-per-change shadow per batch size, one panel per target (model, kernel)."""
    series = {}
    for r in records:
        if r["unit"] != "ns/change":
            continue
        label, name = split_case(r["case"])
        m = re.search(r"(\d+) maps per unmap$|batches of (\d+)$", name)
        if not m:
            continue
        pattern = "DMA-API" if m.group(1) else "random"
        batch = int(m.group(1) or m.group(2))
        series.setdefault(f'{label} ({r["where"]})', {}).setdefault(pattern, []).append((batch, r["value"], r.get("baselineValue")))
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(4.6 * len(series), 4), squeeze=False)
    for ax, (label, patterns) in zip(axes[0], sorted(series.items())):
        for pattern, pts in sorted(patterns.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"engine, {pattern}")
            ax.plot([p[0] for p in pts], [p[2] for p in pts], "s--", label=f"one-ioctl-per-change shadow, {pattern}")
        log_log_axes(ax, "batch size (DMA-API: maps per unmap)", "ns per change (median of rounds)", label, 6, xbase=2)
    return save(fig, path)


def scaling_plot(records, path):
    """Aggregate changes/s and per-thread ns/change by thread count (null target)."""
    agg, per, cpus = {}, {}, None
    for r in records:
        m = re.search(r"(\d+) threads?, (\d+) CPUs online: (.*)$", r["case"])
        if not m:
            continue
        t, cpus = int(m.group(1)), int(m.group(2))
        (agg if r["unit"] == "changes/s" else per)[t] = r["value"]
    if not agg:
        return None
    ts = sorted(agg)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
    a1.plot(ts, [agg[t] / 1e6 for t in ts], "o-", color="#e8743b", label="measured")
    a1.plot(ts, [agg[ts[0]] * min(t, cpus or t) / 1e6 for t in ts], "--", color="#888", label="linear up to the CPUs online")
    a1.set_xlabel("threads (one engine each)")
    a1.set_ylabel("million changes/s, all threads")
    a1.set_xscale("log", base=2)
    a1.set_ylim(bottom=0)
    a1.legend(fontsize=7)
    a1.set_title(f"aggregate throughput ({cpus} CPUs online, host)", fontsize=9)
    if per:
        a2.plot(sorted(per), [per[t] for t in sorted(per)], "o-", color="#4a7ab8")
    a2.set_xscale("log", base=2)
    a2.set_xlabel("threads")
    a2.set_ylabel("ns per change, per thread (wall time)")
    a2.set_title("per-thread cost", fontsize=9)
    fig.suptitle("Thread scaling on the null target, 4 KiB map/unmap in batches of 32", fontsize=9)
    return save(fig, path)


def span(values, fmt):
    values = sorted(values)
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(values[0])}-{fmt(values[-1])} (median {fmt(statistics.median(values))})"


def engine_headlines(by_suite):
    heads = []
    for r in by_suite.get("engine-kernel", []):
        if r["case"].endswith(": ioctls") and r.get("baselineValue") is not None:
            head = r["case"][:-len(": ioctls")]
            t = next((x for x in by_suite["engine-kernel"] if x["case"] == head + ": time"), None)
            timing = (f"; {num(t['value'])} ms against {num(t['baselineValue'])} ms (**{t['ratio']:.3g}x** the time)"
                      if t and t.get("ratio") is not None else "")
            heads.append(f"- engine, {head} ({r['where']}): **{num(r['value'])} ioctl{'' if r['value'] == 1 else 's'}** against {num(r['baselineValue'])} "
                         f"for the per-leaf mirror{timing}")
    table_rs = by_suite.get("engine-table", [])
    for layout in ("contiguous", "scattered"):
        rs = [r for r in table_rs if r["case"].endswith(f", {layout}: first sync, 1 target") and r.get("ratio") is not None]
        if rs:
            heads.append(f"- engine first sync of a {layout} guest table (1 null target) against the bare walk by runs: "
                         + ", ".join(f"{r['case'].split(' leaves')[0]} leaves **{r['ratio']:.2f}x**" for r in rs) + f" ({rs[0]['where']})")
    two = [r for r in table_rs if r["case"].endswith("two targets against one") and r.get("ratio") is not None]
    if two:
        heads.append("- two null targets against one (first sync): " + ", ".join(
            f"{split_case(r['case'])[0]} **{r['ratio']:.2f}x**" for r in two))
    walk = by_suite.get("walk", [])
    def table_size(r):
        m = re.search(r", (\d+ GiB) of", r["case"])
        return m.group(1) if m else "?"
    sizes = sorted({table_size(r) for r in walk}, key=lambda x: (len(x), x))
    for kind in ("runs", "runs, out of the caches", "leaves"):
        parts = []
        for size in sizes:
            rs = [r["ratio"] * 100 for r in walk if split_case(r["case"])[1] == kind and table_size(r) == size and r.get("ratio") is not None]
            if rs:
                parts.append(f"{size} tables {span(rs, lambda x: f'{x:.0f} %')} over {len(rs)} formats")
        if parts:
            bw = statistics.median(r["baselineValue"] for r in walk if r.get("baselineValue") is not None)
            heads.append(f"- walk by {kind}, GB/s of entries as a share of the read bandwidth measured in the same run "
                         f"({bw:.2f} GB/s, {walk[0]['where']}): " + "; ".join(parts))
    sc = [r for r in by_suite.get("engine-scaling", []) if r["unit"] == "changes/s" and r.get("ratio") is not None]
    if sc:
        threads = [re.search(r"(\d+ threads?)", r["case"]) for r in sc]
        cpus = re.search(r"(\d+) CPUs online", sc[0]["case"])
        heads.append("- thread scaling on the null target (one engine a thread), aggregate changes/s against one thread: " + ", ".join(
            f"{t.group(1) if t else r['case']} **{r['ratio']:.2f}x**" for t, r in zip(threads, sc))
            + (f" ({cpus.group(1)} CPUs online, {sc[0]['where']})" if cpus else ""))
    return heads


def bench_plot(bench, path):
    cases = bench.get("cases", [])
    if not cases:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.25 * len(cases) + 1.4))
    names = [f'{c["name"]} [{c["domain"]}, {c["backing"]}]' for c in cases]
    ax.barh(range(len(cases)), [c["medianNanoseconds"] / 1000 for c in cases], color="#6a5acd")
    ax.set_xscale("log")
    ax.set_yticks(range(len(cases)), names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("median per operation, microseconds (log)")
    ax.set_title("iommuctl bench in the VM (median per operation)", fontsize=9)
    return save(fig, path)


def main(run, outdir):
    records, bad = load_records(os.path.join(run, "records.jsonl"))
    with open(os.path.join(run, "facts.json")) as f:
        facts = json.load(f)
    bench = {}
    if os.path.exists(os.path.join(run, "bench.json")):
        try:
            with open(os.path.join(run, "bench.json")) as f:
                bench = json.load(f)
        except json.JSONDecodeError:
            bench = {}
    plots = os.path.join(outdir, "benchmarks")
    os.makedirs(plots, exist_ok=True)
    for old in os.listdir(plots):
        if old.endswith(".svg"):
            os.remove(os.path.join(plots, old))
    # The records themselves go beside the doc: every figure in it can be traced to one.
    with open(os.path.join(plots, "records.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    by_suite = {}
    for r in records:
        by_suite.setdefault(r["suite"], []).append(r)

    md = ["# Benchmarks", ""]
    md.append(f"Written by `{facts['command']}` ({facts['mode']} mode) on {facts['date']}; every figure below comes from "
              "that one run, and each row says where it was measured: `host` is the machine below, `vm` the test VM "
              "(`Harness/run-in-vm.sh`, QEMU TCG on that machine). Under TCG times are not bare-metal figures: only ratios "
              "within one run mean something. Records: one JSON object a measurement (`BENCH_JSON`, see "
              "`Benchmarks/README.md`), all kept in [`benchmarks/records.jsonl`](benchmarks/records.jsonl)"
              + (f"; {bad} malformed lines were skipped." if bad else "."))
    if facts["mode"] == "quick":
        md.append("")
        md.append("**Quick mode**: smaller counts than the full run (`Benchmarks/report.sh` without `--quick`); the "
                  "medians are over fewer samples and move more between runs.")
    md += ["", "## Machines", ""]
    h, v = facts["host"], facts.get("vm", {})
    md.append(table(["", "host", "vm"], [
        ["CPU", h.get("cpu", "?"), v.get("cpu", "?")],
        ["CPUs online", h.get("cpus", "?"), v.get("cpus", "?")],
        ["memory", h.get("memory", "?"), v.get("memory", "?")],
        ["kernel", h.get("kernel", "?"), v.get("kernel", "?")],
        ["OS / boot", h.get("os", "?"), "`" + v.get("cmdline", "?") + "`"],
        ["load average (start, end)", f'{h.get("load_start", "?")}; {h.get("load_end", "?")}', "-"],
    ]))
    md += ["", f"Compiler: {facts.get('compiler', '?')}; release builds (`swift build -c release` in `Benchmarks/`).", ""]
    if v.get("hugetlb"):
        md.append("Huge pages in the VM (its kernel log and sysfs): " + "; ".join(v["hugetlb"]) + ".")
        md.append("")

    # Headlines.
    md += ["## Headline ratios", ""]
    swift_c = [r for r in records if r.get("ratio") is not None and (r.get("baseline") or "").startswith("C floor")]
    heads = []
    for r in by_suite.get("CallCost call", []):
        heads.append(f'- {r["case"]} (vm, one call at a time): Swift/C **{r["ratio"]:.3f}x**')
    if swift_c:
        rs = [r["ratio"] for r in swift_c]
        within = sum(1 for x in rs if x <= GOAL)
        worst = max(swift_c, key=lambda r: r["ratio"])
        heads.append(f"- all {len(rs)} Swift/C pairs against the C floor (same ioctls): median **{statistics.median(rs):.3f}x**, "
                     f"{within} of {len(rs)} within the goal of {GOAL}x; the highest {worst['ratio']:.3f}x "
                     f"({worst['case']}, {worst['where']})")
    for r in by_suite.get("CallCost copy", []):
        if r.get("baseline", "").startswith("second IOAS_MAP"):
            heads.append(f'- {r["case"]} (vm): IOAS_COPY / map **{r["ratio"]:.2f}x**')
    for r in by_suite.get("CallCost instructions", []):
        if r.get("ratio") is not None:
            heads.append(f'- {r["case"]} ({r["where"]}, ioctl stubbed): {num(r["value"])} instructions/call against '
                         f'{num(r["baselineValue"])} for C')
    for size in ["1 GiB"]:
        avail = [r for r in by_suite.get("CallCost pages", []) if r["case"].startswith(f"{size} pages available")]
        if avail:
            state = "available" if all(r["value"] == 1 for r in avail) else "not available"
            heads.append(f"- {size} pages in the VM: **{state}** (measured: the benchmark's hugetlb allocation "
                         + ("succeeded)" if state == "available" else "failed; the VM kernel's log under Machines says why)"))
    md += heads if heads else ["No paired measurement was recorded in this run."]
    md.append("")
    eheads = engine_headlines(by_suite)
    md += ["## Headlines: the walk and the mirror engine", ""]
    md += eheads if eheads else ["No walk or engine measurement was recorded in this run."]
    md.append("")

    # Plots.
    made = []
    p = ratio_plot([r for r in swift_c if r["suite"] in ("CallCost pages", "CallCost call", "CallCost churn", "CallCost copy")],
                   os.path.join(plots, "swift-vs-c-ratio.svg"), "Swift / C floor, same ioctls, same run (VM)")
    if p:
        made.append(("Swift/C ratio per case (green: within the 1.03x goal)", p))
    p = grouped_plot([r for r in by_suite.get("CallCost pages", []) if r.get("baselineValue") is not None],
                     os.path.join(plots, "pages.svg"), "Map/unmap by page size, singly and as one range (VM)", "ns (median)")
    if p:
        made.append(("Map/unmap of 4 KiB, 2 MiB and 1 GiB pages, Swift and C", p))
    p = churn_plot(by_suite.get("CallCost churn", []), os.path.join(plots, "churn.svg"))
    if p:
        made.append(("Random churn by batch size", p))
    p = grouped_plot([r for r in by_suite.get("CallCost copy", []) if (r.get("baseline") or "").startswith("C floor")],
                     os.path.join(plots, "copy.svg"), "A second IOAS by IOAS_COPY and by IOAS_MAP (VM)", "ns per call (median)")
    if p:
        made.append(("IOAS_COPY against a second IOAS_MAP", p))
    p = walk_plot(by_suite.get("walk", []), os.path.join(plots, "walk.svg"))
    if p:
        made.append(("Page-table walk, GB/s of entries per format and table size, against the read bandwidth of the same run", p))
    p = engine_table_plot(by_suite.get("engine-table", []), os.path.join(plots, "engine-table.svg"))
    if p:
        made.append(("Engine sync of a guest table (ns per leaf) against the bare walks and the per-leaf mirror, by table size", p))
    p = mirror_churn_plot(by_suite.get("churn", []), os.path.join(plots, "engine-churn.svg"))
    if p:
        made.append(("Engine churn against a one-ioctl-per-change shadow by batch size (model on the host, mock domain in the VM)", p))
    kernel_rs = by_suite.get("engine-kernel", [])
    for unit, name, ylabel in (("ioctls", "engine-kernel-ioctls.svg", "ioctls (log)"), ("ms", "engine-kernel-time.svg", "ms (log)")):
        p = grouped_plot([r for r in kernel_rs if r["unit"] == unit], os.path.join(plots, name),
                         f"Contiguous guest into a kernel IOAS: engine against the per-leaf mirror, {unit} (VM)", ylabel,
                         labels=("engine (page-table mode)", "per-leaf mirror"))
        if p:
            made.append((f"Contiguous guest into a kernel IOAS, engine against the per-leaf mirror ({unit})", p))
    p = scaling_plot(by_suite.get("engine-scaling", []), os.path.join(plots, "engine-scaling.svg"))
    if p:
        made.append(("Thread scaling on the null target: aggregate changes/s and per-thread ns/change", p))
    p = bench_plot(bench, os.path.join(plots, "iommuctl-bench.svg"))
    if p:
        made.append(("`iommuctl bench` cases", p))
    if made:
        md += ["## Plots", ""]
        for caption, path in made:
            md += [f"![{caption}](benchmarks/{os.path.basename(path)})", "", f"*{caption}.*", ""]

    # Every suite: its records, or that it is missing.
    md += ["## Results by benchmark", ""]
    seen = set()
    for suite, binary, where, log in EXPECTED:
        seen.add(suite)
        md += [f"### {suite}", ""]
        rs = by_suite.get(suite, [])
        if rs:
            md += [f"From `{binary}` ({where}).", "", record_table(rs), ""]
        else:
            md += [f"**Missing**: `{binary}` wrote no `BENCH_JSON` record in this run, so this section has no figures.", ""]
            text = ""
            for name in log.split():
                path = os.path.join(run, name)
                if os.path.exists(path) and name in LOGS:
                    with open(path) as f:
                        text += f"== {LOGS.get(name, name)}\n" + f.read().strip() + "\n"
            if text:
                md += ["<details><summary>its console output in this run (not parsed)</summary>", "", "```", text.strip(), "```",
                       "", "</details>", ""]
    for suite in sorted(set(by_suite) - seen):
        md += [f"### {suite}", "", record_table(by_suite[suite]), ""]

    md += ["## `iommuctl bench` (vm)", ""]
    if bench.get("cases"):
        rows = [[c["name"], c["domain"], c["backing"], c["operations"], num(c["medianNanoseconds"]), num(c["p99Nanoseconds"]),
                 num(c["meanNanoseconds"])] for c in bench["cases"]]
        md += [f"`{facts.get('bench_command', 'iommuctl bench --json')}` in the VM, kernel {bench.get('kernelRelease')}, "
               f"mock IOMMU: {'yes' if bench.get('mockIOMMU') else 'no'}. Times in ns.", "",
               table(["case", "domain", "backing", "ops", "median", "p99", "mean"], rows), ""]
        for s in bench.get("skipped", []):
            md.append(f"- skipped: {s['name']}: {s['reason']}")
        md.append("")
    else:
        md += ["**Missing**: `iommuctl bench --json` gave no report in this run.", ""]

    md += ["## How to reproduce", "", "```", *facts.get("commands", []), "```", ""]
    with open(os.path.join(outdir, "benchmarks.md"), "w") as f:
        f.write("\n".join(md))
    print(f"report: {len(records)} records, {len(made)} plots -> {os.path.join(outdir, 'benchmarks.md')}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
