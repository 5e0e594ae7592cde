from preprocessing.io import atomic_path, job_log
from preprocessing.stain_target import cohort_mosaic, fit_target, read_image, write_target

with job_log(snakemake.log[0]) as log:
    p = snakemake.params
    if p.stain_target == "cohort":
        image = cohort_mosaic(list(zip(snakemake.input.slides, snakemake.input.patches)), p.stain_target_patches,
                              p.seed)
    else:
        image = read_image(snakemake.input.reference)
    target = fit_target(p.stain_norm, image, p.stain_target)
    from PIL import Image

    with atomic_path(snakemake.output.png) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    write_target(target, snakemake.output.json)
    log.info("%s target on %s (%d × %d px): %s", p.stain_norm, p.stain_target, *image.shape[:2],
             target.get("stain_matrix") or target.get("lab_mean"))
