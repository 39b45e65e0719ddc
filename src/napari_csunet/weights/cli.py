"""``csunet weights list [--json] | path ID | fetch ID | import ID FILE``.

Exit status 0 means the weights are in the cache afterwards; 1 that they are not (the message
says why and what to do); 2 an unknown id.
"""

from __future__ import annotations

import argparse
import sys

from ..cli.main import print_json
from .errors import UnknownWeights, WeightsError

__all__ = ["register"]


def _list(args: argparse.Namespace) -> int:
    from .apply import list_weights
    from .cache import cache_dir

    rows = list_weights()
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        mark = "cached" if r["cached"] else ("manual" if r["manual_download"] else "")
        print(f"{r['id']:<44} {r['kind']:<5} {mark:<7} {r['description']}")
    print(f"\ncache folder: {cache_dir()}")
    return 0


def _path(args: argparse.Namespace) -> int:
    from .cache import cached_file, download_path
    from .sources import get_source

    src = get_source(args.id)
    found = cached_file(src)
    print(found or download_path(src))
    if found is None:
        print(f"{src.id} is not in the cache: the path above is where a downloaded copy goes "
              f"(`csunet weights fetch {src.id}`)", file=sys.stderr)
    return 0 if found else 1


def _fetch(args: argparse.Namespace) -> int:
    from .apply import materialize
    from .cache import cached_file, unavailable
    from .sources import get_source

    src = get_source(args.id)
    if src.manual_download and cached_file(src) is None:
        print(unavailable(src, "download them by hand"))  # the guided download: URL + import command
        return 1
    path = materialize(src, allow_download=True)
    print(path)
    return 0


def _import(args: argparse.Namespace) -> int:
    from .apply import import_weights

    path, report = import_weights(args.id, args.file)
    if args.json:
        print_json({"id": args.id, "path": str(path), "report": report.to_dict()})
    else:
        print(report.summary())
        print(path)
    return 0


def _guarded(handler):
    """Weight errors are messages for the user, not tracebacks."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, UnknownWeights) else 1

    return run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="pretrained encoder weights: list, locate, download, import")
    wsub = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    q = wsub.add_parser("list", help="all weight ids, with where they live and whether they are cached")
    q.add_argument("--json", action="store_true", help="print one JSON list")
    q.set_defaults(func=_guarded(_list))
    q = wsub.add_parser("path", help="the cached file of a weight id, or where a downloaded copy goes")
    q.add_argument("id")
    q.set_defaults(func=_guarded(_path))
    q = wsub.add_parser("fetch", help="download a weight id into the cache (Google Drive ones: instructions)")
    q.add_argument("id")
    q.set_defaults(func=_guarded(_fetch))
    q = wsub.add_parser("import", help="validate a downloaded file by converting it, then cache it")
    q.add_argument("id")
    q.add_argument("file")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=_guarded(_import))
