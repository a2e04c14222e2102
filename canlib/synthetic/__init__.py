"""The built-in synthetic person re-identification dataset, written in the Market-1501 layout.

It lets a reader run the whole pipeline (parsing, sampling, training, the Market-1501
protocol) before fetching Market-1501. :func:`generate_synthetic` draws procedural
pedestrians and writes them as Market-1501 is laid out::

    root/
      bounding_box_train/0001_c1s2_004211_01.jpg ...
      bounding_box_test/ ... plus junk (-1_c...) and distractors (0000_c...)
      query/               one image per test identity per camera
      README.txt           seed, parameters and family structure (human text + a JSON block)

Design (format 2; every choice is ours, none tuned to make a model ordering appear):

- *Identities are distinguishable in every camera.* A look-alike *family* (the paper's
  Figure 1 motivation) shares one cloned outfit, as in ClonedPerson (Wang et al. CVPR 2022),
  and its members differ in one detail seen from every view and confined to one body band:
  shoes, a cap, a belt or sleeve length. Their detail colours, as the camera sees them (a
  bare head shows hair, a short sleeve skin), differ by MIN_DETAIL_CONTRAST RGB levels and
  each detail is about 4+ pixels tall at 128 px, so it survives blur, colour cast, noise,
  JPEG and the low-resolution camera; :func:`detail_oracle` measures this on the pixels.
- *Backgrounds are no shortcut.* Each camera shows ``scenes_per_camera`` scenes, one drawn
  per image; position and scale are jittered; identities appear in 2-6 of the 6 cameras, as
  in Market-1501. As in PersonX (Sun and Zheng, CVPR 2019), viewpoint, background,
  illumination and optics are independent random factors, so each can be held fixed
  (:func:`render_person` takes a view, a camera and a seed).
- *Look-alikes are part of the population.* Only ``family_share`` (default 0.3) of the
  identities belong to families, as most people in Market-1501 have no near twin;
  ``pid_families`` and ``canlib.evaluate.top1_breakdown`` tell how often a query's top wrong
  match is a family member.
- *Masks are known.* :func:`render_masks` renders any written image's person and detail
  masks again (no extra files, so the Market-1501 parsers see the usual layout).

Same seed, same bytes: the plan is drawn from one generator and every image from its own
``np.random.default_rng([seed, stream, index])``. Drawing uses vectorised numpy masks on a 2x
supersampled canvas; PIL only encodes JPEGs. This package knows nothing about models.
"""

# The package in three rooms: world.py draws who and where (identities, families, scenes,
# cameras, poses), render.py turns that into pixels, dataset.py writes and checks the dataset.
from canlib.synthetic.dataset import (
    default_cache_dir,
    detail_oracle,
    ensure_synthetic,
    family_members,
    generate_synthetic,
    pid_families,
    read_synthetic_info,
    render_family,
    render_masks,
)
from canlib.synthetic.render import render_person
from canlib.synthetic.world import (
    ACCESSORY_COLOURS,
    DETAIL_KINDS,
    FOLDERS,
    MASK_LABELS,
    SIZES,
    VIEWS,
    CameraStyle,
    PersonAttributes,
    SyntheticConfig,
    neutral_camera,
    sample_attributes,
    sample_camera,
    sample_family,
    sample_pose,
)

__all__ = [
    "ACCESSORY_COLOURS",
    "DETAIL_KINDS",
    "FOLDERS",
    "MASK_LABELS",
    "SIZES",
    "VIEWS",
    "CameraStyle",
    "PersonAttributes",
    "SyntheticConfig",
    "default_cache_dir",
    "detail_oracle",
    "ensure_synthetic",
    "family_members",
    "generate_synthetic",
    "neutral_camera",
    "pid_families",
    "read_synthetic_info",
    "render_family",
    "render_masks",
    "render_person",
    "sample_attributes",
    "sample_camera",
    "sample_family",
    "sample_pose",
]
