"""The ``hpo`` command line: each command parses, calls one library function, prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from gestures.artifact import ArtifactError, load_model
from gestures.checks import check, without_problems
from gestures.data import DataError, DataSet, GroupSource, discover, read_path_list
from gestures.evaluate import evaluate, predict
from gestures.models import ModelConfigError, WeightsUnavailable, list_models
from gestures.sanity import overfit as run_overfit
from gestures.split import SplitConfig, split_dataset
from hpo import display, service
from hpo.promote import compare, promote
from hpo.run import RunConfig, run
from hpo.storage import StorageError, artifact_store, open_storage, resolve_url
from hpo.studyfile import StudyFileError, load_study_file

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hyperparameter search for hand-gesture (ASL A–I) classifiers.")
data_app = typer.Typer(no_args_is_help=True, help="Check and split an image-folder data set.")
app.add_typer(data_app, name="data")
study_app = typer.Typer(no_args_is_help=True, help="Create and list studies.")
app.add_typer(study_app, name="study")

StorageOpt = Annotated[str | None, typer.Option(
    "--storage", envvar="HPO_STORAGE",
    help="Database URL shared by all commands and workers (default: sqlite:///studies/hpo.db).")]

DEFAULT_DATA = Path(os.environ.get("GESTURES_DATA", "../shared/data/gestures"))
DataArg = Annotated[Path, typer.Argument(help="Folder with one sub-folder per letter.")]
OptionalDataArg = Annotated[Path, typer.Argument(
    help="Folder with one sub-folder per letter (default: $GESTURES_DATA or "
    "../shared/data/gestures).")]
GroupsOpt = Annotated[Path | None, typer.Option(
    "--groups", help="CSV with path,label,hand (default: DATA/hands.csv).")]
RegexOpt = Annotated[str | None, typer.Option(
    "--groups-regex", help="Regex over the relative path whose group is the hand id.")]
ExcludeOpt = Annotated[Path | None, typer.Option(
    "--exclude", help="File listing paths to leave out, one per line.")]


def load_data(data: Path, groups: Path | None, regex: str | None,
              exclude: Path | None = None) -> DataSet:
    dataset = discover(data, GroupSource(csv=groups, regex=regex))
    return dataset.without(read_path_list(exclude)) if exclude else dataset


@data_app.command("check")
def data_check(data: DataArg, groups: GroupsOpt = None, groups_regex: RegexOpt = None,
               exclude: ExcludeOpt = None,
               exclude_out: Annotated[Path | None, typer.Option(
                   help="Write the files with errors here, for --exclude.")] = None,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Decode every image as training will and report what would corrupt training."""
    report = check(load_data(data, groups, groups_regex, exclude))
    if exclude_out:
        exclude_out.write_text("".join(f"{p}\n" for p in report.exclude()))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        display.check_report(report)
        if not report.ok:
            hint = f"--exclude {exclude_out}" if exclude_out else "--exclude-out FILE"
            display.console.print(f"[red]{len(report.exclude())} file(s) would corrupt "
                                  f"training[/red]; leave them out with {hint}")
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("split")
def data_split(data: DataArg,
               out: Annotated[Path, typer.Option(help="Where to write path,label,hand,split.")],
               groups: GroupsOpt = None, groups_regex: RegexOpt = None,
               exclude: ExcludeOpt = None,
               exclude_problems: Annotated[bool, typer.Option(
                   help="Leave out the files 'hpo data check' reports as errors.")] = False,
               val: float = 0.15, test: float = 0.15, seed: int = 0,
               folds: Annotated[int, typer.Option(
                   help="k > 1: cut the non-test hands into k folds instead of train/val.")] = 0,
               allow_image_split: Annotated[bool, typer.Option(
                   help="Split by image when hand ids are missing (inflates accuracy).")] = False,
               ) -> None:
    """Split by hand, stratified by letter: no hand and no identical image on two sides."""
    config = SplitConfig(val=val, test=test, seed=seed, folds=folds,
                         allow_image_split=allow_image_split)
    split, report = split_dataset(load_data(data, groups, groups_regex, exclude), config,
                                  exclude_problems=exclude_problems)
    split.save(out)
    if report.exclude():
        display.console.print(f"left out {len(report.exclude())} file(s): "
                              f"{', '.join(report.exclude())}")
    display.split_summary(split.summary())
    display.console.print(f"wrote {out}")


@app.command()
def overfit(data: OptionalDataArg = DEFAULT_DATA,
            model: Annotated[str, typer.Option(help=f"One of {list_models()}.")] = "simple_cnn",
            images: Annotated[int, typer.Option(help="Images to memorise (whole hands).")] = 48,
            steps: Annotated[int, typer.Option(help="Most full-batch iterations.")] = 200,
            lr: float = 3e-3, seed: int = 0) -> None:
    """Sanity check: memorise a few hands to 100% training accuracy, else exit 1."""
    clean, report = without_problems(discover(data))
    if report.exclude():
        display.console.print(f"left out {len(report.exclude())} file(s) with errors "
                              "(see 'hpo data check')")
    result = run_overfit(clean, model, n_images=images, max_steps=steps, lr=lr, seed=seed)
    display.overfit_curve(result.history)
    verdict = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
    display.console.print(f"{verdict}: {model} on {result.images} images of hands "
                          f"{', '.join(result.hands)}: {result.history[-1].val_acc:.1%} after "
                          f"{result.steps} steps")
    raise typer.Exit(0 if result.passed else 1)


@study_app.command("create")
def study_create(file: Annotated[Path, typer.Argument(help="A study file, e.g. "
                                                      "studies/simple_cnn.toml.")],
                 storage: StorageOpt = None) -> None:
    """Validate a study file and create the study (idempotent)."""
    spec = load_study_file(file)
    study = service.create_study(spec, storage)
    display.console.print(f"study [bold]{study.study_name}[/bold]: {spec.model}, "
                          f"{len(spec.search)} searched parameters, budget {spec.n_trials} "
                          f"trials; start workers with 'hpo worker {spec.name}'")


@study_app.command("list")
def study_list(storage: StorageOpt = None) -> None:
    """List the studies in the storage."""
    display.study_list(service.list_studies(storage))


@app.command()
def worker(study: str, storage: StorageOpt = None,
           n_trials: Annotated[int | None, typer.Option(
               help="Most trials for this worker (default: until the study's budget).")] = None,
           timeout: Annotated[float | None, typer.Option(help="Seconds for this worker.")] = None,
           threads: Annotated[int | None, typer.Option(
               help="CPU threads for this worker (2 workers on 2 cores: 1 each).")] = None,
           ) -> None:
    """Run trials of STUDY until its budget is spent; start one per machine or GPU."""
    done = service.run_worker(study, storage, n_trials, timeout, threads)
    display.console.print(f"worker finished {done} trial(s) of {study}")
    display.study_status(service.study_status(study, storage))


@app.command()
def status(study: str, storage: StorageOpt = None) -> None:
    """Trials by state, best value and parameters, fraction pruned, time spent."""
    display.study_status(service.study_status(study, storage))


@app.command()
def dashboard(storage: StorageOpt = None, host: str = "127.0.0.1", port: int = 8080,
              artifacts: Annotated[str | None, typer.Option(
                  envvar="HPO_ARTIFACTS", help="Artifact folder (default: beside SQLite).")]
              = None) -> None:
    """Serve optuna-dashboard on the same storage and artifact store."""
    from optuna_dashboard import run_server

    url = resolve_url(storage)
    display.console.print(f"optuna-dashboard for {url} on http://{host}:{port}/")
    run_server(open_storage(url), host=host, port=port,
               artifact_store=artifact_store(url, artifacts))


@app.command("promote")
def promote_cmd(study: str, storage: StorageOpt = None,
                out: Annotated[Path | None, typer.Option(
                    help="Report folder (default: reports/STUDY).")] = None,
                force: Annotated[bool, typer.Option(
                    help="Evaluate the test split again; the report is marked not clean.")]
                = False) -> None:
    """Evaluate the best trial once on the test hands and write the report."""
    result = promote(study, storage, out, force)
    display.test_result(result.report["test"])
    display.console.print(f"report: {result.out / 'report.md'}  model: {result.model_file}")


@app.command("evaluate")
def evaluate_cmd(model: Path, data: DataArg,
                 as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Accuracy, per-letter accuracy and confusion matrix of MODEL on a labelled folder."""
    result = evaluate(load_model(model), discover(data)).to_dict()
    if as_json:
        print(json.dumps({k: v for k, v in result.items() if k != "predictions"}, indent=2))
    else:
        display.test_result(result)


@app.command("predict")
def predict_cmd(model: Path, images: list[Path], top_k: int = 3,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Top-k letters per image, with the training preprocessing (EXIF applied)."""
    predictions, unreadable = predict(load_model(model), images, top_k)
    if as_json:
        print(json.dumps({"predictions": [{"path": p.path, "top": [
            {"label": c, "probability": q} for c, q in p.top]} for p in predictions],
            "unreadable": unreadable}, indent=2))
    else:
        display.predictions(predictions, unreadable)
    raise typer.Exit(1 if unreadable and not predictions else 0)


@app.command("compare")
def compare_cmd(studies: list[str], storage: StorageOpt = None) -> None:
    """Side-by-side: best validation accuracy, test accuracy if promoted, trials, time."""
    display.comparison(compare(studies, storage))


@app.command("run")
def run_cmd(data: OptionalDataArg = DEFAULT_DATA,
            out: Annotated[Path | None, typer.Option(
                help="Run folder (default: runs/<timestamp>).")] = None,
            budget: Annotated[str, typer.Option(
                help="cpu, gpu (the studies' [gpu] budgets) or auto (gpu with CUDA).")]
            = "auto",
            seed: int = 0) -> None:
    """The main job: check, split, run the shipped studies, promote, report."""
    result = run(RunConfig(data, out, profile=budget, seed=seed), log=display.console.print)
    display.comparison(result.statuses)
    display.console.print(f"done in {result.minutes:.1f} min; winner {result.winner}; "
                          f"report: {result.report}  model: {result.out / 'model.pt'}")


def main() -> None:
    """Entry point: library errors are user errors, shown without a traceback."""
    try:
        app()
    except (DataError, ModelConfigError, WeightsUnavailable, ArtifactError, StudyFileError,
            StorageError, service.StudyError) as exc:
        display.err_console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
