"""Analyse a segmented operando series: quantities, figures, report and meshes.

`python analyze.py [series=<manifest>] [out=<folder>] [overwrite=true]`
"""

from omegaconf import DictConfig, OmegaConf

from batteryct.analysis import AnalysisSettings, MeshSettings, analyze_series
from batteryct.cli import entry_point


@entry_point("analyze")
def main(cfg: DictConfig) -> None:
    meshes = cfg.meshes
    settings = AnalysisSettings(
        label_field=cfg.label_field,
        coloc_pairs=[list(p) for p in cfg.coloc_pairs],
        map_scans=list(cfg.map_scans),
        half_cycle=cfg.half_cycle,
        full_cycle=cfg.full_cycle,
        connectivity=cfg.connectivity,
        workers=cfg.workers,
        engine=cfg.engine,
        meshes=None if meshes is None else MeshSettings(**OmegaConf.to_container(meshes)),
        figures=cfg.figures,
        report=cfg.report,
        dpi=cfg.dpi,
    )
    analyze_series(
        cfg.series,
        cfg.out,
        settings,
        config=OmegaConf.to_container(cfg, resolve=True),
        overwrite=cfg.overwrite,
    )


if __name__ == "__main__":
    main()
