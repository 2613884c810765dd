"""The GPU proof: everything about training that only a GPU can show, measured in one call
of about six minutes (benchmarks/README.md, "The GPU proof"). benchmarks/gpu/proof.sh runs it:

    python benchmarks/gpu/proof.py --out DIR --work DIR [--smoke]

It checks the device, then runs each part in a process of its own under its own time cap
(`proof_common.PART_CAPS`; the last part may also take what the others left of the budget): a
part past its cap is killed, what it measured so far is kept and the rest is recorded as timed
out, and the next part runs. `--parts steps` (for instance) reruns some of them. The parts:
the loss heads (`proof_heads`), a short real run stopped by SIGTERM and resumed
(`proof_resume`), and the training step at the paper's shapes, its MFU and its memory against
the plan (`proof_steps`).
It writes DIR/gpu_proof.json (every figure), DIR/gpu_proof.md (the tables for
benchmarks/RESULTS.md) and DIR/resume.log (the short runs' logs).

Exit status 0: every check passed (parts that timed out or were skipped say why); 1: a check
failed (the resume, flash attention) or a part broke; 2: no GPU without --smoke.
--smoke runs the same code on the CPU with tiny shapes, in under a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from machine import cpu_model, usable_cores
from proof_common import BUDGET_SECONDS, PART_CAPS, PartLog, Settings, read_part, run_logs
from proof_report import evaluate, markdown

#: Seconds kept back from the budget after the last part, to write the results.
RESERVE_SECONDS = 5


def device_facts(device: torch.device) -> dict[str, Any]:
    """The machine the figures belong to."""
    facts: dict[str, Any] = {
        "type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": usable_cores(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1))
        facts.update(capability=f"{props.major}.{props.minor}", gpus=torch.cuda.device_count())
    else:
        facts["name"] = f"CPU: {facts['cpu']}"
    return facts


def check_device(smoke: bool) -> torch.device:
    """The CPU for the smoke run; else the GPU, or exit 2 when there is none."""
    if smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        print("proof: torch sees no CUDA device; on a CPU run it with --smoke", file=sys.stderr)
        raise SystemExit(2)
    return torch.device("cuda", 0)


def children_cpu_seconds() -> float:
    """CPU time of the finished child processes (user and system): what a part cost."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_part(name: str, cap: float, work: Path) -> dict[str, Any]:
    """One part in a process of its own, killed (with what it started) at `cap` seconds."""
    started, cpu = time.time(), children_cpu_seconds()
    command = [sys.executable, __file__, "--part", name, "--work", str(work)]
    command += ["--deadline", str(started + cap)]
    print(f"[{name}] up to {cap:.0f} s", flush=True)
    with open(work / f"{name}.stderr", "wb") as stderr:
        process = subprocess.Popen(command, stderr=stderr, start_new_session=True)
        try:
            code = process.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            code = None
        with contextlib.suppress(ProcessLookupError):  # the part and the runs it started
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    record = read_part(work / f"{name}.json") or {"cases": []}
    record.update(cap_s=round(cap), wall_s=round(time.time() - started, 1))
    record["cpu_s"] = round(children_cpu_seconds() - cpu, 1)
    record["status"] = part_status(record, code, cap, work / f"{name}.stderr")
    print(f"[{name}] {record['status']} in {record['wall_s']} s", flush=True)
    return record


def part_status(record: dict[str, Any], code: int | None, cap: float, stderr: Path) -> str:
    """How the part ended; cases it never finished say so."""
    if code == 0:
        return "ok"
    if code is None:
        status, unfinished = f"timed out at its {cap:.0f} s cap", "timed out"
    else:
        lines = stderr.read_text(errors="replace").strip().splitlines() or ["(no stderr)"]
        status, unfinished = f"error: exit {code}: {lines[-1]}"[:500], "not run: the part broke"
        record["stderr_tail"] = lines[-30:]
        print("\n".join(lines[-30:]), file=sys.stderr)
    for case in record["cases"]:
        if case["status"] in ("pending", "running"):
            case["status"] = unfinished
    return status


def orchestrate(args: argparse.Namespace) -> int:
    """Every part in turn, then the checks and the outputs; the exit status."""
    started = time.time()
    settings = Settings.for_run(args.smoke)
    device = check_device(args.smoke)
    facts = device_facts(device)
    print(f"proof: {facts['name']}, torch {facts['torch']}, CUDA {facts['cuda']}", flush=True)
    work, out = Path(args.work), Path(args.out)
    context = {"settings": settings.to_json(), "device": str(device)}
    (work / "context.json").write_text(json.dumps(context))
    budget = sum(settings.caps.values()) if args.smoke else BUDGET_SECONDS
    asked = args.parts.split(",") if args.parts else list(settings.caps)
    parts = {
        name: {"status": "skipped: not asked for (--parts)", "cases": []} for name in settings.caps
    }
    for name in asked:
        left = budget - (time.time() - started) - RESERVE_SECONDS
        # the last part may also take what the others left of the budget
        cap = max(settings.caps[name], left) if name == asked[-1] else settings.caps[name]
        parts[name] = run_part(name, min(cap, max(left, 1)), work)
    result = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "device": facts,
        "budget_s": budget,
        "settings": settings.to_json(),
        "parts": parts,
    }
    result.update(evaluate(parts, settings))
    result["wall_s"] = round(time.time() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_proof.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "gpu_proof.md").write_text(markdown(result))
    (out / "resume.log").write_text(run_logs(work / "resume"))
    print(markdown(result), flush=True)
    print(
        f"proof: {'PASSED' if result['passed'] else 'FAILED'} in {result['wall_s']} s; "
        f"wrote {out}/gpu_proof.json, gpu_proof.md, resume.log",
        flush=True,
    )
    return 0 if result["passed"] else 1


def part_main(args: argparse.Namespace) -> None:
    """Inside a part's process: its cases, recorded in WORK/<part>.json as they finish."""
    work = Path(args.work)
    context = json.loads((work / "context.json").read_text())
    settings = Settings.from_json(context["settings"])
    device = torch.device(context["device"])
    if settings.smoke:  # two threads on two busy cores are slower than one for tiny shapes
        torch.set_num_threads(1)
    module = importlib.import_module(f"proof_{args.part}")
    log = PartLog(work / f"{args.part}.json", module.planned_cases(settings), args.deadline)
    module.run(log, settings, device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="where gpu_proof.json and gpu_proof.md go")
    parser.add_argument("--work", required=True, help="a scratch folder")
    parser.add_argument("--smoke", action="store_true", help="the CPU, tiny shapes")
    parser.add_argument("--parts", help="some of heads,resume,steps (a rerun): in this order")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # inside a part's process
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        part_main(args)
        return
    if not args.out:
        parser.error("--out is required")
    unknown = set((args.parts or "").split(",")) - set(PART_CAPS) - {""}
    if unknown:
        parser.error(
            f"--parts: no part {', '.join(sorted(unknown))} (parts: {', '.join(PART_CAPS)})"
        )
    raise SystemExit(orchestrate(args))


if __name__ == "__main__":
    main()
