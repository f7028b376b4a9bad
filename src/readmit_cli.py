"""`readmit` command line: train, manage models, score a CSV."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from readmit.settings import get_settings


def _flows() -> Any:
    """The flows package (installed with readmit; imported lazily: Prefect is slow to import)."""
    import flows.training

    return flows


def cmd_train(args: argparse.Namespace) -> int:
    """Run the training flow and print where everything is."""
    from readmit.data.validation import ValidationFailed

    try:
        out = _flows().training.training_flow(
            data_uri=args.data,
            label=args.label,
            window=args.window,
            search_budget_s=args.search_budget,
        )
    except ValidationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_training_summary(out))
    return 0


def _metric_line(m: dict[str, float]) -> str:
    return f"ROC AUC {m['roc_auc']:.4f}  PR AUC {m['pr_auc']:.4f}  Brier {m['brier']:.4f}"


def format_training_summary(out: dict[str, Any]) -> str:
    """Human summary of a training run: tag, holdout metrics, where the artifacts are."""
    gate = out["gate"]
    verdict = "passed" if gate["promote"] else "FAILED: " + "; ".join(gate["reasons"])
    lines = [
        f"model        {out['tag']} ({out['stage']})",
        f"holdout      {_metric_line(out['metrics'])}  threshold {out['threshold']:.3f}",
        f"baseline LR  {_metric_line(out['baseline_metrics'])}",
        f"gate         {verdict}",
        f"model store  {out['bentoml_home']}",
        f"artifacts    {out['artifacts_uri']}",
        f"reports      {out['report_dir']}  (evaluation.json, calibration.svg)",
        f"validation   {out['validation_report']}",
        f"profile      {out['profile_uri']}",
        f"timings (s)  {json.dumps(out['timings_s'])}",
    ]
    return "\n".join(lines)


def cmd_models_list(args: argparse.Namespace) -> int:
    """Print every stored model with its stage."""
    from readmit.model import registry

    rows = registry.list_models()
    if not rows:
        print(f"no models in {get_settings().bentoml_home}; run `readmit train`")
        return 0
    print(f"{'TAG':42} {'STAGE':11} {'CREATED':26} {'ROC AUC':>8}  LABEL")
    for r in rows:
        auc = f"{r.roc_auc:.4f}" if r.roc_auc is not None else "-"
        print(f"{r.tag:42} {r.stage:11} {r.created_at:26} {auc:>8}  {r.label_definition or '-'}")
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    """Print a model's lineage metadata as JSON."""
    from readmit.model import registry

    tag = args.tag or registry.production_tag()
    if tag is None:
        print("error: no production model; give a tag", file=sys.stderr)
        return 2
    shown = {
        "tag": tag,
        **registry.model_metadata(tag),
        "signature": registry.signature_status(tag),
    }
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    """Promote a model to production (atomic, signature verified), audit it with its digest."""
    from readmit.model import lifecycle, registry

    record = registry.promote(args.tag, reason=args.reason)
    registry.publish_to_store(record["tag"])
    lifecycle.audit_manual_promotion(record, get_settings().artifacts_uri)
    print(json.dumps(record))
    return 0


def cmd_models_retire(args: argparse.Namespace) -> int:
    """Archive the models past the retention count (exported first), audited."""
    from readmit.model import lifecycle

    settings = get_settings()
    retired = lifecycle.retire(args.keep or settings.model_retention, settings.artifacts_uri)
    print(json.dumps({"archived": retired}))
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    """Restore the previous production model (atomic), audit it, redeploy a running service."""
    from readmit.model import registry
    from readmit.ops import audit, deploy

    record = registry.rollback(reason=args.reason)
    registry.publish_to_store(record["tag"])
    audit.append(
        get_settings().artifacts_uri,
        "rolled_back",
        tag=record["tag"],
        previous=record["previous"],
        reason=args.reason,
        manifest_sha256=record["manifest_sha256"],
    )
    print(json.dumps(record))
    if deploy.running_server() is not None:
        from flows.deployment import deployment_flow

        out = deployment_flow(model_tag=record["tag"])
        print(f"redeployed {out['model_tag']} at {out['url']}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: the whole loop on the embedded defaults, then a short summary."""
    from flows.loop import loop_flow

    out = loop_flow(serve=not args.no_serve, search_budget_s=args.search_budget)
    print(format_loop_summary(out))
    return 0


def format_loop_summary(out: dict[str, Any]) -> str:
    """What happened in the loop, in a few lines a newcomer can follow."""
    lines = ["", "== readmit loop summary ==", format_training_summary(out["trained"])]
    episode = out["replay"]["episode"]
    lines.append(
        f"replay       {len(out['replay']['batches'])} batches; drift: "
        + (
            f"{episode['scenario']}/{episode['strength']} from batch index {episode['start']}"
            if episode
            else "none"
        )
    )
    for b in out["monitoring"]["batches"]:
        lines.append(
            f"  monitored  {b['batch_id']:22} severity {b['severity']:8} "
            f"{', '.join(b['features'][:4])}"
        )
    served = out["monitoring"].get("windows") or []
    if served:
        lines.append("served windows (estimated AUC before outcomes, realised once they arrived):")
    for w in served:
        realised = "-" if w["realised_auc"] is None else f"{w['realised_auc']:.3f}"
        estimated = "-" if w["estimated_auc"] is None else f"{w['estimated_auc']:.3f}"
        lines.append(
            f"  {w['window']}  {w['served']:5} served  est {estimated} [{w['band_90'] or '-'}]"
            f"  realised {realised}  outcomes {w['label_coverage']:.0%}  "
            f"drift {w['severity']}{' (' + w['features'] + ')' if w['features'] else ''}"
            f"{'' if w['skew_ok'] is not False else '  SKEW: another model answered'}"
        )
    for o in out["monitoring"].get("outcomes") or []:
        lines.append(
            f"outcomes     {o['source']}: {o['accepted']} accepted, {o['duplicates']} "
            f"duplicates, {o['conflicts']} conflicting, {o['unknown_encounters']} unknown"
        )
    event = "emitted (readmit.drift.detected)" if out["monitoring"]["event"] else "none"
    lines.append(f"drift event  {event}")
    r = out["retraining"]
    if r:
        verdict = "PROMOTED" if r["promote"] else "rejected"
        lines.append(
            f"retraining   challenger {r['challenger']} {verdict}: {'; '.join(r['reasons'])}"
        )
        if r.get("deployment"):
            d = r["deployment"]
            lines.append(f"redeployed   {d['model_tag']} (replaced pid {d['replaced_pid']})")
    lines.append(f"audit log    {get_settings().layout.audit_log()}")
    if out["service"]:
        service = out["service"]
        lines += [
            f"serving now  {service['model_tag']} at {service['url']} "
            f"(bento {service['bento_tag']})",
            f"try it       {service['curl']}",
            "stop it      make down   (stops the service; `make status` shows what runs)",
        ]
    return "\n".join(lines)


def cmd_score(args: argparse.Namespace) -> int:
    """Validate a CSV of encounters and write probabilities with the production model."""
    from readmit import data, features, storage
    from readmit.data import validation
    from readmit.model import lineage, registry
    from readmit.serving import scoring

    settings = get_settings()
    loaded = registry.load_model(args.model)  # first: an untrusted model stops here, said once
    file = data.read_raw(args.input)
    try:
        frame = validation.validate_or_quarantine(
            file.content,
            artifacts_uri=settings.artifacts_uri,
            batch_name=lineage.batch_name(args.input),
            require_label=False,
        )
    except validation.ValidationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        features.reject_outcomes(list(frame.columns))
    except features.OutcomeInInputError as exc:
        print(f"error: {args.input}: {exc}", file=sys.stderr)
        return 2
    scores = scoring.score_frame(loaded, frame)
    storage.write_bytes(args.output, scores.to_csv(index=False, float_format="%.17g").encode())
    high = int((scores["risk"] == "high").sum())
    print(f"scored {len(scores)} encounters with {loaded.tag}: {high} high risk -> {args.output}")
    return 0


def cmd_outcomes_add(args: argparse.Namespace) -> int:
    """Take an outcomes file: validate, pseudonymise, reconcile with the store, report."""
    from readmit import storage
    from readmit.data import outcomes, validation
    from readmit.monitoring import windows

    settings = get_settings()
    try:
        report = outcomes.add_outcomes(
            storage.read_bytes(args.file),
            source=args.file,
            artifacts_uri=settings.artifacts_uri,
            key=settings.pseudonym_key_bytes,
            served_keys=windows.served_encounter_keys(settings.layout),
        )
    except validation.ValidationFailed as exc:
        print(f"error: outcomes file rejected: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"report: {report.report_uri}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Write a snapshot now and apply retention (the `backup` flow's steps, without Prefect)."""
    from readmit.ops import backup

    settings = get_settings()
    info = backup.create_snapshot(settings, progress=lambda m: print(f"  {m}"))
    removed = backup.prune(settings, args.keep or settings.backup_keep)
    print(f"snapshot {info.uri}: {info.files} files, {info.megabytes:.1f} MB, "
          f"production {info.production}")  # fmt: skip
    for missing in info.not_included:
        print(f"NOT INCLUDED: {missing}")
    if removed:
        print(f"retention removed {len(removed)}: " + ", ".join(removed))
    return 0


def cmd_backup_list(args: argparse.Namespace) -> int:
    """Complete snapshots, newest first."""
    from readmit.ops import backup

    snapshots = backup.list_snapshots(get_settings())
    if not snapshots:
        print(f"no snapshots in {backup.backup_root(get_settings())}")
    for s in reversed(snapshots):
        print(f"{s.uri}  {s.created_at}  production {s.production}  {len(s.models)} models  "
              f"{s.megabytes:.1f} MB")  # fmt: skip
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Rebuild this machine's state from a snapshot (verified first)."""
    from readmit.ops import backup

    try:
        report = backup.restore(
            args.snapshot, get_settings(), force=args.force, restore_prefect=not args.no_prefect,
            progress=lambda m: print(f"  {m}"),
        )  # fmt: skip
    except backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"restored {report.snapshot}: production {report.production}, "
          f"{len(report.models)} models, {report.artifact_files} artifact files, "
          f"history {report.history or '-'}, "
          f"Prefect database {report.prefect_database or '-'}")  # fmt: skip
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign a stored model saved before models were signed (only one whose files you trust)."""
    from readmit.model import registry
    from readmit.ops import audit

    out = registry.sign_model(args.tag, force=args.force)
    if not out["signed"]:
        print(f"{out['tag']} is already signed with this key: {out['manifest_sha256']}")
        return 0
    audit.append(
        get_settings().artifacts_uri, "signed", tag=out["tag"], key_id=out["key_id"],
        manifest_sha256=out["manifest_sha256"], forced=args.force,
    )  # fmt: skip
    print(f"signed {out['tag']} with key {out['key_id']}: manifest {out['manifest_sha256']}")
    return 0


def cmd_keys_public(args: argparse.Namespace) -> int:
    """Print the public key of READMIT_SIGNING_KEY (what READMIT_VERIFY_KEY takes)."""
    from readmit.model import signing

    key = signing.private_key(get_settings().signing_key_bytes).public_key()
    print(signing.public_bytes(key).hex())
    print(
        f"key id {signing.key_id(key)} (READMIT_VERIFY_KEY takes the line above)", file=sys.stderr
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the `readmit` command."""
    parser = argparse.ArgumentParser(prog="readmit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="validate, train, evaluate, profile and register")
    train.add_argument("--data", help="raw encounters (path or fsspec URL); default: shipped")
    train.add_argument("--label", choices=["<30", "any"], default="<30")
    train.add_argument("--window", choices=["all", "reference"], default="all")
    train.add_argument("--search-budget", type=float, default=90.0, help="seconds")
    train.set_defaults(func=cmd_train)

    models = sub.add_parser("models", help="list, show, promote, roll back models")
    msub = models.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="stored models and stages").set_defaults(func=cmd_models_list)
    show = msub.add_parser("show", help="lineage of a model (default: production)")
    show.add_argument("tag", nargs="?")
    show.set_defaults(func=cmd_models_show)
    promote = msub.add_parser("promote", help="make a model the production model")
    promote.add_argument("tag")
    promote.add_argument("--reason", default="manual promotion")
    promote.set_defaults(func=cmd_models_promote)
    retire = msub.add_parser("retire", help="archive models past the retention count (exported)")
    retire.add_argument("--keep", type=int, default=None, help="default READMIT_MODEL_RETENTION")
    retire.set_defaults(func=cmd_models_retire)
    rollback = msub.add_parser("rollback", help="restore the previous production model")
    rollback.add_argument("--reason", default="manual rollback")
    rollback.set_defaults(func=cmd_models_rollback)

    run = sub.add_parser("run", help="the whole loop: train, serve, replay with drift, retrain")
    run.add_argument("--no-serve", action="store_true", help="skip building/serving the bento")
    run.add_argument("--search-budget", type=float, default=60.0, help="seconds per training")
    run.set_defaults(func=cmd_run)

    score = sub.add_parser("score", help="score a CSV of encounters with the production model")
    score.add_argument("input", help="CSV (path or fsspec URL), data-set columns")
    score.add_argument("-o", "--output", required=True, help="where to write the scores CSV")
    score.add_argument("--model", help="model tag (default: production)")
    score.set_defaults(func=cmd_score)

    feed = sub.add_parser("outcomes", help="the outcomes feed: outcomes of served encounters")
    fsub = feed.add_subparsers(dest="outcomes_command", required=True)
    add = fsub.add_parser(
        "add",
        help="validate, pseudonymise and store a CSV of encounter_id,readmitted (the next "
        "monitoring run joins it to served predictions)",
    )
    add.add_argument("file", help="CSV or CSV.gz (path or fsspec URL): encounter_id,readmitted")
    add.set_defaults(func=cmd_outcomes_add)

    snap = sub.add_parser("backup", help="snapshot models, pointer, audit, monitoring, history")
    snap.add_argument("--keep", type=int, help="complete snapshots to keep (READMIT_BACKUP_KEEP)")
    snap.set_defaults(func=cmd_backup)
    bsub = snap.add_subparsers(dest="backup_command")
    bsub.add_parser("list", help="complete snapshots, newest first").set_defaults(
        func=cmd_backup_list
    )
    rest = sub.add_parser("restore", help="rebuild an empty machine from a snapshot")
    rest.add_argument("snapshot", help="snapshot folder (path or s3://...), see `backup list`")
    rest.add_argument("--force", action="store_true", help="overwrite state already here")
    rest.add_argument("--no-prefect", action="store_true", help="leave the Prefect DB alone")
    rest.set_defaults(func=cmd_restore)

    sign = sub.add_parser(
        "sign", help="sign a stored model saved before models were signed (audited)"
    )
    sign.add_argument("tag", help="model tag; sign it only if you trust its files")
    sign.add_argument(
        "--force", action="store_true", help="replace a signature that does not hold here "
        "(e.g. after rotating the signing key)",
    )  # fmt: skip
    sign.set_defaults(func=cmd_sign)
    keys = sub.add_parser("keys", help="the models' signing key")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    ksub.add_parser(
        "public", help="print the public key of READMIT_SIGNING_KEY (for READMIT_VERIFY_KEY)"
    ).set_defaults(func=cmd_keys_public)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `readmit` console script."""
    from readmit.model.registry import NoModelError, RegistryError
    from readmit.secret_sources import SecretConfigError

    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        get_settings()  # production mode refuses default secrets before anything starts
    except (SecretConfigError, ValueError) as exc:  # ValueError: pydantic's, a malformed setting
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return handler(args)
    except (NoModelError, RegistryError, SecretConfigError, FileNotFoundError, ValueError) as exc:
        # an untrusted model (`UntrustedModelError`) is a NoModelError; a key read from a
        # Prefect block on first use can still be refused (`SecretConfigError`)
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
