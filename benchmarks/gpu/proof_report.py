"""The GPU proof's verdict and its Markdown: the checks that fail the proof (a part that broke,
flash attention not used, a resume that does not reproduce the run) and the goals it reports
(MFU, the chunked head's memory, the plan's estimate against the measured peak)."""

from __future__ import annotations

from typing import Any

from bench_train import markdown_table
from proof_common import Settings

GB = 1e9
#: MFU goals by shape (the paper's 302M to 1.13B at 45%, the small 33M at 30%).
MFU_GOALS = {"33M": 0.30, "302M": 0.45, "1.13B": 0.45}
#: The chunked head's peak over the gradients it must return, at the largest V.
CHUNKED_PEAK_GOAL = 1.5
BROKEN = ("error", "not run: the part broke")


def ok_cases(part: dict[str, Any]) -> list[dict[str, Any]]:
    return [case for case in part.get("cases", []) if case["status"] == "ok"]


def check(name: str, passed: bool | None, detail: str) -> dict[str, Any]:
    """passed None: nothing to judge (the part measured nothing), which fails nothing."""
    return {"name": name, "passed": passed, "detail": detail}


def checks(parts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    broken_parts = [
        f"{name}: {part['status']}"
        for name, part in parts.items()
        if part["status"].startswith("error")  # not: timed out, skipped
    ]
    broken = [
        f"{name}: {case['status']}"
        for name, part in parts.items()
        for case in part.get("cases", [])
        if case["status"].startswith(BROKEN)
    ]
    steps = ok_cases(parts["steps"])
    flash = [case["flash_events"] for case in steps]
    resume = (parts["resume"].get("cases") or [{}])[0]
    return [
        check("every part ran", not broken_parts, "; ".join(broken_parts) or "yes"),
        check("no case broke", not broken, "; ".join(broken) or "none did"),
        check(
            "flash attention in every training step",
            all(flash) if flash else None,
            f"flash events per profiled micro-batch: {flash}" if flash else "no step was measured",
        ),
        check("resume after SIGTERM reproduces the run", resumed(resume), resume_line(resume)),
    ]


def resumed(case: dict[str, Any]) -> bool | None:
    """The short run's verdict; None when it did not finish (timed out), which fails nothing."""
    status = case.get("status", "not run")
    if status == "ok" or status.startswith(BROKEN):
        return bool(case.get("passed"))
    return None


def goals(parts: dict[str, dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    steps, heads = ok_cases(parts["steps"]), ok_cases(parts["heads"])
    found = []
    for shape, goal in MFU_GOALS.items():
        cases = [case for case in steps if case["shape"] == shape and "mfu" in case]
        mfus = [case["mfu"] for case in cases]
        detail = ", ".join(
            f"V={case['vocab_size']:,} {'compiled' if case['compile'] else 'eager'} "
            f"{100 * case['mfu']:.1f}%"
            for case in cases
        )
        met = max(mfus) >= goal if mfus else None
        found.append(check(f"MFU >= {goal:.0%} at {shape}", met, detail or "not measured"))
    largest = max(settings.head_vocab_sizes)
    chunked = [c for c in heads if c["head"] == "chunked" and c["vocab_size"] == largest]
    ratio = chunked[0]["peak_over_gradients"] if chunked else None
    met = ratio <= CHUNKED_PEAK_GOAL if ratio is not None else None
    detail = f"{ratio:.2f}x" if ratio is not None else "not measured"
    if settings.smoke:
        met, detail = None, f"{detail}; not comparable on a CPU (RSS)"
    name = f"chunked head's peak within {CHUNKED_PEAK_GOAL}x its gradients at V = {largest:,}"
    found.append(check(name, met, detail))
    ratios = [case["peak_over_plan"] for case in steps]
    detail = f"measured / plan: {min(ratios):.2f} to {max(ratios):.2f}" if ratios else "none"
    covered = max(ratios) <= 1 if ratios else None
    if settings.smoke:  # a CPU's figure is the whole process's RSS, torch's libraries and all
        covered, detail = None, f"{detail}; not comparable on a CPU (RSS)"
    found.append(check("the plan's memory estimate covers the measured peak", covered, detail))
    return found


def evaluate(parts: dict[str, dict[str, Any]], settings: Settings) -> dict[str, Any]:
    found = checks(parts)
    return {
        "checks": found,
        "goals": goals(parts, settings),
        "passed": all(c["passed"] is not False for c in found),
    }


def resume_line(case: dict[str, Any]) -> str:
    if case.get("status") != "ok":
        return f"short run: {case.get('status', 'not run')}"
    return (
        f"stopped by SIGTERM at step {case['stopped_at_step']} of {case['total_steps']} with "
        f"its state saved, resumed from step {case['resumed_from_step']} by a new process, "
        f"largest relative difference of an evaluation {case['max_relative_difference']:.3g} "
        f"(tolerance {case['tolerance']:.3g})"
    )


def gb(value: float | None) -> str:
    return f"{value / GB:.2f}" if value is not None else "-"


def steps_table(part: dict[str, Any]) -> str:
    header = ["shape", "V", "compile", "tokens/step (mb x acc x ctx)", "tokens/s"]
    header += ["TFLOP/s", "MFU (goal)", "peak GB", "plan GB", "peak / plan", "flash", "status"]
    rows = []
    for case in part.get("cases", []):
        row = [case["shape"], f"{case['vocab_size']:,}", "on" if case["compile"] else "off"]
        if case["status"] != "ok":
            rows.append(row + ["-"] * 8 + [case["status"]])
            continue
        goal = MFU_GOALS.get(case["shape"])
        mfu = f"{100 * case['mfu']:.1f}% ({goal:.0%})" if "mfu" in case else "-"
        figures = [
            f"{case['micro_batch']}x{case['accumulation']}x{case['context']}",
            f"{case['tokens_per_s']:,.0f}",
            f"{case['achieved_flops'] / 1e12:.3g}",
            mfu,
            gb(case["peak_bytes"]),
            gb(case["plan_bytes"]),
            f"{case['peak_over_plan']:.2f}",
            str(case["flash_events"]),
            "ok",
        ]
        rows.append(row + figures)
    return markdown_table(header, rows)


def heads_table(part: dict[str, Any]) -> str:
    header = ["V", "head", "tokens per chunk", "peak GB", "gradients GB", "peak / gradients"]
    header += ["fwd+bwd ms", "status"]
    rows = []
    for case in part.get("cases", []):
        row = [f"{case['vocab_size']:,}", case["head"]]
        if case["status"] != "ok":
            rows.append(row + ["-"] * 5 + [case["status"]])
            continue
        figures = [str(case["rows"]), gb(case["peak_bytes"]), gb(case["gradient_bytes"])]
        figures += [f"{case['peak_over_gradients']:.2f}", f"{1e3 * case['seconds']:.1f}", "ok"]
        rows.append(row + figures)
    return markdown_table(header, rows)


def resume_section(part: dict[str, Any]) -> list[str]:
    case = (part.get("cases") or [{"status": "not run"}])[0]
    if case["status"] != "ok":
        return [f"Not measured: {case['status']}"]
    lines = [
        f"Model {case['model']} ({case['shape']}, n_layer x d) of params.yaml, V = "
        f"{case['vocab_size']:,}, {case['precision']}, {case['total_steps']} steps: "
        + resume_line(case)
        + f": **{'PASSED' if case['passed'] else 'FAILED'}**.",
        "",
    ]
    rows = []
    for point in case["points"]:
        reference, resumed = point["reference"], point["resumed"]
        difference = abs(resumed - reference) / reference
        rows.append([str(point["step"]), f"{reference:.5f}", f"{resumed:.5f}", f"{difference:.2e}"])
    header = ["step", "eval loss, uninterrupted", "eval loss, stopped and resumed", "rel. diff"]
    return [*lines, markdown_table(header, rows)]


def verdicts(title: str, found: list[dict[str, Any]]) -> list[str]:
    marks = {True: "yes", False: "**NO**", None: "n/a"}
    rows = [[c["name"], marks[c["passed"]], c["detail"]] for c in found]
    return [
        f"## {title}",
        "",
        markdown_table(["", "passed" if title == "Checks" else "met", ""], rows),
    ]


def markdown(result: dict[str, Any]) -> str:
    """gpu_proof.md: the heading and tables to put into benchmarks/RESULTS.md."""
    parts, device, settings = result["parts"], result["device"], result["settings"]
    steps = parts["steps"]
    caps = ", ".join(
        f"{name} {part['status']}"
        + (f" in {part['wall_s']} s (cap {part['cap_s']} s)" if "cap_s" in part else "")
        for name, part in parts.items()
    )
    lines = [
        "# GPU proof",
        "",
        f"- date: {result['date']}",
        f"- device: {device['name']}"
        + (f", {device['memory_gib']} GiB" if "memory_gib" in device else "")
        + f"; torch {device['torch']}, CUDA {device['cuda']}, Python {device['python']}",
        f"- MFU peak: {steps.get('peak_note', 'not known')}",
        f"- parts: {caps}; all: {result['wall_s']} s of a {result['budget_s']} s budget",
        f"- result: **{'PASSED' if result['passed'] else 'FAILED'}**",
        "- command: `OUT=dir bash benchmarks/gpu/proof.sh"
        + (" --smoke`" if result["smoke"] else "`"),
    ]
    if result["smoke"]:
        lines.append(
            "- **--smoke: on the CPU, tiny shapes: the figures only show that the code ran.**"
        )
    lines += [
        "",
        "## Training step: bf16 autocast, SDPA flash only, AdamW fused on CUDA (the paper preset)",
        "",
        f"Shapes {', '.join(settings['shapes'])}; {settings['warmup_steps']} warm-up step(s) "
        f"(compilation included), a profiled micro-batch, {settings['timed_steps']} timed "
        "steps. FLOPs per token 6 (Nnv + V d) + 12 n_layer context d. Peak: "
        "torch.cuda.max_memory_allocated over the whole case (on a CPU the process's RSS); "
        "plan: `vocabscale plan`'s memory per GPU for the run on one GPU.",
        "",
        steps_table(steps),
        "",
        f"## Loss heads: forward + backward, {settings['head_tokens']:,} tokens, d = "
        f"{settings['head_width']:,}",
        "",
        "Gradients: the float32 gradients of the weight (V x d) and of the hidden states, "
        "which any head returns.",
        "",
        heads_table(parts["heads"]),
        "",
        "## Resume after SIGTERM on the device",
        "",
        *resume_section(parts["resume"]),
        "",
        *verdicts("Checks", result["checks"]),
        "",
        *verdicts("Goals", result["goals"]),
    ]
    return "\n".join(lines) + "\n"
