#!/usr/bin/env python3
"""Turns one scripts/bench.sh run directory into the Markdown report and the
SVG plots: the floor, the paced sweep with its ratios (nexus against the
baseline, the floor and Redis), the production scale in rounds with the
floor and the peers, the peers side by side (Redis pub/sub, NATS) in every
family they ran, access control and wss against their plaintext pairs, the
handshake storm, history on against off (issue 24) with memory per retained
message and the reconnect storm, the other scenarios, and the targets checked
against this run's own measurements."""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def window_cpu(cpu_path, clk_tck, start, end):
    """Server CPU (cores) over [start, end], interpolated from the samples
    of /proc/PID/stat (unix seconds, ticks); the whole run if no window."""
    samples = []
    try:
        with open(cpu_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    samples.append((float(parts[0]), float(parts[1])))
    except OSError:
        return None
    if len(samples) < 2:
        return None

    def ticks_at(t):
        if t <= samples[0][0]:
            return samples[0][1]
        for (t0, v0), (t1, v1) in zip(samples, samples[1:]):
            if t0 <= t <= t1:
                return v0 + (v1 - v0) * (t - t0) / max(t1 - t0, 1e-9)
        return samples[-1][1]

    if start is None or end is None or end <= start:
        start, end = samples[0][0], samples[-1][0]
    return (ticks_at(end) - ticks_at(start)) / clk_tck / max(end - start, 1e-9)


def fmt(v, spec="{:.2f}", none="—"):
    return none if v is None else spec.format(v)


def run_cell(r):
    """One run's latency and CPU for a per-round table: p50 / p99 / p99.9 ms, CPU."""
    if not r:
        return "—"
    if not r.get("json"):
        return "FAILED (no results)"
    failed = "" if r["status"] == 0 else f" (stress exit {r['status']})"
    return f"{r['p50']:.2f} / {r['p99']:.2f} / {r['p999']:.2f}, {fmt(r['cpu'])}{failed}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def median(values):
    """The median of the values that are known, or None."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


# The servers a run may hold, in the order the tables show them, and their
# names in prose.
KINDS = ("nexus", "redis", "nats", "baseline")
LABEL = {"nexus": "nexus", "redis": "Redis", "nats": "NATS", "baseline": "baseline"}
PEERS = ("redis", "nats")
# Above this share of its one core, the load generator may have bounded
# what it measured: such runs are flagged.
LOADGEN_BUSY_PERCENT = 80.0


def per_core_second(r):
    """Deliveries per second of server CPU (deliveries/s ÷ cores)."""
    if not r or not r.get("json") or not r.get("cpu"):
        return None
    return r["dps"] / r["cpu"]


def loadgen(r):
    """The load generator's CPU in % of one core, flagged when busy."""
    c = r.get("client_cpu") if r else None
    if c is None:
        return "—"
    return f"{c:.0f}%" + (" ⚠" if c > LOADGEN_BUSY_PERCENT else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--plot", required=True, help="the examples/plot binary")
    ap.add_argument("--clk-tck", type=float, default=100.0)
    ap.add_argument("--command", default="scripts/bench.sh")
    ap.add_argument("--commit", default="?")
    ap.add_argument("--nexus-cpus", default="0")
    ap.add_argument("--load-cpus", default="1")
    ap.add_argument("--rates", default="400 1000 2000 4000 8000")
    a = ap.parse_args()
    d = a.dir
    rates = [int(r) for r in a.rates.split()]

    # Server runs.
    runs = {}  # (scenario, server) -> dict
    order = []
    try:
        lines = open(os.path.join(d, "runs.tsv")).read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        family, name, kind, layout, rss0, rss1, status, load = line.split("\t")
        tag = f"{name}.{kind}"
        j = load_json(os.path.join(d, tag + ".json"))
        r = {"family": family, "name": name, "kind": kind, "layout": layout, "load": load,
             "status": int(status), "json": j, "hgrm": os.path.join(d, tag + ".hgrm")}
        if j:
            r["client_cpu"] = j.get("client_cpu_percent")
            r["storm"] = j.get("storm")
            lat = j["latency_ms"]
            r.update(dps=j["deliveries_per_second"], p50=lat["p50"], p99=lat["p99"], p999=lat["p99_9"],
                     lost=j["lost"], reordered=j["out_of_order"], publish_rate=j["publish_rate"])
            clients = int(j["settings"]["clients"])
            r["rss_per_conn"] = (int(rss1) - int(rss0)) * 1024 / clients
        r["rss"] = f"{rss0}→{rss1} KiB"
        r["rss_kib"] = (int(rss0), int(rss1))
        r["cpu"] = window_cpu(os.path.join(d, tag + ".cpu"), a.clk_tck,
                              j.get("window_start_unix") if j else None,
                              j.get("window_end_unix") if j else None)
        runs[(name, kind)] = r
        if name not in order:
            order.append(name)

    # The peers' versions and command lines, as bench.sh ran them.
    peers = {}  # kind -> (version, command line)
    try:
        for line in open(os.path.join(d, "peers.tsv")).read().splitlines():
            kind, version, command = line.split("\t", 2)
            peers[kind] = (version, command)
    except (OSError, ValueError):
        pass

    # Floor runs.
    floor = {}  # (mode, rate) -> json
    for mode in ("send", "uring"):
        for rate in rates + [0]:
            j = load_json(os.path.join(d, f"floor-{rate}.{mode}.json"))
            if j:
                j["hgrm"] = os.path.join(d, f"floor-{rate}.{mode}.hgrm")
                # A floor that fell behind its schedule cannot be compared.
                j["sustained"] = rate == 0 or j["publish_rate"] >= 0.97 * rate
                floor[(mode, rate)] = j

    # Production-scale pairs: the floor and the nexus alternating at 400 msg/s.
    pairs = []  # (index, floor json, nexus run)
    i = 1
    while True:
        fl = load_json(os.path.join(d, f"floor-400-r{i}.uring.json"))
        n = runs.get((f"production-r{i}", "nexus"))
        if fl is None and n is None:
            break
        if fl is not None and n is not None and n.get("json"):
            pairs.append((i, fl, n))
        i += 1

    def run_of(name, kind):
        return runs.get((name, kind), {})

    # Production-scale rounds: the floor, the nexus and the peers at 400
    # msg/s, one after the other (pairs above are their floor/nexus part).
    rounds = []  # (index, floor json or None, {kind: run})
    i = 1
    while True:
        fl = load_json(os.path.join(d, f"floor-400-r{i}.uring.json"))
        rs = {k: run_of(f"production-r{i}", k) for k in ("nexus",) + PEERS}
        if fl is None and not any(rs.values()):
            break
        rounds.append((i, fl, rs))
        i += 1
    peer_rounds = {k: [(i, rs["nexus"], rs[k]) for (i, _, rs) in rounds
                       if rs["nexus"].get("json") and rs[k].get("json")] for k in PEERS}
    round_p99 = {k: [ratio(n["p99"], p["p99"]) for (_, n, p) in peer_rounds[k]] for k in PEERS}
    round_cpu = {k: [ratio(n["cpu"], p["cpu"]) for (_, n, p) in peer_rounds[k]] for k in PEERS}

    def get(name, kind, key):
        return run_of(name, kind).get(key)

    out = []
    w = out.append
    w(f"# Benchmark run {os.path.basename(d)}")
    w("")
    cpus = os.cpu_count()
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    w(f"Machine: {cpus} CPUs ({model}), kernel {platform.release()}. "
      f"Command: `{a.command}` at commit {a.commit}.")
    w(f"Servers (the nexus with one shard, the Tokio baseline with one worker, Redis and NATS each like one shard) "
      f"ran pinned to CPU {a.nexus_cpus}, "
      f"the load generator (examples/stress) to CPU {a.load_cpus}; the floor's sender to CPU {a.nexus_cpus} and "
      f"its reader to CPU {a.load_cpus}. Server CPU is utime + stime from /proc/PID/stat over the load generator's "
      "measured window, in cores. All figures below are from this one run.")
    w("")
    if peers:
        w("Peers (their own protocols, spoken by the same load generator with the same stamped 64-byte texts; every "
          "publish reaches the same receivers as on the nexus: NATS with `echo:false`, Redis with a publishing "
          "connection per publisher and a channel name of its own on its own channel, see bench-results/peers.md):")
        w("")
        for kind, (version, command) in peers.items():
            w(f"- **{LABEL.get(kind, kind)}**: {version}; `{command}`")
        w("")
    w("The load generator reads every 10th subscriber of each channel in full (latency, order, sender, loss in the "
      "window) and counts the others' deliveries by their frame headers (ws frame, RESP array, NATS `MSG` line); "
      "every receiver's count is checked against the deliveries due once the run has drained. Its own CPU (% of "
      f"its one core) is shown; ⚠ marks runs where it passed {LOADGEN_BUSY_PERCENT:.0f}%.")
    w("")

    # The floor.
    if floor:
        w("## The floor (examples/floor)")
        w("")
        w("One 100-byte send to each of 349 loopback sockets per publish; `send`: one `send()` each, "
          "`uring`: one io_uring submission of 349 send SQEs. Fan-out = publish to the last of its deliveries.")
        w("")
        w("| mode | publishes/s asked | done | sends/s | µs per send | sender CPU | delivery p50 / p99 ms | fan-out p50 / p99 ms | lost |")
        w("|---|---|---|---|---|---|---|---|---|")
        for (mode, rate), j in sorted(floor.items(), key=lambda kv: (kv[0][1] == 0, kv[0][1], kv[0][0])):
            asked = "closed loop" if rate == 0 else f"{rate:,}"
            done = f"{j['publish_rate']:,.0f}" + ("" if j["sustained"] else " (behind)")
            w(f"| {mode} | {asked} | {done} | {j['sends_per_s']:,.0f} | {j['per_send_us']:.2f} | {j['sender_cpu']:.2f} | "
              f"{j['delivery_p50_ms']:.2f} / {j['delivery_p99_ms']:.2f} | {j['fanout_p50_ms']:.2f} / {j['fanout_p99_ms']:.2f} | {j['lost']} |")
        w("")

    # The sweep.
    sweep_names = [f"sweep-{r}" for r in rates] + ["closed-loop"]
    if any(n == name for (n, _) in runs for name in sweep_names):
        w("## Paced sweep: 350 clients, 1 channel, 349 subscribers, 10 publishers, 64-byte texts")
        w("")
        w("Ratios: nexus ÷ baseline (same load), nexus ÷ Redis (same load) and nexus ÷ the io_uring floor at the "
          "same publish rate (p99 against the floor's fan-out p99, CPU against its sender CPU); `—` where the floor "
          "could not keep the rate.")
        w("")
        w("| msg/s | server | deliveries/s | p50 ms | p99 ms | p99.9 ms | lost / reordered | CPU | load generator CPU | "
          "p99 ÷ baseline | CPU ÷ baseline | p99 ÷ Redis | CPU ÷ Redis | p99 ÷ floor | CPU ÷ floor |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name in sweep_names:
            rate = 0 if name == "closed-loop" else int(name.split("-")[1])
            fl = floor.get(("uring", rate))
            fl_ok = fl is not None and fl["sustained"] and rate > 0
            for kind in ("baseline", "nexus", "redis", "nats"):
                r = run_of(name, kind)
                if not r:
                    continue
                label = "closed loop" if rate == 0 else f"{rate:,}"
                if not r.get("json"):
                    w(f"| {label} | {LABEL[kind]} | FAILED (no results) | | | | | | | | | | | | |")
                    continue
                is_n = kind == "nexus"
                p99_b = ratio(r["p99"], get(name, "baseline", "p99")) if is_n else None
                cpu_b = ratio(r["cpu"], get(name, "baseline", "cpu")) if is_n else None
                p99_r = ratio(r["p99"], get(name, "redis", "p99")) if is_n else None
                cpu_r = ratio(r["cpu"], get(name, "redis", "cpu")) if is_n else None
                p99_f = ratio(r["p99"], fl["fanout_p99_ms"]) if fl_ok else None
                cpu_f = ratio(r["cpu"], fl["sender_cpu"]) if fl_ok else None
                failed = "" if r["status"] == 0 else " (stress exit %d)" % r["status"]
                w(f"| {label} | {LABEL[kind]}{failed} | {r['dps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} | "
                  f"{r['lost']} / {r['reordered']} | {fmt(r['cpu'])} | {loadgen(r)} | {fmt(p99_b, '{:.2f}×')} | "
                  f"{fmt(cpu_b, '{:.2f}×')} | {fmt(p99_r, '{:.2f}×')} | {fmt(cpu_r, '{:.2f}×')} | "
                  f"{fmt(p99_f, '{:.2f}×')} | {fmt(cpu_f, '{:.2f}×')} |")
        w("")

    # The production scale, pair by pair.
    # A floor run that lost deliveries measured nothing: its pair is shown
    # but left out of the median.
    pair_p99 = [ratio(n["p99"], fl["fanout_p99_ms"]) if fl["lost"] == 0 else None for (_, fl, n) in pairs]
    pair_cpu = [ratio(n["cpu"], fl["sender_cpu"]) if fl["lost"] == 0 else None for (_, fl, n) in pairs]
    if pairs:
        w(f"## Production scale against the floor: {len(pairs)} alternating pairs at 400 msg/s")
        w("")
        w("Each pair is one run of the io_uring floor followed at once by one run of the nexus under the sweep's "
          "400 msg/s load. The floor's own p99 moves from one minute to the next on this shared VM, so the targets "
          "below are judged on the median of the pairs' ratios.")
        w("")
        w("| pair | floor fan-out p50 / p99 ms | floor CPU | nexus p50 / p99 / p99.9 ms | nexus CPU | lost (floor / nexus) | p99 ÷ floor | CPU ÷ floor |")
        w("|---|---|---|---|---|---|---|---|")
        for (i, fl, n), rp, rc in zip(pairs, pair_p99, pair_cpu):
            w(f"| {i} | {fl['fanout_p50_ms']:.2f} / {fl['fanout_p99_ms']:.2f} | {fl['sender_cpu']:.2f} | "
              f"{n['p50']:.2f} / {n['p99']:.2f} / {n['p999']:.2f} | {fmt(n['cpu'])} | {fl['lost']} / {n['lost']} | "
              f"{fmt(rp, '{:.2f}×')} | {fmt(rc, '{:.2f}×')} |")
        w(f"| median | | | | | | {fmt(median(pair_p99), '{:.2f}×')} | {fmt(median(pair_cpu), '{:.2f}×')} |")
        w("")

    # The same rounds with the peers (issue 23).
    if any(peer_rounds[k] for k in PEERS):
        w(f"## Production scale against the peers: {len(rounds)} rounds at 400 msg/s")
        w("")
        w("Each round is the io_uring floor, then the nexus, Redis and NATS under the same load (350 clients, "
          "1 channel, 10 publishers, 64-byte texts), in reverse order every other round. Ratios are nexus ÷ Redis "
          "(and ÷ NATS) within the round; the targets are judged on their median. Load generator CPU is its own, "
          "in % of its one core.")
        w("")
        w("| round | floor fan-out p50 / p99 ms, CPU | nexus p50 / p99 / p99.9 ms, CPU | Redis p50 / p99 / p99.9 ms, CPU | "
          "NATS p50 / p99 / p99.9 ms, CPU | lost (nexus / Redis / NATS) | load generator CPU (nexus / Redis / NATS) | "
          "p99 ÷ Redis | CPU ÷ Redis | p99 ÷ NATS | CPU ÷ NATS |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")

        for (i, fl, rs) in rounds:
            n = rs["nexus"]
            fl_cell = "—" if fl is None else \
                f"{fl['fanout_p50_ms']:.2f} / {fl['fanout_p99_ms']:.2f}, {fl['sender_cpu']:.2f}"
            lost = " / ".join(str(rs[k]["lost"]) if rs[k].get("json") else "—" for k in ("nexus",) + PEERS)
            lg = " / ".join(loadgen(rs[k]) for k in ("nexus",) + PEERS)
            rr = []
            for k in PEERS:
                ok = n.get("json") and rs[k].get("json")
                rr.append(fmt(ratio(n["p99"], rs[k]["p99"]) if ok else None, "{:.2f}×"))
                rr.append(fmt(ratio(n["cpu"], rs[k]["cpu"]) if ok else None, "{:.2f}×"))
            w(f"| {i} | {fl_cell} | {run_cell(n)} | {run_cell(rs['redis'])} | {run_cell(rs['nats'])} | {lost} | {lg} | "
              + " | ".join(rr) + " |")
        w(f"| median | | | | | | | {fmt(median(round_p99['redis']), '{:.2f}×')} | "
          f"{fmt(median(round_cpu['redis']), '{:.2f}×')} | {fmt(median(round_p99['nats']), '{:.2f}×')} | "
          f"{fmt(median(round_cpu['nats']), '{:.2f}×')} |")
        w("")

    # The peers side by side, family by family.
    peer_scenarios = [(f"sweep-{r}", f"{r:,} msg/s (sweep)") for r in rates] + [
        ("closed-loop", "closed loop, 32 deliveries in flight per client"),
        ("closed-loop-deep", "closed loop, 1,000 publishes in flight per publisher"),
        ("ten-channels", "ten channels, 3,500 msg/s"),
        ("saturation-ten-channels", "ten channels, closed loop"),
        ("connections", "10,000 connections, 100 msg/s"),
    ]
    peer_scenarios = [(n, lbl) for (n, lbl) in peer_scenarios if any(run_of(n, k).get("json") for k in PEERS)]
    if peer_scenarios or any(peer_rounds[k] for k in PEERS):
        w("## The nexus and its peers side by side")
        w("")
        w("Each server alone on the server CPU under the same load; deliveries per core-second = deliveries/s ÷ "
          "server CPU. The 400 msg/s row gives the medians over the production rounds (each server's figure, and "
          "the median of the rounds' ratios); every other row is one run per server, run one after the other. "
          "The floor is shown where it kept the rate (fan-out p99, sender CPU).")
        w("")
        w("| load | nexus p99 ms / CPU | Redis p99 ms / CPU | NATS p99 ms / CPU | floor p99 ms / CPU | "
          "deliveries/s (nexus / Redis / NATS) | per core-second (nexus / Redis / NATS) | "
          "p99 ÷ Redis | CPU ÷ Redis | per core-second ÷ Redis | lost (nexus / Redis / NATS) | load generator CPU (nexus / Redis / NATS) |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")

        def pc(r):
            return "—" if not r.get("json") else f"{r['p99']:.2f} / {fmt(r['cpu'])}"

        def m(fmt_spec, v):
            return fmt(v, fmt_spec)

        if rounds:
            med = {}
            for k in ("nexus",) + PEERS:
                rs_k = [rs[k] for (_, _, rs) in rounds if rs[k].get("json")]
                med[k] = {"p99": median([r["p99"] for r in rs_k]), "cpu": median([r["cpu"] for r in rs_k]),
                          "dps": median([r["dps"] for r in rs_k]), "pcs": median([per_core_second(r) for r in rs_k]),
                          "lost": sum(r["lost"] for r in rs_k),
                          "lg": median([r.get("client_cpu") for r in rs_k]), "n": len(rs_k)}
            fls = [fl for (_, fl, _) in rounds if fl is not None and fl["lost"] == 0]
            fl_cell = "—" if not fls else \
                f"{median([f['fanout_p99_ms'] for f in fls]):.2f} / {median([f['sender_cpu'] for f in fls]):.2f}"
            pcs_ratio = median([ratio(per_core_second(n), per_core_second(r)) for (_, n, r) in peer_rounds["redis"]])

            def mc(k):
                return "—" if not med[k]["n"] else f"{m('{:.2f}', med[k]['p99'])} / {m('{:.2f}', med[k]['cpu'])}"

            w(f"| 400 msg/s (production, median of {len(rounds)} rounds) | {mc('nexus')} | {mc('redis')} | {mc('nats')} | "
              f"{fl_cell} | " + " / ".join(m("{:,.0f}", med[k]["dps"]) for k in ("nexus",) + PEERS) + " | "
              + " / ".join(m("{:,.0f}", med[k]["pcs"]) for k in ("nexus",) + PEERS) + " | "
              f"{m('{:.2f}×', median(round_p99['redis']))} | {m('{:.2f}×', median(round_cpu['redis']))} | "
              f"{m('{:.2f}×', pcs_ratio)} | " + " / ".join(str(med[k]["lost"]) if med[k]["n"] else "—"
                                                          for k in ("nexus",) + PEERS) + " | "
              + " / ".join(m("{:.0f}%", med[k]["lg"]) for k in ("nexus",) + PEERS) + " |")
        for name, label in peer_scenarios:
            rs = {k: run_of(name, k) for k in ("nexus",) + PEERS}
            n, r = rs["nexus"], rs["redis"]
            fl = floor.get(("uring", int(name.split("-")[1]))) if name.startswith("sweep-") else None
            fl_cell = f"{fl['fanout_p99_ms']:.2f} / {fl['sender_cpu']:.2f}" if fl and fl["sustained"] else "—"
            both = n.get("json") and r.get("json")
            w(f"| {label} | {pc(n)} | {pc(r)} | {pc(rs['nats'])} | {fl_cell} | "
              + " / ".join(m("{:,.0f}", rs[k].get("dps")) for k in ("nexus",) + PEERS) + " | "
              + " / ".join(m("{:,.0f}", per_core_second(rs[k])) for k in ("nexus",) + PEERS) + " | "
              f"{m('{:.2f}×', ratio(n['p99'], r['p99']) if both else None)} | "
              f"{m('{:.2f}×', ratio(n['cpu'], r['cpu']) if both else None)} | "
              f"{m('{:.2f}×', ratio(per_core_second(n), per_core_second(r)) if both else None)} | "
              + " / ".join(str(rs[k]["lost"]) if rs[k].get("json") else "—" for k in ("nexus",) + PEERS) + " | "
              + " / ".join(loadgen(rs[k]) for k in ("nexus",) + PEERS) + " |")
        w("")
        conn = {k: run_of("connections", k) for k in ("nexus",) + PEERS}
        if any(conn[k].get("json") for k in PEERS):
            w("Memory with 10,000 connections (RSS growth over the run ÷ connections): "
              + ", ".join(f"{LABEL[k]} {conn[k]['rss_per_conn']:,.0f} B" for k in ("nexus",) + PEERS
                          if conn[k].get("json"))
              + ". Redis also holds its 10 publishing connections and, for the 1,000 clients of the publishers' "
                "channels, one more subscription each (see bench-results/peers.md).")
            w("")

    # Access control (issue 20): off and required alternating at 400 msg/s.
    auth_pairs = []
    i = 1
    while True:
        off, req = run_of(f"auth-off-r{i}", "nexus"), run_of(f"auth-required-r{i}", "nexus")
        if not off and not req:
            break
        if off.get("json") and req.get("json"):
            auth_pairs.append((i, off, req))
        i += 1
    auth_p99 = [ratio(q["p99"], o["p99"]) for (_, o, q) in auth_pairs]
    auth_cpu = [ratio(q["cpu"], o["cpu"]) for (_, o, q) in auth_pairs]
    if auth_pairs:
        w(f"## Access control at the production scale: {len(auth_pairs)} alternating pairs at 400 msg/s")
        w("")
        w("Each pair is one run with `--auth off` followed at once by one with `--auth required`, a policy of "
          "allow and deny patterns for the clients' identity and a token with its own patterns: every `1h`, "
          "`1c` and `1t` is checked. Judged on the median of the pairs' ratios.")
        w("")
        w("| pair | off p50 / p99 ms | off CPU | required p50 / p99 ms | required CPU | lost (off / required) | p99 ÷ off | CPU ÷ off |")
        w("|---|---|---|---|---|---|---|---|")
        for (i, o, q), rp, rc in zip(auth_pairs, auth_p99, auth_cpu):
            w(f"| {i} | {o['p50']:.2f} / {o['p99']:.2f} | {fmt(o['cpu'])} | {q['p50']:.2f} / {q['p99']:.2f} | "
              f"{fmt(q['cpu'])} | {o['lost']} / {q['lost']} | {fmt(rp, '{:.2f}×')} | {fmt(rc, '{:.2f}×')} |")
        w(f"| median | | | | | | {fmt(median(auth_p99), '{:.2f}×')} | {fmt(median(auth_cpu), '{:.2f}×')} |")
        w("")

    # wss beside ws: one nexus with its wss listener on, loaded over ws then
    # over wss, alternating, at 400 and at 4,000 msg/s.
    tls_pairs = {}  # rate -> [(index, ws run, wss run)]
    for rate in (400, 4000):
        tls_pairs[rate] = []
        i = 1
        while True:
            plain, secure = run_of(f"tls-ws-{rate}-r{i}", "nexus"), run_of(f"tls-wss-{rate}-r{i}", "nexus")
            if not plain and not secure:
                break
            if plain.get("json") and secure.get("json"):
                tls_pairs[rate].append((i, plain, secure))
            i += 1
    try:
        tls_key = open(os.path.join(d, "tls", "key-kind")).read().strip()
    except OSError:
        tls_key = "?"
    tls_p99 = {rate: [ratio(t["p99"], p["p99"]) for (_, p, t) in ps] for rate, ps in tls_pairs.items()}
    tls_cpu = {rate: [ratio(t["cpu"], p["cpu"]) for (_, p, t) in ps] for rate, ps in tls_pairs.items()}
    for rate, ps in tls_pairs.items():
        if not ps:
            continue
        w(f"## wss against ws, 350 clients, 1 channel, 10 publishers, 64-byte texts: {len(ps)} alternating pairs at {rate:,} msg/s")
        w("")
        w(f"Each pair is one run over ws followed at once by one over wss (TLS 1.3, a test CA's {tls_key} server "
          "certificate), against the same nexus flags: `--tls-listen` is on in both, so the pair differs only in "
          "the clients' transport. Judged on the median of the pairs' ratios. Load generator CPU is its own, in % "
          "of one core, to show it was not the bottleneck.")
        w("")
        w("| pair | ws p50 / p99 / p99.9 ms | ws CPU | wss p50 / p99 / p99.9 ms | wss CPU | lost (ws / wss) | "
          "load generator CPU (ws / wss) | p99 ÷ ws | CPU ÷ ws |")
        w("|---|---|---|---|---|---|---|---|---|")
        for (i, p, t), rp, rc in zip(ps, tls_p99[rate], tls_cpu[rate]):
            failed = "".join(f" ({k} stress exit {r['status']})" for k, r in (("ws", p), ("wss", t)) if r["status"])
            w(f"| {i}{failed} | {p['p50']:.2f} / {p['p99']:.2f} / {p['p999']:.2f} | {fmt(p['cpu'])} | "
              f"{t['p50']:.2f} / {t['p99']:.2f} / {t['p999']:.2f} | {fmt(t['cpu'])} | {p['lost']} / {t['lost']} | "
              f"{fmt(p.get('client_cpu'), '{:.0f}%')} / {fmt(t.get('client_cpu'), '{:.0f}%')} | "
              f"{fmt(rp, '{:.2f}×')} | {fmt(rc, '{:.2f}×')} |")
        w(f"| median | | | | | | | {fmt(median(tls_p99[rate]), '{:.2f}×')} | {fmt(median(tls_cpu[rate]), '{:.2f}×')} |")
        w("")

    # The handshake storm: 2,000 wss connections at once beside ws
    # bystanders, and its control: the same storm over ws.
    def storm_runs(prefix):
        found = []
        i = 1
        while True:
            r = run_of(f"{prefix}-r{i}", "nexus")
            if not r:
                break
            if r.get("json") and r.get("storm"):
                st = r["storm"]
                st["server_cpu"] = window_cpu(os.path.join(d, f"{prefix}-r{i}.nexus.cpu"), a.clk_tck,
                                              st.get("start_unix"), st.get("end_unix"))
                rss0, rss1 = r["rss_kib"]
                st["rss_per_conn"] = (rss1 - rss0) * 1024 / max(st["connections"], 1)
                found.append((i, r, st))
            i += 1
        return found

    storms = storm_runs("tls-storm")
    control = storm_runs("tls-storm-ws")
    if storms or control:
        first = (storms or control)[0]
        load = " ".join(arg for arg in first[1]["load"].split() if not arg.startswith(("ws://", "wss://")))
        load = load.replace(" --storm-url", "")
        w(f"## Handshake storm: {first[2]['connections']:,} wss connections ({tls_key} certificate) opened at once, "
          f"{len(storms)} runs, against the same storm over ws")
        w("")
        w(f"Bystanders: `{load}` over ws on the same one-shard nexus; the storm starts 1 s into the window, every "
          "connection opens at the same instant (TCP connect, for wss a full TLS 1.3 handshake without resumption, "
          "the WebSocket upgrade) and is held until the window ends. The ws storm is the control: what accepting "
          "and upgrading that many connections at once costs without TLS. *Time to all*: from the storm's start "
          "until the last connection got its 101 (or failed). Bystander latency *during* the storm counts the "
          "messages published while it ran. The storm's client side runs on its own thread at SCHED_IDLE beside "
          "the bystanders; its CPU is shown: close to its time to all means the load generator, not the nexus, "
          "bounded the storm. Nexus CPU is averaged over the storm (0.2 s samples); RSS is the peak growth over "
          "the run per storm connection.")
        w("")
        w("| storm | upgraded / errors | time to all s | connect p50 / p99 / max ms | bystanders during storm p50 / p99 / max ms | "
          "bystanders whole window p99 / max ms | lost | nexus CPU during storm | storm client CPU s | RSS per storm connection |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for label, runs_ in (("wss", storms), ("ws (control)", control)):
            for i, r, st in runs_:
                c, b = st["connect_ms"], st["bystander_latency_ms"]
                failed = "" if r["status"] == 0 else " (stress exit %d)" % r["status"]
                errors = st["errors"]
                if errors:
                    errors = f"{errors} ({'; '.join(f'{n}× {k}' for k, n in st['error_kinds'].items())})"
                w(f"| {label} {i}{failed} | {st['upgraded']:,} / {errors} | {st['seconds_to_all']:.2f} | "
                  f"{c['p50']:.0f} / {c['p99']:.0f} / {c['max']:.0f} | {b['p50']:.2f} / {b['p99']:.2f} / {b['max']:.2f} | "
                  f"{r['p99']:.2f} / {r['json']['latency_ms']['max']:.2f} | {r['lost']} | {fmt(st['server_cpu'])} | "
                  f"{st['client_cpu_seconds']:.2f} | {st['rss_per_conn'] / 1024:,.1f} KiB |")
            if runs_:
                w(f"| {label} median | | {fmt(median([st['seconds_to_all'] for (_, _, st) in runs_]))} | "
                  f"p99 {fmt(median([st['connect_ms']['p99'] for (_, _, st) in runs_]), '{:.0f}')} | "
                  f"p99 {fmt(median([st['bystander_latency_ms']['p99'] for (_, _, st) in runs_]))}, "
                  f"max {fmt(median([st['bystander_latency_ms']['max'] for (_, _, st) in runs_]))} | "
                  f"p99 {fmt(median([r['p99'] for (_, r, _) in runs_]))} | | | | |")
        w("")

    # Issue 24: history at the production scale, off / on (v1 subscribers)
    # / on with positions clients, in rounds.
    history_rounds = []  # (index, off, on, positions)
    i = 1
    while True:
        off, on, pos = (run_of(f"history-{v}-r{i}", "nexus") for v in ("off", "on", "positions"))
        if not off and not on and not pos:
            break
        history_rounds.append((i, off, on, pos))
        i += 1

    def history_ratio(key, variant):
        return [ratio(r[key], o[key]) for (_, o, on, pos) in history_rounds
                for r in ((on if variant == "on" else pos),) if o.get("json") and r.get("json")]

    hist_p99 = {v: history_ratio("p99", v) for v in ("on", "positions")}
    hist_cpu = {v: history_ratio("cpu", v) for v in ("on", "positions")}
    if history_rounds:
        w(f"## History at the production scale: {len(history_rounds)} rounds at 400 msg/s (issue 24)")
        w("")
        w("Each round runs the same load (350 clients, 1 channel, 10 publishers, 64-byte texts, one shard) against "
          "the nexus without history (*off*), with `--history '*'` (*on*: every publish numbered on its channel's "
          "home shard and kept in the channel's history with the default bounds; the subscribers are v1 clients, "
          "so they get the v1 frames) and with `--history '*'` while every client asks for positions (*positions*: "
          "`1h` with the option `positions`, every `1r` positional; the sampled receivers parse them and check "
          "each position: +1 for a receiver that does not publish). Off, on, positions, in reverse every other "
          "round. Ratios are against *off* of the same round; judged on their median.")
        w("")
        w("| round | off p50 / p99 / p99.9 ms, CPU | on p50 / p99 / p99.9 ms, CPU | positions p50 / p99 / p99.9 ms, CPU | "
          "lost (off / on / positions) | positional deliveries checked (position errors) | load generator CPU "
          "(off / on / positions) | p99 on ÷ off | CPU on ÷ off | p99 positions ÷ off | CPU positions ÷ off |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")

        for (i, o, on, pos) in history_rounds:
            sample = (pos.get("json") or {}).get("sample") or {}
            checked = f"{sample.get('positional', 0):,} ({sample.get('position_errors', 0)})" if pos.get("json") else "—"
            lost = " / ".join(str(r["lost"]) if r.get("json") else "—" for r in (o, on, pos))
            cells = []
            for r in (on, pos):
                ok = o.get("json") and r.get("json")
                cells.append(fmt(ratio(r["p99"], o["p99"]) if ok else None, "{:.2f}×"))
                cells.append(fmt(ratio(r["cpu"], o["cpu"]) if ok else None, "{:.2f}×"))
            w(f"| {i} | {run_cell(o)} | {run_cell(on)} | {run_cell(pos)} | {lost} | {checked} | "
              + " / ".join(loadgen(r) for r in (o, on, pos)) + " | " + " | ".join(cells) + " |")
        w(f"| median | | | | | | | {fmt(median(hist_p99['on']), '{:.2f}×')} | {fmt(median(hist_cpu['on']), '{:.2f}×')} | "
          f"{fmt(median(hist_p99['positions']), '{:.2f}×')} | {fmt(median(hist_cpu['positions']), '{:.2f}×')} |")
        w("")

    # Issue 24: memory per retained message.
    retain = load_json(os.path.join(d, "retain.json"))
    if retain:
        st = retain["settings"]
        w("## Memory per retained message (issue 24)")
        w("")
        w(f"One v1 publisher published {int(st['messages']):,} texts of {st['message_size']} bytes round-robin over "
          f"{st['channels']} channels (after {int(st['warmup']):,} not counted) into a one-shard nexus with "
          "`--history '*'` and bounds far above that, so that every message stays; after each step the nexus's "
          "VmRSS and `easechat_history_bytes` (the figure `--history-bytes` and `--history-total-bytes` bound: "
          "both frames of a message plus its bookkeeping) once /metrics showed the step's messages held.")
        w("")
        w("| messages held | easechat_history_bytes | nexus VmRSS KiB |")
        w("|---|---|---|")
        for step in retain["steps"]:
            w(f"| {step['held']:,} | {step['history_bytes']:,} | {step['rss_kib']:,} |")
        w("")
        w(f"Per retained message: **{retain['rss_bytes_per_message']:,.0f} B of RSS** (last step alone "
          f"{retain['rss_bytes_per_message_last_step']:,.0f} B), **{retain['metric_bytes_per_message']:,.0f} B "
          f"counted by easechat_history_bytes**; nexus idle RSS {retain['rss_idle_kib']:,} KiB; evictions "
          f"{retain['evictions']}{'' if retain.get('ok') else ' — NOT every message was held'}.")
        w("")

    # Issue 24: the reconnect storm, one nexus per gap.
    recovery = []
    try:
        for line in open(os.path.join(d, "history-tools.tsv")).read().splitlines():
            family, name, status, flags, load = line.split("\t")
            if family == "recovery":
                recovery.append((name, int(status), flags, load, load_json(os.path.join(d, name + ".json"))))
    except (OSError, ValueError):
        pass
    if recovery:
        first = next((j for (_, _, _, _, j) in recovery if j), None)
        w("## Reconnect storm with gaps (issue 24)")
        w("")
        if first:
            st = first["settings"]
            w(f"{st['clients']} clients asking for positions on {st['channels']} history channel(s) of a one-shard "
              f"nexus (`--history '*'`, default bounds), a v1 publisher publishing {st['rate']:g} msg/s of "
              f"{st['message_size']}-byte texts. Each cycle: the publisher pauses until every client has every "
              "message; all clients drop their connections at once; exactly *gap* more messages are published (a "
              "witness client per channel confirms they were numbered); all clients reconnect at once, each "
              "subscribing from its last position (`1c` with offset and epoch), while the publisher goes on at its "
              "rate. *Time to all recovered*: from the reconnect's start until the last client had its `1p` "
              "(recovered) and every replayed message up to the `1p`'s offset (the gap, plus what was published "
              "before its subscription was answered): from there on it is live. Nexus CPU: the sum of its "
              "threads' schedstat over that window; RSS sampled every 2 ms in it; VmHWM at the end of the run "
              "(one nexus per gap). Every offset every client received, across all cycles, was checked: +1 each "
              f"time. {st['cycles']} cycle(s) per gap; medians over cycles, worst case beside. The load generator "
              "(one thread) does every reconnect's TCP and WebSocket handshake: its CPU over the window is shown.")
            w("")
        w("| gap | cycles | time to all recovered s (median / max) | per client p50 / p99 ms (median) | "
          "reconnected p99 ms (median) | replayed per client (min–max) | nexus CPU s over the window (median), "
          "cores | load generator CPU s (median) | nexus RSS before → peak KiB (max), VmHWM | recoveries / failed / "
          "replayed (/metrics, all cycles) | missing / duplicates / not recovered | ok |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, status, flags, load, j in sorted(recovery, key=lambda r: (r[4] or {}).get("settings", {}).get("gap", 0)):
            if not j:
                w(f"| {name} | FAILED (no results, exit {status}) | | | | | | | | | | |")
                continue
            cs = j["cycles"]
            times = [c["seconds_to_all"] for c in cs]
            cpu = median([c["server_cpu_seconds"] for c in cs])
            cores = median([c["server_cpu_cores"] for c in cs])
            rss0 = max((c["rss_before_kib"] or 0 for c in cs), default=0)
            rss1 = max((c["rss_peak_kib"] or 0 for c in cs), default=0)
            mins = [c["replayed"]["min"] for c in cs if c["replayed"]["min"] is not None]
            maxs = [c["replayed"]["max"] for c in cs if c["replayed"]["max"] is not None]
            deltas = [c["metrics_delta"] for c in cs if c.get("metrics_delta")]
            met = "—" if not deltas else " / ".join(
                f"{sum(dl[k] for dl in deltas):,.0f}" for k in ("recoveries", "recoveries_failed", "replayed_messages"))
            w(f"| {j['settings']['gap']} | {len(cs)} | {fmt(median(times), '{:.3f}')} / "
              f"{fmt(max(times, default=None), '{:.3f}')} | "
              f"{fmt(median([c['recovery_ms']['p50'] for c in cs]), '{:.1f}')} / "
              f"{fmt(median([c['recovery_ms']['p99'] for c in cs]), '{:.1f}')} | "
              f"{fmt(median([c['connect_ms']['p99'] for c in cs]), '{:.1f}')} | "
              f"{min(mins, default='—')}–{max(maxs, default='—')} | {fmt(cpu, '{:.3f}')}, {fmt(cores)} | "
              f"{fmt(median([c['loadgen_cpu_seconds'] for c in cs]), '{:.3f}')} | "
              f"{rss0:,} → {rss1:,}, {fmt(j.get('vm_hwm_kib'), '{:,}')} | {met} | "
              f"{j['missing']} / {j['duplicates']} / {j['not_recovered']} | "
              f"{'yes' if j['ok'] and status == 0 else '**no** (exit %d%s)' % (status, '; ' + '; '.join(j['errors']) if j['errors'] else '')} |")
        w("")

    # Everything else.
    others = [n for n in order if n not in sweep_names
              and not n.startswith("production-") and not n.startswith("auth-") and not n.startswith("tls-")
              and not n.startswith("history-")]
    if others:
        w("## Other scenarios")
        w("")
        w("| scenario | server | cpus/cores/ring | deliveries/s | p50 ms | p99 ms | lost / reordered | CPU | load generator CPU | RSS (per connection) | deliveries ÷ baseline | p99 ÷ baseline | CPU ÷ baseline |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name in others:
            for kind in ("baseline", "nexus", "redis", "nats"):
                r = run_of(name, kind)
                if not r:
                    continue
                if not r.get("json"):
                    w(f"| {name} | {LABEL[kind]} | {r['layout']} | FAILED (no results) | | | | | | | | | |")
                    continue
                is_n = kind == "nexus"
                failed = "" if r["status"] == 0 else " (stress exit %d)" % r["status"]
                w(f"| {name} | {LABEL[kind]}{failed} | {r['layout']} | {r['dps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                  f"{r['lost']} / {r['reordered']} | {fmt(r['cpu'])} | {loadgen(r)} | {r['rss']} ({r['rss_per_conn']:,.0f} B) | "
                  f"{fmt(ratio(r['dps'], get(name, 'baseline', 'dps')) if is_n else None, '{:.2f}×')} | "
                  f"{fmt(ratio(r['p99'], get(name, 'baseline', 'p99')) if is_n else None, '{:.2f}×')} | "
                  f"{fmt(ratio(r['cpu'], get(name, 'baseline', 'cpu')) if is_n else None, '{:.2f}×')} |")
        w("")
        w("Scenario loads (the peers' runs connect to redis:// or nats:// instead): " + "; ".join(
            f"**{n}**: `{next(r['load'] for (nn, _), r in runs.items() if nn == n)}`" for n in others) + ".")
        w("")

    # Issue 14's targets, checked against this run.
    w("## Targets (issues 14, 20, 21, 23, 24), measured in this run")
    w("")
    w("| target | measured | met? |")
    w("|---|---|---|")

    def check(label, value_text, ok):
        w(f"| {label} | {value_text} | {'—' if ok is None else ('yes' if ok else '**no**')} |")

    for rate, cpu_cap, cpu_base in ((2000, 0.8, None), (4000, None, 0.6), (8000, 0.8, None)):
        name = f"sweep-{rate}"
        n = run_of(name, "nexus")
        if not n.get("json"):
            continue
        p99r = ratio(n["p99"], get(name, "baseline", "p99"))
        check(f"{rate:,} msg/s: p99 ≤ 0.1× baseline p99", fmt(p99r, "{:.3f}×"), None if p99r is None else p99r <= 0.1)
        if rate == 4000:
            check("4,000 msg/s: 0 lost", str(n["lost"]), n["lost"] == 0)
            cr = ratio(n["cpu"], get(name, "baseline", "cpu"))
            check("4,000 msg/s: CPU ≤ 0.6× baseline CPU", fmt(cr, "{:.2f}×"), None if cr is None else cr <= 0.6)
        if cpu_cap is not None:
            check(f"{rate:,} msg/s: CPU < {cpu_cap} core", fmt(n["cpu"]), None if n["cpu"] is None else n["cpu"] < cpu_cap)
    n = run_of("sweep-400", "nexus")
    fl = floor.get(("uring", 400))
    def check_median(label, ratios, bound):
        r = median(ratios)
        check(f"{label} (median of {len(ratios)} pairs)", fmt(r, "{:.2f}×"), None if r is None else r <= bound)

    if pairs:
        check_median("400 msg/s: p99 ≤ 1.3× io_uring floor fan-out p99", pair_p99, 1.3)
        check_median("400 msg/s: CPU ≤ 1.1× io_uring floor CPU", pair_cpu, 1.1)
    elif n.get("json") and fl:
        r1 = ratio(n["p99"], fl["fanout_p99_ms"])
        r2 = ratio(n["cpu"], fl["sender_cpu"])
        check("400 msg/s: p99 ≤ 1.3× io_uring floor fan-out p99", fmt(r1, "{:.2f}×"), None if r1 is None else r1 <= 1.3)
        check("400 msg/s: CPU ≤ 1.1× io_uring floor CPU", fmt(r2, "{:.2f}×"), None if r2 is None else r2 <= 1.1)
    n = run_of("closed-loop", "nexus")
    if n.get("json"):
        r1 = ratio(n["dps"], get("closed-loop", "baseline", "dps"))
        r2 = ratio(n["cpu"], get("closed-loop", "baseline", "cpu"))
        # The stress tool's default window (32 deliveries in flight per
        # client) is not the closed loop (1,000 publishes in flight
        # per publisher, below): shown for information, not judged. With a
        # fixed window the nexus's CPU follows the throughput it reaches.
        r3 = None if r1 is None or r2 is None or r1 == 0 else r2 / r1
        check("closed loop, 32 deliveries in flight per client (information): deliveries/s ÷ baseline",
              fmt(r1, "{:.2f}×"), None)
        check("closed loop, 32 deliveries in flight per client (information): CPU ÷ baseline CPU",
              fmt(r2, "{:.2f}×"), None)
        check("closed loop, 32 deliveries in flight per client (information): CPU per delivery ÷ baseline's",
              fmt(r3, "{:.3f}×"), None)
    n = run_of("closed-loop-deep", "nexus")
    if n.get("json"):
        r1 = ratio(n["dps"], get("closed-loop-deep", "baseline", "dps"))
        r2 = ratio(n["cpu"], get("closed-loop-deep", "baseline", "cpu"))
        r3 = None if r1 is None or r2 is None or r1 == 0 else r2 / r1
        check("closed loop, 1,000 in flight per publisher (baseline --feed-queued): deliveries/s ≥ 0.9× baseline", fmt(r1, "{:.2f}×"), None if r1 is None else r1 >= 0.9)
        check("closed loop, 1,000 in flight per publisher: CPU ≤ 0.5× baseline CPU", fmt(r2, "{:.2f}×"), None if r2 is None else r2 <= 0.5)
        check("closed loop, 1,000 in flight per publisher: CPU per delivery ≤ 0.5× baseline's (information)", fmt(r3, "{:.3f}×"), None if r3 is None else r3 <= 0.5)
    n = run_of("connections", "nexus")
    if n.get("json"):
        per = n["rss_per_conn"]
        check("10,000 connections: ≤ 8 KiB RSS per connection", f"{per:,.0f} B", per <= 8192)
    if hist_p99["on"] or hist_cpu["on"]:
        check_median("issue 24: --history '*' (v1 subscribers), p99 ≤ 1.1× off", hist_p99["on"], 1.1)
        check_median("issue 24: --history '*' (v1 subscribers), CPU ≤ 1.1× off", hist_cpu["on"], 1.1)
    if hist_p99["positions"] or hist_cpu["positions"]:
        check_median("issue 24: --history '*' with positions clients, p99 ≤ 1.1× off", hist_p99["positions"], 1.1)
        check_median("issue 24: --history '*' with positions clients, CPU ≤ 1.1× off", hist_cpu["positions"], 1.1)
    if retain:
        check("issue 24 (as measured): RSS per retained 64-byte message (easechat_history_bytes per message)",
              f"{retain['rss_bytes_per_message']:,.0f} B ({retain['metric_bytes_per_message']:,.0f} B)", None)
    for name, status, flags, load, j in recovery:
        if not j:
            check(f"issue 24: reconnect storm {name}", f"no results (exit {status})", False)
            continue
        gap = j["settings"]["gap"]
        bad = j["missing"] + j["duplicates"] + j["not_recovered"] + j["epoch_changes"]
        check(f"issue 24: reconnect storm, gap {gap}: every client recovered, 0 gaps, 0 duplicates "
              f"({j['settings']['clients']} clients × {len(j['cycles'])} cycles)",
              f"{j['missing']} missing, {j['duplicates']} duplicates, {j['not_recovered']} not recovered",
              bad == 0 and j["ok"] and status == 0)
        check(f"issue 24 (as measured): reconnect storm, gap {gap}: time to all recovered (median of "
              f"{len(j['cycles'])})", fmt(median([c["seconds_to_all"] for c in j["cycles"]]), "{:.3f} s"), None)
    if auth_pairs:
        check_median("issue 20: --auth required with permissions, p99 ≤ 1.05× off", auth_p99, 1.05)
        check_median("issue 20: --auth required with permissions, CPU ≤ 1.05× off", auth_cpu, 1.05)
    if tls_pairs.get(400):
        check_median("wss at the production scale (400 msg/s): p99 ≤ 1.5× ws", tls_p99[400], 1.5)
        check_median("wss at the production scale (400 msg/s): CPU ≤ 1.5× ws", tls_cpu[400], 1.5)
    if tls_pairs.get(4000):
        n = len(tls_pairs[4000])
        check(f"wss at 4,000 msg/s (as measured): p99 ÷ ws (median of {n} pairs)",
              fmt(median(tls_p99[4000]), "{:.2f}×"), None)
        check(f"wss at 4,000 msg/s (as measured): CPU ÷ ws (median of {n} pairs)",
              fmt(median(tls_cpu[4000]), "{:.2f}×"), None)
        lost = sum(t["lost"] for (_, _, t) in tls_pairs[4000])
        check("wss at 4,000 msg/s: 0 lost", str(lost), lost == 0)
    # Issue 23: ahead of Redis where it is strongest.
    def against_redis(label, p99r, cpur, bound):
        check(f"{label}: p99 ≤ {bound}× Redis's", fmt(p99r, "{:.2f}×"), None if p99r is None else p99r <= bound)
        check(f"{label}: CPU ≤ {bound}× Redis's", fmt(cpur, "{:.2f}×"), None if cpur is None else cpur <= bound)

    if peer_rounds["redis"]:
        k = len(peer_rounds["redis"])
        against_redis(f"issue 23, 400 msg/s (median of {k} rounds)", median(round_p99["redis"]),
                      median(round_cpu["redis"]), 0.8)
    elif run_of("sweep-400", "nexus").get("json") and run_of("sweep-400", "redis").get("json"):
        n, r = run_of("sweep-400", "nexus"), run_of("sweep-400", "redis")
        against_redis("issue 23, 400 msg/s (one sweep pair)", ratio(n["p99"], r["p99"]), ratio(n["cpu"], r["cpu"]), 0.8)
    for rate in (2000, 4000, 8000):
        n, r = run_of(f"sweep-{rate}", "nexus"), run_of(f"sweep-{rate}", "redis")
        if n.get("json") and r.get("json"):
            against_redis(f"issue 23, {rate:,} msg/s (one sweep pair)", ratio(n["p99"], r["p99"]),
                          ratio(n["cpu"], r["cpu"]), 0.5)
    n, r = run_of("closed-loop-deep", "nexus"), run_of("closed-loop-deep", "redis")
    if n.get("json") and r.get("json"):
        pr = ratio(per_core_second(n), per_core_second(r))
        check("issue 23, closed loop, 1,000 in flight per publisher: deliveries per core-second ≥ 5× Redis's "
              f"({fmt(per_core_second(n), '{:,.0f}')} against {fmt(per_core_second(r), '{:,.0f}')})",
              fmt(pr, "{:.2f}×"), None if pr is None else pr >= 5)
    if storms:
        n = len(storms)
        errors = sum(st["errors"] for (_, _, st) in storms)
        check(f"handshake storm: every one of {storms[0][2]['connections']:,} wss connections upgraded ({n} runs)",
              f"{errors} errors", errors == 0)
        check(f"handshake storm (as measured): time to all upgraded (median of {n})",
              fmt(median([st["seconds_to_all"] for (_, _, st) in storms]), "{:.2f} s"), None)
        check(f"handshake storm (as measured): bystanders' p99 / max during the storm (median of {n})",
              f"{fmt(median([st['bystander_latency_ms']['p99'] for (_, _, st) in storms]))} / "
              f"{fmt(median([st['bystander_latency_ms']['max'] for (_, _, st) in storms]))} ms", None)
    if control:
        n = len(control)
        check(f"ws storm, the control (as measured): bystanders' p99 / max during the storm (median of {n})",
              f"{fmt(median([st['bystander_latency_ms']['p99'] for (_, _, st) in control]))} / "
              f"{fmt(median([st['bystander_latency_ms']['max'] for (_, _, st) in control]))} ms", None)
    w("")

    # Plots.
    plots = []

    def plot(args, svg):
        path = os.path.join(d, svg)
        res = subprocess.run([a.plot] + args + ["--out", path], capture_output=True, text=True)
        if res.returncode == 0:
            plots.append(svg)
        else:
            print(f"bench_report: plot {svg}: {res.stderr.strip()}", file=sys.stderr)

    for name in (n for n in order if not n.startswith("production-") and not n.startswith("auth-")
                 and not n.startswith("tls-") and not n.startswith("history-")):
        series = [f"{LABEL[kind]}={run_of(name, kind)['hgrm']}" for kind in KINDS
                  if run_of(name, kind).get("json") and os.path.exists(run_of(name, kind)["hgrm"])]
        if name in sweep_names:
            rate = 0 if name == "closed-loop" else int(name.split("-")[1])
            for mode in ("uring", "send"):
                fl = floor.get((mode, rate))
                if fl and os.path.exists(fl["hgrm"]):
                    series.append(f"floor {mode}={fl['hgrm']}")
        if series:
            plot(["curves", "--title", f"{name}: latency by percentile"] + series, f"{name}.svg")
    # The production scale: the first round with a peer in it.
    for (i, fl, rs) in rounds:
        if not any(rs[k].get("json") for k in PEERS):
            continue
        series = [f"{LABEL[k]}={rs[k]['hgrm']}" for k in ("nexus",) + PEERS
                  if rs[k].get("json") and os.path.exists(rs[k]["hgrm"])]
        if fl is not None and os.path.exists(os.path.join(d, f"floor-400-r{i}.uring.hgrm")):
            series.append(f"floor uring={os.path.join(d, f'floor-400-r{i}.uring.hgrm')}")
        plot(["curves", "--title", f"production scale, 400 msg/s, round {i}: latency by percentile"] + series,
             "production-peers.svg")
        break
    # wss against ws: the first pair at each rate.
    for rate, ps in tls_pairs.items():
        if ps:
            _, p, t = ps[0]
            series = [f"{k}={r['hgrm']}" for k, r in (("ws", p), ("wss", t)) if os.path.exists(r["hgrm"])]
            if series:
                plot(["curves", "--title", f"ws against wss at {rate:,} msg/s: latency by percentile"] + series,
                     f"tls-{rate}.svg")
    sweep_rates = [r for r in rates if any(run_of(f"sweep-{r}", k) for k in KINDS)]
    if sweep_rates:
        def pts(kind, key):
            return ",".join(f"{r}:{get(f'sweep-{r}', kind, key)}" for r in sweep_rates
                            if get(f"sweep-{r}", kind, key) is not None)

        def floor_pts(mode, key):
            return ",".join(f"{r}:{floor[(mode, r)][key]}" for r in sweep_rates
                            if (mode, r) in floor and floor[(mode, r)]["sustained"])

        def pcs_pts(kind):
            return ",".join(f"{r}:{per_core_second(run_of(f'sweep-{r}', kind))}" for r in sweep_rates
                            if per_core_second(run_of(f"sweep-{r}", kind)) is not None)

        plot(["sweep", "--title", "p99 against offered load", "--y-desc", "p99 latency (ms)",
              f"nexus={pts('nexus', 'p99')}", f"Redis={pts('redis', 'p99')}", f"NATS={pts('nats', 'p99')}",
              f"baseline={pts('baseline', 'p99')}",
              f"floor uring (fan-out p99)={floor_pts('uring', 'fanout_p99_ms')}",
              f"floor send (fan-out p99)={floor_pts('send', 'fanout_p99_ms')}"], "sweep-p99.svg")
        plot(["sweep", "--title", "server CPU against offered load", "--y-desc", "CPU (cores)",
              f"nexus={pts('nexus', 'cpu')}", f"Redis={pts('redis', 'cpu')}", f"NATS={pts('nats', 'cpu')}",
              f"baseline={pts('baseline', 'cpu')}",
              f"floor uring (sender)={floor_pts('uring', 'sender_cpu')}",
              f"floor send (sender)={floor_pts('send', 'sender_cpu')}"], "sweep-cpu.svg")
        if any(pcs_pts(k) for k in PEERS):
            plot(["sweep", "--title", "deliveries per core-second against offered load",
                  "--y-desc", "deliveries per second of server CPU",
                  f"nexus={pcs_pts('nexus')}", f"Redis={pcs_pts('redis')}", f"NATS={pcs_pts('nats')}",
                  f"baseline={pcs_pts('baseline')}"], "sweep-efficiency.svg")
    if plots:
        w("## Plots")
        w("")
        rel = os.path.basename(os.path.normpath(d))
        for svg in plots:
            w(f"![{svg}]({rel}/{svg})")
        w("")

    w(f"Raw results in `{d}/`: per scenario and server `.txt`, `.json`, `.hgrm` (latency percentiles) and `.cpu` "
      "(unix time, server CPU ticks every 0.2 s); per floor mode and rate `.json`, `.hgrm` (per delivery) and "
      "`.fanout.hgrm`; `runs.tsv` lists the runs.")
    with open(a.report, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
