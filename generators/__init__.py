"""Data we generate locally, in the real formats, for the demo, the tests and the benchmarks.

Why a package of its own: these modules make inputs (Aperio SVS slides, GDC STAR-counts, copy
number, MAF and clinical files, slides with a known tissue mask) instead of processing them, so
they are kept apart from the pipeline stages in ``preprocessing``.  They may import
``preprocessing`` (they write what the stages read); ``preprocessing`` and ``healnet`` never
import them (tests/test_layers.py).

* :mod:`generators.demo`: the bundled demo cohort with a planted signal and its oracle
  (``python -m generators.demo --out DIR --cases N --seed S``).
* :mod:`generators.slide_render`: H&E-like slide rendering with a planted tumour texture, and the
  Aperio SVS writer.
* :mod:`generators.omics_files`: GDC STAR-counts, gene-level copy number and MAF files as text.
* :mod:`generators.clinical_export`: the GDC clinical export (clinical.tsv).
* :mod:`generators.synthetic`: synthetic slides with a known tissue mask, to score segmentation.
* :mod:`generators.synthetic_scene`: a synthetic slide's layout on a label grid (tissue, pen, dust,
  artefacts): the ground truth.
* :mod:`generators.synthetic_render`: renders that scene tile by tile and writes it (SVS pyramid
  or flat tiled TIFF).
"""
