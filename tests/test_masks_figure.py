"""`fourfold masks`: the figure is written, and the matrices it draws (from the models' own mask code) are the
patterns each configuration promises."""

import torch

from fourfold.training import cli
from fourfold.training.masks_figure import mask_matrices

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def matrix(rows: str) -> torch.BoolTensor:
    """'■' = may attend, '.' = masked; one string per query row."""
    return torch.tensor([[cell == "■" for cell in row.split()] for row in rows.strip().splitlines()])


CAUSAL_6 = matrix("""
■ . . . . .
■ ■ . . . .
■ ■ ■ . . .
■ ■ ■ ■ . .
■ ■ ■ ■ ■ .
■ ■ ■ ■ ■ ■
""")
PADDED_LAST_KEY_6 = matrix("\n".join(["■ ■ ■ ■ ■ ."] * 6))


def test_default_matrices_match_the_worked_examples():
    matrices = mask_matrices(length=6, prefix_length=3, padding=1)
    assert list(matrices) == ["encoder", "decoder", "prefix-lm", "seq2seq-self", "seq2seq-cross"]
    assert all(m.dtype == torch.bool and m.shape == (6, 6) for m in matrices.values())
    assert torch.equal(matrices["encoder"], PADDED_LAST_KEY_6)
    assert torch.equal(matrices["decoder"], CAUSAL_6)
    assert torch.equal(matrices["seq2seq-self"], CAUSAL_6)
    assert torch.equal(matrices["seq2seq-cross"], PADDED_LAST_KEY_6)
    assert torch.equal(
        matrices["prefix-lm"],
        matrix("""
        ■ ■ ■ . . .
        ■ ■ ■ . . .
        ■ ■ ■ . . .
        ■ ■ ■ ■ . .
        ■ ■ ■ ■ ■ .
        ■ ■ ■ ■ ■ ■
        """),
    )


def test_without_padding_or_prefix():
    """The masks builders return `None` for an unpadded bidirectional pattern; the figure draws what it stands for."""
    matrices = mask_matrices(length=4, prefix_length=0, padding=0)
    full, causal = torch.ones(4, 4, dtype=torch.bool), torch.ones(4, 4, dtype=torch.bool).tril()
    assert torch.equal(matrices["encoder"], full)
    assert torch.equal(matrices["seq2seq-cross"], full)
    assert torch.equal(matrices["prefix-lm"], causal)  # no prefix: exactly the decoder
    assert torch.equal(matrices["decoder"], causal)


def test_whole_input_as_prefix_is_bidirectional():
    matrices = mask_matrices(length=5, prefix_length=5, padding=0)
    assert matrices["prefix-lm"].all()


def test_command_writes_a_png(tmp_path, capsys):
    output = tmp_path / "figures" / "masks.png"
    assert cli.main(["masks", "--output", str(output), "--length", "5", "--prefix-length", "2"]) == 0
    assert str(output) in capsys.readouterr().out
    data = output.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # the IHDR chunk
    assert width > 3 * height > 300  # one row of five panels
