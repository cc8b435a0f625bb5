"""The ``entroguard`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from typer.core import TyperArgument

from entroguard.allocator import keep_freed_memory
from entroguard.device import DEVICE_HELP
from entroguard.errors import EntroguardError
from entroguard.serve.cli import edge_command, serve_command

_typer_argument_type = TyperArgument.display_type


def _argument_type(self: TyperArgument, ctx) -> str:
    """An argument's type in help, unless its metavar already says what it takes: typer would
    print the Python annotation (``INPUTS <list[str]>``)."""
    return "" if self.metavar is not None else _typer_argument_type(self, ctx)


TyperArgument.display_type = _argument_type

app = typer.Typer(
    name="entroguard",
    help="Measure and defend the bit rate of entropy-coded split DNNs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: no Python types for flags, paragraphs rewrapped
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from entroguard import __version__

        typer.echo(f"entroguard {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:  # fmt: skip
    """Measure and defend the bit rate of entropy-coded split DNNs."""


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def train(
    zoo: Annotated[bool, typer.Option("--zoo", help="Train the whole default zoo.")] = False,
    arch: Annotated[str | None, typer.Option(help="Architecture (one model).")] = None,
    prior: Annotated[
        Literal["fp", "mshp", "q8"],
        typer.Option(
            help="Entropy model: factorized prior, mean-scale hyperprior, or the "
            "fixed-rate 8-bit bottleneck (bottlefit)."
        ),
    ] = "fp",
    beta: Annotated[float, typer.Option(help="Rate weight (loss = CE + beta * bpp).")] = 0.01,
    epochs: Annotated[
        float | None,
        typer.Option(
            help="Epochs (fractions allowed); default 5 (the zoo's), 1 for rate_adversarial."
        ),
    ] = None,
    dataset: Annotated[str, typer.Option(help="fashion-mnist, cifar10 or folder:PATH.")] = (
        "fashion-mnist"
    ),
    out: Annotated[Path, typer.Option(help="Output folder for checkpoints.")] = Path("runs/zoo"),
    teacher: Annotated[
        Path | None, typer.Option(help="Checkpoint to distil features from.")
    ] = None,
    distill_weight: Annotated[float, typer.Option(help="Weight of the distillation loss.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    download: Annotated[bool, typer.Option(help="Download the dataset if missing.")] = False,
    only: Annotated[
        str | None, typer.Option(help="With --zoo: comma-separated name prefixes to train.")
    ] = None,
    recipe: Annotated[
        Literal["entropic_student", "bottlefit", "uncut", "slimmable", "rate_adversarial"],
        typer.Option(
            help="entropic_student (default), bottlefit (two stages from an uncut "
            "teacher), uncut (train the teacher itself), slimmable (one head, compute and "
            "rate settings switched at run time) or rate_adversarial (fine-tune --from models "
            "against the rate attack)."
        ),
    ] = "entropic_student",
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="rate_adversarial: zoo names, patterns (*-beta0.01) or "
            "checkpoint paths to fine-tune, comma-separated.",
        ),
    ] = None,
    gamma: Annotated[
        float, typer.Option(help="rate_adversarial: weight of the attacked images' bpp.")
    ] = 0.2,
    attack_eps: Annotated[
        float, typer.Option(help="rate_adversarial: the training attack's budget, in grey levels.")
    ] = 8.0,
    adv_ce: Annotated[
        float, typer.Option(help="rate_adversarial: weight of the attacked images' CE (0: none).")
    ] = 1.0,
    channels: Annotated[
        int | None, typer.Option(help="Bottleneck (latent) channels; bottlefit default 4.")
    ] = None,
    stages: Annotated[str, typer.Option(help="bottlefit: stages to run, e.g. 1,2 or 2.")] = "1,2",
    stage1_epochs: Annotated[int, typer.Option(help="bottlefit: head-distillation epochs.")] = 10,
    stage2_epochs: Annotated[int, typer.Option(help="bottlefit: fine-tuning epochs.")] = 10,
    kd: Annotated[
        bool, typer.Option("--kd/--ce", help="bottlefit stage 2: 0.5 CE + 0.5 KL, or plain CE.")
    ] = True,
    freeze_encoder: Annotated[
        bool, typer.Option(help="bottlefit stage 2: keep the bottleneck's encoder frozen.")
    ] = False,
    device: DeviceOption = "cpu",
) -> None:
    """Train one split model, or (--zoo) the 24-model default zoo; resumable.

    --recipe bottlefit trains a bottleneck of --channels channels (--prior q8, fp or mshp; beta
    adds the rate in stage 2 for fp/mshp) from the uncut teacher of --arch (the shipped one, or
    --teacher); --recipe uncut trains that teacher (--epochs); --recipe slimmable trains one
    head with 4 encoder members and 4 rate settings (--prior fp or mshp, --epochs), warm-started
    from --teacher (default: the zoo's model of --arch and --prior at beta 0.01); --recipe
    rate_adversarial fine-tunes each --from model against rate_pgd made on the fly (--gamma,
    --attack-eps, --adv-ce, --epochs), skipping those already in --out.
    """
    try:
        from entroguard.data import load_dataset
        from entroguard.device import resolve_device
        from entroguard.train import zoo as zoo_mod

        device = str(resolve_device(device))
        epochs = epochs if epochs is not None else (1.0 if recipe == "rate_adversarial" else 5.0)
        train_set = load_dataset(dataset, "train", download=download)
        test_set = load_dataset(dataset, "test", download=download)
        if recipe == "rate_adversarial":
            options = {"gamma": gamma, "eps": attack_eps / 255, "adv_ce": adv_ce,
                       "epochs": epochs, "seed": seed}  # fmt: skip
            _train_rate_adversarial(source, options, train_set, test_set, out, device)
            return
        if recipe != "entropic_student":
            if arch is None:
                raise typer.BadParameter(f"--recipe {recipe} needs --arch")
            rate_beta = beta if prior != "q8" else 0.0
            options = {"prior": prior, "beta": rate_beta,
                       "channels": channels or 4, "stages": stages, "stage1_epochs": stage1_epochs,
                       "stage2_epochs": stage2_epochs, "kd": kd, "freeze_encoder": freeze_encoder,
                       "epochs": epochs, "teacher": teacher, "seed": seed,
                       "device": device}  # fmt: skip
            _train_recipe(recipe, arch, options, train_set, test_set, out)
            return
        if zoo:
            entries = zoo_mod.zoo_entries()
            if only:
                prefixes = tuple(p.strip() for p in only.split(","))
                entries = [e for e in entries if e.name.startswith(prefixes)]
            paths = zoo_mod.train_zoo(out, train_set, test_set, entries=entries, seed=seed,
                                      device=device)  # fmt: skip
            typer.echo(f"{len(paths)} zoo checkpoints in {out}")
            return
        if arch is None:
            raise typer.BadParameter("give --arch (one model) or --zoo")
        options = {"beta": beta, "epochs": epochs, "seed": seed, "teacher": teacher,
                   "distill_weight": distill_weight, "channels": channels,
                   "device": device}  # fmt: skip
        _train_one(arch, prior, options, train_set, test_set, out)
    except (EntroguardError, ValueError) as exc:
        _fail(exc)


def _train_recipe(recipe: str, arch: str, o: dict, train_set, test_set, out: Path) -> None:
    from entroguard.train.recipes.bottlefit import BottleFitConfig
    from entroguard.train.recipes.runs import run_bottlefit, run_uncut
    from entroguard.train.teacher import TeacherConfig

    if recipe == "uncut":
        config = TeacherConfig(epochs=max(1, round(o["epochs"])), seed=o["seed"])
        path, accuracy = run_uncut(arch, config, train_set, test_set, out, device=o["device"])
        typer.echo(f"saved {path}: top1 {accuracy:.4f}")
        return
    if recipe == "slimmable":
        _train_slimmable(arch, o, train_set, test_set, out)
        return
    config = BottleFitConfig(
        stages=tuple(x.strip() for x in o["stages"].split(",")), stage1_epochs=o["stage1_epochs"],
        stage2_epochs=o["stage2_epochs"], kd=o["kd"], freeze_encoder=o["freeze_encoder"],
        beta=o["beta"], seed=o["seed"],
    )  # fmt: skip
    path, metrics = run_bottlefit(arch, o["prior"], o["channels"], config, train_set, test_set,
                                  out, teacher_path=o["teacher"], device=o["device"])  # fmt: skip
    typer.echo(f"saved {path}: {json.dumps(metrics)}")


def _train_rate_adversarial(
    sources: str | None, options: dict, train_set, test_set, out: Path, device: str
) -> None:
    from entroguard.train.recipes.rate_adversarial import RateAdversarialConfig
    from entroguard.train.recipes.runs import rate_adversarial_sources, run_rate_adversarial

    if not sources:
        raise typer.BadParameter("--recipe rate_adversarial needs --from (e.g. '*-beta0.01')")
    config = RateAdversarialConfig(**options)
    for name in rate_adversarial_sources(sources.split(","), out):
        path, metrics = run_rate_adversarial(name, config, train_set, test_set, out,
                                             device=device)  # fmt: skip
        typer.echo(f"saved {path}: {json.dumps(metrics)}")


def _train_slimmable(arch: str, o: dict, train_set, test_set, out: Path) -> None:
    from entroguard.train.recipes.runs import run_slimmable
    from entroguard.train.recipes.slimmable import SlimmableConfig

    if o["prior"] not in ("fp", "mshp"):
        raise typer.BadParameter("--recipe slimmable needs --prior fp or mshp")
    config = SlimmableConfig(epochs=max(1, round(o["epochs"])), seed=o["seed"])
    path, rows = run_slimmable(arch, o["prior"], config, train_set, test_set, out,
                               warm_from=o["teacher"], device=o["device"])  # fmt: skip
    for row in rows:
        typer.echo(f"m{row['members']},r{row['rate']}: top1 {row['top1']:.4f}, "
                   f"payload {row['payload_bytes']:.1f} B")  # fmt: skip
    typer.echo(f"saved {path}")


def _train_one(arch: str, prior: str, o: dict, train_set, test_set, out: Path) -> None:
    from entroguard.train.loop import TrainConfig
    from entroguard.train.recipes.runs import run_entropic_student

    distill = o["distill_weight"] if o["teacher"] else 0.0
    config = TrainConfig(beta=o["beta"], epochs=o["epochs"], seed=o["seed"], distill_weight=distill)
    path, metrics = run_entropic_student(arch, prior, config, train_set, test_set, out,
                                         channels=o["channels"], teacher_path=o["teacher"],
                                         device=o["device"])  # fmt: skip
    typer.echo(f"saved {path}: {json.dumps(metrics)}")


@app.command("zoo")
def zoo_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    remeasure: Annotated[
        bool, typer.Option(help="Measure every model again on its test set and save it.")
    ] = False,
    zoo_dir: Annotated[
        Path | None, typer.Option(help="Folder of checkpoints (default: the shipped zoo).")
    ] = None,
) -> None:
    """List the trained models with their test accuracy and sizes (measured through real
    encoding and decoding of the full test set; --remeasure measures them again now)."""
    from entroguard.train.zoo import annotate_measurements, list_zoo

    try:
        if remeasure:
            from entroguard.data import load_dataset

            rows = list_zoo(zoo_dir)
            test_sets = {}
            for row in rows:
                name = row["dataset"] or "fashion-mnist"
                test_sets.setdefault(name, load_dataset(name, "test"))
                annotate_measurements(row["path"], test_sets[name])
        rows = list_zoo(zoo_dir)
    except EntroguardError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from entroguard.report.table import format_table

    cols = ["name", "top1", "est_bytes", "payload_bytes", "packet_bytes"]
    typer.echo(format_table(rows, cols))


WORKERS_HELP = "Processes measuring in parallel (0: one per CPU core, at most one per model)."
DeviceOption = Annotated[str, typer.Option(help="Where the networks run: " + DEVICE_HELP)]


@app.command()
def campaign(
    config: Annotated[Path, typer.Argument(help="Campaign YAML (see entroguard.campaign.config).")],
    out: Annotated[Path, typer.Option(help="Output folder (results.sqlite, results.csv).")],
    zoo_dir: Annotated[
        Path | None, typer.Option(help="Folder of zoo checkpoints (default: shipped).")
    ] = None,
    report: Annotated[bool, typer.Option(help="Also write report.html.")] = True,
    workers: Annotated[int, typer.Option(help=WORKERS_HELP)] = 0,
    device: DeviceOption = "cpu",
    backend: Annotated[
        Literal["local", "ray"],
        typer.Option(help="local worker processes, or Ray actors (pip install entroguard[ray])."),
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="With --backend ray: the cluster to join (HEAD:6379).")
    ] = None,
    gpus_per_task: Annotated[
        float, typer.Option(help="With --backend ray: GPUs reserved by each worker.")
    ] = 0.0,
    overlap: Annotated[
        bool | None,
        typer.Option(
            "--overlap/--no-overlap",
            help="Code each batch on a background thread while the device attacks the next "
            "(default: on CUDA only). The results are the same either way.",
        ),
    ] = None,
) -> None:
    """Run a resumable campaign grid; rerun the same command to continue after a crash."""
    from entroguard.campaign import load_config, run_campaign

    try:
        cfg = load_config(config)
        csv_path = run_campaign(cfg, out, zoo_dir=zoo_dir, workers=workers, device=device,
                                backend=backend, address=address,
                                gpus_per_task=gpus_per_task, overlap=overlap)  # fmt: skip
    except (EntroguardError, ValueError) as exc:
        _fail(exc)
    _print_campaign_summary(out)
    typer.echo(f"results: {csv_path} and {out / 'results.sqlite'}")
    if report:
        _write_report(out)


def _print_campaign_summary(out: Path) -> None:
    from entroguard.campaign.export import condition_rows
    from entroguard.campaign.store import ResultStore
    from entroguard.campaign.summary import format_campaign_summary

    with ResultStore(out / "results.sqlite") as store:
        typer.echo(format_campaign_summary(condition_rows(store)))


@app.command("report")
def report_cmd(
    out: Annotated[Path, typer.Argument(help="A campaign folder holding results.sqlite.")],
) -> None:
    """Write OUT/report.html (self-contained, figures embedded) from a campaign's results."""
    _write_report(out)


def _write_report(out: Path) -> None:
    from entroguard.report.html import write_report

    try:
        path = write_report(out)
    except (EntroguardError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(f"report: {path}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo-out"),
    n_images: Annotated[
        int | None, typer.Option(help="Override the number of test images.")
    ] = None,
    zoo_dir: Annotated[
        Path | None, typer.Option(help="Folder of zoo checkpoints (default: shipped).")
    ] = None,
    workers: Annotated[int, typer.Option(help=WORKERS_HELP)] = 0,
    device: DeviceOption = "cpu",
) -> None:
    """The main job on the embedded default: the zoo under corruptions and attacks, a report."""
    import time

    from entroguard.campaign import run_campaign
    from entroguard.campaign.demo import (
        demo_config,
        print_summary,
        write_demo_analysis,
        write_demo_plan,
    )

    t0 = time.perf_counter()
    phases: dict[str, float] = {}

    def timed(name: str, step) -> None:
        start = time.perf_counter()
        step()
        phases[name] = time.perf_counter() - start

    try:
        cfg = demo_config(n_images, zoo_dir)
        timed("campaign", lambda: run_campaign(cfg, out, zoo_dir=zoo_dir, workers=workers,
                                               device=device))  # fmt: skip
        print_summary(out)
        timed("analysis", lambda: write_demo_analysis(out, cfg.n_images, zoo_dir, device))
        timed("plan", lambda: write_demo_plan(out, zoo_dir))
    except (EntroguardError, ValueError) as exc:
        _fail(exc)
    timed("report", lambda: _write_report(out))
    spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items())
    typer.echo(f"demo finished in {time.perf_counter() - t0:.0f} s ({spent}); "
               f"open {out / 'report.html'}")  # fmt: skip


@app.command("import")
def import_cmd(
    source: Annotated[Path, typer.Argument(help="sc2bench checkpoint or torchvision weights.")],
    arch: Annotated[str, typer.Option(help="resnet50, resnet101 or regnety6.4gf.")],
    prior: Annotated[Literal["fp", "mshp"], typer.Option(help="Entropy model.")],
    out: Annotated[Path, typer.Option(help="Output checkpoint path (without suffix).")],
    kind: Annotated[
        Literal["sc2bench", "torchvision"],
        typer.Option(help="sc2bench (whole split model) or torchvision (backbone only)."),
    ] = "sc2bench",
    allow_pickle: Annotated[
        bool, typer.Option(help="Allow .pt/.pth files (restricted unpickler); trusted files only.")
    ] = False,
    beta: Annotated[float | None, typer.Option(help="Beta the model was trained with.")] = None,
) -> None:
    """Convert an sc2bench entropic-student checkpoint (or torchvision weights into a fresh
    bottleneck model) to an entroguard checkpoint (safetensors + JSON)."""
    from entroguard.models import build_model
    from entroguard.models.sc2bench_import import (
        load_sc2bench_checkpoint,
        load_torchvision_weights,
    )
    from entroguard.train.checkpoint import save_checkpoint

    try:
        if kind == "sc2bench":
            model = load_sc2bench_checkpoint(source, arch, prior, allow_pickle=allow_pickle)
        elif kind == "torchvision":
            model = build_model(arch, prior, 1000).eval()
            load_torchvision_weights(model, source, allow_pickle=allow_pickle)
        else:
            raise typer.BadParameter("--kind must be sc2bench or torchvision")
        path = save_checkpoint(model, out, beta=beta, dataset="imagenet", source=str(source),
                               source_kind=kind)  # fmt: skip
    except (EntroguardError, ValueError) as exc:
        _fail(exc)
    typer.echo(f"saved {path} (fingerprint {model.fingerprint[:8]})")


@app.command()
def analyze(
    model: Annotated[str, typer.Option(help="Zoo model name or checkpoint path.")],
    out: Annotated[
        Path,
        typer.Option(help="Output folder (analysis.json, analysis.png, bands.png, rate_maps.png)."),
    ] = Path("analysis-out"),
    n_images: Annotated[int, typer.Option(help="First N test images.")] = 256,
    dataset: Annotated[str, typer.Option(help="fashion-mnist, cifar10 or folder:PATH.")] = (
        "fashion-mnist"
    ),
    threats: Annotated[
        bool, typer.Option(help="Measure how each corruption and attack moves DCT band energy.")
    ] = True,
    device: DeviceOption = "cpu",
) -> None:
    """Where the bits go: rate maps against TV maps (rank correlation), the rate of low-pass
    and high-pass DCT bands against the unfiltered rate, and how the 19 corruptions
    (severity 3) and the attacks (eps 8/255) move image energy between DCT bands."""
    from entroguard.analysis.run import ANALYSIS_PNG, BANDS_PNG, DEFENDED_PNG, write_analysis
    from entroguard.analysis.threat_bands import band_table_lines

    try:
        path = write_analysis(model, out, n_images=n_images, dataset=dataset,
                              threats=None if threats else [], device=device)  # fmt: skip
    except (EntroguardError, ValueError) as exc:
        _fail(exc)
    result = json.loads(path.read_text())
    typer.echo(
        f"Spearman(rate map, TV map) = {result['spearman_mean']:.3f} "
        f"+/- {result['spearman_std']:.3f} over {result['n']} images"
    )
    for b in result["bands"]:
        typer.echo(f"  {b['keep']:>4} band {b['fraction']:<5g} payload {b['payload_bytes']:7.1f} B "
                   f"({b['rate_change_pct']:+.1f} %)")  # fmt: skip
    pngs = [out / ANALYSIS_PNG]
    if "threat_bands" in result:
        typer.echo("Energy moved between DCT bands (% of the clean AC energy) and payload change:")
        for line in band_table_lines(result["threat_bands"]):
            typer.echo(line)
        pngs += [out / BANDS_PNG, out / DEFENDED_PNG]
        paid = result["defended_maps"]["payload_bytes"]
        typer.echo(f"Rate maps of {result['defended_maps']['n']} images, mean payload: "
                   f"clean {paid['clean']:.1f} B, rate_pgd eps 8/255 {paid['attacked']:.1f} B, "
                   f"then object_tv {paid['defended']:.1f} B")  # fmt: skip
    typer.echo(f"wrote {path} and {' and '.join(str(p) for p in pngs)}")


@app.command()
def plan(
    model: Annotated[str, typer.Option(help="Zoo model name or checkpoint path.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    n_images: Annotated[int, typer.Option(help="Test images timed (medians).")] = 100,
    rtt_ms: Annotated[float, typer.Option(help="Round-trip time of the link (ms).")] = 20.0,
    device_compute_w: Annotated[
        float, typer.Option(help="Device power while computing (W; assumption).")
    ] = 5.0,
    radio_w: Annotated[
        float, typer.Option(help="Device power while sending (W; assumption).")
    ] = 1.3,
    bandwidths: Annotated[
        str, typer.Option(help="Comma-separated uplink bandwidths (Mbit/s).")
    ] = "0.1,0.2,0.5,1,2,5,10,20,50,100",
    out: Annotated[
        Path | None,
        typer.Option(help="Also write OUT/plan.json (a campaign's OUT/plan goes in its report)."),
    ] = None,
) -> None:
    """Where splitting pays off: latency and device energy of local computing, offloading the
    image (PNG, JPEG q90) and split computing, over bandwidths, measured on this machine (one
    torch thread stands for the device, all threads for the server)."""
    from entroguard.campaign.models import resolve_models
    from entroguard.data import load_dataset
    from entroguard.plan.costs import PlanParameters, crossovers, parameters_dict, plan_rows
    from entroguard.plan.timing import measure_costs
    from entroguard.report.table import format_table

    try:
        params = PlanParameters(rtt_ms, device_compute_w, radio_w,
                                tuple(float(b) for b in bandwidths.split(",")))  # fmt: skip
        ref = resolve_models([model])[0]
        split_model = ref.load()
        images = load_dataset("fashion-mnist", "test").to_float(slice(0, n_images))
        costs = measure_costs(split_model, images)
    except (EntroguardError, ValueError) as exc:
        _fail(exc)
    rows = [r | {"model": ref.name} for r in plan_rows(costs, params)]
    if out is not None:
        from entroguard.plan.record import plan_record, write_plan

        typer.echo(f"wrote {write_plan(out, plan_record(ref.name, costs, params))}", err=as_json)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    typer.echo(f"{ref.name}: measured per image on this machine; parameters "
               f"{json.dumps(parameters_dict(params))}")  # fmt: skip
    typer.echo(format_table([c.__dict__ for c in costs],
                            ["option", "device_ms", "upload_bytes", "server_ms"]))  # fmt: skip
    for row in rows:
        row["wins"] = ("latency " if row["fastest"] else "") + (
            "energy" if row["least_energy"] else ""
        )
    typer.echo(format_table(rows, ["bandwidth_mbps", "option", "latency_ms", "device_energy_mj",
                                   "wins"]))  # fmt: skip
    for c in crossovers(costs, params):
        typer.echo(
            f"fastest changes from {c['from']} to {c['to']} at {c['bandwidth_mbps']:.3g} Mbit/s"
        )


@app.command()
def leak(
    model: Annotated[str, typer.Option(help="Zoo model name or checkpoint path.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    shadow_images: Annotated[
        int, typer.Option(help="Attacker's labelled images (second half of the training set).")
    ] = 30_000,
    test_images: Annotated[int, typer.Option(help="Victim test images scored.")] = 10_000,
    points: Annotated[str, typer.Option(help="Comma-separated points.")] = ",".join(
        ("latent", "g_s", "stage1", "stage2", "logits")
    ),
    probes: Annotated[str, typer.Option(help="Comma-separated probes.")] = "linear,mlp,cnn",
    seed: Annotated[int, typer.Option(help="Random seed of the probes.")] = 0,
    protections: Annotated[
        str,
        typer.Option(
            help="Comma-separated: none, keyed_noise, keyed_permutation (fp), "
            "capr_noise; the attacker is retrained against each."
        ),  # fmt: skip
    ] = "none",
    workers: Annotated[
        int, typer.Option(help="Processes training probes side by side (0: one per core).")
    ] = 0,
    device: Annotated[
        str,
        typer.Option(
            help="Where the model runs (the probes train on the CPU cores): " + DEVICE_HELP
        ),
    ] = "cpu",
) -> None:
    """What the bitstream leaks: label-recovery probes trained on the attacker's shadow data at
    each point (the decoded latent that travels, after g_s, after two tail stages, the logits),
    the packet-length and per-channel-bits side channels, next to chance and the model; under
    each protection, with the victim's payload and top-1 through it."""
    from entroguard.campaign.models import resolve_models
    from entroguard.data import load_dataset
    from entroguard.device import resolve_device
    from entroguard.privacy.leak import default_shadow, run_leak
    from entroguard.report.table import format_table

    try:
        ref = resolve_models([model])[0]
        shadow = default_shadow(load_dataset("fashion-mnist", "train"), shadow_images)
        victim = load_dataset("fashion-mnist", "test").subset(test_images)
        chosen = {"points": tuple(points.split(",")), "probes": tuple(probes.split(","))}
        split_model = ref.load().to(resolve_device(device))
        chosen["protections"] = tuple(p.strip() for p in protections.split(","))
        rows = run_leak(split_model, ref.name, shadow, victim, seed=seed,
                        workers=workers or None, **chosen)  # fmt: skip
    except (EntroguardError, ValueError) as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    typer.echo(format_table(rows, ["defense", "point", "probe", "top1", "val_top1", "epochs",
                                   "payload_bytes"]))  # fmt: skip


app.command("serve")(serve_command)
app.command("edge")(edge_command)


def main() -> None:
    keep_freed_memory()
    app()


if __name__ == "__main__":
    main()
