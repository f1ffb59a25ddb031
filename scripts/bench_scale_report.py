#!/usr/bin/env python3
"""Turns one scripts/bench-scale.sh run directory into its Markdown report:
per family and shard count, throughput (deliveries/s, per shard), latency,
server CPU, cross-shard ring traffic from /metrics and the load generator's
own CPU; the per-event costs measured by the calibration runs (costs.json);
and the scaling model of bench-results/scaling-model.md evaluated for the
shard counts run here and for 8 and 16, beside what was measured.

The model (see bench-results/scaling-model.md for its derivation and
assumptions): a publish on a channel with n subscribers spread over S
shards costs

    c_parse + d * c_deliver(family) + r * (c_ring_tx + c_ring_rx)

CPU, where d = n - 1/k deliveries (k channels, the publisher does not hear
itself) and r = (S - 1) * (1 - (1 - 1/S)^n) ring messages (the other shards
holding at least one subscriber). A paced load of lam publishes/s costs lam
times that, spread over the shards; a closed loop is bounded by the busiest
shard's core (connections are spread by the kernel's SO_REUSEPORT hash, so
the busiest shard holds more than N/S) and by the load generator's cores.
"""

import argparse
import json
import math
import os
import re
import statistics

# E[max of n independent standard normals]: how far above the mean the
# busiest of S shards' connection counts lies, in standard deviations.
EXPECTED_MAX_Z = {1: 0.0, 2: 0.5642, 3: 0.8463, 4: 1.0294, 6: 1.2672, 8: 1.4236, 12: 1.6292,
                  16: 1.7660, 24: 1.9477, 32: 2.0697, 48: 2.2366, 64: 2.3187}

# The families: (clients, channels, publishes/s or None for a closed loop)
# as functions of S; see scripts/bench-scale.sh.
def family_shape(family, s, high_rate=8000.0, cost_rate=40000.0):
    return {
        "production": (350 * s, 1, 400.0),
        "rate": (350 * s, 1, high_rate),
        "closed": (350 * s, 1, None),
        "tenchan": (350 * s, 10, 3500.0),
        "closed-fixed": (350, 1, None),
        "cost-empty": (1, 1000, cost_rate),
        "cost-sparse": (700, 700, cost_rate),
    }.get(family)


FAMILY_TITLES = {
    "production": "Production scale: 350·S clients, 1 channel, 400 msg/s",
    "rate": "High rate: 350·S clients, 1 channel, {high_rate:,.0f} msg/s",
    "closed": "Closed loop: 350·S clients, 1 channel, {closed_in_flight} frames in flight per client",
    "tenchan": "Ten channels: 350·S clients, 10 channels, 3,500 msg/s",
    "closed-fixed": "Closed loop, fixed size (strong scaling): 350 clients, 1 channel, {closed_in_flight} frames in flight per client, whatever S",
    "cost-empty": "Calibration: publishes nobody hears (1 client, 1,000 channels, {cost_rate:,.0f} msg/s)",
    "cost-sparse": "Calibration: one delivery per publish (700 clients, 700 channels, 1 publisher, {cost_rate:,.0f} msg/s)",
}
WEAK = ("production", "rate", "closed", "tenchan")
MODEL_FAMILIES = ("production", "rate", "closed", "tenchan", "closed-fixed")


def expected_max_z(s):
    if s in EXPECTED_MAX_Z:
        return EXPECTED_MAX_Z[s]
    # Large-S asymptote, good enough between the table's points.
    return math.sqrt(2 * math.log(s)) - (math.log(math.log(s)) + math.log(4 * math.pi)) / (2 * math.sqrt(2 * math.log(s)))


def busiest_share(clients, s):
    """Busiest shard's connections over the mean, connections spread at random."""
    if s <= 1:
        return 1.0
    mean = clients / s
    sigma = math.sqrt(clients * (1 / s) * (1 - 1 / s))
    return 1 + expected_max_z(s) * sigma / mean


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def interp(samples, t):
    """Linear interpolation in [(t, v)], clamped at the ends."""
    if not samples:
        return None
    if t <= samples[0][0]:
        return samples[0][1]
    for (t0, v0), (t1, v1) in zip(samples, samples[1:]):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / max(t1 - t0, 1e-9)
    return samples[-1][1]


def window_rate(samples, start, end):
    """Increase per second of a sampled counter over [start, end]: the slope
    between the first and the last sample inside the window (so a sample
    taken after the load stopped does not dilute it), or, with fewer than
    two samples inside, interpolated at the window's ends."""
    if len(samples) < 2 or start is None or end is None or end <= start:
        return None
    inside = [(t, v) for t, v in samples if start <= t <= end]
    if len(inside) >= 2 and inside[-1][0] - inside[0][0] >= 0.5 * (end - start):
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
    return (interp(samples, end) - interp(samples, start)) / (end - start)


def read_cpu(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) == 2:
                    out.append((float(p[0]), float(p[1])))
    except OSError:
        pass
    return out


def read_threads(path):
    """{(tid, comm): [(t, run_ns)]} from the .threads samples."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if not p:
                    continue
                t = float(p[0])
                for item in p[1:]:
                    tid, comm, ns = item.split(":", 2)
                    out.setdefault((tid, comm), []).append((t, float(ns)))
    except (OSError, ValueError):
        pass
    return out


def read_metrics(path):
    """[(t, {metric: {shard: value}})] from the .metrics scrapes."""
    scrapes = []
    cur = None
    line_re = re.compile(r'^(easechat_[a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$')
    try:
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if line.startswith("T "):
                    _, t0, t1 = line.split()
                    cur = ((float(t0) + float(t1)) / 2, {})
                elif line == "E":
                    if cur and cur[1]:
                        scrapes.append(cur)
                    cur = None
                elif cur is not None:
                    m = line_re.match(line)
                    if not m:
                        continue
                    name, labels, value = m.groups()
                    shard = "all"
                    if labels:
                        sm = re.search(r'shard="(\d+)"', labels)
                        if sm:
                            shard = int(sm.group(1))
                    cur[1].setdefault(name, {})[shard] = float(value)
    except OSError:
        pass
    return scrapes


def metric_rates(scrapes, name, start, end):
    """{shard: increase per second over the window} of a counter."""
    shards = set()
    for _, m in scrapes:
        shards.update(k for k in m.get(name, {}) if k != "all")
    out = {}
    for sh in sorted(shards):
        samples = [(t, m[name][sh]) for t, m in scrapes if sh in m.get(name, {})]
        out[sh] = window_rate(samples, start, end)
    return out


def gauge_at(scrapes, name, t):
    best = None
    for ts, m in scrapes:
        if name in m and (best is None or abs(ts - t) < abs(best[0] - t)):
            best = (ts, m[name])
    return {k: v for k, v in best[1].items() if k != "all"} if best else {}


def fmt(v, spec="{:.2f}", none="—"):
    return none if v is None else spec.format(v)


def si(v, none="—"):
    if v is None:
        return none
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f} M"
    if a >= 1e4:
        return f"{v / 1e3:.0f} k"
    if a >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def read_host(d):
    info, notes = {}, []
    try:
        with open(os.path.join(d, "host.txt")) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition(" ")
                if key == "peer_note":
                    notes.append(value)
                else:
                    info[key] = value
    except OSError:
        pass
    return info, notes


def analyse(d, row, clk_tck):
    family, s, kind, rep, tag, scpus, lcpus, layout, threads, status, sargs = row
    s, threads, status = int(s), int(threads), int(status)
    j = load_json(os.path.join(d, tag + ".json"))
    r = {"family": family, "S": s, "kind": kind, "rep": int(rep), "tag": tag, "server_cpus": scpus,
         "load_cpus": lcpus, "layout": layout, "threads": threads, "status": status, "args": sargs, "json": j}
    start = j.get("window_start_unix") if j else None
    end = j.get("window_end_unix") if j else None
    win = (end - start) if start and end else None
    r["window"] = win
    cpu = read_cpu(os.path.join(d, tag + ".cpu"))
    r["cpu"] = (window_rate(cpu, start, end) / clk_tck) if window_rate(cpu, start, end) is not None else None
    threads_samples = read_threads(os.path.join(d, tag + ".threads"))
    shard_cpu = {}
    other_cpu = 0.0
    for (tid, comm), samples in threads_samples.items():
        v = window_rate(samples, start, end)
        if v is None:
            continue
        v /= 1e9
        m = re.match(r"shard-(\d+)(?:-\d+)?$", comm)
        if m:
            shard_cpu[int(m.group(1))] = shard_cpu.get(int(m.group(1)), 0.0) + v
        else:
            other_cpu += v
    # The whole machine: busy and steal, cores.
    sys_busy, sys_steal = [], []
    try:
        with open(os.path.join(d, tag + ".sys")) as f:
            for line in f:
                p = line.split()
                if len(p) == 3:
                    sys_busy.append((float(p[0]), float(p[1])))
                    sys_steal.append((float(p[0]), float(p[2])))
    except OSError:
        pass
    busy = window_rate(sys_busy, start, end)
    steal = window_rate(sys_steal, start, end)
    r["sys_busy"] = busy / clk_tck if busy is not None else None
    r["steal"] = steal / clk_tck if steal is not None else None
    r["shard_cpu"] = shard_cpu  # cores per shard thread (schedstat)
    r["threads_cpu"] = sum(shard_cpu.values()) + other_cpu if threads_samples else None
    r["other_cpu"] = other_cpu
    if j:
        lat = j["latency_ms"]
        r.update(dps=j["deliveries_per_second"], p50=lat["p50"], p99=lat["p99"], p999=lat["p99_9"],
                 max=lat["max"], lost=j["lost"], ooo=j["out_of_order"], publish_rate=j["publish_rate"],
                 clients=int(j["settings"]["clients"]), closed=j.get("connections_closed", 0),
                 client_cpu=j.get("client_cpu_percent"), client_cpu_s=j.get("client_cpu_seconds"))
        r["load_busy"] = (r["client_cpu"] / 100.0 / threads) if r["client_cpu"] is not None else None
        per = s if kind != "redis" else 1
        r["per_unit"] = r["dps"] / per
        r["dps_per_core"] = r["dps"] / r["cpu"] if r["cpu"] else None
        r["other"] = (r["sys_busy"] - (r["cpu"] or 0) - r["client_cpu"] / 100.0
                      if r["sys_busy"] is not None and r["client_cpu"] is not None else None)
        r["lg_ns"] = (r["client_cpu_s"] / (r["dps"] * win) * 1e9) if r["dps"] and win and r["client_cpu_s"] else None
    scrapes = read_metrics(os.path.join(d, tag + ".metrics"))
    if scrapes and start and end:
        r["ring"] = metric_rates(scrapes, "easechat_ring_messages_total", start, end)
        r["ring_full"] = metric_rates(scrapes, "easechat_ring_full_total", start, end)
        r["pubs"] = metric_rates(scrapes, "easechat_publishes_total", start, end)
        r["dels"] = metric_rates(scrapes, "easechat_deliveries_total", start, end)
        r["pauses"] = metric_rates(scrapes, "easechat_pauses_total", start, end)
        r["conns"] = gauge_at(scrapes, "easechat_connections_open", (start + end) / 2)
        tot = lambda m: sum(v for v in m.values() if v is not None) if m else None
        r["ring_s"] = tot(r["ring"])
        r["ring_full_n"] = tot(r["ring_full"]) * win if r["ring_full"] else None
        r["pubs_s"] = tot(r["pubs"])
        r["dels_s"] = tot(r["dels"])
        r["pauses_n"] = tot(r["pauses"]) * win if r["pauses"] else None
        r["ring_per_pub"] = r["ring_s"] / r["pubs_s"] if r["pubs_s"] else None
    # Totals for the costs: the load generator's own counts over the window
    # (exact), split over shards by the /metrics shares.
    if j:
        r["P"], r["D"] = r["publish_rate"], r["dps"]

        def split(m, total):
            tot = sum(v for v in (m or {}).values() if v) if m else 0
            return {sh: (v or 0) / tot * total for sh, v in m.items()} if tot else {}
        r["P_sh"] = split(r.get("pubs"), r["P"])
        r["D_sh"] = split(r.get("dels"), r["D"])
    return r


# ------------------------------------------------------------------ costs
def measure_costs(runs):
    """Per-event CPU costs (ns) from the calibration runs and the S = 1 and
    S = 2 family runs of this directory; None where a run is missing."""
    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def find(family, s):
        return [r for r in runs if r["family"] == family and r["S"] == s and r["kind"] == "nexus"
                and r.get("shard_cpu") and r.get("P")]

    c = {"notes": []}
    empties = find("cost-empty", 1)
    c["c_parse_ns"] = med(sum(r["shard_cpu"].values()) * 1e9 / r["P"] for r in empties)
    sparse1 = find("cost-sparse", 1)
    if c["c_parse_ns"] is not None:
        c["c_deliver_sparse_ns"] = med(
            (sum(r["shard_cpu"].values()) * 1e9 - c["c_parse_ns"] * r["P"]) / r["D"]
            for r in sparse1 if r["D"])
    else:
        c["c_deliver_sparse_ns"] = None
    # Ring: per shard, y_i = cpu_i - c_parse P_i - c_d1 D_i = c_tx T_i + c_rx R_i,
    # where T_i is what shard i sent over the rings and R_i what it received
    # (with 2 shards, what the other one sent).
    txs, rxs, sums = [], [], []
    if c["c_parse_ns"] is not None and c["c_deliver_sparse_ns"] is not None:
        for r in find("cost-sparse", 2):
            if len(r["shard_cpu"]) != 2 or not r.get("ring"):
                continue
            y, t = {}, {}
            for sh in (0, 1):
                y[sh] = (r["shard_cpu"].get(sh, 0) * 1e9 - c["c_parse_ns"] * r["P_sh"].get(sh, 0)
                         - c["c_deliver_sparse_ns"] * r["D_sh"].get(sh, 0))
                t[sh] = r["ring"].get(sh) or 0.0
            det = t[0] ** 2 - t[1] ** 2
            if t[0] + t[1] > 0:
                sums.append((y[0] + y[1]) / (t[0] + t[1]))
            if abs(det) > 0.5 * max(t[0], t[1]) ** 2:
                tx = (y[0] * t[0] - y[1] * t[1]) / det
                rx = (y[1] * t[0] - y[0] * t[1]) / det
                txs.append(tx)
                rxs.append(rx)
    c["c_ring_tx_ns"] = med(txs)
    c["c_ring_rx_ns"] = med(rxs)
    c["c_ring_ns"] = med(sums)
    if c["c_ring_ns"] is not None and c["c_ring_tx_ns"] is None:
        c["notes"].append("the 2-shard calibration had publishers on both shards: only c_ring_tx + c_ring_rx is known")
    # Per family: the all-in CPU per delivery at that family's operating
    # point on one shard, and the load generator's CPU per delivery.
    c["c_deliver_ns"], c["lg_ns"], c["ring_dense_ns"] = {}, {}, {}
    for fam in MODEL_FAMILIES:
        ones = find(fam, 1)
        if ones and c["c_parse_ns"] is not None:
            c["c_deliver_ns"][fam] = med(
                (sum(r["shard_cpu"].values()) * 1e9 - c["c_parse_ns"] * r["P"]) / r["D"]
                for r in ones if r["D"])
        lgs = [r.get("lg_ns") for r in runs if r["family"] == fam and r["kind"] == "nexus"
               and r["S"] == 1 and r["layout"] == "own"]
        if med(lgs) is not None:
            c["lg_ns"][fam] = med(lgs)
        # The same family on 2 shards: what is left once parse and delivery
        # are paid, per ring message (a small difference of large numbers).
        twos = find(fam, 2)
        cd = c["c_deliver_ns"].get(fam)
        if twos and cd is not None:
            c["ring_dense_ns"][fam] = med(
                (sum(r["shard_cpu"].values()) * 1e9 - c["c_parse_ns"] * r["P"] - cd * r["D"]) / r["ring_s"]
                for r in twos if r.get("ring_s"))
    return c


def model_costs_from_md(path):
    """The JSON block after the line mentioning model-costs in the model."""
    try:
        text = open(path).read()
    except OSError:
        return None
    m = re.search(r"model-costs.*?```json\n(.*?)```", text, re.S)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except ValueError:
        return None


def predict(costs, family, s, load_cores, shared=False, high_rate=8000.0):
    """The model's figures for FAMILY on S shards, from COSTS (ns)."""
    shape = family_shape(family, s, high_rate)
    if not shape or costs is None:
        return None
    clients, k, lam = shape
    n = clients / k
    d = n - 1 / k
    r = (s - 1) * (1 - (1 - 1 / s) ** n) if s > 1 else 0.0
    cd = (costs.get("c_deliver_ns") or {}).get(family)
    cp = costs.get("c_parse_ns")
    cring = costs.get("c_ring_ns")
    if cring is None and costs.get("c_ring_tx_ns") is not None:
        cring = costs["c_ring_tx_ns"] + costs["c_ring_rx_ns"]
    # A saturated shard never sleeps: its ring messages cost the ring work
    # only (c_ring_busy, when known), not the wake-up the calibration pays.
    if lam is None and costs.get("c_ring_busy_ns") is not None:
        cring = costs["c_ring_busy_ns"]
    if cd is None or cp is None or cring is None:
        return None
    per_pub = cp + d * cd + r * cring  # ns of server CPU per publish
    busiest = busiest_share(clients, s)
    out = {"d": d, "r": r, "ns_per_delivery": per_pub / d, "busiest": busiest,
           "ring_share": r * cring / per_pub, "c_ring": cring}
    lg = (costs.get("lg_ns") or {}).get(family) or (costs.get("lg_ns") or {}).get("closed")
    if lam is not None:
        out["dps"] = lam * d
        out["cpu"] = lam * per_pub / 1e9
        out["cpu_shard"] = out["cpu"] / s
        out["cpu_busiest"] = out["cpu_shard"] * busiest
        out["ring_s"] = lam * r
        out["lg_cores"] = out["dps"] * lg / 1e9 if lg else None
    else:
        # Busiest shard at one full core.
        capacity = s / busiest * 1e9 / (per_pub / d)
        lg_bound = load_cores * 1e9 / lg if lg else None
        if shared and lg:
            # Server and load generator share the same S cores.
            capacity = s * 1e9 / (per_pub / d + lg)
            lg_bound = None
        out["capacity"] = capacity
        out["lg_bound"] = lg_bound
        out["dps"] = min(capacity, lg_bound) if lg_bound else capacity
        out["cpu"] = out["dps"] * per_pub / d / 1e9
        out["cpu_shard"] = out["cpu"] / s
        out["ring_s"] = out["dps"] / d * r
        out["lg_cores"] = out["dps"] * lg / 1e9 if lg else None
    return out


# ------------------------------------------------------------------ report
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--model-costs", default=None,
                    help="JSON of the costs to predict from (default: the model-costs block of "
                         "bench-results/scaling-model.md)")
    a = ap.parse_args()
    d = a.dir
    info, notes = read_host(d)
    clk_tck = float(info.get("clk_tck", 100))
    high_rate = float(info.get("high_rate", 8000))
    cost_rate = float(info.get("cost_rate", 40000))

    rows = []
    try:
        with open(os.path.join(d, "runs.tsv")) as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        pass
    runs = [analyse(d, row, clk_tck) for row in rows]

    costs = measure_costs(runs)
    with open(os.path.join(d, "costs.json"), "w") as f:
        json.dump({k: v for k, v in costs.items()}, f, indent=2, sort_keys=True)
        f.write("\n")

    model_path = a.model_costs
    model = None
    if model_path:
        model = load_json(model_path)
    else:
        model_path = os.path.join(os.path.dirname(os.path.abspath(d)), "scaling-model.md")
        model = model_costs_from_md(model_path)

    L = []
    w = L.append
    host = info.get("host", "?")
    w(f"# EaseChat Nexus scale run, {host}, {info.get('started', '?')}\n")
    w(f"`{info.get('command') or 'scripts/bench-scale.sh'}` at commit {info.get('commit', '?')} "
      f"(nexus binary sha256 {info.get('nexus_sha256', '?')}…, stress {info.get('stress_sha256', '?')}…), "
      f"finished {info.get('finished', '?')}. {fmt(float(info.get('duration', 0)), '{:g}')} s windows after "
      f"{fmt(float(info.get('warmup', 0)), '{:g}')} s of warm-up, 64-byte texts, ring size {info.get('ring_size', '?')}"
      f"{', nexus flags `' + info['nexus_args'] + '`' if info.get('nexus_args') else ''}.\n")
    w(f"- Host: {info.get('cpu_model', '?')}; usable CPUs {info.get('allowed_cpus', '?')}, "
      f"{info.get('physical_cores', '?')} physical cores; order used {info.get('cpu_order', '?')}"
      f"{'; ' + info['numa'].strip() if info.get('numa', '').strip() else ''}.")
    w(f"- Load average before / after: {info.get('load_before', '?')} / {info.get('load_after', '?')} "
      "(1, 5, 15 min; anything above ~0.3 before means other work shared the machine).")
    w(f"- Shard counts run: {info.get('shards', '?')}" +
      (f"; **skipped (more shards than cores): {info['skipped_shards']}**" if info.get("skipped_shards") else "") + ".")
    fixed = info.get("fixed_load", "")
    if fixed:
        w(f"- Load generator: CPUs {fixed} for every run (the cores left after the largest S, SMT siblings of "
          "the servers' cores left idle), one stress thread per CPU unless --load-threads.")
    else:
        w("- **Load generator: no core is left after the largest S on this host.** Runs whose S leaves CPUs "
          "free put the load there (layout `own`); runs with S = every CPU share the servers' CPUs with the "
          "load generator (layout `shared`): their throughput, latency and CPU are functional checks only, "
          "not measurements of the nexus.")
    if any(r["layout"] == "stacked" for r in runs):
        w("- Calibration runs marked `stacked` ran their S shards on fewer cores (the nexus pins shard i to "
          "core i mod n), so that the load generator kept a core of its own: per-event costs come from each "
          "shard thread's own run time, but a shard woken by another waits for it to yield the core.")
    w(f"- Peers: {info.get('peers') or 'none'}" + ("".join(f"; {n}" for n in notes)) + ".")
    w("")
    w("Columns: *deliveries/s* as the load generator counted them in the window (per shard: ÷ S for the "
      "nexus and NATS, per its one core for Redis); *CPU* the server process's user + system time over "
      "the window, in cores; *per-shard CPU* each shard thread's run time (schedstat), min–max; "
      "*del./core-s* deliveries per server CPU-second; *ring msg/s* the sum over shards of "
      "`easechat_ring_messages_total` per second (publications, interest and admin questions sent to other "
      "shards), *ring/pub* that over `easechat_publishes_total`, *ring full* `easechat_ring_full_total` "
      "events in the window; *conns/shard* `easechat_connections_open` min–max (the kernel's SO_REUSEPORT "
      "spread); *load CPU* the load generator's CPU over its own CPUs (≥ 85 % = it, not the server, may be "
      "the bound); *other work* the machine's busy CPU (/proc/stat, cores) that was neither the server "
      "nor the load generator: other processes on a shared host, the kernel's softirq work charged to no "
      "one, this script's sampling (≤ 0.05 core); above ~0.1 the run shared the machine.\n")

    families = []
    for r in runs:
        if r["family"] not in families:
            families.append(r["family"])
    for fam in families:
        title = FAMILY_TITLES.get(fam, fam).format(high_rate=high_rate, cost_rate=cost_rate,
                                                    closed_in_flight=info.get("closed_in_flight", "2000"))
        w(f"## {title}\n")
        w("| S | server | layout | clients | publish/s | deliveries/s | per shard (core) | p50 / p99 / max ms | CPU | per-shard CPU | del./core-s | ring msg/s | ring/pub | ring full | conns/shard | load CPU | other work | lost / ooo | exit |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in [x for x in runs if x["family"] == fam]:
            if not r["json"]:
                w(f"| {r['S']} | {r['kind']} | {r['layout']} | — | — | no result ({r['tag']}.txt) | | | | | | | | | | | | | {r['status']} |")
                continue
            sc = r["shard_cpu"]
            shard_cpu = f"{min(sc.values()):.2f}–{max(sc.values()):.2f}" if sc else "—"
            conns = r.get("conns") or {}
            conn_txt = f"{min(conns.values()):.0f}–{max(conns.values()):.0f}" if conns else "—"
            load = f"{100 * r['load_busy']:.0f} %" if r.get("load_busy") is not None else "—"
            if r.get("load_busy") is not None and r["load_busy"] >= 0.85:
                load += " (bound?)"
            lay = r["layout"] if r["layout"] != "shared" else "**shared**"
            rep = f" r{r['rep']}" if any(x["rep"] > 1 for x in runs) else ""
            w(f"| {r['S']}{rep} | {r['kind']} | {lay} | {r['clients']} | {r['publish_rate']:,.0f} | {si(r['dps'])} | "
              f"{si(r['per_unit'])} | {r['p50']:.2f} / {r['p99']:.2f} / {r['max']:.1f} | {fmt(r['cpu'])} | {shard_cpu} | "
              f"{si(r.get('dps_per_core'))} | {si(r.get('ring_s'))} | {fmt(r.get('ring_per_pub'))} | "
              f"{fmt(r.get('ring_full_n'), '{:.0f}')} | {conn_txt} | {load} | {fmt(r.get('other'))} | {r['lost']} / {r['ooo']} | {r['status']} |")
        w("")
        if fam in WEAK or fam == "closed-fixed":
            base = [x for x in runs if x["family"] == fam and x["kind"] == "nexus" and x["S"] == 1 and x["json"]]
            if base:
                b = statistics.median(x["dps"] for x in base)
                parts = []
                for s in sorted({x["S"] for x in runs if x["family"] == fam and x["kind"] == "nexus" and x["S"] > 1}):
                    m = [x["dps"] for x in runs if x["family"] == fam and x["kind"] == "nexus" and x["S"] == s and x["json"]]
                    if m:
                        eff = statistics.median(m) / (s * b) if fam != "closed-fixed" else statistics.median(m) / b
                        parts.append(f"S = {s}: {eff:.2f}×")
                if parts:
                    what = ("per-shard throughput against S = 1's (1.00× = linear)" if fam != "closed-fixed"
                            else "throughput against S = 1's (ideal: S×, bounded by the load generator)")
                    w(f"Scaling ({what}): " + ", ".join(parts) + ".\n")

    # Costs.
    w("## Measured costs (this run)\n")
    w("Server CPU per event, ns, from the shard threads' run time (schedstat) and the /metrics counters over "
      "the same window (see bench-results/scaling-model.md for how each is derived). Written to "
      f"`{os.path.join(d, 'costs.json')}`.\n")
    w("| cost | ns | from |")
    w("|---|---|---|")
    w(f"| c_parse: a publish nobody else hears (read, decode, parse, look up) | {fmt(costs.get('c_parse_ns'), '{:.0f}')} | cost-empty, S = 1 |")
    w(f"| c_deliver, sparse: one delivery (encode, queue, its own send) | {fmt(costs.get('c_deliver_sparse_ns'), '{:.0f}')} | cost-sparse, S = 1 |")
    w(f"| c_ring_tx: sending one ring message (sending shard) | {fmt(costs.get('c_ring_tx_ns'), '{:.0f}')} | cost-sparse, S = 2, per shard |")
    w(f"| c_ring_rx: receiving one (receiving shard: drain, copy the frame, look up) | {fmt(costs.get('c_ring_rx_ns'), '{:.0f}')} | cost-sparse, S = 2, per shard |")
    w(f"| c_ring = tx + rx | {fmt(costs.get('c_ring_ns'), '{:.0f}')} | cost-sparse, S = 2, both shards |")
    for fam, v in (costs.get("c_deliver_ns") or {}).items():
        w(f"| c_deliver({fam}): all-in CPU per delivery at that load, one shard | {fmt(v, '{:.0f}')} | {fam}, S = 1 |")
    for fam, v in (costs.get("ring_dense_ns") or {}).items():
        w(f"| residual per ring message at {fam}, 2 shards (noisy: small difference of large numbers) | {fmt(v, '{:.0f}')} | {fam}, S = 2 |")
    for fam, v in (costs.get("lg_ns") or {}).items():
        w(f"| load generator CPU per delivery, {fam} | {fmt(v, '{:.0f}')} | {fam}, S = 1 (own core) |")
    if any((v or 0) < 0 for k, v in costs.items() if k.endswith("_ns") and not isinstance(v, dict)):
        w("\nA negative cost means the event's price is below this run's run-to-run noise (or the layouts "
          "compared are not alike: a `shared` run's shards batch more because they wait for the CPU).")
    for n in costs.get("notes", []):
        w(f"\nNote: {n}.")
    w("")

    # Model.
    sources = []
    if model:
        sources.append(("model (bench-results/scaling-model.md)" if not a.model_costs else f"model ({a.model_costs})", model))
    if costs.get("c_parse_ns") is not None:
        sources.append(("this run's costs", costs))
    if sources:
        w("## The scaling model against this run\n")
        w("Predicted deliveries/s (and server CPU, busiest shard's CPU for paced loads, ring messages/s), "
          "from the costs named; measured beside it where this run has that S. Paced loads: the model "
          "predicts CPU, the throughput is the offered load. Closed loops: min(busiest shard at one core, "
          "the load generator's cores at its measured cost per delivery); `shared` runs: server and load "
          "generator share the S cores. A shard count whose busiest shard needs more than one core "
          "falls behind.\n")
        lc = len([c for c in fixed.split(",") if c]) if fixed else None
        shard_set = sorted({r["S"] for r in runs} | {8, 16})
        for label, src in sources:
            w(f"### From {label}\n")
            if src.get("c_ring_busy_ns") is None:
                w("These costs have no `c_ring_busy_ns` (the script does not profile the shards): the closed "
                  "loops below use the idle receiver's `c_ring`, a pessimistic bound.\n")
            w("| family | S | load cores | c_ring ns | predicted deliveries/s | per shard | predicted CPU (busiest shard) | ring msg/s | ring share of CPU | load generator cores | measured deliveries/s | measured CPU (busiest shard) | measured ring msg/s |")
            w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for fam in MODEL_FAMILIES:
                for s in shard_set:
                    meas = [r for r in runs if r["family"] == fam and r["S"] == s and r["kind"] == "nexus" and r["json"]]
                    shared = bool(meas) and meas[0]["layout"] == "shared"
                    if meas:
                        lcores = len(meas[0]["load_cpus"].split(","))
                    else:
                        lcores = lc if lc else s  # a big host: as many load cores as shards
                    p = predict(src, fam, s, lcores, shared=shared, high_rate=high_rate)
                    if not p:
                        continue
                    busiest = p.get("cpu_busiest")
                    pcpu = f"{p['cpu']:.2f} ({busiest:.2f})" if busiest is not None else f"{p['cpu']:.2f} ({p['cpu_shard']:.2f})"
                    if busiest is not None and busiest > 1:
                        pcpu += " **> 1 core**"
                    if meas:
                        md = statistics.median(x["dps"] for x in meas)
                        mc = [x["cpu"] for x in meas if x["cpu"] is not None]
                        mb = [max(x["shard_cpu"].values()) for x in meas if x["shard_cpu"]]
                        mr = [x["ring_s"] for x in meas if x.get("ring_s") is not None]
                        mtxt = (si(md), (f"{statistics.median(mc):.2f}" if mc else "—") +
                                (f" ({statistics.median(mb):.2f})" if mb else ""),
                                si(statistics.median(mr)) if mr else "—")
                    else:
                        mtxt = ("not run", "", "")
                    lay = " shared" if shared else ""
                    w(f"| {fam} | {s} | {lcores}{lay} | {p['c_ring']:.0f} | {si(p['dps'])} | {si(p['dps'] / s)} | {pcpu} | "
                      f"{si(p['ring_s'])} | {100 * p['ring_share']:.1f} % | {fmt(p.get('lg_cores'), '{:.1f}')} | "
                      f"{mtxt[0]} | {mtxt[1]} | {mtxt[2]} |")
            w("")
    else:
        w("No model costs available (no calibration runs here and no model-costs block in "
          "bench-results/scaling-model.md): no predictions.\n")

    failed = [r["tag"] for r in runs if r["status"] != 0]
    if failed:
        w("Runs that exited non-zero (lost or reordered deliveries, closed connections or a failure; see "
          "their .txt): " + ", ".join(failed) + ".\n")
    w(f"Raw files: `{d}/` (runs.tsv, host.txt, costs.json; per run .json .hgrm .txt .cpu .threads .metrics .log).")
    with open(a.report, "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
