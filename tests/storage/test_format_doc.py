"""docs/format.md stays true to format.py: every on-disk constant is named in the drawing, with its value."""

import pathlib
import struct

from raykv.storage import format as F

DOC = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "format.md").read_text()


def test_every_constant_of_format_py_is_documented():
    names = [n for n in dir(F) if n.isupper() and not n.startswith("_")]
    missing = [n for n in names if n not in DOC]
    assert not missing, f"docs/format.md does not mention {missing}"


def test_struct_layouts_in_the_doc_match_the_code():
    for name in dir(F):
        st = getattr(F, name)
        if isinstance(st, struct.Struct):
            assert f'"{st.format}"' in DOC, f"{name} = {st.format!r} is not drawn in docs/format.md"
    assert F.FOOTER_SIZE == 52 and "52 bytes" in DOC
    assert f"{F.TABLE_MAGIC:#X}".replace("0X", "0x") in DOC
    assert f"{F.MANIFEST_MAGIC:#X}".replace("0X", "0x") in DOC
