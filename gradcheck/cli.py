"""The ``gradcheck`` command."""

from __future__ import annotations

import argparse
import sys
import time

from .graph import DTYPES

__all__ = ["main"]

_MARK = {"pass": "", "fail": " FAIL", "error": " ERROR", "nondifferentiable": " kink", "skipped": ""}


def _cell(rel, status):
    if status == "skipped":
        return "n/a"
    if status == "error":
        return "ERROR"
    return f"{rel:.1e}{_MARK[status]}"


def cmd_run(args) -> int:
    from .sweep import default_pairs, ops_to_run, sweep_op, worst

    try:
        ops = ops_to_run(args.ops.split(",") if args.ops else None)
        pairs = default_pairs(args.dtype, args.device, torch=not args.no_torch)
    except (KeyError, ValueError, NotImplementedError) as e:
        print(f"gradcheck run: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(f"gradcheck run: {len(ops)} ops, dtype {args.dtype}, device {args.device}, seed {args.seed}")
    print("cells: worst relative error max|a - b| / max|b| over each op's samples and tensors")
    width = max(len(p.label) for p in pairs) + 2
    print(f"{'op':18s}" + "".join(f"{p.label:>{width}s}" for p in pairs))
    t0, failures = time.perf_counter(), []
    for op in ops:
        cells = []
        for p in pairs:
            records = sweep_op(op, [p], args.dtype, args.seed)
            failures += [r for r in records if r.status in ("fail", "error")]
            cells.append(_cell(*worst(records)))
        print(f"{op:18s}" + "".join(f"{c:>{width}s}" for c in cells), flush=True)
    print(f"\n{len(ops)} ops in {time.perf_counter() - t0:.1f}s; {len(failures)} failing checks")
    for r in failures:
        print(f"\n--- {r.op}: {r.tensor or '(whole case)'} [{r.source_a} vs {r.source_b}, {r.dtype}, case {r.case_id}]")
        print(r.message)
        print(f"replay: gradcheck run --ops {r.op} --dtype {args.dtype} --device {args.device} --seed {args.seed}")
    return 1 if failures else 0


def cmd_repro(args) -> int:
    from .check import check_pair
    from .sources import parse_source
    from .testing import describe_failure, read_case

    try:
        case, a_spec, b_spec, outputs = read_case(args.case)
        a_spec, b_spec = args.a or a_spec, args.b or b_spec
        if not a_spec or not b_spec:
            raise ValueError("the file names no source to replay with; give --a SPEC and --b SPEC "
                             "(e.g. --a reference --b 'fd:central:full(reference)')")
        a, b = parse_source(a_spec), parse_source(b_spec)
    except (OSError, ValueError, KeyError) as e:
        print(f"gradcheck repro: {e}", file=sys.stderr)
        return 2
    records = check_pair(case, a, b, outputs=outputs)
    print(f"replaying case {case.graph.case_id}: {a_spec} against {b_spec}")
    for r in records:
        print(f"  {r.status:17s} {r.op:16s} {r.tensor:12s} max rel err {r.max_rel_err:.3g}, "
              f"error/tolerance {r.ratio:.3g}")
    if any(r.status in ("fail", "error") for r in records):
        print()
        print(describe_failure(case, records, a.name, b.name))
        return 1
    print("every check passes on this case")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="gradcheck", description="Check gradients against independent sources.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="check every op of the catalogue against every source pair")
    run.add_argument("--dtype", default="float64", choices=DTYPES)
    run.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--ops", help="comma-separated op names (default: the whole catalogue)")
    run.add_argument("--no-torch", action="store_true", help="skip the torch source")
    run.set_defaults(func=cmd_run)
    repro = sub.add_parser("repro", help="replay a failing case from its JSON file")
    repro.add_argument("case", help="a case file written by a failing check (reports/failures/*.json)")
    repro.add_argument("--a", help="source spec overriding the file's source_a")
    repro.add_argument("--b", help="source spec overriding the file's source_b")
    repro.set_defaults(func=cmd_repro)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
