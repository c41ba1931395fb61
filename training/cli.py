"""The `fourfold` command line: one verb per job, each a module with its own `main(argv)`.

fourfold demo       the README's main job
fourfold masks      draw the four attention patterns (from the models' own mask code) to a PNG
fourfold pretrain   pretrain with a self-supervised objective          (fourfold.training.pretrain)
fourfold finetune   fine-tune on a labelled dataset, full or PEFT      (fourfold.training.finetune)
fourfold convert    import a BERT/RoBERTa/GPT-2/Llama/BART checkpoint   (fourfold.training.convert)
fourfold export     a checkpoint as transformers' own BERT/Llama/BART   (fourfold.training.export)
fourfold push       upload a trained output folder to the Hub          (fourfold.training.push)

A mistake in the input is one line on stderr, `fourfold <command>: error: <what> — <fix>`, and exit status 2;
`fourfold --debug <command> ...` (or FOURFOLD_DEBUG=1) shows the traceback as well.
"""

import importlib
import os
import sys

from fourfold.training.errors import UsageError, one_line

COMMANDS = {
    "demo": "fourfold.training.demo",
    "masks": "fourfold.training.masks_figure",
    "pretrain": "fourfold.training.pretrain",
    "finetune": "fourfold.training.finetune",
    "convert": "fourfold.training.convert",
    "export": "fourfold.training.export",
    "push": "fourfold.training.push",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get("FOURFOLD_DEBUG", "").lower() not in ("", "0", "false", "no")
    if argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip().split("\n\n", 1)[1])
        if argv and argv[0] not in ("-h", "--help"):
            print(
                f"\nfourfold: error: unknown command {argv[0]!r} — choose one of {', '.join(COMMANDS)}.",
                file=sys.stderr,
            )
            return 2
        return 0
    command = argv[0]
    try:
        module = importlib.import_module(COMMANDS[command])
    except ModuleNotFoundError as error:
        if error.name != COMMANDS[command]:
            raise
        print(f"fourfold {command}: error: not available in this version — see `fourfold --help`.", file=sys.stderr)
        return 2
    try:
        return module.main(argv[1:]) or 0
    except UsageError as error:
        if debug:
            raise
        print(f"fourfold {command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fourfold {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
