"""Pure imaging code (no Django): NIfTI I/O, orientation, volume cache, rendering, colour tables.

Every array that leaves this package is in RAS+ voxel order (index i grows toward the patient's
Right, j toward Anterior, k toward Superior) unless a docstring says otherwise.
"""
