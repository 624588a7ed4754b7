"""Test helpers for image I/O: a DICOM file written by pydicom, as a scanner would.

The one DICOM writer of the test suite (io, serve, detection input mapping)."""

from __future__ import annotations

import numpy as np


def write_dicom(path, pixels: np.ndarray, slope=1.0, intercept=0.0, center=None, width=None,
                photometric="MONOCHROME2", window: tuple[float, float] | None = None):
    """A valid 16-bit Part-10 DICOM file (DICM preamble) of ``pixels``, returned as its path.

    ``window=(center, width)`` is the same as ``center=..., width=...``.
    """
    if window is not None:
        center, width = window
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if center is not None:
        ds.WindowCenter = center
        ds.WindowWidth = width
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
