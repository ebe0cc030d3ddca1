"""Protobuf messages as prototxt, the same bytes under every protobuf version: fields
in the order caffe.proto declares them, floats as C++'s SimpleFtoa writes them,
strings C-escaped. (str(msg) differs between protobuf releases: field order and
float style; the committed model files must not.)"""
import struct

from google.protobuf import text_encoding
from google.protobuf.descriptor import FieldDescriptor as F


def to_text(msg, indent=""):
    """A message as prototxt, the same bytes under every protobuf version: fields in
    the order caffe.proto declares them, floats as C++'s SimpleFtoa writes them
    (shortest of %.6g / %.9g that reads back), strings C-escaped."""
    out = []
    for fd, value in sorted(msg.ListFields(), key=lambda f: f[0].index):
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else \
            fd.label == F.LABEL_REPEATED          # (protobuf 7 has no .label)
        for v in (value if repeated else [value]):
            if fd.type == F.TYPE_MESSAGE:
                out.append(f"{indent}{fd.name} {{\n{to_text(v, indent + '  ')}{indent}}}\n")
                continue
            if fd.type == F.TYPE_ENUM:
                s = fd.enum_type.values_by_number[v].name
            elif fd.type == F.TYPE_BOOL:
                s = "true" if v else "false"
            elif fd.type == F.TYPE_STRING:
                s = f'"{text_encoding.CEscape(v, as_utf8=False)}"'
            elif fd.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
                s = float_text(v, fd.type == F.TYPE_FLOAT)
            else:
                s = str(v)
            out.append(f"{indent}{fd.name}: {s}\n")
    return "".join(out)


def float_text(v, single):
    short, full = ("%.6g", "%.9g") if single else ("%.15g", "%.17g")
    s = short % v
    same = (struct.unpack("f", struct.pack("f", float(s)))[0] == struct.unpack(
        "f", struct.pack("f", v))[0]) if single else float(s) == v
    s = s if same else full % v
    return s.replace("e-0", "e-").replace("e+0", "e+")
