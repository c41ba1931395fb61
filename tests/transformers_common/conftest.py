"""The shims are modules of transformers' test package (named `test_*.py` to match its imports), not tests."""

collect_ignore_glob = ["shims/*"]
