"""Vectorized S2 cell ids (numpy) for millions of points at once.

Per-point ``s2sphere`` calls cost ~20 µs each in Python, which is minutes at MP-16 scale. This module
re-implements the handful of S2 operations we need over numpy arrays with bit-for-bit the same
arithmetic as ``s2sphere`` (quadratic projection, the same face choice and Hilbert-curve tables, which
we take from ``s2sphere`` itself rather than re-deriving), so both produce the same cell ids.
Cell ids are ``uint64``; tokens are S2's hex strings with trailing zeros stripped.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import s2sphere.sphere as _s2

MAX_LEVEL = 30
MAX_SIZE = 1 << MAX_LEVEL
_LOOKUP_BITS = 4
_SWAP_MASK = 1
_SWAP_INVERT = 3
_LOOKUP_POS = np.asarray(_s2.LOOKUP_POS, dtype=np.uint64)
_LOOKUP_IJ = np.asarray(_s2.LOOKUP_IJ, dtype=np.int64)
_U64 = np.uint64
_TOKEN_RE = re.compile(r"^[0-9a-fA-F]{1,16}$")


# --------------------------------------------------------------------------- points <-> cell ids
def latlon_to_xyz(lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Unit vectors (n, 3) for latitudes/longitudes in degrees (same formula as s2sphere)."""
    phi = np.radians(np.asarray(lats, dtype=np.float64))
    theta = np.radians(np.asarray(lons, dtype=np.float64))
    cosphi = np.cos(phi)
    return np.stack([np.cos(theta) * cosphi, np.sin(theta) * cosphi, np.sin(phi)], axis=-1)


def xyz_to_latlon(xyz: np.ndarray) -> np.ndarray:
    """Latitude/longitude in degrees (n, 2) of (not necessarily unit) vectors (n, 3)."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    return np.stack([lat, lon], axis=-1)


def _uv_to_st(u: np.ndarray) -> np.ndarray:
    return np.where(u >= 0, 0.5 * np.sqrt(1 + 3 * np.abs(u)), 1 - 0.5 * np.sqrt(1 + 3 * np.abs(u)))


def _st_to_uv(s: np.ndarray) -> np.ndarray:
    return np.where(s >= 0.5, (1.0 / 3.0) * (4 * s * s - 1), (1.0 / 3.0) * (1 - 4 * (1 - s) * (1 - s)))


def _st_to_ij(s: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(MAX_SIZE * s), 0, MAX_SIZE - 1).astype(np.int64)


def xyz_to_face_uv(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cube face (0..5) and face coordinates (u, v) of vectors (n, 3)."""
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    ax, ay, az = np.abs(x), np.abs(y), np.abs(z)
    # Same tie-breaking as s2sphere's Point.largest_abs_component.
    axis = np.where(ax > ay, np.where(ax > az, 0, 2), np.where(ay > az, 1, 2))
    comp = np.choose(axis, (x, y, z))
    face = axis + 3 * (comp < 0)
    # u, v numerators/denominators for each face, as in S2's ValidFaceXYZtoUV.
    un = np.choose(face, (y, -x, -x, z, z, -y))
    vn = np.choose(face, (z, z, -y, y, -x, -x))
    return face.astype(np.int64), un / comp, vn / comp


def face_uv_to_xyz(face: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inverse of :func:`xyz_to_face_uv` (vectors are not normalized)."""
    one = np.ones_like(u)
    x = np.choose(face, (one, -u, -u, -one, v, v))
    y = np.choose(face, (u, one, -v, -v, -one, u))
    z = np.choose(face, (v, v, one, -u, -u, -one))
    return np.stack([x, y, z], axis=-1)


def face_ij_to_cell_id(face: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Leaf cell ids (uint64) from face and leaf coordinates i, j in [0, 2**30)."""
    face = np.asarray(face, dtype=np.uint64)
    i = np.asarray(i, dtype=np.uint64)
    j = np.asarray(j, dtype=np.uint64)
    n = face << _U64(60)
    bits = face & _U64(_SWAP_MASK)
    mask = _U64((1 << _LOOKUP_BITS) - 1)
    for k in range(7, -1, -1):  # 8 steps of 4 bits: constant, vectorized over all points
        shift = _U64(k * _LOOKUP_BITS)
        bits = bits + (((i >> shift) & mask) << _U64(_LOOKUP_BITS + 2)) + (((j >> shift) & mask) << _U64(2))
        bits = _LOOKUP_POS[bits]
        n |= (bits >> _U64(2)) << _U64(k * 2 * _LOOKUP_BITS)
        bits &= _U64(_SWAP_INVERT)
    return n * _U64(2) + _U64(1)


def cell_id_to_face_ij(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face and leaf coordinates (i, j) of the (centre leaf of the) given cells."""
    ids = np.asarray(ids, dtype=np.uint64)
    face = (ids >> _U64(61)).astype(np.int64)
    bits = face & _SWAP_MASK
    i = np.zeros(ids.shape, np.int64)
    j = np.zeros(ids.shape, np.int64)
    for k in range(7, -1, -1):
        nbits = MAX_LEVEL - 7 * _LOOKUP_BITS if k == 7 else _LOOKUP_BITS
        chunk = ((ids >> _U64(k * 2 * _LOOKUP_BITS + 1)) & _U64((1 << (2 * nbits)) - 1)).astype(np.int64)
        bits = _LOOKUP_IJ[bits + (chunk << 2)]
        i += (bits >> (_LOOKUP_BITS + 2)) << (k * _LOOKUP_BITS)
        j += ((bits >> 2) & ((1 << _LOOKUP_BITS) - 1)) << (k * _LOOKUP_BITS)
        bits &= _SWAP_INVERT
    return face, i, j


def latlon_to_cell_id(lats: np.ndarray, lons: np.ndarray, level: int = MAX_LEVEL) -> np.ndarray:
    """S2 cell ids (uint64) at ``level`` of points in degrees, identical to ``s2sphere``'s."""
    face, u, v = xyz_to_face_uv(latlon_to_xyz(lats, lons))
    ids = face_ij_to_cell_id(face, _st_to_ij(_uv_to_st(u)), _st_to_ij(_uv_to_st(v)))
    return ids if level == MAX_LEVEL else parent(ids, level)


# --------------------------------------------------------------------------- hierarchy arithmetic
def lsb_for_level(level: int | np.ndarray) -> np.ndarray:
    """Lowest set bit of the ids of cells at ``level``."""
    return _U64(1) << (_U64(2) * (_U64(MAX_LEVEL) - np.asarray(level, dtype=np.uint64)))


def parent(ids: np.ndarray, level: int) -> np.ndarray:
    """Ancestor ids at ``level`` (ids must be at ``level`` or finer)."""
    lsb = lsb_for_level(level)
    return (np.asarray(ids, dtype=np.uint64) & ~(lsb - _U64(1))) | lsb


def cell_level(ids: np.ndarray) -> np.ndarray:
    """S2 level (0..30) of each cell id."""
    ids = np.asarray(ids, dtype=np.uint64)
    lsb = ids & (~ids + _U64(1))
    # lsb is a power of two, so log2 is exact in float64.
    return (MAX_LEVEL - np.log2(lsb.astype(np.float64)).astype(np.int64) // 2).astype(np.int64)


def range_min(ids: np.ndarray) -> np.ndarray:
    """Smallest leaf id inside each cell."""
    ids = np.asarray(ids, dtype=np.uint64)
    return ids - ((ids & (~ids + _U64(1))) - _U64(1))


def range_max(ids: np.ndarray) -> np.ndarray:
    """Largest leaf id inside each cell."""
    ids = np.asarray(ids, dtype=np.uint64)
    return ids + ((ids & (~ids + _U64(1))) - _U64(1))


def containing_cell_index(cell_ids_sorted: np.ndarray, leaf_ids: np.ndarray) -> np.ndarray:
    """Index into ``cell_ids_sorted`` (disjoint cells, ascending) of the cell holding each leaf; -1 if none."""
    cells = np.asarray(cell_ids_sorted, dtype=np.uint64)
    if cells.size == 0:
        return np.full(np.shape(leaf_ids), -1, np.int64)
    lo = range_min(cells)
    idx = np.searchsorted(lo, leaf_ids, side="right") - 1
    ok = idx >= 0
    idx_c = np.clip(idx, 0, None)
    ok &= leaf_ids <= range_max(cells)[idx_c]
    return np.where(ok, idx_c, -1).astype(np.int64)


# --------------------------------------------------------------------------- tokens
def ids_to_tokens(ids: Iterable[int] | np.ndarray) -> list[str]:
    """S2 tokens (hex, trailing zeros stripped) of cell ids."""
    return [format(int(c), "016x").rstrip("0") or "X" for c in np.asarray(ids, dtype=np.uint64)]


def tokens_to_ids(tokens: Sequence[str]) -> np.ndarray:
    """Cell ids of S2 tokens; raises ``ValueError`` naming any token that is not well formed.

    Spreadsheets turn tokens such as ``89e44`` into ``8.9E+044``; those are rejected here rather
    than silently decoded into a wrong cell.
    """
    bad = [(k, t) for k, t in enumerate(tokens) if not is_valid_token(t)]
    if bad:
        shown = ", ".join(f"row {k}: {t!r}" for k, t in bad[:5])
        raise ValueError(
            f"{len(bad)} malformed S2 token(s) (expected 1-16 hex digits of a valid cell, "
            f"e.g. '47a1'); {shown}{' ...' if len(bad) > 5 else ''}. Tokens like '8.9E+044' were "
            "mangled into scientific notation by a spreadsheet."
        )
    return np.array([int(t.ljust(16, "0"), 16) for t in tokens], dtype=np.uint64).reshape(-1)


def is_valid_token(token: str) -> bool:
    """True for a well-formed S2 token of a valid cell (face 0-5, a sentinel bit at an even position)."""
    # Canonical tokens never end in '0' (trailing zeros are stripped); '4641600000' is '46416E+5'
    # expanded by a spreadsheet, not a cell.
    if not isinstance(token, str) or not _TOKEN_RE.match(token) or token.endswith("0"):
        return False
    cid = int(token.ljust(16, "0"), 16)
    if cid == 0 or (cid >> 61) > 5:
        return False
    lsb = cid & -cid
    return (lsb & 0x1555555555555555) != 0


# --------------------------------------------------------------------------- geometry
def cell_vertices(ids: np.ndarray, points_per_edge: int = 1) -> np.ndarray:
    """Boundary of each cell as (n, 4 * points_per_edge, 2) latitude/longitude in degrees.

    Vertices run counter-clockwise from the (u_lo, v_lo) corner. Points along an edge are spaced
    linearly in (u, v), which lies on the true geodesic edge since the face projection is gnomonic;
    use ``points_per_edge > 1`` for large cells drawn on a Mercator map.
    """
    ids = np.asarray(ids, dtype=np.uint64)
    face, i, j = cell_id_to_face_ij(ids)
    size = np.int64(1) << (MAX_LEVEL - cell_level(ids))
    i0, j0 = i & ~(size - 1), j & ~(size - 1)
    t = np.arange(points_per_edge) / points_per_edge  # fraction along each edge
    # corners in leaf units: (i0, j0) -> (i1, j0) -> (i1, j1) -> (i0, j1)
    si = np.concatenate([t, np.ones_like(t), 1 - t, np.zeros_like(t)])
    sj = np.concatenate([np.zeros_like(t), t, np.ones_like(t), 1 - t])
    s = (i0[:, None] + si[None, :] * size[:, None]) / MAX_SIZE
    tt = (j0[:, None] + sj[None, :] * size[:, None]) / MAX_SIZE
    u, v = _st_to_uv(s), _st_to_uv(tt)
    xyz = face_uv_to_xyz(np.broadcast_to(face[:, None], u.shape), u, v)
    return xyz_to_latlon(xyz)


def sample_in_cells(ids: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw ``counts[k]`` uniform random leaf-cell centres inside cell ``ids[k]``; (sum(counts), 2) lat/lon."""
    ids = np.asarray(ids, dtype=np.uint64)
    counts = np.asarray(counts, dtype=np.int64)
    face, i, j = cell_id_to_face_ij(ids)
    size = np.int64(1) << (MAX_LEVEL - cell_level(ids))
    i0, j0 = i & ~(size - 1), j & ~(size - 1)
    rep = np.repeat(np.arange(ids.size), counts)
    si = i0[rep] + (rng.random(rep.size) * size[rep]).astype(np.int64)
    sj = j0[rep] + (rng.random(rep.size) * size[rep]).astype(np.int64)
    u = _st_to_uv((si + 0.5) / MAX_SIZE)
    v = _st_to_uv((sj + 0.5) / MAX_SIZE)
    return xyz_to_latlon(face_uv_to_xyz(face[rep], u, v))
