"""Planning a sweep for SLURM: costs, resources and the dry run of the paper-scale preset."""

from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, subprocess_env, write_params

from vocabscale.accounting import training_memory
from vocabscale.cluster.cost import CorpusSize, run_cost
from vocabscale.cluster.cpu_jobs import CPU_JOBS, cpu_job_characters, cpu_job_size
from vocabscale.cluster.plan import cpu_job_warning, data_warning, format_plan, plan
from vocabscale.cluster.rules import train_resource_callables, train_retries
from vocabscale.cluster.slurm import cpu_job_resources, train_resources
from vocabscale.config import ParamsError, load_params, read_yaml, validate_params
from vocabscale.io import read_json, write_json
from vocabscale.preemption import state_bytes
from vocabscale.sweep import model_specs, parallelism
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR
from vocabscale.train.schedule import eval_points, trained_steps

PAPER = REPO / "workflow/presets/paper.yaml"


def train_job(params: dict, run: str) -> dict:
    """The SLURM resources of one training run of the plan of `params`."""
    return train_resources(plan(params).runs[run], params)


def test_plan_of_the_paper_grid_adds_up():
    params = load_params(PAPER)
    table = plan(params).table
    assert len(table) == 7 * 10
    row = table[table["run"] == "33M-v4096"].iloc[0]
    # C = 6 (Nnv + V d) D with the exact 33M count
    assert row["flops"] == pytest.approx(6 * (33_563_136 + 4096 * 512) * 1.2e9)
    # GPU-hours: executed FLOPs / (peak x utilisation), times the run's GPUs
    peak = params["cluster"]["gpu_peak_flops"] * params["cluster"]["expected_mfu"]
    assert row["gpu_hours"] == pytest.approx(row["flops_with_attention"] / peak / 3600)
    assert (table["runtime_minutes"] <= params["cluster"]["max_runtime_minutes"]).all()
    # a run longer than one job's limit is split over several jobs
    longest = table.loc[table["gpu_hours"].idxmax()]
    assert longest["jobs"] > 1


def test_plan_command_prints_the_total(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vocabscale", "plan", "--params", str(PAPER)],
        capture_output=True,
        text=True,
        check=True,
    )
    total = float(re.search(r"total ([\d,.]+) GPU-hours", result.stdout).group(1).replace(",", ""))
    assert total == pytest.approx(plan(load_params(PAPER)).table["gpu_hours"].sum(), rel=1e-3)


def test_resources_follow_params_and_environment(monkeypatch):
    params = load_params(PAPER)
    monkeypatch.setenv("VOCABSCALE_SLURM_PARTITION", "gpu-long")
    monkeypatch.setenv("VOCABSCALE_SLURM_GPU_TYPE", "h100")
    resources = train_job(params, "2.87B-v32768")
    assert resources["gpu"] == 8 and resources["gpu_model"] == "h100"
    assert resources["slurm_partition"] == "gpu-long"
    assert resources["cpus_per_task"] == 8 * params["cluster"]["cpus_per_gpu"]
    params["train"]["device"] = "cpu"  # a CPU sweep asks for no GPU
    assert "gpu" not in train_job(params, "33M-v4096")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("partition", "gpu long"),
        ("account", "proj;rm -rf ."),
        ("qos", "normal\n"),
        ("gpu_type", "h100 --exclusive"),
        ("cpu_partition", "$(cpu)"),
    ],
)
def test_a_slurm_name_with_a_space_or_a_shell_character_is_refused(tmp_path, key, value):
    """The executor writes these names into an sbatch command line."""
    params = read_yaml(PAPER)
    params["cluster"][key] = value
    message = refused(params, tmp_path)
    assert f"cluster.{key}: {value!r} is not a SLURM name" in message


def test_slurm_names_from_the_environment_are_checked_as_the_params_are(monkeypatch, tmp_path):
    params = load_params(PAPER)
    params["cluster"].update(partition="gpu,gpu-long", gpu_type="nvidia_h100.80gb", qos="")
    validate_params({**read_yaml(PAPER), "cluster": params["cluster"]})
    assert train_job(params, "33M-v4096")["slurm_partition"] == "gpu,gpu-long"
    monkeypatch.setenv("VOCABSCALE_SLURM_ACCOUNT", "my project")
    with pytest.raises(
        ParamsError, match=r"^VOCABSCALE_SLURM_ACCOUNT: 'my project' is not a SLURM"
    ):
        train_job(params, "33M-v4096")
    result = subprocess.run(
        [sys.executable, "-m", "vocabscale", "plan", "--params", str(PAPER)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "VOCABSCALE_SLURM_ACCOUNT: 'my project' is not a SLURM name" in result.stderr


def test_a_gpu_job_is_one_task_on_one_node_holding_all_its_gpus():
    """The executor derives `--ntasks-per-gpu` from `tasks` for GPU jobs unless
    `tasks_per_gpu` is 0, and leaves `--nodes` out unless `nodes` is set (SLURM then may split
    the GPUs over nodes): the job must set both. (tests/test_slurm.py submits them.)"""
    params = load_params(PAPER)
    params["cluster"]["gpu_type"] = "h100"
    resources = train_job(params, "631M-v32768")
    assert resources["nodes"] == 1 and resources["tasks_per_gpu"] == 0
    assert resources["gpu"] == 2 and resources["gpu_model"] == "h100"
    assert resources["cpus_per_task"] == 2 * params["cluster"]["cpus_per_gpu"]
    assert resources["mem_mb"] == 2 * params["cluster"]["mem_mb_per_gpu"]
    assert "mpi" not in resources and "gres" not in resources


def test_the_train_rule_looks_each_jobs_resources_up_in_the_plan():
    """The workflow computes the plan once; each training job's resources are its run's, looked
    up by the job's wildcards; a run outside the grid (asked for by its path) is sized too."""
    params = load_params(PAPER)
    params["models"]["2.87B"].update(nodes=2, gpus=4)  # a resource (mpi) only some runs set
    grid = plan(params)
    callables = train_resource_callables(grid, params)
    for cost in grid.runs.values():
        wildcards = SimpleNamespace(model=cost.model, vocab=str(cost.vocab_size))
        asked = {name: value(wildcards) for name, value in callables.items()}
        expected = train_resources(cost, params)
        assert {name: value for name, value in asked.items() if value is not None} == expected
    outside = SimpleNamespace(model="33M", vocab="5000")
    alone = run_cost(model_specs(params)["33M"], 5000, params, CorpusSize(math.nan, False))
    assert callables["slurm_extra"](outside) == f"--signal=TERM@{alone.grace_seconds}"
    assert callables["runtime"](outside) == alone.runtime_minutes
    assert train_retries(grid) == grid.table["jobs"].max() + 2


def test_a_run_over_nodes_is_one_task_per_node_with_its_gpus():
    params = load_params(PAPER)
    params["cluster"]["gpu_type"] = "h100"
    params["models"]["2.87B"].update(nodes=2, gpus=4)
    resources = train_job(params, "2.87B-v32768")
    assert (resources["nodes"], resources["tasks"]) == (2, 2)
    assert resources["gres"] == "gpu:h100:4" and resources["tasks_per_gpu"] == 0
    assert resources["mpi"] == "srun" and "gpu" not in resources
    assert resources["slurm_extra"].startswith("--ntasks-per-node=1 --signal=TERM@")
    assert resources["cpus_per_task"] == 4 * params["cluster"]["cpus_per_gpu"]
    # twice the GPUs: half the time
    single = plan(load_params(PAPER)).table.set_index("run").loc["2.87B-v32768"]
    double = plan(params).table.set_index("run").loc["2.87B-v32768"]
    assert double["gpu_hours"] == pytest.approx(single["gpu_hours"])


def test_a_run_asking_for_more_gpus_than_a_node_has_is_refused(tmp_path):
    params = read_yaml(PAPER)
    params["cluster"]["gpus_per_node"] = 4
    path = write_params(tmp_path / "params.yaml", params)
    with pytest.raises(ParamsError, match=r"models\.2\.87B\.gpus: .*8 GPUs.* is 4.*nodes: 2"):
        load_params(path)
    result = subprocess.run(
        [sys.executable, "-m", "vocabscale", "plan", "--params", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "cluster.gpus_per_node is 4" in result.stderr
    params["train"]["device"] = "cpu"  # CPU processes are not GPUs
    load_params(write_params(tmp_path / "cpu.yaml", params))


def test_plan_prints_each_jobs_geometry(monkeypatch):
    monkeypatch.setenv("VOCABSCALE_SLURM_GPU_TYPE", "h100")
    params = load_params(PAPER)
    lines = format_plan(plan(params).table, params).splitlines()
    (line,) = [line for line in lines if line.startswith("2.87B-v32768 ")]
    cost = plan(params).table.set_index("run").loc["2.87B-v32768"]
    grace = cost["grace_seconds"]
    memory = cost["memory_per_gpu"] / 1e9
    assert re.search(
        rf"\b1 x 8 h100\s+64\s+512 GB\s+fsdp\s+{memory:.1f} GB\s+2880m\s+{grace}s\b", line
    )
    assert any(line.startswith("tokenize ") for line in lines)


def test_every_time_limit_holds_the_grace_window_and_the_overhead():
    params = load_params(PAPER)
    params["cluster"]["runtime_overhead_minutes"] = 0  # once gave 1 minute with TERM@300
    cluster = params["cluster"]
    for row in plan(params).table.itertuples():
        spec = model_specs(params)[row.model]
        writes = (
            2
            * state_bytes(spec.shape, row.vocab_size)
            / (cluster["checkpoint_write_mb_per_s"] * 1e6)
        )
        assert row.grace_seconds > writes  # longer than writing the state, twice
        assert (
            row.runtime_minutes * 60 > row.grace_seconds + cluster["runtime_overhead_minutes"] * 60
        )
    params["cluster"]["max_runtime_minutes"] = 5  # shorter than the 2.87B runs' grace window
    with pytest.raises(ParamsError, match=r"max_runtime_minutes \(5\) leaves no time"):
        plan(params)


def test_cpu_jobs_are_sized_by_the_characters_they_read(corpus_dir, tiny_params_dict):
    params = validate_params(copy.deepcopy(tiny_params_dict))
    params["cluster"]["cpu_job_runtime_minutes"] = None
    cluster = params["cluster"]
    stats = read_json(corpus_dir / "stats.json")["splits"]
    read = stats["train"]["characters"] + stats["validation"]["characters"]
    assert cpu_job_characters(params, "tokenize", corpus_dir) == read
    cpus = CPU_JOBS["tokenize"].threads
    cluster["tokenize_chars_per_cpu_s"] = read / 60 / cpus / 100  # 100 minutes
    resources = cpu_job_resources(params, "tokenize", corpus_dir)
    minutes = math.ceil(100 * cluster["runtime_safety"]) + cluster["runtime_overhead_minutes"]
    assert (resources["runtime"], resources["cpus_per_task"]) == (minutes, cpus)
    # tokenizer training: memory grows with its sample
    small = cpu_job_resources(params, "train_tokenizer")["mem_mb"]
    params["corpus"]["tokenizer_sample_characters"] *= 1000
    assert cpu_job_resources(params, "train_tokenizer")["mem_mb"] > small
    # a source of unknown size gets the partition's limit; the settings override
    params["corpus"]["max_characters"] = None
    assert cpu_job_resources(params, "prepare_corpus")["runtime"] == cluster["max_runtime_minutes"]
    cluster.update(cpu_job_runtime_minutes=7, cpu_job_mem_mb=999)
    resources = cpu_job_resources(params, "tokenize", corpus_dir)
    assert (resources["runtime"], resources["mem_mb"]) == (7, 999)


def test_tokenize_part_jobs_are_sized_by_their_share(corpus_dir, tiny_params_dict):
    """With tokenize_jobs: 4, a part job reads a quarter of the training text and gets a
    quarter of the one job's time; the gather reads the validation text and, as a bound on
    copying the arrays, a share; the plan shows both, and how many part jobs there are."""
    params = validate_params(copy.deepcopy(tiny_params_dict))
    params["cluster"]["cpu_job_runtime_minutes"] = None
    stats = read_json(corpus_dir / "stats.json")["splits"]
    train, validation = stats["train"]["characters"], stats["validation"]["characters"]
    params["cluster"]["tokenize_chars_per_cpu_s"] = train / 60 / CPU_JOBS["tokenize"].threads / 400
    one = cpu_job_resources(params, "tokenize", corpus_dir)["runtime"]
    params["tokenizer"]["tokenize_jobs"] = 4
    assert cpu_job_characters(params, "tokenize_part", corpus_dir) == train / 4
    assert cpu_job_characters(params, "tokenize", corpus_dir) == train / 4 + validation
    part = cpu_job_resources(params, "tokenize_part", corpus_dir)["runtime"]
    assert part < one / 3  # 100 minutes of 400, plus the overhead
    params["corpus"]["max_characters"] = 1_000_000  # no corpus yet: the source's size
    assert cpu_job_characters(params, "tokenize_part") == 250_000
    vocab_sizes = len(params["tokenizer"]["vocab_sizes"])
    text = format_plan(plan(params).table, params)
    assert re.search(rf"^tokenize_part +{vocab_sizes * 4} +8 .* 2\.5e\+05$", text, re.M), text
    assert re.search(rf"^tokenize \(gather\) +{vocab_sizes} +8 ", text, re.M), text
    params["tokenizer"]["tokenize_jobs"] = 1
    assert "tokenize_part" not in format_plan(plan(params).table, params)


def test_dry_run_of_the_paper_preset_lists_every_job_with_resources():
    env = {**subprocess_env(), "VOCABSCALE_SLURM_PARTITION": "gpu"}
    result = subprocess.run(
        ["snakemake", "--profile", "cluster", "--configfile", str(PAPER), "-n"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    train_jobs = re.findall(r"rule train:.*?resources: ([^\n]+)", out, flags=re.S)
    assert len(train_jobs) == 70
    for resources in train_jobs:
        assert re.search(r"\bgpu=\d", resources) and "slurm_partition=gpu" in resources
        assert re.search(r"runtime=\d+", resources)
    # the CPU jobs: their CPUs, and a time limit from the characters they will read
    tokenize = re.findall(r"rule tokenize:.*?resources: ([^\n]+)", out, flags=re.S)
    expected = cpu_job_resources(load_params(PAPER), "tokenize")
    assert len(tokenize) == 10
    for resources in tokenize:
        assert f"cpus_per_task={expected['cpus_per_task']}," in resources
        assert f"runtime={expected['runtime']}," in resources


def test_the_plan_counts_the_cooldown_branches_of_wsd(tmp_path):
    params = load_params(PAPER)
    assert params["train"]["schedule"] == "constant"  # the authors' trainer
    constant = plan(params, tmp_path).table.set_index("run")
    wsd_params = copy.deepcopy(params)
    wsd_params["train"]["schedule"] = "wsd"
    wsd = plan(wsd_params, tmp_path).table.set_index("run")
    steps = int(1.2e9) // 1_048_576
    assert steps == 1144  # 512 sequences of 2048 per step
    branches = trained_steps(eval_points(steps, 20, "wsd", 0.2))
    assert wsd.loc["33M-v4096", "trained_tokens"] == branches * 1_048_576
    assert constant.loc["33M-v4096", "trained_tokens"] == steps * 1_048_576
    assert branches / steps == pytest.approx(1 + 0.2 * 19 / 2.4, rel=0.01)  # 2.58x for 20
    # the executed FLOPs and the GPU time grow with them; C = 6ND, the points' own, does not
    assert (wsd["flops"] == constant["flops"]).all()
    ratio = wsd["gpu_hours"] / constant["gpu_hours"]
    assert ratio.between(2.5, 2.6).all()


def test_the_plan_names_the_runs_that_would_read_their_data_twice(tmp_path):
    params = load_params(PAPER)
    assert plan(params, tmp_path).table["epochs"].max() < 1  # 8e11 characters cover every run
    assert data_warning(plan(params, tmp_path).table) is None
    params["corpus"]["max_characters"] = 600_000_000_000  # the preset's former corpus
    table = plan(params, tmp_path).table.set_index("run")
    estimate = 6e11 * float(PAPER_TOKENS_PER_CHAR(96256))
    assert table.loc["2.87B-v96256", "epochs"] == pytest.approx(165.5e9 / estimate)
    warning = data_warning(table.reset_index())
    repeating = sorted(re.findall(r"^  (\S+):", warning, flags=re.M))
    assert repeating == sorted(f"2.87B-v{v}" for v in (16384, 24576, 32768, 48128, 64512, 96256))
    assert "2.87B-v96256: 1.655e+11 tokens, the corpus 1.392e+11 (estimated" in warning
    assert "1.19 epochs" in warning
    # once tokenized, the counted tokens replace the estimate
    write_json(tmp_path / "v96256" / "stats.json", {"splits": {"train": {"tokens": 2e11}}})
    counted = plan(params, tmp_path).table.set_index("run")
    assert counted.loc["2.87B-v96256", "epochs"] == pytest.approx(165.5e9 / 2e11)
    assert "2.87B-v96256" not in data_warning(counted.reset_index())


def snakemake_dry_run(configfile: Path) -> subprocess.CompletedProcess:
    """`snakemake -n` of the workflow with `configfile`, on the local executor."""
    return subprocess.run(
        ["snakemake", "--configfile", str(configfile), "-n", "--cores", "1"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def paper_dry_run_with(tmp_path: Path, corpus_characters: int) -> str:
    """What `snakemake -n` of the paper preset with a corpus of `corpus_characters` says."""
    params = PAPER.read_text().replace(
        "max_characters: 800000000000", f"max_characters: {corpus_characters}"
    )
    configfile = tmp_path / "corpus.yaml"
    configfile.write_text(params)
    result = snakemake_dry_run(configfile)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_snakemake_warns_about_runs_that_read_their_data_twice_before_any_job(tmp_path):
    said = paper_dry_run_with(tmp_path, 600_000_000_000)
    assert "WARNING: 6 run(s) need more training tokens than the corpus holds" in said
    assert "2.87B-v96256: 1.655e+11 tokens" in said


def test_the_plan_warns_of_a_cpu_job_that_cannot_resume_and_outlasts_its_limit():
    """prepare-corpus and train-tokenizer start over on every retry: one longer than its
    limit never finishes. Tokenization resumes, so a capped one only takes more jobs."""
    params = load_params(PAPER)
    assert cpu_job_warning(params) is None
    params["corpus"]["max_characters"] = 8_000_000_000_000  # 10x: 5,010 minutes to prepare
    assert cpu_job_size(params, "tokenize").needed_minutes > 2880  # capped, but it resumes
    warning = cpu_job_warning(params)
    assert warning.startswith("1 CPU job(s) are estimated to take longer than their time limit")
    assert re.search(
        r"^  prepare_corpus: about 5,010 minutes \(8e\+12 characters at "
        r"cluster.prepare_chars_per_s 4e\+07/s.*over its limit of 2,880 "
        r"\(cluster.max_runtime_minutes\): set cluster.cpu_job_runtime_minutes to 5010 or more",
        warning,
        re.M,
    ), warning
    assert f"WARNING: {warning}" in format_plan(plan(params).table, params)
    # an explicit limit too short for the estimate
    params["corpus"].update(
        max_characters=800_000_000_000, tokenizer_sample_characters=600_000_000_000
    )
    params["cluster"]["cpu_job_runtime_minutes"] = 3000
    (line,) = cpu_job_warning(params).splitlines()[1:]
    assert line.startswith("  train_tokenizer: about 5,010 minutes")
    assert "3,000 (cluster.cpu_job_runtime_minutes)" in line
    assert "lower corpus.tokenizer_sample_characters" in line


def test_snakemake_warns_of_a_cpu_job_that_cannot_finish_before_any_job(tmp_path):
    said = paper_dry_run_with(tmp_path, 8_000_000_000_000)
    assert "WARNING: 1 CPU job(s) are estimated to take longer" in said
    assert "  prepare_corpus: about 5,010 minutes" in said


# --- memory per GPU: DDP, FSDP, or refused ------------------------------------------------------


def test_auto_shards_with_fsdp_the_runs_whose_ddp_estimate_exceeds_a_gpu():
    params = load_params(PAPER)  # 80 GB GPUs, bf16, 4 sequences of 2048 per micro-batch
    specs = model_specs(params)
    ddp_estimate = training_memory(specs["2.87B"].shape, 32768, 4 * 2048, "bf16", 2**27, 1)
    assert ddp_estimate > 80e9  # 16 B per parameter and the activations: too much for DDP
    chosen = parallelism(specs["2.87B"], 32768, params)
    assert chosen.kind == "fsdp" and chosen.memory_bytes < 80e9 < ddp_estimate
    assert parallelism(specs["631M"], 32768, params).kind == "ddp"
    assert parallelism(specs["33M"], 32768, params).kind == "none"  # one GPU: nothing to shard
    params["cluster"]["gpu_memory_gb"] = 141  # an H200: DDP fits
    assert parallelism(specs["2.87B"], 32768, params).kind == "ddp"
    params["train"]["device"] = "cpu"  # no GPU memory to fit: auto keeps DDP
    params["cluster"]["gpu_memory_gb"] = 80
    assert parallelism(specs["2.87B"], 32768, params).kind == "ddp"


def test_fsdp_divides_the_training_state_by_the_processes():
    shape = model_specs(load_params(PAPER))["2.87B"].shape
    parameters = shape.non_vocab_params + 2 * 32768 * shape.d_model
    one, eight = (training_memory(shape, 32768, 0, "bf16", 0, n) for n in (1, 8))
    assert one == 16 * parameters
    # an eighth of the state, plus the weights and gradients FSDP gathers whole while in use
    assert 16 * parameters / 8 < eight < 16 * parameters / 4
    activations = training_memory(shape, 32768, 2048, "bf16", 0, 1) - one
    assert activations == 2048 * shape.n_layer * (36 * shape.d_model + 8 * shape.ffn)


def test_plan_prints_each_runs_memory_per_gpu():
    params = load_params(PAPER)
    table = plan(params).table.set_index("run")
    lines = format_plan(plan(params).table, params).splitlines()
    assert "mem/GPU" in lines[0]
    for run, kind in [("33M-v4096", "none"), ("631M-v4096", "ddp"), ("2.87B-v4096", "fsdp")]:
        (line,) = [line for line in lines if line.startswith(f"{run} ")]
        assert f" {kind} {table.loc[run, 'memory_per_gpu'] / 1e9:>5.1f} GB " in line, line


def refused(params: dict, tmp_path) -> str:
    """`vocabscale plan`'s refusal of `params` (exit 2), and `load_params`' the same."""
    path = write_params(tmp_path / "params.yaml", params)
    with pytest.raises(ParamsError) as error:
        load_params(path)
    result = subprocess.run(
        [sys.executable, "-m", "vocabscale", "plan", "--params", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and str(error.value) in result.stderr
    return str(error.value)


def test_a_run_that_cannot_fit_even_with_fsdp_is_refused_naming_it(tmp_path):
    params = read_yaml(PAPER)
    params["train"]["micro_batch_size"] = 16  # 32,768 tokens of activations per GPU
    message = refused(params, tmp_path)
    shape = model_specs(load_params(PAPER))["2.87B"].shape
    estimate = training_memory(shape, 4096, 16 * 2048, "bf16", 2**27, 8)
    assert re.search(
        rf"run 2\.87B-v4096: needs about {estimate / 1e9:.1f} GB per GPU under "
        r"FSDP over 8 GPUs .* more than cluster\.gpu_memory_gb \(80\); give it more GPUs",
        message,
    )
    assert "run 33M-v4096" not in message  # the runs that fit are not named
    # DDP asked for where only FSDP fits: refused, pointing at FSDP
    params = read_yaml(PAPER)
    params["models"]["2.87B"]["parallel"] = "ddp"
    message = refused(params, tmp_path)
    assert "run 2.87B-v4096: needs about" in message and "under DDP" in message
    assert "models.2.87B.parallel: fsdp" in message
    params["train"]["device"] = "cpu"  # CPU processes: no GPU memory to fit
    load_params(write_params(tmp_path / "cpu.yaml", params))


def test_snakemake_refuses_a_run_that_cannot_fit_before_any_job(tmp_path):
    params = PAPER.read_text().replace("micro_batch_size: 4 ", "micro_batch_size: 16 ")
    large = tmp_path / "large-micro-batch.yaml"
    large.write_text(params)
    result = snakemake_dry_run(large)
    assert result.returncode != 0
    said = result.stdout + result.stderr  # snakemake prints a workflow error on stdout
    assert "run 2.87B-v96256: needs about" in said and "cluster.gpu_memory_gb (80)" in said
