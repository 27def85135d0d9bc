"""`t2i serve`: try a trained generator from a browser, or call its JSON/PNG API.

    t2i serve [--model models] [--port 8000] [--device auto] [--judge auto|none|PATH]

Binds 127.0.0.1 only (no authentication: put a reverse proxy in front to share it). The app
itself is ``t2i.serve.app.create_app``.
"""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="t2i serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models",
                    help="models/ dir, runs:/<run_id>[/path] or models:/<name>@<alias> (default: models)")
    ap.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0 = any free port)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--judge", default="auto",
                    help="attribute classifier shown beside each image: auto (the one the evaluate stage saved "
                         "with the model: eval/judge/ beside models/, or the run's eval/judge artifacts), none, "
                         "or a saved classifier's directory")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    import uvicorn

    from t2i.serve.app import create_app

    torch.set_flush_denormal(True)  # small conv nets on x86 CPUs: 2-10x slower without it
    try:
        app = create_app(args.model, device=args.device, judge=args.judge)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # unknown model, wrong config, no CUDA
        print(f"t2i serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
