from preprocessing.io import atomic_path, job_log
from preprocessing.stain_target import fit_target, read_image, tiled_cohort_mosaic, write_target
from preprocessing.tiling import TilingParams
from preprocessing.tissue import TissueParams

with job_log(snakemake.log[0]) as log:
    p = snakemake.params
    if p.stain_target == "cohort":
        image = tiled_cohort_mosaic(snakemake.input.slides, TissueParams(**p.tissue), TilingParams(**p.tiling),
                                    p.mpp_fallbacks, coords=snakemake.input.coords or None,
                                    n_patches=p.stain_target_patches, seed=p.seed)
    else:
        image = read_image(snakemake.input.reference)
    target = fit_target(p.stain_norm, image, p.stain_target)
    from PIL import Image

    with atomic_path(snakemake.output.png) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    write_target(target, snakemake.output.json)
    log.info("%s target on %s (%d × %d px): %s", p.stain_norm, p.stain_target, *image.shape[:2],
             target.get("stain_matrix") or target.get("lab_mean"))
