"""Live training curves: step, training loss, learning rate and tokens/s while a run trains,
to DVCLive, Weights & Biases or MLflow (`live.logger`; off by default). Logging changes no
output and no stage declares it, so turning it on or off reruns nothing."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol


class Backend(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class DvcliveBackend:
    """DVCLive in `directory`, opened at the first step logged (so it knows whether the run
    starts afresh or resumes)."""

    def __init__(self, directory: Path, run_params: dict[str, Any]) -> None:
        from dvclive import Live

        self.open_live, self.directory, self.run_params = Live, directory, run_params
        self.live = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.live is None:
            resume = step > 1 and self.directory.exists()
            if resume:
                drop_steps_from(self.directory, step)
            self.live = self.open_live(
                dir=str(self.directory),
                resume=resume,
                save_dvc_exp=False,  # no DVC experiment of its own
                dvcyaml=None,  # and no edit of any dvc.yaml
                report=None,
            )
            self.live.log_params(self.run_params)
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


def drop_steps_from(directory: Path, step: int) -> None:
    """Remove the rows of `step` and later from DVCLive's curves: what an interrupted attempt
    logged after the checkpoint a run resumes from."""
    for path in directory.glob("plots/metrics/**/*.tsv"):
        header, *rows = path.read_text().splitlines()
        kept = [row for row in rows if int(row.split("\t", 1)[0]) < step]
        path.write_text("\n".join([header, *kept]) + "\n")


class WandbBackend:
    def __init__(self, project: str, run_id: str, run_params: dict[str, Any]) -> None:
        import wandb

        self.run = wandb.init(project=project, name=run_id, config=run_params)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowBackend:
    def __init__(self, project: str, run_id: str, run_params: dict[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(project)
        mlflow.start_run(run_name=run_id)
        mlflow.log_params(run_params)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def open_backend(settings: dict[str, Any], run_id: str, run_params: dict[str, Any]) -> Backend:
    """The logger `settings` (the `live` section) name; a clear error when it is not
    installed, before the run trains. W&B and MLflow are configured the usual way (WANDB_*,
    MLFLOW_TRACKING_URI)."""
    logger = settings["logger"]
    try:
        if logger == "dvclive":
            return DvcliveBackend(Path(settings["dir"]) / run_id, run_params)
        if logger == "wandb":
            return WandbBackend(settings["project"], run_id, run_params)
        if logger == "mlflow":
            return MlflowBackend(settings["project"], run_id, run_params)
    except ImportError:
        raise ValueError(f"live.logger: {logger} is not installed (pip install {logger})") from None
    raise ValueError(f"live.logger: {logger!r} is not a logger")


class LiveCurves:
    """One run's curves: tokens/s is measured between consecutive steps."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.last: tuple[float, int] | None = None

    def log(self, step: int, tokens: int, loss: float, lr: float) -> None:
        now = time.perf_counter()
        metrics = {"train/loss": loss, "train/lr": lr}
        if self.last is not None and tokens > self.last[1]:
            metrics["train/tokens_per_second"] = (tokens - self.last[1]) / (now - self.last[0])
        self.last = (now, tokens)
        self.backend.log(step, metrics)


_active: LiveCurves | None = None


@contextlib.contextmanager
def live_curves(
    settings: dict[str, Any], run_id: str, run_params: dict[str, Any]
) -> Iterator[None]:
    """Log the curves of the run trained inside this block (nothing when the logger is
    `none`)."""
    global _active
    if settings["logger"] == "none":
        yield
        return
    backend = open_backend(settings, run_id, run_params)
    _active = LiveCurves(backend)
    try:
        yield
    finally:
        _active = None
        backend.close()


def log_step(step: int, tokens: int, loss: float, lr: float) -> None:
    """One optimizer step of the run being trained, to the open logger if there is one."""
    if _active is not None:
        _active.log(step, tokens, loss, lr)
