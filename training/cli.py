"""The `fourfold` command line: one verb per job, each a module with its own `main(argv)`.

fourfold demo       the README's main job
fourfold masks      draw the four attention patterns (from the models' own mask code) to a PNG
fourfold pretrain   pretrain with a self-supervised objective          (fourfold.training.pretrain)
fourfold finetune   fine-tune on a labelled dataset, full or PEFT      (fourfold.training.finetune)
fourfold convert    import a BERT/RoBERTa/GPT-2/Llama/BART checkpoint   (fourfold.training.convert)
fourfold push       upload a trained output folder to the Hub          (fourfold.training.push)
"""

import importlib
import sys

COMMANDS = {
    "demo": "fourfold.training.demo",
    "masks": "fourfold.training.masks_figure",
    "pretrain": "fourfold.training.pretrain",
    "finetune": "fourfold.training.finetune",
    "convert": "fourfold.training.convert",
    "push": "fourfold.training.push",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip().split("\n\n", 1)[1])
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nUnknown command {argv[0]!r}.", file=sys.stderr)
            return 2
        return 0
    try:
        module = importlib.import_module(COMMANDS[argv[0]])
    except ModuleNotFoundError as error:
        if error.name != COMMANDS[argv[0]]:
            raise
        print(f"`fourfold {argv[0]}` is not available in this version.", file=sys.stderr)
        return 2
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
