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
    PIT_FILL_LI = 9


BACKGROUND = class_id(ANALYSIS_CLASSES, "background")
DENDRITE = class_id(ANALYSIS_CLASSES, "dendrite")
PIT = class_id(ANALYSIS_CLASSES, "pit")
DEPOSITED = class_id(ANALYSIS_CLASSES, "deposited_li")
REDEPOSITED = class_id(ANALYSIS_CLASSES, "redeposited_li")
PLATING_ELECTRODE = class_id(ANALYSIS_CLASSES, "plating_electrode")
STRIPPING_ELECTRODE = class_id(ANALYSIS_CLASSES, "stripping_electrode")


@dataclass(frozen=True)
class CellGeometry:
    """Layer thicknesses, porosity and the shape of the Li phases, in µm where a length is
    physical. The defaults are calibrated to the paper (docs/synthetic-cell.md)."""

    pouch_um: float = 8.0
    stripping_electrode_um: float = 112.8
    electrolyte_um: float = 140.0
    plating_electrode_um: float = 106.0
    interface_roughness_um: float = 2.0
    roughness_length_um: float = 30.0
    swelling_um: float = 28.5
    """Growth of the inter-electrode gap during charge (the plating block moves away)."""
    deposited_solid_fraction: float = 0.252
    """Li volume fraction of the deposited layer at the end of charge (the rest: pores)."""
    deposit_densification: float = 1.5
    """How much faster the deposit's visible volume grows early: its visible volume follows
    (1 - exp(-a s)) / (1 - exp(-a)) of the charge share s, while its Li grows linearly, so new
    Li fills the pores of the earlier deposit and the growth slows. 0: constant porosity."""
    dendrite_solid_fraction: float = 0.35
    redeposited_solid_fraction: float = 0.34
    pit_fill_solid_fraction: float = 0.7
    """Li redeposited inside a pit is confined there and denser than the loose layer above."""
    pore_um: float = 1.2
    """Correlation length of the pores of porous Li, below the voxel size: CT sees their partial
    volume."""
    dendrite_sites: int = 60
    dendrite_share: float = 0.45
    """Share of the Li plated during charge that grows as dendrites (at most their full size;
    the rest: deposited layer)."""
    dendrite_radius_um: float = 15.0
    """Widest radius of a dendrite's head; its tip is half as wide."""
    dendrite_root_radius_um: float = 4.5
    """Radius of a dendrite's stalk, from the electrode through the deposit."""
    dendrite_stalk_um: float = 30.0
    """Height of the stalk; the head widens above it (at most 60 % of a dendrite's height)."""
    dendrite_height_um: float = 68.0
    """Tallest dendrite; heights are uniform between 3/4 of it and all of it, and a tip stays
    within 45 % of the charged gap (electrolyte + swelling): dendrites belong to the plating side
    of the mid-plane."""
    dead_fraction: float = 0.38
    """Share of dendrites whose base dissolves first during discharge, leaving them detached."""
    pit_sites: int = 72
    pit_share: float = 0.95
    """Share of the Li stripped during charge taken from pits (at most their full size; the
    rest: uniform recession)."""
    pit_radius_um: float = 32.0
    """Largest lateral pit radius; radii are uniform between half of it and all of it."""
    pit_depth_um: float = 24.0
    """Deepest pit; depths are uniform between half of it and all of it."""
    pit_wall_exponent: float = 4.0
    """Shape of a pit: 2 is a bowl (ellipsoid cap); larger values give steeper walls and a
    flatter bottom."""
    pit_fill_share: float = 0.5
    """Share of the Li redeposited during discharge that goes into pits (the rest: porous layer)."""
    pit_refill_share: float = 0.1
    """Share of pits that redeposited Li fills completely, regaining contact with the electrode."""
    pit_cap_max: float = 0.3
    """The other pits are capped at their mouth by half of this to this fraction of their volume;
    the void beneath the cap remains, between the redeposited Li and the electrode."""

    def solid_fraction(self, material: Material) -> float:
        """Li volume fraction of a material's voxels (1 for dense Li, 0 where there is none)."""
        return {
            Material.LITHIUM: 1.0,
            Material.INTERPHASE: 1.0,
            Material.DEPOSITED_LI: self.deposited_solid_fraction,
            Material.DENDRITE_LI: self.dendrite_solid_fraction,
            Material.POROUS_LI: self.redeposited_solid_fraction,
            Material.PIT_FILL_LI: self.pit_fill_solid_fraction,
        }.get(material, 0.0)

    def check(self) -> None:
        """Raise ConfigError naming the first setting out of its range."""
        fractions = (
            "deposited_solid_fraction",
            "dendrite_solid_fraction",
            "redeposited_solid_fraction",
            "pit_fill_solid_fraction",
        )
        for name in fractions:
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ConfigError(f"geometry.{name} is {value}; expected a fraction in (0, 1]")
        for name in (
            "dendrite_share",
            "pit_share",
            "pit_fill_share",
            "pit_refill_share",
            "pit_cap_max",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"geometry.{name} is {value}; expected a fraction in [0, 1]")
        if self.pit_wall_exponent < 1:
            raise ConfigError(
                f"geometry.pit_wall_exponent is {self.pit_wall_exponent}; expected >= 1"
            )
        if self.deposit_densification < 0:
            raise ConfigError(
                f"geometry.deposit_densification is {self.deposit_densification}; expected >= 0"
            )


@dataclass(frozen=True)
class StepCounts:
    """Voxel counts of every process at one scan; all counts are cumulative since pristine.

    Counts are visible voxels; `deposited_solid_fraction` is the mean Li fraction of the
    deposited layer at this step (the other porous phases keep the geometry's fractions)."""

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
    deposited_solid_fraction: float


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
        geometry.check()
        self.seed = int(seed)
        self._jitter = (self._stream("jitter").random(self.shape) * 1e-3).astype(np.float32)
        self._cache: dict[tuple[str, int, int], np.ndarray] = {}
        self.layout = self._layout()
        self._base_labels, self._base_material, self._plating_block = self._pristine()
        self._build_orders()
        self._pores, self._pore_levels = self._microstructure()

    # ----------------------------------------------------------------------------------- layout
    def _vox(self, length_um: float) -> float:
        return length_um / self.voxel_size_um

    def _stream(self, name: str) -> np.random.Generator:
        """The random numbers of one part of the cell, independent of every other part's
        settings (a change to the dendrites leaves the pits as they were)."""
        return np.random.default_rng([self.seed, *name.encode()])

    def _rough_field(
        self, amplitude_vox: float, length_vox: float, rng: np.random.Generator
    ) -> np.ndarray:
        """A smooth random height map (rows, cols) with the given standard deviation."""
        noise = rng.standard_normal(self.shape[1:])
        field = ndimage.gaussian_filter(noise, max(length_vox, 0.5), mode="wrap")
        field /= field.std() + 1e-12
        return (amplitude_vox * field).astype(np.float32)

    def _layout(self) -> Layout:
        rng = self._stream("layout")
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
        top_air = float(round(free / 2))  # whole voxels: the layers start on a voxel face
        length = self._vox(g.roughness_length_um)
        rough = self._vox(g.interface_roughness_um)
        strip_top = np.full(self.shape[1:], top_air + pouch, np.float32)
        strip_iface = strip_top + strip + self._rough_field(rough, length, rng)
        plate_iface = strip_top + strip + lyte + self._rough_field(rough, length, rng)
        plate_bottom = strip_top + strip + lyte + plate + self._rough_field(rough / 2, length, rng)
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
        rng = self._stream("pits")
        g, lay = self.geometry, self.layout
        d = self._depth_grid()
        below = d - lay.strip_iface  # < 0 inside the stripping electrode, measured up from its face
        depth_into = -below - 0.5
        inside = self._base_labels == STRIPPING_ELECTRODE
        rows, cols = np.mgrid[0 : self.shape[1], 0 : self.shape[2]].astype(np.float32)
        potential = np.full(self.shape, np.inf, np.float32)
        pit_of = np.full(self.shape, -1, np.int16)
        footprint = np.zeros(self.shape[1:], bool)
        max_depth = self._vox(g.pit_depth_um)
        radius = self._vox(g.pit_radius_um)
        for pit in range(g.pit_sites):
            r0, c0 = rng.uniform(0, self.shape[1]), rng.uniform(0, self.shape[2])
            a = radius * rng.uniform(0.5, 1.0)
            b = max_depth * rng.uniform(0.5, 1.0)
            speed = rng.uniform(0.6, 1.4)
            lateral = ((rows - r0) ** 2 + (cols - c0) ** 2) / a**2
            footprint |= lateral <= 1.0
            power = g.pit_wall_exponent
            norm = lateral[None] ** (power / 2) + (np.maximum(depth_into, 0) / b) ** power
            q = norm ** (1 / power) / speed
            q = np.where(inside & (q * speed <= 1.0), q, np.inf).astype(np.float32)
            closer = q < potential
            potential[closer] = q[closer]
            pit_of[closer] = pit
        self._pit_order = self._order(np.isfinite(potential), potential)
        self._pit_id = pit_of
        recess_zone = inside & ~footprint[None] & (depth_into < 6)
        rough = self._rough_field(0.7, self._vox(g.roughness_length_um) / 2, rng)
        self._recession_order = self._order(recess_zone, depth_into + rough[None])

    def _build_dendrites(self) -> None:
        rng = self._stream("dendrites")
        g, lay = self.geometry, self.layout
        radius0 = max(self._vox(g.dendrite_radius_um), 0.8)
        reach = 0.45 * self._vox(g.electrolyte_um + g.swelling_um) - radius0 / 2
        tallest = min(self._vox(g.dendrite_height_um), reach)
        root = min(max(self._vox(g.dendrite_root_radius_um), 0.8), radius0)
        stalk = self._vox(g.dendrite_stalk_um)
        potential = np.full(self.shape, np.inf, np.float32)
        arc = np.full(self.shape, np.inf, np.float32)
        owner = np.full(self.shape, -1, np.int16)
        dead = rng.random(g.dendrite_sites) < g.dead_fraction
        speed = rng.uniform(0.5, 1.5, g.dendrite_sites)
        tops: list[float] = []
        depth, n_rows, n_cols = self.shape
        for site in range(g.dendrite_sites):
            r, c = rng.uniform(2, n_rows - 2), rng.uniform(2, n_cols - 2)
            base = float(lay.plate_iface[int(r), int(c)])
            height = tallest * rng.uniform(0.75, 1.0)
            tops.append(height)
            drift = rng.normal(0, 0.35, size=(int(height) + 2, 2)).cumsum(axis=0)
            profile = _dendrite_profile(height, stalk, root, radius0)
            for step in range(int(height) + 1):
                rho = profile[step]
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
        rng = self._stream("deposit")
        g, lay = self.geometry, self.layout
        d = self._depth_grid()
        height = lay.plate_iface - d - 0.5  # >= 0 above the plating electrode
        zone = (height >= 0) & (height < 0.4 * self._vox(g.electrolyte_um))
        zone &= ~self._dendrite_tube & (self._base_labels == BACKGROUND)
        rough = self._rough_field(0.8, self._vox(g.roughness_length_um) / 2, rng)
        potential = height + rough[None]
        self._deposit_order = self._order(zone, potential)
        self._deposit_height = potential
        electrode = self._base_labels == PLATING_ELECTRODE
        depth_into = d - lay.plate_iface + 0.5
        self._plating_recession_order = self._order(electrode, depth_into + rough[None])

    def _build_redeposition(self) -> None:
        rng = self._stream("redeposition")
        g, lay = self.geometry, self.layout
        d = self._depth_grid()
        height = d - lay.strip_iface + 0.5  # < 0 inside the stripping electrode
        self._porous_zone_height = height.astype(np.float32)
        reopened = rng.random(g.pit_sites) < g.pit_refill_share
        cap = rng.uniform(g.pit_cap_max / 2, g.pit_cap_max, g.pit_sites)
        self._fill_rank_per_pit = rng.permutation(g.pit_sites).astype(np.float32)
        self._fill_max_per_pit = np.where(reopened, 1.0, cap)
        rough = self._rough_field(0.6, self._vox(g.roughness_length_um) / 2, rng)
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
            flat_m[filled] = Material.PIT_FILL_LI
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
        """Pit voxels that redeposited Li fills: one pit after another (in a random order), each
        from its mouth down and at most to its own limit, so the void that remains lies between
        the redeposited Li and the electrode, as the paper found."""

        def build() -> np.ndarray:
            pits = self._pit_order[: counts.pits]
            below_face = self.layout.strip_iface[None] - self._depth_grid()
            depth = below_face.reshape(-1)[pits] + self._jitter.reshape(-1)[pits]
            pit_id = self._pit_id.reshape(-1)[pits]
            fillable = np.zeros(self.shape, bool)
            for pit in np.unique(pit_id):
                members = pit_id == pit
                ranked = pits[members][np.argsort(depth[members], kind="stable")]
                keep = round(float(self._fill_max_per_pit[pit]) * ranked.size)
                fillable.reshape(-1)[ranked[:keep]] = True
            rank = np.zeros(self.shape, np.float32)
            rank.reshape(-1)[pits] = self._fill_rank_per_pit[pit_id]
            return self._order(fillable, rank * self.shape[0] + below_face)

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
    def schedule(self, charged_vox: list[float], discharged_vox: list[float]) -> list[StepCounts]:
        """Voxel counts of every scan from the cumulative Li moved during each half of the cycle.

        `charged_vox[k]` is the Li moved after k charge segments (starting at 0, pristine), in
        voxels of dense Li; `discharged_vox[j]` after j discharge segments (starting at 0, the end
        of charge). Charge moves Li from the stripping electrode (pits, recession: dense Li) to
        the plating side (porous deposited layer, dendrites); discharge moves it back (dendrites
        and deposit dissolve, then the plating electrode itself; porous redeposited Li fills pits
        and forms a layer). A porous phase takes `Li / solid fraction` voxels, rounded to the
        nearest voxel, so the Li of every step matches the moved Li within one voxel.
        """
        g = self.geometry
        caps = self.capacities()
        dendrite_phi = g.dendrite_solid_fraction
        deposit_phi = g.deposited_solid_fraction
        redeposit_phi = g.redeposited_solid_fraction
        total = float(charged_vox[-1])
        stripped_final = round(total)
        pit_final = min(round(g.pit_share * total), caps["pits"])
        dendrite_final = min(round(g.dendrite_share * total / dendrite_phi), caps["dendrite"])
        deposit_final = max(round((total - dendrite_final * dendrite_phi) / deposit_phi), 0)
        for name, need, cap in (
            ("deposited layer", deposit_final, caps["deposited"]),
            ("stripping-side recession", stripped_final - pit_final, caps["recession"]),
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
            deposit = round(deposit_final * _densified(share, g.deposit_densification))
            deposit_li = moved - dendrite * dendrite_phi
            steps.append(
                StepCounts(
                    swelling_vox=round(swelling_vox * k / n_charge),
                    pits=pits,
                    recession=round(moved) - pits,
                    deposited_grown=deposit,
                    dendrite_grown=dendrite,
                    deposited_removed=0,
                    dendrite_removed=0,
                    plating_electrode_removed=0,
                    pit_filled=0,
                    porous_layer=0,
                    deposited_solid_fraction=(
                        min(max(deposit_li / deposit, 0.0), 1.0) if deposit else deposit_phi
                    ),
                )
            )
        end = steps[-1]
        end_deposit_li = end.deposited_grown * end.deposited_solid_fraction
        grown = np.zeros(int(np.prod(self.shape)), bool)
        grown[self._dendrite_order[:dendrite_final]] = True
        removable = int(grown[self._dendrite_removal_order].sum())
        fill_capacity = int(self._pit_fill_order(end).size)
        porous_capacity = int(self._porous_order(end).size)
        dissolvable_li = removable * dendrite_phi + end_deposit_li
        dendrite_li_share = removable * dendrite_phi / dissolvable_li if dissolvable_li else 0.0
        for moved in discharged_vox[1:]:
            dissolved_li = min(moved, dissolvable_li)
            dendrite_removed = min(
                round(dissolved_li * dendrite_li_share / dendrite_phi), removable
            )
            deposit_li_removed = dissolved_li - dendrite_removed * dendrite_phi
            deposit_removed = min(
                round(deposit_li_removed / end.deposited_solid_fraction), end.deposited_grown
            )
            fill_phi = g.pit_fill_solid_fraction
            filled = min(round(g.pit_fill_share * moved / fill_phi), fill_capacity)
            layer = round((moved - filled * fill_phi) / redeposit_phi)
            if layer > porous_capacity:
                raise ConfigError(
                    f"the synthetic cell has room for {porous_capacity} voxels of porous "
                    f"redeposited Li but the discharge needs {layer}; lower the "
                    "efficiency or current, or enlarge the cell"
                )
            steps.append(
                replace(
                    end,
                    deposited_removed=deposit_removed,
                    dendrite_removed=dendrite_removed,
                    plating_electrode_removed=round(moved - dissolved_li),
                    pit_filled=filled,
                    porous_layer=layer,
                )
            )
        return steps

    # -------------------------------------------------------------------------- microstructure
    def _microstructure(self) -> tuple[np.ndarray, np.ndarray]:
        """The pores of porous Li below the voxel size: a smooth random field sampled
        SUBVOXELS³ times per voxel (one row of samples per voxel, in flat voxel order), and its
        quantiles, which cut it at any solid fraction. Li is where the field is above the cut."""
        rng = self._stream("pores")
        n = SUBVOXELS
        fine = tuple(n * s for s in self.shape)
        sigma = max(n * self._vox(self.geometry.pore_um), 0.5)
        field = rng.standard_normal(fine, dtype=np.float32)
        field = ndimage.gaussian_filter(field, sigma, mode="wrap")
        depth, rows, cols = self.shape
        samples = field.reshape(depth, n, rows, n, cols, n).transpose(0, 2, 4, 1, 3, 5)
        samples = samples.reshape(depth * rows * cols, n**3).astype(np.float16)
        levels = np.quantile(field.reshape(-1)[::7], np.linspace(0.0, 1.0, 1001))
        return samples, levels.astype(np.float32)

    def li_fraction(self, material: np.ndarray, counts: StepCounts) -> np.ndarray:
        """Li volume fraction of every voxel of a composed step: 1 in dense Li, the partial
        volume of the microstructure in porous Li (deposit at this step's solid fraction), 0
        elsewhere."""
        fraction = np.zeros(self.shape, np.float32)
        flat = fraction.reshape(-1)
        materials = material.reshape(-1)
        flat[np.isin(materials, (Material.LITHIUM, Material.INTERPHASE))] = 1.0
        porous = {
            Material.DEPOSITED_LI: counts.deposited_solid_fraction,
            Material.DENDRITE_LI: self.geometry.dendrite_solid_fraction,
            Material.POROUS_LI: self.geometry.redeposited_solid_fraction,
            Material.PIT_FILL_LI: self.geometry.pit_fill_solid_fraction,
        }
        for kind, solid in porous.items():
            where = np.flatnonzero(materials == kind)
            if where.size:
                cut = self._pore_levels[round((1.0 - solid) * (self._pore_levels.size - 1))]
                flat[where] = (self._pores[where] > cut).mean(axis=1)
        return fraction


def _dendrite_profile(height: float, stalk: float, root: float, widest: float) -> np.ndarray:
    """Radius (voxels) of a dendrite at each step of its height: a narrow stalk of radius
    `root` through the deposit, then a mossy head that widens to `widest` over a third of the
    rest and tapers to half of it at the tip."""
    steps = np.arange(int(height) + 1, dtype=np.float64)
    stalk = min(stalk, 0.6 * height)
    head = max(height - stalk, 1.0)
    t = (steps - stalk) / head
    rising = root + (widest - root) * t * 3.0
    falling = widest * (1.0 - 0.5 * (t - 1.0 / 3.0) / (2.0 / 3.0))
    radius = np.where(t < 1.0 / 3.0, rising, falling)
    return np.where(steps < stalk, root, np.maximum(radius, root))


SUBVOXELS = 2
"""Samples of the pore field per voxel edge."""


def _densified(share: float, rate: float) -> float:
    """Visible share of the final deposit after `share` of the charge (1 - e^(-a s)) /
    (1 - e^(-a)); the identity for a = 0."""
    if rate <= 0 or share <= 0:
        return max(share, 0.0)
    return float(np.expm1(-rate * share) / np.expm1(-rate))
