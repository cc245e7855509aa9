"""``rtrm insurance status|size|trigger|approve``: the insurance backstop.

- ``status [--json]``: pool assets per chain (indexed fund events), the published capital
  requirement, coverage ratio and alert level, deficits and payouts by state, IOUs and
  the last attestation. Reads the store only.
  Keys: ``watermark``, ``decimals``, ``pools`` (``chain_id``, ``fund``, ``token``,
  ``assets``, ``deposits``, ``withdrawals``, ``claims_paid``, ``claims_paid_count``),
  ``pool_total``, ``required``, ``coverage_ratio``, ``alert``, ``deficits``,
  ``open_deficit_amount``, ``payouts``, ``paid_claims``, ``paid_amount``, ``iou_total``,
  ``attestation``.
- ``size [--paths N] [--seed S] [--max-cascades N] [--json]``: Monte Carlo capital
  sizing at the store's watermark; publishes the smoothed requirement. Only the
  ``--max-cascades`` paths with the largest first-order bad debt (default 200, or 4x
  the ES tail if larger; ``0``: every path) and a stratified sample of the others go
  through the cascade (:mod:`insurance.sizing`, step 2): a cascade costs ~0.1 s at
  100k users. Keys: ``sizing`` (the full :class:`insurance.sizing.SizingResult`, with
  ``screen``: what the sample of unscreened paths saw), ``required``, ``pool_total``,
  ``coverage_ratio``, ``alert``, ``decimals``.
- ``trigger [--dry-run] [--json]``: detect deficits, allocate an epoch, pay its claims on
  chain (``--dry-run``: compute and roll back, send nothing). Keys: those of
  :class:`insurance.trigger.TriggerReport`.
- ``approve CLAIM_ID [--by NAME] [--json]``: approve a payout above the threshold.

Amounts are integers in the fund asset's smallest unit (``decimals`` says how to show
them); the tables show them in whole units. The operator key comes from
``RTRM_INSURANCE_OPERATOR_KEY`` and is never printed.
"""

from __future__ import annotations

import getpass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rtrm.commands import load_config
from rtrm.output import emit, make_table

if TYPE_CHECKING:
    import argparse

    from rich.console import RenderableType

    from chains.spec import Registry
    from insurance.config import InsuranceConfig
    from insurance.status import InsuranceStatus
    from insurance.trigger import TriggerReport
    from rtrm.commands import Subparsers

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "insurance", help="the insurance backstop: status, capital sizing, payouts"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    status = actions.add_parser("status", help="pools, requirement, coverage, deficits, payouts")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=run_status)

    size = actions.add_parser("size", help="Monte Carlo capital requirement; publishes it")
    size.add_argument("--paths", type=int, default=None, help="paths (default [insurance.sizing])")
    size.add_argument("--seed", type=int, default=None, help="random seed (same seed, same result)")
    size.add_argument(
        "--max-cascades",
        type=int,
        default=None,
        metavar="N",
        help="paths screened into the cascade (default 200, or 4x the ES tail if larger; "
        "0: every path, exact but ~0.1 s a path at 100k users)",
    )
    size.add_argument("--json", action="store_true", help="machine-readable output")
    size.set_defaults(func=run_size)

    trigger = actions.add_parser("trigger", help="detect deficits, allocate and pay claims")
    trigger.add_argument(
        "--dry-run", action="store_true", help="show what would be paid; send and store nothing"
    )
    trigger.add_argument("--json", action="store_true", help="machine-readable output")
    trigger.set_defaults(func=run_trigger)

    approve = actions.add_parser("approve", help="approve a payout above the threshold")
    approve.add_argument("claim_id", metavar="CLAIM_ID", help="0x… claim id (from status/trigger)")
    approve.add_argument("--by", default=None, help="who approves (default: the OS user)")
    approve.add_argument("--json", action="store_true", help="machine-readable output")
    approve.set_defaults(func=run_approve)


def _setup(args: argparse.Namespace) -> tuple[Registry, InsuranceConfig]:
    from insurance.config import load_insurance_config

    registry = load_config(args)
    return registry, load_insurance_config(registry.source)


def _money(units: int | None, decimals: int) -> str:
    return "-" if units is None else f"{Decimal(units).scaleb(-decimals):,.2f}"


def run_status(args: argparse.Namespace) -> int:
    from indexer.store import open_store
    from insurance.status import insurance_status

    registry, config = _setup(args)
    store = open_store(registry.database_url)
    try:
        with store.engine.connect() as conn:
            report = insurance_status(conn, registry, config)
    finally:
        store.dispose()
    emit(report, as_json=args.json, table=lambda: _status_tables(report))
    return 0


def _status_tables(s: InsuranceStatus) -> RenderableType:
    from rich.console import Group

    d = s.decimals
    pools = make_table(
        "chain", "fund", "token", "assets", "claims paid", "claims",
        title="Insurance pools (indexed)", numeric=("chain", "assets", "claims paid", "claims"),
    )  # fmt: skip
    for p in s.pools:
        pools.add_row(
            str(p.chain_id), p.fund, p.token, _money(p.assets, d), _money(p.claims_paid, d),
            str(p.claims_paid_count),
        )  # fmt: skip
    summary = make_table("measure", "value", title="Backstop", numeric=["value"])
    ratio = "-" if s.coverage_ratio is None else f"{s.coverage_ratio:,.3f}"
    rows = [
        ("pool total", _money(s.pool_total, d)),
        ("capital requirement", _money(s.required, d)),
        ("coverage ratio (pool / requirement)", f"{ratio} ({s.alert or 'no requirement yet'})"),
        ("open deficits", f"{s.deficits.get('open', 0)} ({_money(s.open_deficit_amount, d)})"),
        ("orphaned deficits (review)", str(s.deficits.get("orphaned", 0))),
        ("paid claims", f"{s.paid_claims} ({_money(s.paid_amount, d)})"),
        ("awaiting approval", str(s.payouts.get("approval_required", 0))),
        ("IOUs (socialised loss)", _money(s.iou_total, d)),
    ]
    if s.attestation is not None:
        a = s.attestation
        rows.append((f"attestation epoch {a.epoch}", f"{a.root} ({_money(a.liabilities, d)})"))
    for name, value in rows:
        summary.add_row(name, value)
    summary.caption = "watermark " + ", ".join(f"{c}@{b}" for c, b in sorted(s.watermark.items()))
    return Group(pools, summary)


def run_size(args: argparse.Namespace) -> int:
    from aggregation.loader import load_snapshot
    from indexer.store import open_store
    from insurance.exceptions import SizingError
    from insurance.planning import fund_decimals
    from insurance.sizing import default_max_cascades, publish_requirement, size_capital
    from insurance.status import insurance_status

    registry, config = _setup(args)
    decimals = fund_decimals(registry)
    paths = config.sizing.paths if args.paths is None else args.paths
    max_cascades: int | None = args.max_cascades
    if max_cascades is None:
        max_cascades = default_max_cascades(paths, config.sizing.confidence)
    elif max_cascades == 0:
        max_cascades = None  # every path through the cascade
    elif max_cascades < 0:
        raise SizingError(f"--max-cascades {max_cascades}: use a positive count, or 0 for all")
    store = open_store(registry.database_url)
    try:
        with store.engine.connect() as conn:
            snapshot = load_snapshot(conn, registry)
        result = size_capital(
            snapshot,
            config.sizing,
            decimals=decimals,
            paths=paths,
            seed=args.seed,
            max_cascades=max_cascades,
        )
        with store.transaction() as conn:
            required = publish_requirement(conn, result, config.sizing.max_step_bps)
        with store.engine.connect() as conn:
            status = insurance_status(conn, registry, config)
    finally:
        store.dispose()
    report: dict[str, Any] = {
        "sizing": result,
        "required": required,
        "pool_total": status.pool_total,
        "coverage_ratio": status.coverage_ratio,
        "alert": status.alert,
        "decimals": decimals,
    }
    emit(report, as_json=args.json, table=lambda: _size_table(report))
    return 0


def _size_table(report: dict[str, Any]) -> RenderableType:
    r, d = report["sizing"], report["decimals"]
    table = make_table("measure", "value", title="Capital requirement", numeric=["value"])
    ratio = report["coverage_ratio"]
    rows = [
        ("paths / seed / cascades run", f"{r.paths:,} / {r.seed} / {r.cascades_run:,}"),
        ("daily vol (EWMA)",
         ", ".join(f"{a} {v:.2%}" for a, v in zip(r.assets, r.vol_daily, strict=True))),
        ("P(bad debt > 0)", f"{r.loss_probability:.2%}" + _se(r.loss_probability_se, "{:.2%}")),
        ("mean bad debt (USD)", f"{r.mean_bad_debt_usd:,.2f}" + _se(r.mean_bad_debt_se_usd)),
        (f"VaR {r.confidence:.1%} of bad debt (USD)", f"{r.tail.var_usd:,.2f}"),
        (f"ES {r.confidence:.1%} of bad debt (USD)", f"{r.tail.es_usd:,.2f}"),
        ("  empirical ES (USD)", f"{r.tail.es_empirical_usd:,.2f}"),
        ("exposure / gearing (USD)", f"{r.gearing_usd:,.2f}"),
        ("floor (USD)", f"{r.floor_usd:,.2f}"),
        (f"raw requirement ({r.binding})", _money(r.raw_required, d)),
        ("published requirement (smoothed)", _money(report["required"], d)),
        ("pool total (indexed)", _money(report["pool_total"], d)),
        ("coverage ratio", "-" if ratio is None else f"{ratio:,.3f} ({report['alert']})"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    shape = r.tail.gpd_shape
    notes = [
        f"GPD tail: xi {shape:.3f}, {r.tail.exceedances} exceedances"
        if shape is not None
        else "tail: empirical (too few exceedances for a GPD fit)"
    ]
    if (c := r.screen) is not None:
        notes.append(
            f"screened: the {c.max_cascades:,} paths of largest first-order bad debt, and "
            f"{c.sampled} of the other {c.unscreened:,} at random (largest "
            f"{c.sampled_max_usd:,.0f} USD; {c.sampled_above_var} above the VaR"
            + (": raise --max-cascades)" if c.sampled_above_var else ")")
        )
    table.caption = "\n".join(notes)
    return table


def _se(se: float, spec: str = "{:,.2f}") -> str:
    """`` ± se`` for an estimate from a screened run; nothing when exact."""
    if se == 0.0:
        return ""
    return " (lower bound)" if se == float("inf") else " ± " + spec.format(se)


def run_trigger(args: argparse.Namespace) -> int:
    from indexer.store import open_store
    from insurance.executor import ChainPayoutExecutor, operator_from
    from insurance.trigger import run_trigger as trigger

    registry, config = _setup(args)
    executor = ChainPayoutExecutor(registry, operator_from(config))
    store = open_store(registry.database_url)
    try:
        report = trigger(store, registry, config, executor, dry_run=args.dry_run)
    finally:
        executor.close()
        store.dispose()
    emit(report, as_json=args.json, table=lambda: _trigger_table(report, registry))
    return 0


def _trigger_table(report: TriggerReport, registry: Registry) -> RenderableType:
    from insurance.planning import fund_decimals

    d = fund_decimals(registry)
    verb = "would be" if report.dry_run else "were"
    table = make_table(
        "claim", "chain", "layer", "recipient", "amount", "state", "tx",
        title=f"Payouts (epoch {report.epoch or '-'}; dry run)" if report.dry_run
        else f"Payouts (epoch {report.epoch or '-'})",
        numeric=("chain", "amount"),
    )  # fmt: skip
    for p in report.payouts:
        table.add_row(
            p.claim_id[:18] + "…", str(p.chain_id), p.tranche, p.recipient, _money(p.amount, d),
            p.state if p.error is None else f"{p.state}: {p.error}", p.tx_hash or "-",
        )  # fmt: skip
    sync = report.deficits
    waiting = len(report.waiting_for_finality)
    notes = [
        (
            f"deficits: {len(sync.added)} new, {len(sync.removed)} removed, "
            f"{len(sync.orphaned)} orphaned; {waiting} wait for finality"
        ),
        f"{_money(report.paid_amount, d)} {verb} paid" + ("" if report.dry_run else " in this run"),
    ]
    if report.attestation_root is not None:
        notes.append(
            f"attestation root {report.attestation_root} (liabilities "
            f"{_money(report.liabilities, d)})"
        )
    if report.unreachable_chains:
        chains = ", ".join(map(str, report.unreachable_chains))
        notes.append(f"chains {chains}: fund unreachable, their deficits wait for the next run")
    if not report.payouts:
        notes.append("nothing to pay")
    table.caption = "\n".join(notes)
    return table


def run_approve(args: argparse.Namespace) -> int:
    from indexer.store import open_store
    from insurance.payouts import approve

    registry, _ = _setup(args)
    store = open_store(registry.database_url)
    try:
        with store.transaction() as conn:
            payout = approve(conn, args.claim_id, by=args.by or _user())
    finally:
        store.dispose()
    emit(payout, as_json=args.json, table=lambda: _approved(payout.claim_id))
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment
        return "cli"


def _approved(claim: str) -> RenderableType:
    from rich.text import Text

    return Text(f"approved {claim}; the next `rtrm insurance trigger` pays it")
