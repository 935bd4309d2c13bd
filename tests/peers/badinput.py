"""A corpus of malformed and hostile DICOM instances, generated from a valid phantom series.

Each :class:`Case` is what a careless or hostile sender could put on the wire: truncated
data sets, wrong VRs, absurd lengths, no pixel data, non-CT, a one-slice series, several
series in one study, undecodable pixel data, and UIDs crafted to escape the spool folder.
Each states the C-STORE status the node must answer for every instance, whether the node
keeps it, and the end state and a fragment of the reason the node (``l3node status``) and
``l3node predict`` must give.  Instances carry their data set as raw bytes (the SCU sends
them as they are); :meth:`Instance.part10` is the same on disk, for DCMTK and ``predict``.
"""

from __future__ import annotations

import io
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pydicom.filereader
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

from l3node.uids import derived_uid

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
SUCCESS, A900, C000 = 0x0000, 0xA900, 0xC000


@dataclass(frozen=True)
class Instance:
    """One C-STORE: the data set bytes, and the request's SOP Class/Instance UID."""

    body: bytes
    sop_instance_uid: str
    status: int  # what the node must answer
    stored: bool  # whether the node keeps it in the spool
    sop_class_uid: str = CT
    transfer_syntax: str = EXPLICIT_LE

    def part10(self) -> bytes:
        """The instance as a DICOM file: preamble, file meta information, data set."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = self.sop_class_uid
        meta.MediaStorageSOPInstanceUID = self.sop_instance_uid
        meta.TransferSyntaxUID = self.transfer_syntax
        out = io.BytesIO()
        out.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(out, meta, enforce_standard=True)
        return out.getvalue() + self.body


@dataclass(frozen=True)
class Case:
    """One hostile sending; ``outcome`` is the study's end state in the node ("" when
    nothing is kept) and ``reason`` a fragment of the node's and ``predict``'s message."""

    name: str
    hostile: str
    instances: tuple[Instance, ...]
    study_uid: str  # as the node will record it ("" when nothing is kept)
    outcome: str = ""
    reason: str = ""
    predict: str = ""  # a fragment of `l3node predict --json` output for the case's folder
    storescu: bool = False  # DCMTK storescu reads these files and can send them
    escape_paths: tuple[str, ...] = field(default=())  # must never exist afterwards


def encode(ds: Dataset) -> bytes:
    """A data set in Explicit VR Little Endian, without file meta information."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def raw_element(group: int, elem: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """One Explicit VR LE element, its length field as given (absurd lengths allowed)."""
    n = len(value) if length is None else length
    head = struct.pack("<HH", group, elem) + vr.encode("ascii")
    if vr in ("OB", "OW", "OF", "SQ", "UT", "UN", "UC", "UR", "OD", "OL", "OV"):
        return head + b"\0\0" + struct.pack("<I", n) + value
    return head + struct.pack("<H", n & 0xFFFF) + value


def splice(ds: Dataset, tag: int, raw: bytes) -> bytes:
    """``ds`` encoded with element ``tag`` replaced by the raw bytes given (tag order kept)."""
    lo, hi = Dataset(), Dataset()
    for el in ds:
        if el.tag == tag:
            continue
        (lo if el.tag < tag else hi)[el.tag] = el
    return encode(lo) + raw + encode(hi)


class _Maker:
    """Derives per-case copies of the valid series (new study/series/SOP UIDs)."""

    def __init__(self, series_dir: Path, token: str) -> None:
        self.slices = [pydicom.dcmread(f) for f in sorted(Path(series_dir).glob("*.dcm"))]
        self.token = token

    def copies(self, case: str, n: int, start: int = 0, series: str = "a",
               study: str | None = None) -> list[Dataset]:
        out = []
        study_uid = study or derived_uid("badinput", self.token, case)
        series_uid = derived_uid("badinput", self.token, case, series)
        for k in range(n):
            ds = pydicom.dcmread(io.BytesIO(_file_bytes(self.slices[start + k])))
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = derived_uid("badinput", self.token, case, series, k)
            out.append(ds)
        return out

    @staticmethod
    def ok(ds: Dataset) -> Instance:
        return Instance(encode(ds), str(ds.SOPInstanceUID), SUCCESS, True)


def _file_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_corpus(series_dir: Path, token: str) -> list[Case]:
    """The corpus, from a valid CT series of at least 40 slices (a 64 × 64 phantom is
    enough); ``token`` makes UIDs and escape paths unique to one test run."""
    m = _Maker(series_dir, token)
    cases: list[Case] = []
    rng = random.Random(7)

    # -- refused at C-STORE: nothing kept ----------------------------------------------------
    base = m.copies("refused", 4)
    body = encode(base[0])
    sop = str(base[0].SOPInstanceUID)
    pix = body.find(b"\xe0\x7f\x10\x00")
    cases.append(Case("truncated-header", "data set cut after 37 bytes, inside an element",
                      (Instance(body[:37], sop, A900, False),), "",
                      predict="no CT series"))
    cases.append(Case("truncated-before-uids", "data set cut half way to the pixel data",
                      (Instance(body[: pix // 4], str(base[1].SOPInstanceUID), A900, False),),
                      "", predict="no CT series"))
    cases.append(Case("empty", "a data set of zero bytes",
                      (Instance(b"", str(base[2].SOPInstanceUID), A900, False),), "",
                      predict="no CT series"))
    noise = bytes(rng.randrange(256) for _ in range(4096))
    cases.append(Case("garbage", "4 KiB of random bytes as the data set",
                      (Instance(noise, str(base[3].SOPInstanceUID), A900, False),), "",
                      predict="no CT series"))
    other = m.copies("mismatch", 1)[0]
    cases.append(Case("sop-mismatch", "the request's SOP Instance UID is not the data set's",
                      (Instance(encode(other), "1.2.3.4.5.6.7.8.9", A900, False),), "",
                      storescu=False, predict="has 1 slices"))
    deflate = m.copies("deflate", 1)[0]
    cases.append(Case("deflate-garbage", "Deflated transfer syntax, the stream is not zlib",
                      (Instance(noise, str(deflate.SOPInstanceUID), C000, False,
                                transfer_syntax=DEFLATED),), "", predict="no CT series"))
    absurd = m.copies("absurd-length", 1)[0]
    raw = raw_element(0x0020, 0x000E, "UI", b"1.2.3", length=0xFFF0)
    # pydicom reads the rest of the data set as the UID: kept (under a hashed folder name),
    # and the series loader finds no geometry in what is left
    cases.append(Case("absurd-length", "Series Instance UID declares 65520 bytes; 5 follow",
                      (Instance(splice(absurd, 0x0020000E, raw), str(absurd.SOPInstanceUID),
                                SUCCESS, True),), absurd.StudyInstanceUID, "failed",
                      "no image geometry", predict="no image geometry"))
    undef = m.copies("undefined-length", 1)[0]
    raw = raw_element(0x0020, 0x000D, "UN", b"1.2.3", length=0xFFFFFFFF)
    cases.append(Case("undefined-length", "Study Instance UID as UN of undefined length",
                      (Instance(splice(undef, 0x0020000D, raw), str(undef.SOPInstanceUID),
                                C000, False),), "", predict="no CT series"))

    # -- kept, then refused by the series loader with a reason --------------------------------
    series = m.copies("no-pixel-data", 9)
    for ds in series:
        del ds.PixelData
    cases.append(Case("no-pixel-data", "a 9-slice CT series without Pixel Data",
                      tuple(m.ok(ds) for ds in series), series[0].StudyInstanceUID, "failed",
                      "no pixel data", predict="no pixel data", storescu=True))
    series = m.copies("one-slice", 1, start=20)
    cases.append(Case("one-slice", "a one-slice CT series", (m.ok(series[0]),),
                      series[0].StudyInstanceUID, "failed", "1 slices",
                      predict="at least 8 are needed", storescu=True))
    series = m.copies("wrong-vr", 9, start=10)
    wrong = []
    for ds in series:  # Rows as a decimal string that is no number: no usable geometry
        wrong.append(Instance(splice(ds, 0x00280010, raw_element(0x0028, 0x0010, "DS",
                                                                  b"ROWS")),
                              str(ds.SOPInstanceUID), SUCCESS, True))
    cases.append(Case("wrong-vr", "Rows (US) sent as DS 'ROWS'", tuple(wrong),
                      series[0].StudyInstanceUID, "failed", "no image geometry",
                      predict="no image geometry"))
    series = m.copies("wrong-vr-number", 9, start=10)
    wrong = []
    for ds in series:  # InstanceNumber and SliceThickness that are not numbers
        body = splice(ds, 0x00200013, raw_element(0x0020, 0x0013, "IS", b"XIV "))
        wrong.append(Instance(body, str(ds.SOPInstanceUID), SUCCESS, True))
    cases.append(Case("wrong-vr-number", "Instance Number 'XIV' (IS must be an integer)",
                      tuple(wrong), series[0].StudyInstanceUID, "exported", "",
                      predict='"status": "not_found"'))
    series = m.copies("non-ct", 1)
    mr = series[0]
    mr.SOPClassUID, mr.Modality = MR, "MR"
    cases.append(Case("non-ct", "an MR Image Storage instance",
                      (Instance(encode(mr), str(mr.SOPInstanceUID), SUCCESS, False,
                                sop_class_uid=MR),), "", predict="no CT series",
                      storescu=True))

    # -- kept, refused when the pixels are decoded ---------------------------------------------
    series = m.copies("truncated-pixels", 10, start=30)
    insts = [m.ok(ds) for ds in series[:9]]
    body = encode(series[9])
    insts.append(Instance(body[: len(body) - 3000], str(series[9].SOPInstanceUID), SUCCESS,
                          True))
    cases.append(Case("truncated-pixels", "one slice's pixel data cut short", tuple(insts),
                      series[0].StudyInstanceUID, "failed", "pixel data",
                      predict="pixel data"))
    series = m.copies("huge-matrix", 9, start=30)
    for ds in series:
        ds.Rows = ds.Columns = 65535
    cases.append(Case("huge-matrix", "Rows = Columns = 65535 over 64 × 64 pixels",
                      tuple(m.ok(ds) for ds in series), series[0].StudyInstanceUID, "failed",
                      "65535", predict="65535"))
    series = m.copies("mixed-matrix", 9, start=30)
    small = series[4]
    small.Rows = small.Columns = 32
    small.PixelData = small.PixelData[: 32 * 32 * 2]
    cases.append(Case("mixed-matrix", "one slice of 32 × 32 in a series of 64 × 64",
                      tuple(m.ok(ds) for ds in series), series[0].StudyInstanceUID, "failed",
                      "image sizes", predict="image sizes"))
    series = m.copies("bad-jpeg2000", 9, start=30)
    insts = []
    for ds in series:  # JPEG 2000 Lossless transfer syntax; the fragment is not a codestream
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
        ds["PixelData"].VR = "OB"
        body = encode(ds)
        insts.append(Instance(body, str(ds.SOPInstanceUID), SUCCESS, True,
                              transfer_syntax=J2K_LOSSLESS))
    cases.append(Case("bad-jpeg2000", "JPEG 2000 fragments that are no codestream",
                      tuple(insts), series[0].StudyInstanceUID, "failed", "pixel data",
                      predict="pixel data"))

    # -- several series in one study: the best is chosen, the others named ---------------------
    study = derived_uid("badinput", token, "mixed-series")
    a = m.copies("mixed-series", 12, start=30, series="a", study=study)
    b = m.copies("mixed-series", 12, start=30, series="b", study=study)
    for ds in b:
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    c = m.copies("mixed-series", 3, start=50, series="c", study=study)
    cases.append(Case("mixed-series", "three series in one study: primary, derived, 3 slices",
                      tuple(m.ok(ds) for ds in a + b + c), study, "exported",
                      "not the best candidate", predict='"status"', storescu=True))

    # -- UIDs crafted to escape the spool --------------------------------------------------
    esc = f"/tmp/l3node-escape-{token}"
    series = m.copies("escape-study", 9, start=30)
    for ds in series:
        ds.StudyInstanceUID = f"../../../../../../..{esc}-study"
        ds.SeriesInstanceUID = f"/etc/l3node-escape-{token}"
    cases.append(Case("escape-study", "Study UID '../../..', Series UID '/etc/...'",
                      tuple(m.ok(ds) for ds in series), series[0].StudyInstanceUID,
                      "exported", "", predict='"status"', storescu=True,
                      escape_paths=(f"{esc}-study", f"/etc/l3node-escape-{token}")))
    series = m.copies("escape-sop", 9, start=30)
    for k, ds in enumerate(series):
        ds.SOPInstanceUID = f"../../../..{esc}-sop{k}"[:64]
    cases.append(Case("escape-sop", "SOP Instance UIDs '../../../../tmp/...'",
                      tuple(m.ok(ds) for ds in series), series[0].StudyInstanceUID,
                      "exported", "", predict='"status"', storescu=True,
                      escape_paths=tuple(f"{esc}-sop{k}"[:64] for k in range(9))))
    series = m.copies("escape-nul", 9, start=30)
    for ds in series:
        ds.StudyInstanceUID = "1.2.3\0/../../../.." + esc + "-nul"
        ds.SeriesInstanceUID = ".."
    cases.append(Case("escape-nul", "Study UID with a NUL and '/../'; Series UID '..'",
                      tuple(m.ok(ds) for ds in series), series[0].StudyInstanceUID,
                      "exported", "", predict='"status"', escape_paths=(f"{esc}-nul",)))
    series = m.copies("long-uid", 9, start=30)
    for ds in series:
        ds.StudyInstanceUID = "1." + "2" * 300
    cases.append(Case("long-uid", "a 302-character Study Instance UID",
                      tuple(m.ok(ds) for ds in series), series[0].StudyInstanceUID,
                      "exported", "", predict='"status"'))
    return cases


# -- the upper layer, byte by byte: PDUs as a careless or hostile peer puts them on a socket --
# PS3.8 §9.3.  Built by hand, not by pynetdicom, so that every length, item and flag can be
# wrong: the fuzzer (tests/peers/test_reliability_fuzz.py) mutates these bytes.
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
CT_CONTEXT, ECHO_CONTEXT = 1, 3  # the presentation context IDs :func:`associate_rq` proposes


def pdu(kind: int, body: bytes, length: int | None = None) -> bytes:
    """A PDU: type, reserved byte, 4-byte big-endian length (as given, when given), body."""
    return struct.pack(">BBL", kind, 0, len(body) if length is None else length) + body


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(called: str = "L3NODE", calling: str = "FUZZ", max_pdu: int = 16384) -> bytes:
    """A-ASSOCIATE-RQ proposing CT Image Storage in Explicit VR LE (context 1) and
    Verification in Implicit VR LE (context 3)."""
    def context(cid: int, abstract: str, transfer: str) -> bytes:
        return _item(0x20, bytes([cid, 0, 0, 0]) + _item(0x30, abstract.encode())
                     + _item(0x40, transfer.encode()))

    user = _item(0x50, _item(0x51, struct.pack(">L", max_pdu))
                 + _item(0x52, b"1.2.826.0.1.3680043.10.1177.99"))
    head = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16)
            + bytes(32))
    return pdu(A_ASSOCIATE_RQ, head + _item(0x10, APPLICATION_CONTEXT.encode())
               + context(CT_CONTEXT, CT, EXPLICIT_LE)
               + context(ECHO_CONTEXT, VERIFICATION, IMPLICIT_LE) + user)


def pdv(context_id: int, control: int, data: bytes, length: int | None = None) -> bytes:
    """A presentation data value item: length (of what follows it), context ID, message
    control header (bit 0: command, bit 1: last fragment), the fragment."""
    n = 2 + len(data) if length is None else length
    return struct.pack(">LBB", n, context_id, control) + data


def command_set(elements: dict[int, tuple[str, object]]) -> bytes:
    """A DIMSE command set in Implicit VR LE, with its group length first (PS3.7 §6.3)."""
    ds = Dataset()
    for tag, (vr, value) in elements.items():
        ds.add_new(tag, vr, value)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    body = fp.getvalue()
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def c_store_rq(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    return command_set({0x00000002: ("UI", sop_class), 0x00000100: ("US", 0x0001),
                        0x00000110: ("US", message_id), 0x00000700: ("US", 0),
                        0x00000800: ("US", 0x0000), 0x00001000: ("UI", sop_instance)})


def c_echo_rq(message_id: int = 1) -> bytes:
    return command_set({0x00000002: ("UI", VERIFICATION), 0x00000100: ("US", 0x0030),
                        0x00000110: ("US", message_id), 0x00000800: ("US", 0x0101)})


def release_rq() -> bytes:
    return pdu(A_RELEASE_RQ, bytes(4))


def abort_rq() -> bytes:
    return pdu(A_ABORT, bytes(4))


@dataclass
class Reply:
    """What the node sent back, PDU by PDU: their types, the DIMSE statuses in its P-DATA
    command fragments, the A-ASSOCIATE-RJ (result, source, reason) and A-ABORT (source,
    reason) fields, and whether it closed the connection."""

    kinds: list[int] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    acked_sops: list[str] = field(default_factory=list)  # C-STORE-RSP with Success ...
    acked_classes: list[str] = field(default_factory=list)  # ... and its SOP Class UID
    rejected: tuple[int, int, int] | None = None
    aborted: tuple[int, int] | None = None
    closed: bool = False
    undecodable: list[str] = field(default_factory=list)
    _buffer: bytearray = field(default_factory=bytearray)
    _command: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        """Take bytes from the socket; decode every whole PDU among them."""
        self._buffer += data
        while len(self._buffer) >= 6:
            kind, _, n = struct.unpack(">BBL", self._buffer[:6])
            if len(self._buffer) < 6 + n:
                return
            body = bytes(self._buffer[6: 6 + n])
            del self._buffer[: 6 + n]
            self.kinds.append(kind)
            if kind == A_ASSOCIATE_RJ:
                self.rejected = (body[1], body[2], body[3])
            elif kind == A_ABORT:
                self.aborted = (body[2], body[3])
            elif kind == P_DATA_TF:
                self._p_data(body)

    def _p_data(self, body: bytes) -> None:
        pos = 0
        while pos + 6 <= len(body):
            n, _, control = struct.unpack(">LBB", body[pos: pos + 6])
            fragment = body[pos + 6: pos + 4 + n]
            pos += 4 + n
            if control & 1:  # a command fragment: a whole command set once the last came
                self._command += fragment
                if not control & 2:
                    continue
                command, self._command = bytes(self._command), bytearray()
                try:
                    ds = pydicom.filereader.read_dataset(io.BytesIO(command), True, True)
                    self.statuses.append(int(ds.Status))
                    if int(ds.CommandField) == 0x8001 and int(ds.Status) == 0:
                        self.acked_sops.append(str(ds.get("AffectedSOPInstanceUID", "")))
                        self.acked_classes.append(str(ds.get("AffectedSOPClassUID", "")))
                except Exception as exc:  # a response we cannot read is itself a finding
                    self.undecodable.append(f"{type(exc).__name__}: {exc}")

    @property
    def established(self) -> bool:
        return A_ASSOCIATE_AC in self.kinds

    @property
    def released(self) -> bool:
        return A_RELEASE_RP in self.kinds
