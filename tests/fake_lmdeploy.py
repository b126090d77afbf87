"""Stand-in for the `lmdeploy` CLI (which needs an NVIDIA GPU): same arguments, same HTTP protocol.

`serve api_server MODEL --server-name H --server-port P --model-name NAME …` records its argv to
$FAKE_LMDEPLOY_RECORD and serves the OpenAI API with internlocal's own server on the embedded GGUF
(whatever MODEL is). `lite auto_awq MODEL --work-dir OUT` copies MODEL and marks it AWQ.
Faults: FAKE_LMDEPLOY_FAIL_START=1 exits at once; FAKE_LMDEPLOY_EXIT_AFTER=N exits after N chat requests.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from internlocal.engines.llamacpp import LlamaCppEngine
    from internlocal.engines.llamacpp_batched import BatchedLlamaCpp
    from internlocal.hub.embedded import CHAT_MODEL
    from internlocal.server.app import ServerConfig, create_app

    if os.environ.get("FAKE_LMDEPLOY_FAIL_START"):
        print("RuntimeError: no CUDA GPUs are available", file=sys.stderr)
        sys.exit(1)
    engine = BatchedLlamaCpp(LlamaCppEngine(CHAT_MODEL.locate(), n_ctx=args.session_len, n_threads=1), slots=2)
    app = create_app(engine, ServerConfig(model_name=args.model_name, slots=2))
    exit_after = int(os.environ.get("FAKE_LMDEPLOY_EXIT_AFTER", "0"))
    served = {"n": 0}

    @app.middleware("http")
    async def count(request, call_next):
        response = await call_next(request)
        if request.url.path.endswith("/chat/completions"):
            served["n"] += 1
            if exit_after and served["n"] >= exit_after:
                os._exit(3)  # a crash, as a dying GPU server would
        return response

    uvicorn.run(app, host=args.server_name, port=args.server_port, log_level="warning")


def main() -> None:
    record = os.environ.get("FAKE_LMDEPLOY_RECORD")
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps(sys.argv[1:]) + "\n")
    parser = argparse.ArgumentParser(prog="lmdeploy")
    sub = parser.add_subparsers(dest="command")
    serve_p = sub.add_parser("serve").add_subparsers(dest="what").add_parser("api_server")
    serve_p.add_argument("model")
    serve_p.add_argument("--server-name", default="0.0.0.0")
    serve_p.add_argument("--server-port", type=int, default=23333)
    serve_p.add_argument("--backend", choices=["turbomind", "pytorch"], default="turbomind")
    serve_p.add_argument("--model-name")
    serve_p.add_argument("--session-len", type=int, default=2048)
    serve_p.add_argument("--tp", type=int, default=1)
    serve_p.add_argument("--quant-policy", type=int, choices=[0, 4, 8], default=0)
    serve_p.add_argument("--cache-max-entry-count", type=float, default=0.8)
    serve_p.add_argument("--model-format", choices=["hf", "awq", "gptq"])
    awq = sub.add_parser("lite").add_subparsers(dest="what").add_parser("auto_awq")
    awq.add_argument("model")
    awq.add_argument("--work-dir", required=True)
    awq.add_argument("--w-bits", type=int, default=4)
    awq.add_argument("--w-group-size", type=int, default=128)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
    else:
        out = Path(args.work_dir)
        shutil.copytree(args.model, out, dirs_exist_ok=True)
        config = json.loads((out / "config.json").read_text())
        config["quantization_config"] = {"quant_method": "awq", "bits": args.w_bits, "group_size": args.w_group_size}
        (out / "config.json").write_text(json.dumps(config))


if __name__ == "__main__":
    main()
