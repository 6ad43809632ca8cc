"""Surface meshes of one class in one scan (marching cubes), as binary PLY or STL."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from skimage import measure


def class_mesh(volume, cid: int, voxel_um: float, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (µm, in (depth, rows, cols) order) and triangles of the surface of class `cid`.

    Only the depth range holding the class is read; `step` > 1 downsamples every axis by that
    factor (block maximum) for big volumes.
    """
    depth = volume.shape[0]
    slabs_with: list[int] = []
    slab = 64
    for d0 in range(0, depth, slab):
        if np.any(np.asarray(volume[d0 : d0 + slab]) == cid):
            slabs_with.append(d0)
    if not slabs_with:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    d0, d1 = slabs_with[0], min(slabs_with[-1] + slab, depth)
    mask = np.asarray(volume[d0:d1]) == cid
    if step > 1:
        pad = [(0, (-s) % step) for s in mask.shape]
        mask = np.pad(mask, pad)
        shape = [s // step for s in mask.shape]
        mask = mask.reshape(shape[0], step, shape[1], step, shape[2], step).max(axis=(1, 3, 5))
    mask = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = measure.marching_cubes(mask, level=0.5)
    verts = (verts - 1) * step
    verts[:, 0] += d0
    return (verts * voxel_um).astype(np.float32), faces.astype(np.int32)


def write_ply(path: str | os.PathLike[str], verts: np.ndarray, faces: np.ndarray) -> Path:
    """Binary little-endian PLY; vertex x, y, z = cols, rows, depth in µm."""
    path = Path(path)
    xyz = verts[:, ::-1].astype("<f4")
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment batteryct surface, units um\n"
        f"element vertex {len(xyz)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    tri = np.zeros(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    tri["n"] = 3
    tri["v"] = faces
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(xyz.tobytes())
        handle.write(tri.tobytes())
    os.replace(tmp, path)
    return path


def write_stl(path: str | os.PathLike[str], verts: np.ndarray, faces: np.ndarray) -> Path:
    """Binary STL; x, y, z = cols, rows, depth in µm."""
    path = Path(path)
    xyz = verts[:, ::-1].astype(np.float32)
    tri = xyz[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)
    record = np.zeros(len(faces), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    record["n"], record["v"] = normals, tri
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(b"batteryct surface, units um".ljust(80, b" "))
        handle.write(struct.pack("<I", len(faces)))
        handle.write(record.tobytes())
    os.replace(tmp, path)
    return path
