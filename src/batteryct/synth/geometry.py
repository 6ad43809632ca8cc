"""Geometry of the synthetic cell over one charge/discharge cycle.

Canonical axes (depth, rows, cols). Internally the stripping electrode lies at small depth and the
plating electrode at large depth; `generate` flips the depth axis when the plating side is "start".

Every process that moves Li (pits, stripping-side recession, deposited layer, dendrites, pit
filling, the porous redeposited layer, and their dissolution) is a *growth order*: a list of voxels
sorted by a potential that encodes the shape of the growth. The set at a given step is the first
`count` voxels of the order, so the sets are nested over time and every voxel count is exact: the
schedule hands each process exactly the Li volume that Faraday's law times the efficiency allows.
The plating electrode, its deposits and its pouch form one block that moves away from the stripping
electrode (swelling); everything else stays in the fixed frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

import numpy as np
from scipy import ndimage

from batteryct.classes import ANALYSIS_CLASSES, class_id
from batteryct.errors import ConfigError


class Material(IntEnum):
    """What a voxel is made of; the CT simulation gives each material its attenuation."""

    AIR = 0
    POUCH = 1
    ELECTROLYTE = 2
    LITHIUM = 3
    DEPOSITED_LI = 4
    DENDRITE_LI = 5
    POROUS_LI = 6
    VOID = 7
    INTERPHASE = 8


BACKGROUND = class_id(ANALYSIS_CLASSES, "background")
DENDRITE = class_id(ANALYSIS_CLASSES, "dendrite")
PIT = class_id(ANALYSIS_CLASSES, "pit")
DEPOSITED = class_id(ANALYSIS_CLASSES, "deposited_li")
REDEPOSITED = class_id(ANALYSIS_CLASSES, "redeposited_li")
PLATING_ELECTRODE = class_id(ANALYSIS_CLASSES, "plating_electrode")
STRIPPING_ELECTRODE = class_id(ANALYSIS_CLASSES, "stripping_electrode")


@dataclass(frozen=True)
class CellGeometry:
    """Layer thicknesses and the shape of the Li phases, in µm where a length is physical."""

    pouch_um: float = 5.0
    stripping_electrode_um: float = 35.0
    electrolyte_um: float = 60.0
    plating_electrode_um: float = 35.0
    interface_roughness_um: float = 2.0
    roughness_length_um: float = 16.0
    swelling_um: float = 6.0
    """Growth of the inter-electrode gap during charge (the plating block moves away)."""
    dendrite_sites: int = 60
    dendrite_share: float = 0.25
    """Share of the Li plated during charge that grows as dendrites (the rest: deposited layer)."""
    dendrite_radius_um: float = 5.0
    dendrite_max_height: float = 0.45
    """Tallest dendrite, as a fraction of the electrolyte thickness."""
    dead_fraction: float = 0.35
    """Share of dendrites whose base dissolves first during discharge, leaving them detached."""
    pit_sites: int = 30
    pit_share: float = 0.7
    """Share of the Li stripped during charge taken from pits (the rest: uniform recession)."""
    pit_radius_um: float = 20.0
    pit_depth: float = 0.75
    """Deepest pit, as a fraction of the stripping electrode thickness."""
    pit_fill_share: float = 0.5
    """Share of the Li redeposited during discharge that goes into pits (the rest: porous layer)."""
    pit_fill_max: float = 0.7
    """At most this fraction of a pit fills; the rest remains as void."""


@dataclass(frozen=True)
class StepCounts:
    """Voxel counts of every process at one scan; all counts are cumulative since pristine."""

    swelling_vox: int
    pits: int
    recession: int
    deposited_grown: int
    dendrite_grown: int
    deposited_removed: int
    dendrite_removed: int
    plating_electrode_removed: int
    pit_filled: int
    porous_layer: int


@dataclass
class Layout:
    """Interface depths (float, per in-plane pixel) of the pristine cell, internal orientation."""

    top_pouch: tuple[int, int]
    strip_top: np.ndarray
    strip_iface: np.ndarray
    plate_iface: np.ndarray
    plate_bottom: np.ndarray
    bottom_pouch_thickness_vox: int


class SyntheticCell:
    """Builds the growth orders of one cell once, then composes the label and material volumes
    of any step of the cycle from the voxel counts of that step."""

    def __init__(
        self, geometry: CellGeometry, shape: tuple[int, int, int], voxel_size_um: float, seed: int
    ) -> None:
        self.geometry = geometry
        self.shape = tuple(int(s) for s in shape)
        self.voxel_size_um = float(voxel_size_um)
        self.rng = np.random.default_rng(seed)
        self._jitter = (self.rng.random(self.shape) * 1e-3).astype(np.float32)
        self._cache: dict[tuple[str, int, int], np.ndarray] = {}
        self.layout = self._layout()
        self._base_labels, self._base_material, self._plating_block = self._pristine()
        self._build_orders()

    # ----------------------------------------------------------------------------------- layout
    def _vox(self, length_um: float) -> float:
        return length_um / self.voxel_size_um

    def _rough_field(self, amplitude_vox: float, length_vox: float) -> np.ndarray:
        """A smooth random height map (rows, cols) with the given standard deviation."""
        noise = self.rng.standard_normal(self.shape[1:])
        field = ndimage.gaussian_filter(noise, max(length_vox, 0.5), mode="wrap")
        field /= field.std() + 1e-12
        return (amplitude_vox * field).astype(np.float32)

    def _layout(self) -> Layout:
        g = self.geometry
        depth = self.shape[0]
        pouch = max(1, round(self._vox(g.pouch_um)))
        strip = self._vox(g.stripping_electrode_um)
        lyte = self._vox(g.electrolyte_um)
        plate = self._vox(g.plating_electrode_um)
        swell = self._vox(g.swelling_um)
        stack = 2 * pouch + strip + lyte + plate
        free = depth - stack - swell
        if free < 4:
            raise ConfigError(
                f"a depth of {depth} voxels × {self.voxel_size_um:g} µm = "
                f"{depth * self.voxel_size_um:g} µm cannot hold the cell: "
                f"pouch 2 × {g.pouch_um:g}, electrodes {g.stripping_electrode_um:g} + "
                f"{g.plating_electrode_um:g}, electrolyte "
                f"{g.electrolyte_um:g} and swelling {g.swelling_um:g} µm need "
                f"{(stack + swell + 4) * self.voxel_size_um:g} µm; increase shape[0] or "
                "voxel_size_um, or make the layers thinner"
            )
        top_air = free / 2
        length = self._vox(g.roughness_length_um)
        rough = self._vox(g.interface_roughness_um)
        strip_top = np.full(self.shape[1:], top_air + pouch, np.float32)
        strip_iface = strip_top + strip + self._rough_field(rough, length)
        plate_iface = strip_top + strip + lyte + self._rough_field(rough, length)
        plate_bottom = strip_top + strip + lyte + plate + self._rough_field(rough / 2, length)
        top_pouch = (round(top_air), round(top_air) + pouch)
        return Layout(top_pouch, strip_top, strip_iface, plate_iface, plate_bottom, pouch)

    def _depth_grid(self) -> np.ndarray:
        return np.arange(self.shape[0], dtype=np.float32)[:, None, None]

    def _pristine(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fixed-frame labels and materials, and the mask of the plating block."""
        lay = self.layout
        d = self._depth_grid()
        labels = np.full(self.shape, BACKGROUND, np.uint8)
        material = np.full(self.shape, Material.ELECTROLYTE, np.uint8)
        material[: lay.top_pouch[0]] = Material.AIR
        material[lay.top_pouch[0] : lay.top_pouch[1]] = Material.POUCH
        strip = (d >= lay.strip_top) & (d < lay.strip_iface)
        labels[strip] = STRIPPING_ELECTRODE
        material[strip] = Material.LITHIUM
        plate = (d >= lay.plate_iface) & (d < lay.plate_bottom)
        labels[plate] = PLATING_ELECTRODE
        material[plate] = Material.LITHIUM
        pouch_end = lay.plate_bottom + lay.bottom_pouch_thickness_vox
        material[(d >= lay.plate_bottom) & (d < pouch_end)] = Material.POUCH
        material[d >= pouch_end] = Material.AIR
        # A one-voxel native film marks the pristine surface of both electrodes.
        for iface, sign in ((lay.strip_iface, -1), (lay.plate_iface, 0)):
            film = (d >= np.floor(iface) + sign) & (d < np.floor(iface) + sign + 1)
            material[film & (material == Material.LITHIUM)] = Material.INTERPHASE
        block = d >= lay.plate_iface
        return labels, material, np.broadcast_to(block, self.shape).copy()

    # ------------------------------------------------------------------------------ growth orders
    def _order(self, mask: np.ndarray, potential: np.ndarray) -> np.ndarray:
        """Flat indices of `mask`'s voxels sorted by potential.

        Ties are broken by a fixed random field, so an order depends only on its inputs and a
        resumed generation composes exactly the same volumes."""
        flat = np.flatnonzero(mask)
        values = potential.reshape(-1)[flat].astype(np.float64) + self._jitter.reshape(-1)[flat]
        return flat[np.argsort(values, kind="stable")]

    def _build_orders(self) -> None:
        self._build_pits_and_recession()
        self._build_dendrites()
        self._build_deposit()
        self._build_redeposition()

    def _build_pits_and_recession(self) -> None:
        g, lay = self.geometry, self.layout
        d = self._depth_grid()
        below = d - lay.strip_iface  # < 0 inside the stripping electrode, measured up from its face
        depth_into = -below - 0.5
        inside = self._base_labels == STRIPPING_ELECTRODE
        rows, cols = np.mgrid[0 : self.shape[1], 0 : self.shape[2]].astype(np.float32)
        potential = np.full(self.shape, np.inf, np.float32)
        pit_of = np.full(self.shape, -1, np.int16)
        footprint = np.zeros(self.shape[1:], bool)
        max_depth = g.pit_depth * self._vox(g.stripping_electrode_um)
        radius = self._vox(g.pit_radius_um)
        for pit in range(g.pit_sites):
            r0, c0 = self.rng.uniform(0, self.shape[1]), self.rng.uniform(0, self.shape[2])
            a = radius * self.rng.uniform(0.5, 1.0)
            b = max_depth * self.rng.uniform(0.4, 1.0)
            speed = self.rng.uniform(0.6, 1.4)
            lateral = ((rows - r0) ** 2 + (cols - c0) ** 2) / a**2
            footprint |= lateral <= 1.0
            q = np.sqrt(lateral[None] + (np.maximum(depth_into, 0) / b) ** 2) / speed
            q = np.where(inside & (q * speed <= 1.0), q, np.inf).astype(np.float32)
            closer = q < potential
            potential[closer] = q[closer]
            pit_of[closer] = pit
        self._pit_order = self._order(np.isfinite(potential), potential)
        self._pit_id = pit_of
        recess_zone = inside & ~footprint[None] & (depth_into < 6)
        rough = self._rough_field(0.7, self._vox(g.roughness_length_um) / 2)
        self._recession_order = self._order(recess_zone, depth_into + rough[None])

    def _build_dendrites(self) -> None:
        g, lay = self.geometry, self.layout
        lyte = self._vox(g.electrolyte_um)
        radius0 = max(self._vox(g.dendrite_radius_um), 0.8)
        potential = np.full(self.shape, np.inf, np.float32)
        arc = np.full(self.shape, np.inf, np.float32)
        owner = np.full(self.shape, -1, np.int16)
        dead = self.rng.random(g.dendrite_sites) < g.dead_fraction
        speed = self.rng.uniform(0.5, 1.5, g.dendrite_sites)
        tops: list[float] = []
        depth, n_rows, n_cols = self.shape
        for site in range(g.dendrite_sites):
            r, c = self.rng.uniform(2, n_rows - 2), self.rng.uniform(2, n_cols - 2)
            base = float(lay.plate_iface[int(r), int(c)])
            height = g.dendrite_max_height * lyte * self.rng.uniform(0.5, 1.0)
            tops.append(height)
            drift = self.rng.normal(0, 0.35, size=(int(height) + 2, 2)).cumsum(axis=0)
            for step in range(int(height) + 1):
                rho = radius0 * (1.0 - 0.5 * step / max(height, 1.0))
                center = (base - 0.5 - step, r + drift[step, 0], c + drift[step, 1])
                lo = [max(0, int(np.floor(x - rho - 1))) for x in center]
                hi = [
                    min(n, int(np.ceil(x + rho + 2)))
                    for x, n in zip(center, (depth, n_rows, n_cols), strict=True)
                ]
                zz, yy, xx = np.mgrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
                dist = np.sqrt(
                    (zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2
                )
                box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
                inside = (dist <= rho) & (self._base_labels[box] == BACKGROUND)
                value = (step + 0.3 * dist) / speed[site]
                better = inside & (value < potential[box])
                potential[box][better] = value[better]
                arc[box][better] = step
                owner[box][better] = site
        tube = np.isfinite(potential)
        self._dendrite_order = self._order(tube, potential)
        self._dendrite_tube = tube
        # Dissolution: dead dendrites lose a neck at their base, the others dissolve tip first.
        neck = 2.5
        owner_dead = np.zeros(self.shape, bool)
        owner_dead[tube] = dead[owner[tube]]
        removable = tube & (~owner_dead | (arc < neck))
        tip_first = np.where(owner_dead, arc, (np.asarray(tops)[np.maximum(owner, 0)] - arc))
        removal_potential = tip_first / speed[np.maximum(owner, 0)]
        self._dendrite_removal_order = self._order(removable, removal_potential)
        self.dendrite_dead = dead

    def _build_deposit(self) -> None:
        g, lay = self.geometry, self.layout
        d = self._depth_grid()
        height = lay.plate_iface - d - 0.5  # >= 0 above the plating electrode
        zone = (height >= 0) & (height < 0.4 * self._vox(g.electrolyte_um))
        zone &= ~self._dendrite_tube & (self._base_labels == BACKGROUND)
        rough = self._rough_field(0.8, self._vox(g.roughness_length_um) / 2)
        potential = height + rough[None]
        self._deposit_order = self._order(zone, potential)
        self._deposit_height = potential
        electrode = self._base_labels == PLATING_ELECTRODE
        depth_into = d - lay.plate_iface + 0.5
        self._plating_recession_order = self._order(electrode, depth_into + rough[None])

    def _build_redeposition(self) -> None:
        g, lay = self.geometry, self.layout
        d = self._depth_grid()
        height = d - lay.strip_iface + 0.5  # < 0 inside the stripping electrode
        self._porous_zone_height = height.astype(np.float32)
        self._fill_max_per_pit = self.rng.uniform(0.0, g.pit_fill_max, g.pit_sites)
        rough = self._rough_field(0.6, self._vox(g.roughness_length_um) / 2)
        self._porous_potential = (height + rough[None]).astype(np.float32)

    # ----------------------------------------------------------------------------- capacities
    def capacities(self) -> dict[str, int]:
        """Voxels each process can take at most."""
        return {
            "pits": int(self._pit_order.size),
            "recession": int(self._recession_order.size),
            "dendrite": int(self._dendrite_order.size),
            "deposited": int(self._deposit_order.size),
        }

    # ------------------------------------------------------------------------------ composition
    def compose(self, counts: StepCounts) -> tuple[np.ndarray, np.ndarray]:
        """Label (7-class) and material volumes of one step, internal orientation."""
        labels = np.where(self._plating_block, BACKGROUND, self._base_labels).astype(np.uint8)
        material = np.where(self._plating_block, Material.ELECTROLYTE, self._base_material).astype(
            np.uint8
        )
        flat_l, flat_m = labels.reshape(-1), material.reshape(-1)
        pits = self._pit_order[: counts.pits]
        recess = self._recession_order[: counts.recession]
        flat_l[pits] = PIT
        flat_m[pits] = Material.VOID
        flat_l[recess] = BACKGROUND
        flat_m[recess] = Material.ELECTROLYTE
        if counts.pit_filled:
            filled = self._pit_fill_order(counts)[: counts.pit_filled]
            flat_l[filled] = REDEPOSITED
            flat_m[filled] = Material.POROUS_LI
        if counts.porous_layer:
            layer = self._porous_order(counts)[: counts.porous_layer]
            flat_l[layer] = REDEPOSITED
            flat_m[layer] = Material.POROUS_LI
        self._paste_plating_block(flat_l, flat_m, counts)
        return labels, material

    def _cached(self, name: str, counts: StepCounts, build) -> np.ndarray:
        key = (name, counts.pits, counts.recession)
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def _pit_fill_order(self, counts: StepCounts) -> np.ndarray:
        """Pit voxels that redeposited Li fills, wall first, each pit at most to its own limit."""

        def build() -> np.ndarray:
            pits = self._pit_order[: counts.pits]
            mask = np.zeros(self.shape, bool)
            mask.reshape(-1)[pits] = True
            wall = ndimage.distance_transform_edt(mask).astype(np.float32)
            pit_id = self._pit_id.reshape(-1)[pits]
            wall_flat = wall.reshape(-1)[pits] + self._jitter.reshape(-1)[pits]
            fillable = np.zeros(self.shape, bool)
            for pit in np.unique(pit_id):
                members = pit_id == pit
                ranked = pits[members][np.argsort(wall_flat[members], kind="stable")]
                keep = round(float(self._fill_max_per_pit[pit]) * ranked.size)
                fillable.reshape(-1)[ranked[:keep]] = True
            return self._order(fillable, wall)

        return self._cached("fill", counts, build)

    def _porous_order(self, counts: StepCounts) -> np.ndarray:
        """Voxels the porous redeposited layer takes: receded hollows first, then upwards."""

        def build() -> np.ndarray:
            limit = 0.3 * self._vox(self.geometry.electrolyte_um)
            height = self._porous_zone_height
            zone = (height >= 0) & (height < limit) & (self._base_labels == BACKGROUND)
            zone &= ~self._plating_block & ~self._dendrite_tube
            zone.reshape(-1)[self._recession_order[: counts.recession]] = True
            zone.reshape(-1)[self._pit_order[: counts.pits]] = False
            return self._order(zone, self._porous_potential)

        return self._cached("porous", counts, build)

    def _paste_plating_block(
        self, flat_l: np.ndarray, flat_m: np.ndarray, counts: StepCounts
    ) -> None:
        """Put the plating block with its deposits, moved `swelling_vox` away, into place."""
        block_l = np.where(self._plating_block, self._base_labels, BACKGROUND).reshape(-1)
        block_m = np.where(self._plating_block, self._base_material, Material.ELECTROLYTE)
        block_m = block_m.reshape(-1)
        deposit = self._deposit_order[: counts.deposited_grown]
        if counts.deposited_removed:
            top_first = np.argsort(-self._deposit_height.reshape(-1)[deposit], kind="stable")
            deposit = deposit[top_first][counts.deposited_removed :]
        dendrite = self._dendrite_order[: counts.dendrite_grown]
        if counts.dendrite_removed:
            grown = np.zeros(flat_l.size, bool)
            grown[dendrite] = True
            removal = self._dendrite_removal_order[grown[self._dendrite_removal_order]]
            grown[removal[: counts.dendrite_removed]] = False
            dendrite = np.flatnonzero(grown)
        block_l[deposit] = DEPOSITED
        block_m[deposit] = Material.DEPOSITED_LI
        block_l[dendrite] = DENDRITE
        block_m[dendrite] = Material.DENDRITE_LI
        gone = self._plating_recession_order[: counts.plating_electrode_removed]
        block_l[gone] = BACKGROUND
        block_m[gone] = Material.ELECTROLYTE

        moving = self._plating_block.reshape(-1).copy()
        moving[deposit] = True
        moving[dendrite] = True
        source = np.flatnonzero(moving)
        plane = self.shape[1] * self.shape[2]
        target = source + counts.swelling_vox * plane
        inside = target < flat_l.size
        source, target = source[inside], target[inside]
        if np.any(flat_l[target] != BACKGROUND):
            raise ConfigError(
                "the plating side's phases reached the stripping side's; make the electrolyte "
                "thicker or the dendrites shorter"
            )
        flat_l[target] = block_l[source]
        flat_m[target] = block_m[source]

    # --------------------------------------------------------------------------------- schedule
    def schedule(self, charged_vox: list[int], discharged_vox: list[int]) -> list[StepCounts]:
        """Voxel counts of every scan from the cumulative Li moved (voxels) during each half.

        `charged_vox[k]` is the Li moved after k charge segments (starting at 0, pristine);
        `discharged_vox[j]` after j discharge segments (starting at 0, the end of charge). Charge
        moves Li from the stripping electrode (pits, recession) to the plating side (deposited
        layer, dendrites); discharge moves it back (dendrites and deposit dissolve, then the
        plating electrode itself; redeposited Li fills pits and forms a porous layer).
        """
        g = self.geometry
        caps = self.capacities()
        total = charged_vox[-1]
        dendrite_final = min(round(g.dendrite_share * total), caps["dendrite"])
        deposit_final = total - dendrite_final
        pit_final = min(round(g.pit_share * total), caps["pits"])
        recession_final = total - pit_final
        for name, need, cap in (
            ("deposited layer", deposit_final, caps["deposited"]),
            ("stripping-side recession", recession_final, caps["recession"]),
        ):
            if need > cap:
                raise ConfigError(
                    f"the synthetic cell has room for {cap} voxels of {name} but the charge "
                    f"needs {need}; lower the efficiency or current, or enlarge the cell"
                )
        n_charge = max(len(charged_vox) - 1, 1)
        swelling_vox = self._vox(g.swelling_um)
        steps = []
        for k, moved in enumerate(charged_vox):
            share = moved / total if total else 0.0
            dendrite = round(dendrite_final * share)
            pits = round(pit_final * share)
            steps.append(
                StepCounts(
                    swelling_vox=round(swelling_vox * k / n_charge),
                    pits=pits,
                    recession=moved - pits,
                    deposited_grown=moved - dendrite,
                    dendrite_grown=dendrite,
                    deposited_removed=0,
                    dendrite_removed=0,
                    plating_electrode_removed=0,
                    pit_filled=0,
                    porous_layer=0,
                )
            )
        end = steps[-1]
        grown = np.zeros(int(np.prod(self.shape)), bool)
        grown[self._dendrite_order[:dendrite_final]] = True
        removable = int(grown[self._dendrite_removal_order].sum())
        fill_capacity = int(self._pit_fill_order(end).size)
        porous_capacity = int(self._porous_order(end).size)
        dissolvable = removable + deposit_final
        for moved in discharged_vox[1:]:
            base = min(moved, dissolvable)
            deposit_removed = min(
                base - round(removable * base / max(dissolvable, 1)), deposit_final
            )
            filled = min(round(g.pit_fill_share * moved), fill_capacity)
            if moved - filled > porous_capacity:
                raise ConfigError(
                    f"the synthetic cell has room for {porous_capacity} voxels of porous "
                    f"redeposited Li but the discharge needs {moved - filled}; lower the "
                    "efficiency or current, or enlarge the cell"
                )
            steps.append(
                replace(
                    end,
                    deposited_removed=deposit_removed,
                    dendrite_removed=base - deposit_removed,
                    plating_electrode_removed=moved - base,
                    pit_filled=filled,
                    porous_layer=moved - filled,
                )
            )
        return steps
