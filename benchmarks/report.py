"""Write docs/benchmarks.md from benchmarks/results/*.json, so the published figures are never typed by hand.

python benchmarks/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _machine(result: dict) -> str:
    m = result["machine"]
    load = m.get("load_average_1min")
    load_text = f", load {load:.2f}" if isinstance(load, float) else ""
    return f"*{m.get('cpu_count')} CPUs, {m.get('date') or result.get('date', '?')}{load_text}*"


def _table(header: list[str], rows: list[list]) -> list[str]:
    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def core(result: dict) -> list[str]:
    forward = result["forward_latency_batch1_eager"]
    cached = result["cached_step_vs_full_recompute"]
    rolling = result["rolling_denoiser"]
    rows = [[f"forward, batch 1, {k}", v["p50_ms"], v["p99_ms"]] for k, v in forward.items()]
    rows += [
        [f"cached step, {cached['past_frames']} past frames", cached["cached_step"]["p50_ms"],
         cached["cached_step"]["p99_ms"]],
        ["full recompute", cached["full_recompute"]["p50_ms"], cached["full_recompute"]["p99_ms"]],
    ]  # fmt: skip
    lines = ["## Core (`core.json`)", _machine(result), ""] + _table(["what", "p50 ms", "p99 ms"], rows)
    lines += [
        "",
        "Rolling denoiser: " + ", ".join(f"{k} {v['tokens_per_second']:.0f} tokens/s" for k, v in rolling.items()),
    ]
    return lines


def envs(result: dict) -> list[str]:
    rows = []
    for task, t in result["tasks"].items():
        rows.append([task, t["expert"]["success_rate"], t["steps_per_s"]["state"], t["steps_per_s"]["pixels_96"]])
    return ["## Tasks (`envs.json`)", _machine(result), ""] + _table(
        ["task", "expert success (100 ep.)", "steps/s state", "steps/s 96x96 pixels"], rows
    )


def policy(result: dict) -> list[str]:
    lines = ["## Policies (`policy.json`)", _machine(result)]
    for task, t in result["tasks"].items():
        rows = [
            [
                name,
                s["success_rate"],
                s["calls_per_step"],
                s["latency_ms_p50"],
                s["latency_ms_p99"],
                s["smoothness_mse"],
            ]
            for name, s in t["strategies"].items()
        ]
        chunked = t.get("rti_k_choice_chunked")
        chunked = f", {chunked['k']} for chunks of {chunked['executed_steps']}" if chunked else ""
        lines += ["", f"**{task}** ({t['checkpoint']}; expert {t['expert_success_rate']:.2f}; RTI k = "
                      f"{t['rti_k_choice']['k']}{chunked} by RTI-DP's rule)", ""]  # fmt: skip
        lines += _table(["strategy", "success", "calls/step", "p50 ms", "p99 ms", "action change MSE"], rows)
        sweep = "; ".join(f"{n}: " + ", ".join(f"{k} ticks {v:.2f}" for k, v in s.items())
                          for n, s in t.get("latency_sweep", {}).items())  # fmt: skip
        if sweep:
            lines += ["", f"Success under per-action delay (`PerActionDelay`, ticks before every action) — {sweep}"]
        batched = {s.get("evaluation") for s in t["strategies"].values()} - {None}
        if batched:
            lines += ["", f"Evaluated {batched.pop()}: no batch-1 latencies here (see the export section)."]
        lines += [
            "",
            "Targets: " + "; ".join(f"{k} {'met' if v['met'] else 'NOT met'}" for k, v in t["targets"].items()),
        ]
        extended = t.get("targets_extended")
        if extended:  # written by benchmarks/policy_targets.py
            pooled = {name: row["pooled"] for name, row in extended["rows"].items()}
            lines += [
                "",
                f"Over {pooled['ddpm']['episodes']} episodes (the table's and {extended['extra_episodes']} more): "
                + ", ".join(f"{name} {p['success_rate']:.3f}" for name, p in pooled.items())
                + "; targets: "
                + "; ".join(
                    f"{k} {v['measured']:.1f} {'met' if v['met'] else 'NOT met'}"
                    for k, v in extended["targets"].items()
                ),
            ]
    return lines


def world_model(result: dict) -> list[str]:
    lines = ["## World models (`world_model.json`)", _machine(result)]
    for name, m in result["models"].items():
        horizons = [str(h) for h in result["horizons"]]
        rows = [["copy last frame", *[m["copy_last_frame"]["mse"][h] for h in horizons]]]
        rows += [[mode, *[v["mse"][h] for h in horizons]] for mode, v in m["modes"].items()]
        fps = "; ".join(
            f"{mode}: " + ", ".join(f"{backend} {v['fps_p50']:.0f}" for backend, v in backends.items()) + " FPS"
            for mode, backends in m["speed"].items()
        )
        lines += ["", f"**{name}** — {fps}; memory ratio 10,000 / 1,000 frames {m['memory']['session_ratio']:.3f}", ""]
        ceiling = m.get("simulator_ceiling")
        if ceiling:  # benchmarks/world_model_ceiling.py: MuJoCo itself from a start whose block is nudged
            for delta, v in ceiling["deltas"].items():
                mean = f"mean_of_{ceiling['draws']}"
                for kind, label in (("single", "single rollouts"), (mean, f"mean frame of {ceiling['draws']}")):
                    errors = v[kind]["mse"]
                    rows.append([f"MuJoCo, block start nudged {delta} ({label})", *[errors[h] for h in horizons]])
            if "tokenizer_round_trip" in ceiling:
                floor = ceiling["tokenizer_round_trip"]
                rows.append(["tokenizer round trip of the true frames", *[floor[h] for h in horizons]])
        lines += _table(["open-loop MSE at horizon", *horizons], rows)
    return lines


def bridge(result: dict) -> list[str]:
    rows = [[name, v["raw_pyzmq"]["p50_ms"] * 1e3, v["bridge"]["p50_ms"] * 1e3, v["bridge"]["p99_ms"] * 1e3,
             v["ratio_p50"]] for name, v in result["latency"].items()]  # fmt: skip
    lines = ["## Bridge (`bridge.json`)", _machine(result), ""]
    lines += _table(["transport", "raw p50 us", "bridge p50 us", "bridge p99 us", "ratio p50"], rows)
    loop = result["control_loop"]
    misses = ", ".join(f"{k}: {v['deadline_misses']} misses in {v['ticks']} ticks" for k, v in loop.items()
                       if isinstance(v, dict) and "ticks" in v)  # fmt: skip
    lines += ["", f"Control loop ({loop['env']}, {loop['policy']}): {misses}", ""]
    lines += [f"Fuzz: {result['fuzz']['messages_sent']} messages, {result['fuzz']['error_replies']} error replies, "
              f"{result['fuzz']['crashes']} crashes"]  # fmt: skip
    return lines


def export(result: dict) -> list[str]:
    rows = []
    for name, p in result["policies"].items():
        step = p["step_latency_batch1"]
        rows.append([name, step["torch"]["p50_ms"], step["onnxruntime"]["p50_ms"], p["onnx_over_torch_p50"],
                     p["parity_max_abs_diff"], p["file_bytes"]])  # fmt: skip
    lines = ["## Export (`export.json`)", _machine(result), ""] + _table(
        ["policy", "torch p50 ms", "onnxruntime p50 ms", "ratio", "parity", "bytes"], rows
    )
    rows = []
    for name, w in result.get("world_models", {}).items():
        step = w["step_latency_batch1"]
        fps = [f"{v['torch']['fps_p50']:.0f} / {v['onnxruntime']['fps_p50']:.0f}"
               for v in w["frames_per_second_batch1"].values()]  # fmt: skip
        rows.append([name, step["torch"]["p50_ms"], step["onnxruntime"]["p50_ms"], *fps, w["parity_max_abs_diff"],
                     w["file_bytes"]])  # fmt: skip
    if rows:
        modes = list(next(iter(result["world_models"].values()))["frames_per_second_batch1"])
        header = ["world model", "torch step p50 ms", "onnxruntime step p50 ms"]
        header += [f"FPS {m} (torch / onnxruntime)" for m in modes] + ["parity", "bytes"]
        lines += [""] + _table(header, rows)
    return lines


def scale(result: dict) -> list[str]:
    training = result["training"]
    rows = [[f"training, {v['processes']} process(es), global batch {v['global_batch']}", v["samples_per_s"],
             "samples/s"] for v in training.values() if isinstance(v, dict)]  # fmt: skip
    rows += [[f"reading windows: {name.replace('_', ' ')}", v["rows_per_s"], "rows/s"]
             for name, v in result["streaming"].items() if isinstance(v, dict)]  # fmt: skip
    rows += [[f"collection: {name.replace('_', ' ')}", v["steps_per_s"], "env steps/s"]
             for name, v in result["collection"].items() if isinstance(v, dict)]  # fmt: skip
    lines = ["## Scale-out (`scale.json`)", _machine(result), "", result.get("note", ""), ""]
    return lines + _table(["measurement", "rate", "unit"], rows)


def gpu_training(result: dict) -> list[str]:
    rows = [
        [f"width {r['width']}, depth {r['depth']}", r["global_batch"], r["mixed_precision"], r["compile"],
         r.get("samples_per_s", r.get("failed"))]
        for r in result["throughput"]
    ]  # fmt: skip
    lines = ["## Training on a GPU (`gpu_training.json`)", f"*{result['device']}, torch {result['torch']}*", ""]
    lines += _table(["policy size", "global batch", "precision", "compile", "samples/s"], rows) + [""]
    for run in result["end_to_end"].values():
        outcome = "passed" if run["returncode"] == 0 else f"failed (exit {run['returncode']})"
        lines.append(f"- `{run['command']}`: {outcome} in {run['seconds']:.0f} s")
    providers = result["onnxruntime_providers"]
    missing = "" if "CUDAExecutionProvider" in providers else " (no CUDA provider: `export_gpu.py` cannot run there)"
    listed = ", ".join(providers) if isinstance(providers, list) else providers
    lines.append(f"- onnxruntime providers on that machine: {listed}{missing}")
    return lines


def latency(result: dict) -> list[str]:
    lines = ["## Under inference delay (`latency.json`)", ""]
    for name, data in result["tasks"].items():
        by = {(p["method"], p["delay_ticks"]): p for p in data["points"]}
        delays = sorted({d for _, d in by})
        rows = [[method, *[by[(method, d)]["success_rate"] if (method, d) in by else "" for d in delays]]
                for method in dict.fromkeys(p["method"] for p in data["points"])]  # fmt: skip
        lines += [f"{name} (`{data['checkpoint']}`), success over {data['episodes']} episodes per point; "
                  + _machine(data), ""]  # fmt: skip
        lines += _table(["method", *[f"d = {d}" for d in delays]], rows)
        t = data["targets"]
        lines += ["", f"Best at d = 4 ({t['best_at_d4']}): {t['d4_minus_d0_points']:+.1f} points from its d = 0 "
                  f"(target within 5); best at d = 8 ({t['best_at_d8']}): {t['d8_minus_naive_points']:+.1f} points "
                  "over naive switching (target +20)", ""]  # fmt: skip
    for name, run in result.get("live", {}).items():
        live, sim = run["live"], run["simulated"]
        lines.append(
            f"Live ({name}: {run['task']} served as ONNX at {run['rate_hz']:.0f} Hz, "
            f"delay_ticks {run['delay_ticks']}): "
            f"{live['deadline_misses']} deadline misses in {live['ticks']} ticks; success {live['success_rate']:.3f} "
            f"live, {sim['success_rate']:.3f} in the simulator over {live['episodes']} episodes"
        )
    return lines


SECTIONS = {"core": core, "envs": envs, "policy": policy, "world_model": world_model, "bridge": bridge,
            "export": export, "scale": scale, "gpu_training": gpu_training, "latency": latency}  # fmt: skip


def main() -> None:
    intro = (
        "Generated by `python benchmarks/report.py` from `benchmarks/results/*.json`; each section names the "
        "machine and its load when measured (the 2 cores were often shared)."
    )
    lines = ["# Benchmarks", "", intro, ""]
    for name, section in SECTIONS.items():
        result = _load(name)
        if result is not None:
            lines += section(result) + [""]
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
