"""Pure imaging code (no Django): NIfTI I/O and orientation, slicing and projections, windowing,
label overlays, encoding, thumbnails and label statistics.

Every array that leaves this package is in RAS+ voxel order (index i grows toward the patient's
Right, j toward Anterior, k toward Superior) unless a docstring says otherwise.
"""
