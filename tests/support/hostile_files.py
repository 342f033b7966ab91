"""Files an attacker would upload, built without ever holding their decoded size in memory."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, generate_uid

_ZERO_BLOCK = bytes(1 << 20)


def deflated_dicom_slice(
    path: Path,
    *,
    rows: int,
    columns: int,
    position_mm: float,
    series_uid: str,
    trailing_bytes: int = 0,
    private_bytes: int = 0,
    preamble: bool = True,
) -> Path:
    """One CT slice of ``rows`` x ``columns`` int16 zeros in DICOM's deflated transfer syntax
    (1.2.840.10008.1.2.1.99): the whole data set, pixels included, is one deflate stream, so a
    slice of hundreds of MB takes a few hundred kB; ``trailing_bytes`` zeros follow the pixel
    data inside the stream; ``private_bytes`` zeros form a private tag (0009,1000) before the image
    size (Rows), so that the header alone is that large. ``preamble=False`` leaves out the 128
    bytes and ``DICM`` that open a DICOM file. Streamed: never more than 1 MB in memory."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid()
    header = Dataset()
    header.SOPClassUID = CTImageStorage
    header.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    header.Modality = "CT"
    header.SeriesInstanceUID = series_uid
    header.ImagePositionPatient = [0.0, 0.0, position_mm]
    header.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    header.PixelSpacing = [0.5, 0.5]
    header.SliceThickness = 1.0
    header.SamplesPerPixel = 1
    header.PhotometricInterpretation = "MONOCHROME2"
    header.Rows, header.Columns = rows, columns
    header.BitsAllocated, header.BitsStored, header.HighBit = 16, 16, 15
    header.PixelRepresentation = 1
    header.RescaleIntercept, header.RescaleSlope = -1024, 1
    before, after = Dataset(), Dataset()
    for element in header:
        (before if element.tag < 0x00090000 else after).add(element)
    if private_bytes:
        before.add_new(0x00090010, "LO", "HOSTILE")  # the private creator of block 0x10
    pixel_bytes = rows * columns * 2
    pixel_element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)

    def zeros(sink, count: int) -> None:
        while count:
            block = _ZERO_BLOCK[: min(count, len(_ZERO_BLOCK))]
            sink.write(deflate.compress(block))
            count -= len(block)

    with open(path, "wb") as sink:
        if preamble:
            sink.write(b"\0" * 128 + b"DICM")
        meta_bytes = DicomBytesIO()
        meta_bytes.is_little_endian, meta_bytes.is_implicit_VR = True, False
        write_file_meta_info(meta_bytes, meta, enforce_standard=True)
        sink.write(meta_bytes.getvalue())
        sink.write(deflate.compress(_encoded(before)))
        if private_bytes:
            sink.write(
                deflate.compress(struct.pack("<HH2sHI", 0x0009, 0x1000, b"OB", 0, private_bytes))
            )
            zeros(sink, private_bytes)
        sink.write(deflate.compress(_encoded(after) + pixel_element))
        zeros(sink, pixel_bytes + trailing_bytes)
        sink.write(deflate.flush())
    return path


def _encoded(dataset: Dataset) -> bytes:
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_dataset(encoded, dataset)
    return encoded.getvalue()


def deflated_dicom_zip(
    path: Path, *, rows: int, columns: int, slices: int, **slice_options
) -> Path:
    """A zip of one series of ``slices`` deflated DICOM slices (see :func:`deflated_dicom_slice`,
    which takes ``slice_options``)."""
    series = generate_uid()
    # Stored, not deflated again: the zip's own expansion limits then see nothing to refuse.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for number in range(slices):
            member = path.with_name(f"slice{number:03d}.dcm")
            deflated_dicom_slice(
                member,
                rows=rows,
                columns=columns,
                position_mm=float(number),
                series_uid=series,
                **slice_options,
            )
            archive.write(member, f"series/{member.name}")
            member.unlink()
    return path


def nifti_with_vox_offset(path: Path, *, vox_offset: int, shape=(16, 16, 8)) -> Path:
    """A ``.nii.gz`` whose header puts the voxel data ``vox_offset`` bytes into the file (zero
    padding between, which gzip shrinks to almost nothing). Streamed in 1 MB blocks."""
    data = np.zeros(shape, dtype=np.int16)
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_zooms((1.0, 1.0, 1.0))
    header.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    header.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    header["vox_offset"] = vox_offset
    block = header.binaryblock
    with igzip.open(path, "wb", compresslevel=0) as sink:
        sink.write(block)
        left = vox_offset - len(block)
        while left > 0:
            sink.write(_ZERO_BLOCK[: min(left, len(_ZERO_BLOCK))])
            left -= len(_ZERO_BLOCK)
        sink.write(data.tobytes(order="F"))
    return path
